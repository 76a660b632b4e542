"""`neuralpower demo`: learn this device and use what was learned, end to end, in a few minutes.

1. profile the device: synthetic networks of every kind for two thirds of the budget, real
   torchvision networks (``profile --zoo``) for the rest; resumes if run again;
2. fit a predictor on both campaigns;
3. predict and measure a handful of torchvision networks here: the validation table and plot;
4. the hotspot report of the first network;
5. an Energy-Precision ranking of the networks.

Everything is written to one folder (``reports/`` by default), with ``index.html`` putting the
tables and plots on one page. Energy needs a power figure: from this device's sensor when it has
one (the campaign measured it), else from a power the user states (``--power W``), else from a
shipped predictor of another device; the report names which, and never passes an assumed power
off as a measured one.
"""
from __future__ import annotations

from pathlib import Path

from .errors import NeuralPowerError

ZOO_SHARE = 1 / 3   # of the profiling budget spent on real networks (profiling/zoo.py)
POWER_SHARE = 0.5   # of the synthetic networks' time at most on power windows
DEMO_NETS = ("torchvision:resnet18", "torchvision:mobilenet_v3_small",
             "torchvision:squeezenet1_1", "torchvision:efficientnet_b0",
             "torchvision:shufflenet_v2_x1_0")
# Where `pip install -e .` finds the predictors shipped in the repository's models/ folder.
SHIPPED = Path(__file__).resolve().parents[1] / "models"
# Shipped predictors with a power model, for energy where this device has no sensor.
SHIPPED_POWER = {"cpu": "raptorlake_cpu.predictor", "cuda": "jetson_tx2_gpu.predictor"}


