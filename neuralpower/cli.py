"""The ``neuralpower`` command. Bad input ends in one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .errors import NeuralPowerError, first_line
from .training import DEFAULT_CARBON_G_PER_KWH, DEFAULT_PUE

INPUT_HELP = "input shape (default 1x3x224x224; token ids: 1x128:int64)"
NET_HELP = "torchvision:NAME, timm:NAME, transformers:TYPE[/lm] or path/to/file.py:FUNCTION"


def _fit(args) -> None:
    from . import data
    from .predictor import Predictor, card_markdown

    rows = data.load(args.data)
    if args.new_kinds_from:
        from pathlib import Path

        given = {Path(p).resolve() for p in args.data}
        twice = [p for p in args.new_kinds_from if Path(p).resolve() in given]
        if twice:
            raise NeuralPowerError(f"measurement file {twice[0]!r} is given as data and in "
                                   "--new-kinds-from")
        rows, new = data.with_new_kinds(rows, data.load(args.new_kinds_from))
        print(f"from {', '.join(args.new_kinds_from)}: the rows of {', '.join(new) or 'no kind'} "
              "(the kinds the other files lack)", file=sys.stderr)
    print(f"fitting on {len(rows)} rows from {', '.join(args.data + (args.new_kinds_from or []))}",
          file=sys.stderr)
    predictor = Predictor.fit(rows, log=lambda m: print(m, file=sys.stderr),
                              calibrate=args.calibrate, without=args.without or ())
    if args.card:  # the card first: a card that cannot be written leaves no predictor either
        from pathlib import Path

        card = Path(args.card)
        tmp = card.with_name(card.name + ".partial")
        try:
            tmp.write_text(card_markdown(predictor.card))
        except OSError as e:
            raise NeuralPowerError(f"{card}: cannot write here ({e.strerror})") from None
        predictor.save(args.output)
        tmp.replace(card)
    else:
        predictor.save(args.output)
    print(f"wrote {args.output}" + (f" and {args.card}" if args.card else ""))


def _score(args) -> None:
    from . import data
    from .predictor import Predictor
    from .report import scores_text

    rows = data.load(args.data)
    scores = Predictor.load(args.model).score(rows)
    print(json.dumps(scores, indent=2) if args.json else scores_text(scores))


def _predict(args) -> None:
    from . import nets
    from .predict import predict
    from .predictor import Predictor
    from .report import prediction_json, prediction_text

    train = _training_args(args)
    shapes = nets.parse_input(args.input)
    model = nets.build(args.net)
    predictor = Predictor.load(args.model)
    if train:
        if predictor.mode != "train":
            raise NeuralPowerError(f"{args.model} predicts inference; --train needs a predictor "
                                   "fitted on `neuralpower profile --mode train` data")
        shapes[0] = shapes[0].with_batch(args.batch or shapes[0][0])  # a step is one batch
    p = predict(model, shapes if len(shapes) > 1 else shapes[0], predictor, network=args.net)
    if p.totals["layers_modeled"] == 0:
        raise NeuralPowerError(f"{args.net}: no layer of a kind this predictor models "
                               f"({', '.join(sorted({k for k, _ in predictor.models}))})")
    run = _training_run(args, p, predictor) if train else None
    if args.json:
        out = prediction_json(p, args.top)
        if run:
            out["training"] = run
        print(json.dumps(out, indent=2))
        return
    print(prediction_text(p, args.top))
    if run:
        from .training import training_text

        print("\n" + training_text(run, args.net, predictor.device))


def _training_args(args) -> bool:
    """Whether a training run is asked for, and its settings are complete."""
    given = [f for f in ("epochs", "dataset_size", "batch") if getattr(args, f) is not None]
    if not args.train:
        if given:
            raise NeuralPowerError(f"--{given[0].replace('_', '-')} is for a training run: add "
                                   "--train")
        return False
    missing = [f"--{f.replace('_', '-')}" for f in ("epochs", "dataset_size")
               if getattr(args, f) is None]
    if missing:
        raise NeuralPowerError(f"--train needs {' and '.join(missing)}")
    return True


def _training_run(args, p, predictor) -> dict:
    from .training import training_run

    t = p.totals
    energy, source = t["energy_mj"], f"predicted ({predictor.device})"
    if energy is None and args.power is not None:
        energy, source = args.power * t["runtime_ms"], f"assumed {args.power:g} W (stated)"
    return training_run(t["runtime_ms"], energy, args.epochs, args.dataset_size,
                        p.input_shape[0][0], pue=args.pue,
                        carbon_g_per_kwh=args.carbon_intensity, price_per_kwh=args.price,
                        energy_source=source)


def _profile(args) -> None:
    from .profiling import PROFILED_KINDS, Campaign, sidecar_path

    kinds = ([k.strip() for group in args.kinds for k in group.split(",") if k.strip()]
             or PROFILED_KINDS)
    campaign = Campaign(args.output, device=args.device, kinds=kinds, seed=args.seed,
                        threads=args.threads, power_window_s=args.power_window, mode=args.mode,
                        adaptive=args.adaptive, target_error_pct=args.target_error,
                        zoo=args.zoo, power=not args.no_power, power_share=args.power_share,
                        command=" ".join(["neuralpower", *sys.argv[1:]]))
    s = campaign.run(budget_s=args.budget, progress=not args.quiet)
    power = (f", {s['power_errors']} rows with a failed power read" if s.get("power_errors")
             else "")
    if args.power_share is not None:
        power += f", {s['power_networks']} networks with power"
    print(f"{s['ended']}: {s['networks']} networks, {s['rows']} rows ({s['failed']} failed "
          f"networks{power}) in {s['seconds']:.0f} s; wrote {args.output} and "
          f"{sidecar_path(args.output)}")


def _measure(args) -> None:
    from . import nets
    from .measure import measure
    from .profiling.campaign import parse_device

    device = parse_device(args.device)
    shapes = nets.parse_input(args.input)
    model = nets.build(args.net, device=device)
    m = measure(model, shapes if len(shapes) > 1 else shapes[0], device, threads=args.threads,
                train=args.train)
    out = {"network": args.net, "device": m["device"], "input": args.input,
           "totals": {k: m[k] for k in ("runtime_ms", "power_w", "energy_mj")},
           **{k: m[k] for k in ("runtime_iqr_ms", "runtime_min_ms", "repeats", "reference_ms",
                                "reference_ops_ms", "power_source", "threads", "mode")}}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    power = "not measured" if m["power_w"] is None else f"{m['power_w']:.1f} W"
    energy = "not measured" if m["energy_mj"] is None else f"{m['energy_mj']:.1f} mJ"
    step = ", one training step (forward + backward)" if args.train else ""
    print(f"{args.net} on {m['device']}, input {args.input}{step}\n"
          f"  runtime  {m['runtime_ms']:.3f} ms median of {m['repeats']} runs "
          f"(IQR {m['runtime_iqr_ms']:.3f} ms, min {m['runtime_min_ms']:.3f} ms)\n"
          f"  speed    reference probe {m['reference_ms']:.3f} ms meanwhile (the device's speed), "
          f"small-ops probe {m['reference_ops_ms']:.3f} ms\n"
          f"  power    {power}\n  energy   {energy}\n  source   {m['power_source']}")


def _validate(args) -> None:
    from tqdm.auto import tqdm

    from . import nets
    from .devices import same_device
    from .predictor import Predictor
    from .profiling.campaign import parse_device
    from .validate import plot, validate

    shapes = nets.parse_input(args.input)
    device = parse_device(args.device)
    for net in args.nets:  # every network resolves and traces before anything is measured
        nets.check(net, shapes)
    predictor = Predictor.load(args.model)
    result = validate(predictor, args.nets, shapes if len(shapes) > 1 else shapes[0], device,
                      threads=args.threads,
                      progress=lambda xs: tqdm(xs, desc="predict + measure", disable=args.json))
    if result["measured_on"] and not same_device(result["measured_on"], result["device"]):
        print(f"note: the predictor is for {result['device']!r}; measured on "
              f"{result['measured_on']!r}", file=sys.stderr)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from .report import validation_text

    print(validation_text(result))
    if args.plot:
        print(f"wrote {args.plot}")


def _rank(args) -> None:
    from . import nets
    from .archs import trace_many
    from .predictor import Predictor
    from .rank import DEFAULT_ALPHAS, parse_entry, plot_rank, rank_networks, rank_text

    files = [e for e in args.nets if e.endswith(".jsonl")]
    entries = [parse_entry(e) for e in args.nets if not e.endswith(".jsonl")]
    archs = None
    if files:
        from .archs import Architectures, read_jsonl

        archs = Architectures.concat([read_jsonl(f) for f in files])
    alphas = args.alpha or list(DEFAULT_ALPHAS)
    shapes = nets.parse_input(args.input)
    # built and traced before the predictor loads: a bad NET or input fails in moments
    traced = trace_many([net for net, _ in entries], shapes[0]) if entries else None
    predictor = Predictor.load(args.model)
    result = rank_networks(predictor, entries, alphas=alphas, input_shape=shapes[0],
                           power_w=args.power, archs=archs, traced=traced)
    if args.plot:
        plot_rank(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(rank_text(result, show=args.show))
    if args.plot:
        print(f"wrote {args.plot}")


def _report(args) -> None:
    from . import nets
    from .hotspots import hotspot_text, html_report, plot_hotspots
    from .predict import predict
    from .predictor import Predictor

    if args.top < 1 or args.depth < 1:
        raise NeuralPowerError("--top and --depth must be at least 1")
    shapes = nets.parse_input(args.input)
    model = nets.build(args.net)
    p = predict(model, shapes if len(shapes) > 1 else shapes[0], Predictor.load(args.model),
                network=args.net)
    if p.totals["layers_modeled"] == 0:
        raise NeuralPowerError(f"{args.net}: no layer of a kind this predictor models")
    out = _output_dir(args.output)
    stem = "".join(c if c.isalnum() else "_" for c in args.net.split(":")[-1])
    png, html = out / f"{stem}_hotspots.png", out / f"{stem}.html"
    plot_hotspots(p, png, top=max(args.top, 10), depth=args.depth)
    html_report(p, html, top=args.top, depth=args.depth)
    print(hotspot_text(p, top=args.top, depth=args.depth))
    print(f"\nwrote {png} and {html}")


def _output_dir(path):
    from pathlib import Path

    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NeuralPowerError(f"{out}: cannot write here ({e.strerror})") from None
    return out


def _calibrate(args) -> None:
    from tqdm.auto import tqdm

    from . import nets
    from .calibrate import calibration_text, fit_calibration, measure_networks
    from .predictor import Predictor
    from .profiling.campaign import parse_device

    shapes = [nets.parse_input(s)[0] for s in args.inputs]
    device = parse_device(args.device)
    if len(set(args.nets)) < 3:
        raise NeuralPowerError("calibrate needs at least 3 different networks")
    for net in args.nets:  # every network resolves and traces before anything is measured
        for shape in shapes:
            nets.check(net, [shape])
    predictor = Predictor.load(args.model)
    observed = measure_networks(predictor, args.nets, shapes, device, threads=args.threads,
                                progress=lambda xs: tqdm(xs, desc="predict + measure"))
    cal = fit_calibration(observed)
    predictor.with_calibration(cal).save(args.output)
    print(calibration_text(cal))
    print(f"wrote {args.output}")


def _demo(args) -> None:
    from .demo import main_args

    main_args(args)


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line too (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Numeric options and what they must be: checked once, for every command that has them.
_POSITIVE = ("budget", "power", "power_window", "epochs", "dataset_size", "batch")
_NON_NEGATIVE = ("carbon_intensity", "price")


def _check_numbers(args) -> None:
    import math

    for name in _POSITIVE + _NON_NEGATIVE:
        v = getattr(args, name, None)
        if v is None:
            continue
        ok = math.isfinite(v) and (v > 0 if name in _POSITIVE else v >= 0)
        if not ok:
            need = "positive" if name in _POSITIVE else "zero or positive"
            raise NeuralPowerError(f"--{name.replace('_', '-')} must be a {need} number, "
                                   f"got {v:g}")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise NeuralPowerError("--threads must be at least 1")
    if getattr(args, "top", 0) < 0:
        raise NeuralPowerError("--top must be >= 0")


def parser() -> argparse.ArgumentParser:
    from .features import CONTEXT_INPUTS

    ap = _Parser(prog="neuralpower", description="Predict the runtime, power "
                                 "and energy of a neural network, layer by layer.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="measure the layers of synthetic networks on this device")
    p.add_argument("-o", "--output", required=True, help="measurement CSV to write (or resume)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--budget", type=float, default=600.0, help="seconds to spend (default 600)")
    p.add_argument("--kinds", nargs="+", default=[],
                   help="layer kinds to put in the networks (default: every profiled kind)")
    p.add_argument("--seed", type=int, default=0, help="seed of the network design (default 0)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--power-window", type=float, help="seconds a layer runs back to back for "
                   "one power reading (default: 0.3 or the sensor's minimum)")
    p.add_argument("--no-power", action="store_true", help="measure runtime only, even where "
                   "there is a sensor (each layer's power reading costs a window of back-to-back "
                   "runs: most of the time of a campaign on a fast GPU)")
    p.add_argument("--power-share", type=float, metavar="F", help="spend at most this share "
                   "(0-1] of the time on power readings: networks past it are measured for "
                   "runtime only (default: power for every network)")
    p.add_argument("--mode", choices=["inference", "train"], default="inference",
                   help="measure inference (forward) or a training step (forward + backward) "
                   "of each layer (default inference)")
    p.add_argument("--adaptive", action="store_true", help="after a first uniform share of "
                   "the budget, choose networks rich in the kinds predicted worst so far")
    p.add_argument("--target-error", type=float, metavar="PCT", help="stop before the budget "
                   "once every kind's estimated cross-validated runtime error is at most PCT "
                   "(estimated after 30%% of the budget, then every 15%%)")
    p.add_argument("--zoo", nargs="?", const="vision", choices=["vision", "text"],
                   help="measure the layers of real networks instead of synthetic ones: "
                   "torchvision's classifiers at seeded random batches and input sizes (vision, "
                   "the default), or language models of transformers at random sequence lengths "
                   "(text); fit the files together")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_profile)

    p = sub.add_parser("measure", help="measure a whole network's runtime, power and energy here")
    p.add_argument("net", help=NET_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--input", default="1x3x224x224", help=INPUT_HELP)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--train", action="store_true", help="measure a training step (forward + "
                   "backward, training mode) instead of inference")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_measure)

    p = sub.add_parser("validate", help="predict and measure networks here; compare")
    p.add_argument("model", help="predictor file")
    p.add_argument("nets", nargs="+", metavar="NET", help="networks, as for predict")
    p.add_argument("--input", default="1x3x224x224", help=INPUT_HELP)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--plot", default="validation.png", help="predicted-against-measured PNG "
                   "to write (default validation.png; '' for none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_validate)

    p = sub.add_parser("fit", help="fit a predictor on measurement CSVs")
    p.add_argument("data", nargs="+", help="measurement CSV files (DESIGN.md schema)")
    p.add_argument("-o", "--output", required=True, help="predictor file to write")
    p.add_argument("--card", help="also write the model card as Markdown to this file")
    p.add_argument("--without", nargs="+", metavar="FEATURE", choices=list(CONTEXT_INPUTS),
                   help="context features to fit as unmeasured, so the models ignore them "
                        f"({', '.join(CONTEXT_INPUTS)})")
    p.add_argument("--calibrate", action="store_true", help="also calibrate on the whole "
                   "times of the real networks in the data (profile --zoo), as `calibrate` "
                   "does on networks it measures")
    p.add_argument("--new-kinds-from", nargs="+", metavar="CSV", help="measurement files whose "
                   "rows are used only for the kinds the other files lack (a later campaign of "
                   "new kinds: the models of the other kinds stay fitted on the other files)")
    p.set_defaults(run=_fit)

    p = sub.add_parser("score", help="errors of a predictor on measured rows")
    p.add_argument("model", help="predictor file")
    p.add_argument("data", nargs="+", help="measurement CSV files")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_score)

    p = sub.add_parser("predict", help="per-layer runtime, power and energy of a network")
    p.add_argument("model", help="predictor file")
    p.add_argument("net", help=NET_HELP)
    p.add_argument("--input", default="1x3x224x224", help="input shape, e.g. 1x3x224x224 "
                   "(comma-separate several inputs; token ids: 1x128:int64)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--top", type=int, default=5, help="how many hotspot layers to list")
    t = p.add_argument_group("training run (needs a predictor fitted on --mode train data)")
    t.add_argument("--train", action="store_true", help="predict a training run: per step, "
                   "per epoch and in total, with energy, carbon and cost")
    t.add_argument("--epochs", type=float, help="epochs of the run")
    t.add_argument("--dataset-size", type=int, help="training samples per epoch")
    t.add_argument("--batch", type=int, help="batch size of a step (default: --input's batch)")
    t.add_argument("--pue", type=float, default=DEFAULT_PUE, help="data centre PUE (default "
                   f"{DEFAULT_PUE}, Strubell et al. 2019)")
    t.add_argument("--carbon-intensity", type=float, default=DEFAULT_CARBON_G_PER_KWH,
                   metavar="G_PER_KWH", help="grid carbon intensity in gCO2e/kWh (default "
                   f"{DEFAULT_CARBON_G_PER_KWH:.1f}, the U.S. average of Strubell et al. 2019; "
                   "give your region's)")
    t.add_argument("--price", type=float, metavar="PER_KWH", help="electricity price per kWh, "
                   "for the cost")
    t.add_argument("--power", type=float, metavar="W", help="a device power to assume where "
                   "the predictor has no power model (shown as stated, never as predicted)")
    p.set_defaults(run=_predict)

    p = sub.add_parser("rank", help="rank networks by Energy-Precision Ratio "
                       "(top-1 error ** alpha * energy)")
    p.add_argument("model", help="predictor file")
    p.add_argument("nets", nargs="+", metavar="NET[=TOP1_ERROR]", help="networks, as for "
                   "predict, each with its top-1 error as a fraction (0.302) or percentage "
                   "(30.2%%); torchvision networks default to their documented ImageNet error; "
                   "a FILE.jsonl adds the architectures it describes by their layers")
    p.add_argument("--alpha", type=float, action="append", metavar="A", help="weight of "
                   "accuracy against energy; repeat for several (default 0, 1, 2, 5)")
    p.add_argument("--input", default="1x3x224x224", help=INPUT_HELP)
    p.add_argument("--power", type=float, metavar="W", help="a device power to assume where "
                   "the predictor has no power model (shown as stated, never as predicted)")
    p.add_argument("--plot", default="ranking.png", help="error-against-energy PNG with the "
                   "Pareto front (default ranking.png; '' for none)")
    p.add_argument("--show", type=int, default=30, help="of more networks than this, list "
                   "those in the top SHOW at some alpha (default 30; --json has all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_rank)

    p = sub.add_parser("report", help="hotspot report of a network: by block, by kind, top "
                       "layers; PNG chart and HTML page")
    p.add_argument("model", help="predictor file")
    p.add_argument("net", help=NET_HELP)
    p.add_argument("--input", default="1x3x224x224", help=INPUT_HELP)
    p.add_argument("--top", type=int, default=5, help="top layers to list (default 5)")
    p.add_argument("--depth", type=int, default=1, help="module path components that make a "
                   "block (default 1: layer1, layer2, ...)")
    p.add_argument("-o", "--output", default="reports", help="folder for the PNG and HTML "
                   "(default reports)")
    p.set_defaults(run=_report)

    p = sub.add_parser("calibrate", help="measure real networks here and correct the "
                       "predictor's layer runtimes to match them")
    p.add_argument("model", help="predictor file (of this device)")
    p.add_argument("nets", nargs="+", metavar="NET", help="at least 3 networks, as for predict")
    p.add_argument("-o", "--output", required=True, help="calibrated predictor file to write")
    p.add_argument("--inputs", nargs="+", default=["1x3x224x224"], metavar="SHAPE",
                   help="input shapes to measure each network at (default 1x3x224x224; "
                   "token ids: 1x128:int64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.set_defaults(run=_calibrate)

    p = sub.add_parser("demo", help="profile this device, fit, validate, report and rank, "
                       "end to end, in a few minutes")
    p.add_argument("-o", "--output", default="reports", help="folder for everything written "
                   "(default reports)")
    p.add_argument("--budget", type=float, default=180.0, help="seconds of profiling "
                   "(default 180)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--nets", nargs="+", default=None, metavar="NET",
                   help="networks to validate and rank (default: five torchvision networks)")
    p.add_argument("--input", default="1x3x224x224", help=INPUT_HELP)
    p.add_argument("--power", type=float, metavar="W", help="this device's power, stated, for "
                   "energy where it has no sensor")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_demo)
    return ap


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        _check_numbers(args)
        args.run(args)
    except NeuralPowerError as e:
        print(f"neuralpower {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"neuralpower {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("NEURALPOWER_DEBUG"):
            raise
        print(f"neuralpower {args.command}: internal error: {first_line(e)} "
              "(set NEURALPOWER_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