def run_demo(out_dir="reports", *, budget_s: float = 180.0, device: str = "cpu",
             nets=DEMO_NETS, input_shape=(1, 3, 224, 224), power_w: float | None = None,
             threads: int | None = None, log=None, progress: bool = True) -> dict:
    """Run the demo; print as it goes (through ``log``) and return the paths written."""
    from . import data, nets as netlib
    from .hotspots import hotspot_text, html_page, plot_hotspots
    from .predict import predict
    from .predictor import Predictor, card_markdown
    from .profiling import Campaign
    from .profiling.campaign import parse_device
    from .rank import plot_rank, rank_networks, rank_text
    from .report import validation_text
    from .validate import plot as plot_validation, validate

    log = log or print
    if power_w is not None and not power_w > 0:
        raise NeuralPowerError("--power must be a positive number of watts")
    dev = parse_device(device)
    for net in nets:  # every network resolves and traces before minutes are spent profiling
        netlib.check(net, [input_shape])
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NeuralPowerError(f"{out}: cannot write here ({e.strerror})") from None
    paths = {}

    # 1. profile: synthetic networks, then real ones
    csv, zoo_csv = out / f"profile_{dev.type}.csv", out / f"profile_{dev.type}_zoo.csv"
    zoo_s = budget_s * ZOO_SHARE
    log(f"[1/5] profiling {dev} for {budget_s:.0f} s: synthetic networks for "
        f"{budget_s - zoo_s:.0f} s into {csv}, real torchvision networks for {zoo_s:.0f} s into "
        f"{zoo_csv} (run again to add to them)")
    s = {"networks": 0, "rows": 0, "seconds": 0.0}
    # Power windows (0.3-0.5 s a layer) on at most half the synthetic networks' time, and none
    # on the real ones, whose rows are for their runtimes in the network: with a window on
    # every layer an H100 measured 239 rows in two minutes, and no real network fitted the
    # minute left (2026-12-06).
    for path, seconds, zoo in ((csv, budget_s - zoo_s, False), (zoo_csv, zoo_s, True)):
        campaign = Campaign(path, device=dev, threads=threads, command="neuralpower demo",
                            log=lambda m: log("      " + m), zoo=zoo,
                            power="the demo times real networks for runtime only" if zoo else True,
                            power_share=None if zoo else POWER_SHARE)
        run = campaign.run(budget_s=seconds, progress=progress)
        s = {k: s[k] + run[k] for k in s}
        if not zoo:
            has_sensor = campaign.meter.measures_power
    log(f"      {s['networks']} networks, {s['rows']} rows in {s['seconds']:.0f} s")

    # 2. fit
    model_path, card_path = out / f"{dev.type}.predictor", out / f"{dev.type}.md"
    sources = [p for p in (csv, zoo_csv) if _has_rows(p)]  # a tiny budget may measure none
    log(f"[2/5] fitting a predictor on {' and '.join(map(str, sources))}")
    predictor = Predictor.fit(data.load(sources), log=lambda m: log("      " + m))
    predictor.save(model_path)
    card_path.write_text(card_markdown(predictor.card))
    paths.update(data=csv, zoo_data=zoo_csv, predictor=model_path, card=card_path)

    # 3. validate
    log(f"[3/5] predicting and measuring {len(nets)} networks on {dev}")
    result = validate(predictor, list(nets), input_shape, dev, threads=threads)
    validation_png = out / "validation.png"
    plot_validation(result, validation_png)
    log(validation_text(result))
    paths["validation_plot"] = validation_png

    # 4. hotspots of the first network
    first = nets[0]
    log(f"[4/5] hotspots of {first}")
    pred = predict(netlib.build(first), input_shape, predictor, network=first)
    hot_png = out / f"hotspots_{_slug(first)}.png"
    plot_hotspots(pred, hot_png)
    log(hotspot_text(pred))
    paths["hotspot_plot"] = hot_png

    # 5. Energy-Precision ranking, with energy from a source it names
    log("[5/5] Energy-Precision ranking")
    ranker, power, energy_note = _energy_source(predictor, has_sensor, power_w, dev)
    log(f"      energy: {energy_note}")
    ranking, rank_png = None, out / "ranking.png"
    if ranker is not None:
        ranking = rank_networks(ranker, [(n, None) for n in nets], input_shape=input_shape,
                                power_w=power)
        plot_rank(ranking, rank_png)
        log(rank_text(ranking))
        paths["ranking_plot"] = rank_png

    html = out / "index.html"
    html_page(f"neuralpower demo: {predictor.device}", _sections(
        predictor, s, result, validation_png, pred, hot_png, ranking, rank_png, energy_note),
        html)
    paths["html"] = html
    log("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return paths


def _has_rows(path: Path) -> bool:
    with open(path, encoding="utf-8") as f:
        return len(f.readlines(2**16)) > 1   # a header and at least one row


def _energy_source(predictor, has_sensor: bool, power_w, dev):
    """(predictor to rank with, stated power, note): this device's own power model when its
    sensor was read; a stated power; else a shipped predictor of another device, named."""
    from .predictor import Predictor

    if has_sensor and predictor.has("conv2d", "power_w"):
        return predictor, None, f"predicted from this device's measured power ({predictor.device})"
    if power_w is not None:
        return predictor, power_w, (f"this device's predicted runtime x {power_w:g} W, a power "
                                    "stated by the user (--power), not measured")
    shipped = SHIPPED / SHIPPED_POWER[dev.type]
    reason = "this device has no readable power sensor" if not has_sensor else \
        "this device's campaign measured no power"
    if shipped.is_file():
        other = Predictor.load(shipped)
        return other, None, (f"{reason}; energies below are those of another device, "
                             f"{other.device}, from the shipped predictor {shipped.name} "
                             "(pass --power W to use this device's runtimes with a power you state)")
    return None, None, f"{reason} and no shipped predictor was found: pass --power W to rank"


def _sections(predictor, campaign, result, validation_png, pred, hot_png, ranking, rank_png,
              energy_note):
    import pandas as pd

    from .hotspots import ENERGY_COLUMNS, has_energy, hotspots

    rows = [{"network": r["network"], "predicted runtime_ms": r["predicted"]["runtime_ms"],
             "measured runtime_ms": r["measured"]["runtime_ms"],
             "error %": r["error_pct"]["runtime_ms"], "speed": r.get("speed"),
             "unmodeled layers": r["layers_unmodeled"]} for r in result["networks"]]
    summary = result["summary"].get("runtime_ms", {})
    h = hotspots(pred)
    if not has_energy(pred):  # runtime only: no empty energy columns
        h = {k: v.drop(columns=[c for c in v if c in ENERGY_COLUMNS]) for k, v in h.items()}
    sections = [
        ("Device", [f"{predictor.device}: profiled {campaign['networks']} networks, synthetic "
                    f"and real ({campaign['rows']} layer rows) in {campaign['seconds']:.0f} s, then "
                    "fitted."]),
        ("Validation: predicted against measured", [
            pd.DataFrame(rows),
            f"median |error| {summary.get('median_abs_error_pct', float('nan')):.1f} %, "
            f"within ±10 %: {100 * summary.get('within_10_pct_share', float('nan')):.0f} %, "
            f"Kendall tau {summary.get('kendall_tau')}", validation_png]),
        (f"Hotspots: {pred.network}", ["By block (module path, depth 1):", h["by_block"],
                                        "By kind:", h["by_kind"], "Top layers by runtime:",
                                        h["top_runtime"], hot_png]),
    ]
    if ranking is not None:
        table = pd.DataFrame([{"network": n["network"], "top-1 error %": 100 * n["top1_error"],
                               "energy_mj": n["energy_mj"],
                               **{f"EPR (alpha={a})": n["epr"][a] for a in n["epr"]}}
                              for n in ranking["networks"]])
        sections.append(("Energy-Precision ranking", [energy_note, table, rank_png]))
    else:
        sections.append(("Energy-Precision ranking", [energy_note]))
    return sections


def _slug(net: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in net.split(":")[-1])


def main_args(args) -> None:
    """The CLI entry (cli.py parses the arguments)."""
    from . import nets as netlib

    shapes = netlib.parse_input(args.input)
    run_demo(args.output, budget_s=args.budget, device=args.device, nets=args.nets or DEMO_NETS,
             input_shape=shapes[0], power_w=args.power, threads=args.threads,
             log=lambda m: print(m, flush=True), progress=not args.quiet)
