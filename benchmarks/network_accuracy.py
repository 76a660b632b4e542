"""Network-level runtime accuracy on this machine: neuralpower against three baselines.

Each network is traced once per input setting (meta device), predicted by the predictor and by
the baselines of ``neuralpower.baselines`` fitted on the measurement CSV (``MacLinear``, Paleo,
an nn-Meter style random forest), and measured here in the same run, each network in a fresh
process as ``profile`` measures (``measure.measure_fresh``; median of about ``--target-s``
seconds of repeats, threads fixed to torch's default and recorded). Every
prediction is taken to the device's speed during that measurement (``speed``: a fixed probe
timed between the repeats, over the predictor's reference, see ``timing.Reference``). Two groups:
torchvision classifiers and timm models held out from development. Prints, per setting, the
networks' predictions and errors, then medians of |error|, the share within +-10 % and Kendall's
tau per setting x group x method, against the goals: median |error| <= 5 %, >= 90 % within
+-10 %, tau >= 0.9.

    python benchmarks/network_accuracy.py --predictor models/amd_epyc_2t_cpu.predictor \\
        --data profiling/dev_cpu/amd_epyc_2t.csv [--nets ...] [--timm ...] \\
        [--settings 1x3x224x224 8x3x224x224 1x3x160x160] [--target-s 1.0] \\
        [--device cpu|cuda|cuda:N] [--json OUT.json] [--reuse OUT.json [--rescore]]
        [--calibrate [--save-calibrated OUT.predictor]]

On a GPU (``--device cuda``) the networks are measured in this process (a CUDA context per
network would cost seconds), and where the device has a power sensor (NVML) and the predictor a
power model, neuralpower's network power and energy are scored too (the baselines model runtime
only).

``--reuse`` takes the measurements of an earlier ``--json`` file for networks measured there at
the same setting, device and thread count, and predicts them afresh: for re-scoring a changed
predictor without measuring again. A measurement taken while other processes used more than
10 % of the machine's CPU (from /proc/stat), or whose spread was wide (IQR over 10 % of the
median), is flagged in the table and measured again under ``--reuse``: on a shared 2-core
machine another process can slow a network tens of times, and steadily, so the spread alone
does not show it. ``--json`` is rewritten after every network, so a killed run can be resumed
with ``--reuse`` on its own file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import data as measurements  # noqa: E402
from neuralpower import nets  # noqa: E402
from neuralpower.baselines import fit_baselines, network_runtime  # noqa: E402
from neuralpower.calibrate import Observed, apply, fit_calibration  # noqa: E402
from neuralpower.errors import NeuralPowerError, script_exit  # noqa: E402
from neuralpower.measure import measure_fresh  # noqa: E402
from neuralpower.predict import predict  # noqa: E402
from neuralpower.predictor import Predictor  # noqa: E402
from neuralpower.profiling import zoo  # noqa: E402
from neuralpower.profiling.campaign import device_name, parse_device  # noqa: E402
from neuralpower.trace import trace  # noqa: E402
from neuralpower.validate import summary  # noqa: E402

TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2",
    "densenet121", "densenet169", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "mnasnet0_5", "mnasnet1_0", "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0", "squeezenet1_0", "squeezenet1_1", "regnet_x_400mf", "regnet_y_400mf",
    "googlenet", "alexnet", "vgg11", "convnext_tiny", "vit_b_16", "swin_t",
]
# Held out: a second family of implementations, not used to develop the predictor. All build
# offline with random weights and trace; the ViT/DeiT ones take 224x224 only (skipped at
# other sizes, and said so).
TIMM = [
    "resnet26d", "mobilenetv3_large_100", "efficientnet_b0", "regnetx_002", "convnext_atto",
    "vit_tiny_patch16_224", "deit_small_patch16_224", "ghostnet_100", "rexnet_100", "mixnet_s",
    "lcnet_050",
]
SETTINGS = ["1x3x224x224", "8x3x224x224", "1x3x160x160"]
METHODS = ("neuralpower", "mac_linear", "paleo", "nn_meter_rf")
CALIBRATED = "np_calibrated"  # neuralpower calibrated on the run's other torchvision networks
NOISY_IQR_PCT = 10.0  # wider than the +-10 % goal band: the measurement cannot judge it
BUSY_OTHER_CPU_PCT = 10.0  # CPU used by other processes while measuring, % of all cores
# The goals: (summary key, threshold, True if higher is better)
GOALS = {"median_abs_error_pct": (5.0, False), "within_10_pct_share": (0.9, True),
         "kendall_tau": (0.9, True)}


def _finite(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def qualified(name: str, source: str) -> str:
    return name if ":" in name else f"{source}:{name}"


def error_pct(predicted, measured):
    if predicted is None or measured is None or not math.isfinite(predicted) or measured <= 0:
        return None
    return (predicted / measured - 1) * 100


def total_scores(triples) -> dict | None:
    """``neuralpower.validate.summary`` of one total from ``(predicted, measured, error_pct)``
    triples; None when no triple has an error."""
    none = {"power_w": None, "energy_mj": None}  # the shape summary reads, one total in it
    return summary([{"predicted": {"runtime_ms": p, **none}, "measured": {"runtime_ms": m, **none},
                     "error_pct": {"runtime_ms": e, **none}}
                    for p, m, e in triples]).get("runtime_ms")


def runtime_scores(triples) -> dict | None:
    """:func:`total_scores` of the runtimes of ``(predicted_ms, measured_ms, error_pct)``
    triples, with whether each goal is met; None when no triple has an error."""
    s = total_scores(triples)
    if s is None:
        return None
    return {**s, "goals_met": {k: s[k] is not None and (s[k] >= goal if higher else s[k] <= goal)
                               for k, (goal, higher) in GOALS.items()}}


def scores(records: list[dict]) -> list[dict]:
    """Per setting x group x method: n, median |error| %, share within +-10 %, Kendall tau and
    whether each goal is met (:func:`runtime_scores`)."""
    out = []
    keys = dict.fromkeys((r["setting"], r["group"]) for r in records)
    for setting, group in keys:
        rows = [r for r in records if r["setting"] == setting and r["group"] == group]
        for method in _methods(rows):
            s = runtime_scores((r["predicted_ms"][method], r["measured"]["runtime_ms"],
                                r["error_pct"][method]) for r in rows)
            if s is not None:
                out.append({"setting": setting, "group": group, "method": method, **s})
    return out


PHASE_SLOW = 1.4  # small-ops probe this many times its run's fastest: the host's slow phase


def phases(records: list[dict]) -> dict[int, str]:
    """The host's phase while each record was measured, by its small-ops probe
    (``reference_ops_ms``, timing.Reference) against the fastest of the run on that device:
    "fast", or "slow" from :data:`PHASE_SLOW` times it up (on a shared VM whose slow phases
    raise every op's cost: benchmarks/results/probe_drift.md). Records without the probe
    (older runs) are left out."""
    fastest = {}
    for r in records:
        ops = r["measured"].get("reference_ops_ms")
        if ops:
            dev = r["measured"]["device"]
            fastest[dev] = min(ops, fastest.get(dev, ops))
    return {i: "slow" if r["measured"]["reference_ops_ms"] > PHASE_SLOW * fastest[
        r["measured"]["device"]] else "fast" for i, r in enumerate(records)
        if r["measured"].get("reference_ops_ms")}


def phase_scores(records: list[dict]) -> list[dict]:
    """:func:`scores` of neuralpower in each phase of the host (:func:`phases`)."""
    phase = phases(records)
    out = []
    for name in ("fast", "slow"):
        mine = [r for i, r in enumerate(records) if phase.get(i) == name]
        out += [{**s, "phase": name} for s in scores(mine) if s["method"] == "neuralpower"]
    return out


def power_scores(records: list[dict]) -> list[dict]:
    """Per setting x group: neuralpower's network power and energy against the measured ones
    (``validate.summary``: n, median |error| %, share within +-10 %, Kendall tau); empty where
    the device has no sensor or the predictor no power model."""
    # (target, predicted key in "power", measured key, error key): energy twice, from
    # neuralpower's runtime and from np_calibrated's (--calibrate)
    targets = (("power_w", "predicted_w", "power_w", "power_w"),
               ("energy_mj", "predicted_mj", "energy_mj", "energy_mj"),
               (f"energy_mj ({CALIBRATED})", "calibrated_mj", "energy_mj", "calibrated_mj"))
    out = []
    for setting, group in dict.fromkeys((r["setting"], r["group"]) for r in records):
        mine = [r for r in records if (r["setting"], r["group"]) == (setting, group)
                and "power" in r]
        for target, predicted, measured, error in targets:
            s = total_scores((r["power"].get(predicted), r["measured"].get(measured),
                              r["power"]["error_pct"].get(error)) for r in mine)
            if s is not None:
                out.append({"setting": setting, "group": group, "target": target, **s})
    return out


def power_table(records: list[dict]) -> str:
    rows = [[r["network"], r["group"], _ms(r["measured"].get("power_w")),
             f"{_ms(r['power']['predicted_w'])} ({_err(r['power']['error_pct']['power_w'])})",
             _ms(r["measured"].get("energy_mj")),
             f"{_ms(r['power']['predicted_mj'])} ({_err(r['power']['error_pct']['energy_mj'])})"]
            for r in records if r["measured"].get("power_w") is not None]
    return markdown(["network", "group", "measured W", "predicted W (err)", "measured mJ",
                     "predicted mJ (err)"], rows)


def score_cells(s: dict) -> list[str]:
    """A summary's median |error|, share within +-10 % and Kendall tau as table cells."""
    tau = s["kendall_tau"]
    return [f"{s['median_abs_error_pct']:.1f}", f"{100 * s['within_10_pct_share']:.0f} %",
            "–" if tau is None else f"{tau:.2f}"]


def markdown(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _ms(v) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _pct(v) -> str:
    return "–" if v is None else f"{v:.0f}"


def _err(v) -> str:
    return "–" if v is None else f"{v:+.1f} %"


def _methods(records: list[dict]) -> list[str]:
    return [m for m in (*METHODS, CALIBRATED) if records and m in records[0]["predicted_ms"]]


def network_table(records: list[dict]) -> str:
    methods = _methods(records)
    header = ["network", "group", "measured ms", "speed", "ops probe ms",
              *(f"{m} ms (err)" for m in methods),
              "IQR % of median", "others' CPU %", "unmodeled MACs %", "measured"]
    rows = [[r["network"], r["group"], _ms(r["measured"]["runtime_ms"]), f"{r['speed']:.2f}",
             _ms(r["measured"].get("reference_ops_ms")),
             *(f"{_ms(r['predicted_ms'][m])} ({_err(r['error_pct'][m])})" for m in methods),
             f"{iqr_pct(r['measured']):.0f}", _pct(r["measured"].get("other_cpu_pct"))
             + (" ⚠" if noisy(r["measured"]) else ""),
             f"{r['unmodeled_macs_pct']:.1f}", "reused" if r["reused"] else "this run"]
            for r in records]
    return markdown(header, rows)


def summary_table(summaries: list[dict]) -> str:
    mark = lambda ok: "✓" if ok else "✗"  # noqa: E731
    rows = []
    for s in summaries:
        tau, met = s["kendall_tau"], s["goals_met"]
        rows.append([s["setting"], s["group"], s["method"], s["n"],
                     f"{s['median_abs_error_pct']:.1f} {mark(met['median_abs_error_pct'])}",
                     f"{100 * s['within_10_pct_share']:.0f} % {mark(met['within_10_pct_share'])}",
                     "–" if tau is None else f"{tau:.2f} {mark(met['kendall_tau'])}"])
    return markdown(["setting", "group", "method", "networks", "median abs error % (≤ 5)",
                     "within ±10 % (≥ 90 %)", "Kendall tau (≥ 0.9)"], rows)


def iqr_pct(measured: dict) -> float:
    return 100.0 * measured["runtime_iqr_ms"] / measured["runtime_ms"]


def noisy(measured: dict) -> bool:
    other = measured.get("other_cpu_pct")
    return iqr_pct(measured) > NOISY_IQR_PCT or (other is not None and other > BUSY_OTHER_CPU_PCT)


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


def measure_alone(name: str, shape, threads: int, target_s: float, device="cpu") -> dict:
    """``measure_fresh`` (in a fresh process on a CPU, as ``profile`` measures) plus the share
    of the machine's CPU that other processes used meanwhile."""
    busy, own, wall = _busy_cpu_s(), time.process_time(), time.perf_counter()
    m = measure_fresh(name, shape, device, threads=threads, target_s=target_s)
    if busy is not None:
        ours = time.process_time() - own + m["process_cpu_s"]
        other = (_busy_cpu_s() - busy) - ours
        cores = os.cpu_count() or 1
        m["other_cpu_pct"] = max(0.0, 100.0 * other / ((time.perf_counter() - wall) * cores))
    return m


def write_json(path: Path, result: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, path)  # atomic: a killed run leaves the old file or the new one


def load_reuse(path: Path | None, keep_noisy: bool = False) -> tuple[dict, dict]:
    """(setting, network, device, threads) -> measured totals from an earlier --json file
    (without the noisy ones, to be measured again, unless ``keep_noisy``), and that run's
    device, threads and torch version."""
    if path is None:
        return {}, {}
    try:
        old = json.loads(path.read_text())
        return ({(r["setting"], r["network"], r["measured"]["device"], r["measured"]["threads"]):
                 r["measured"] for r in old["networks"] if keep_noisy or not noisy(r["measured"])},
                {k: old[k] for k in ("device", "threads", "torch")})
    except FileNotFoundError:
        raise NeuralPowerError(f"--reuse: {str(path)!r} not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise NeuralPowerError(f"--reuse: {str(path)!r} is not this benchmark's JSON "
                               f"({type(e).__name__}: {e})") from None


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime())


def parse_setting(text: str) -> tuple[int, ...]:
    shapes = nets.parse_input(text)
    if len(shapes) != 1:
        raise NeuralPowerError(f"setting {text!r}: one input shape per setting")
    return shapes[0]


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def run(args) -> dict:
    if args.target_s <= 0:
        raise NeuralPowerError("--target-s must be > 0")
    settings = {s: parse_setting(s) for s in args.settings}
    groups = {qualified(n, "torchvision"): "torchvision" for n in args.nets}
    groups.update({qualified(n, "timm"): "timm" for n in args.timm})
    if not groups or not settings:
        raise NeuralPowerError("nothing to do: no networks or no settings")
    if args.save_calibrated and not args.calibrate:
        raise NeuralPowerError("--save-calibrated needs --calibrate")
    if args.rescore and args.reuse is None:
        raise NeuralPowerError("--rescore needs --reuse FILE (the measurements to score)")
    reuse, old = load_reuse(args.reuse, keep_noisy=args.rescore)
    # a calibration on measured networks is scored as its own method (--calibrate); one that
    # `fit --calibrate` made from the profiling data is part of the predictor
    predictor = Predictor.load(args.predictor)
    if (predictor.card.get("calibration") or {}).get("source") != "data":
        predictor = predictor.with_calibration(None)
    models, unbuilt = {}, {}  # every name is built up front, before minutes of measuring
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name in groups:
            try:
                models[name] = nets.build(name)
            except NeuralPowerError as e:  # a typo, or a model this library version cannot
                unbuilt[name] = str(e)     # build on meta (timm 1.0.29's regnetx_002)
                print(f"network_accuracy: skipping {name}: {e}", file=sys.stderr)
    if not models:
        raise NeuralPowerError("no network could be built: " + "; ".join(unbuilt.values()))
    rows = measurements.load(args.data)
    seen = zoo_settings(rows)
    start = time.perf_counter()
    baselines = fit_baselines(rows)
    print(f"baselines fitted on {len(rows)} rows in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)

    if args.rescore:  # the reused file's device, which need not be this machine's
        dev, device, threads = None, old["device"], old["threads"]
    else:
        threads = torch.get_num_threads()
        dev = parse_device(args.device)
        device = device_name(dev, threads)
    result = {
        "predictor": str(args.predictor), "predictor_device": predictor.device,
        "data": [str(p) for p in args.data], "device": device, "threads": threads,
        "torch": old["torch"] if args.rescore else torch.__version__, "target_s": args.target_s,
        "kinds_modeled": {"neuralpower": sorted({k for k, t in predictor.models
                                                 if t == "runtime_ms"}),
                          **{n: list(b.kinds) for n, b in baselines.items()}},
        "baselines": {n: b.describe() for n, b in baselines.items()},
        "measured_utc": [_utc_now(), _utc_now()],  # first and last network of this run
        "networks": [], "failed": [], "measured_in_run": 0, "reused": 0, "summary": [],
        # (network, setting) pairs of this benchmark whose layers the data measured in the very
        # network at the very input (profile --zoo rows): in-sample, where the rest is not
        "in_data": sorted(f"{n} {s}" for s, shape in settings.items() for n in groups
                          if (n, tuple(shape)) in seen)}

    jobs = [(s, name) for s in settings for name in groups]
    bar = tqdm(jobs, desc="trace + predict + measure", file=sys.stderr)
    layers = {}  # (setting, network) -> (kinds, runtimes) of the modeled layers, for calibration
    for setting, name in bar:
        bar.set_postfix_str(f"{setting} {name}")
        entry = {"setting": setting, "group": groups[name], "network": name}
        if name in unbuilt:
            result["failed"].append({**entry, "stage": "build", "error": unbuilt[name]})
            continue
        if args.rescore and (setting, name, device, threads) not in reuse:
            result["failed"].append({**entry, "stage": "measure", "error": "not in --reuse"})
            continue
        try:
            one_network(entry, models[name], settings[setting], predictor, baselines,
                        reuse.get((setting, name, device, threads)), threads, args.target_s,
                        result, layers, dev)
        finally:  # after every network, even a failed or interrupted one
            result["measured_utc"][1] = _utc_now()
            result["summary"] = scores(result["networks"])
            result["summary_power"] = power_scores(result["networks"])
            if args.json:
                write_json(args.json, result)
    if args.calibrate:
        calibration = add_calibrated(result["networks"], layers)
        if args.save_calibrated:  # the predictor calibrated on every torchvision network here
            predictor.with_calibration(calibration).save(args.save_calibrated)
            print(f"wrote {args.save_calibrated}", file=sys.stderr)
        result["summary"] = scores(result["networks"])
        result["summary_power"] = power_scores(result["networks"])
        if args.json:
            write_json(args.json, result)
    return result


def zoo_settings(rows) -> set:
    """``(NET, input shape)`` of the real networks measured in ``rows`` (``profile --zoo``)."""
    return {(zoo.net_of(net_id), shape) for net_id, shape in zoo.network_inputs(rows).items()}


def add_calibrated(records: list[dict], layers: dict) -> dict:
    """The ``np_calibrated`` method: neuralpower with ``neuralpower.calibrate`` fitted on the
    measured torchvision networks of this run, each torchvision network left out of its own
    calibration (all its settings together), the timm networks predicted by the calibration of
    all torchvision ones: held out, as they are from development. Returns that calibration (of
    all the run's torchvision networks)."""
    def observed(r):
        kinds, runtime = layers[(r["setting"], r["network"])]
        return Observed(r["network"], kinds, runtime, r["measured"]["runtime_ms"], r["speed"],
                        r["setting"])

    torchvision = [r for r in records if r["group"] == "torchvision"]
    fitted = {}
    for r in records:
        key = r["network"] if r["group"] == "torchvision" else None
        if key not in fitted:
            train = [observed(o) for o in torchvision if o["network"] != key]
            fitted[key] = fit_calibration(train)
        kinds, runtime = layers[(r["setting"], r["network"])]
        r["predicted_ms"][CALIBRATED] = float(apply(fitted[key], kinds, runtime).sum()) * r["speed"]
        r["error_pct"][CALIBRATED] = error_pct(r["predicted_ms"][CALIBRATED],
                                               r["measured"]["runtime_ms"])
        pw = r.get("power")
        if pw and pw["predicted_w"] is not None:  # energy: predicted power x calibrated runtime
            pw["calibrated_mj"] = pw["predicted_w"] * r["predicted_ms"][CALIBRATED]
            pw["error_pct"]["calibrated_mj"] = error_pct(pw["calibrated_mj"],
                                                         r["measured"].get("energy_mj"))
    if None not in fitted:  # no timm network in the run
        fitted[None] = fit_calibration([observed(o) for o in torchvision])
    return fitted[None]


def one_network(entry, meta_model, shape, predictor, baselines, measured, threads, target_s,
                result, layers, device="cpu") -> None:
    """Trace, predict with every method, measure unless ``measured`` is given; append the
    record (or the failure) to ``result``."""
    name = entry["network"]
    try:
        table = trace(meta_model, shape)
    except Exception as e:  # a net that takes one input size only (ViT at 160x160)
        result["failed"].append({**entry, "stage": "trace", "error": one_line(e)})
        return
    reused = measured is not None
    if not reused:
        try:
            m = measure_alone(name, shape, threads, target_s, device)
        except Exception as e:  # out of memory, say: recorded, the rest still runs
            result["failed"].append({**entry, "stage": "measure", "error": one_line(e)})
            return
        measured = {k: m[k] for k in ("runtime_ms", "runtime_iqr_ms", "runtime_min_ms",
                                      "repeats", "device", "threads", "other_cpu_pct",
                                      "reference_ms", "reference_ops_ms", "power_w", "energy_mj",
                                      "power_source")
                    if k in m}
        measured["target_s"] = target_s
    # neuralpower predicts for the phase the device was in (its small-ops probe; the
    # baselines take the layers' shapes only)
    p = predict(table, shape, predictor, network=name,
                ops_probe_ms=measured.get("reference_ops_ms"))
    layers[(entry["setting"], name)] = (p.modeled.kind.to_numpy(), p.modeled.runtime_ms.to_numpy())
    predicted = {"neuralpower": float(p.totals["runtime_ms"]),
                 **{n: network_runtime(b, table) for n, b in baselines.items()}}
    # every method predicts at the reference speed of the data it was fitted on; take it to
    # the device's speed during the measurement (timing.Reference)
    speed = predictor.speed(measured.get("reference_ms"))
    predicted = {k: v * speed for k, v in predicted.items()}
    result["reused" if reused else "measured_in_run"] += 1
    macs = p.totals["macs"]
    # power and energy: neuralpower's alone (the baselines model runtime), where the predictor
    # has a power model and the device a sensor, at the measurement's speed (Prediction.at_speed)
    at_speed = p.at_speed(speed)
    power = {"predicted_w": _finite(at_speed["power_w"]),
             "predicted_mj": _finite(at_speed["energy_mj"])}
    power["error_pct"] = {"power_w": error_pct(power["predicted_w"], measured.get("power_w")),
                          "energy_mj": error_pct(power["predicted_mj"], measured.get("energy_mj"))}
    result["networks"].append({"power": power,
        **entry, "measured": measured, "reused": reused, "predicted_ms": predicted, "speed": speed,
        "error_pct": {k: error_pct(v, measured["runtime_ms"]) for k, v in predicted.items()},
        "macs": macs, "unmodeled_macs": p.totals["unmodeled_macs"],
        "unmodeled_macs_pct": 100.0 * p.totals["unmodeled_macs"] / macs if macs else 0.0,
        "layers_modeled": p.totals["layers_modeled"],
        "layers_unmodeled": p.totals["layers_unmodeled"]})


def report(result: dict, reuse_path) -> str:
    out = [f"Measured on {result['device']} (torch {result['torch']}, {result['threads']} "
           f"threads); predictor {result['predictor']} ({result['predictor_device']}); "
           f"baselines fitted on {', '.join(result['data'])}.",
           f"Networks measured in this run: {result['measured_in_run']}; reused from "
           f"{reuse_path or '(no --reuse)'}: {result['reused']}; taken on a busy machine (⚠: "
           f"other processes used > {BUSY_OTHER_CPU_PCT:.0f} % of the CPU, or IQR > "
           f"{NOISY_IQR_PCT:.0f} % of the median): "
           f"{sum(noisy(r['measured']) for r in result['networks'])}.",
           f"Benchmark networks whose layers the fitting data measured at the same input "
           f"(profile --zoo; in-sample): {len(result.get('in_data', []))}"
           + (f" ({', '.join(result['in_data'])})" if result.get("in_data") else "") + ".",
           "Kinds modeled (each method's total covers these only): " + "; ".join(
               f"{m}: {', '.join(k)}" for m, k in result["kinds_modeled"].items()), ""]
    for setting in dict.fromkeys(r["setting"] for r in result["networks"]):
        out += [f"### {setting}", "",
                network_table([r for r in result["networks"] if r["setting"] == setting]), ""]
    if result["failed"]:
        out += ["Not scored:"] + [f"- {f['setting']} {f['network']}: {f['stage']} failed "
                                  f"({f['error']})" for f in result["failed"]] + [""]
    paleo = result["baselines"].get("paleo", {}).get("per_kind", {})
    if paleo:
        rate = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
        out += ["Paleo's fitted effective rates: " + "; ".join(
            f"{k} {rate(c['gmacs_per_s'])} GMAC/s, {rate(c['gbytes_per_s'])} GB/s, "
            f"{1e3 * c['overhead_ms']:.0f} µs overhead" for k, c in paleo.items()), ""]
    out += ["### Summary (goals: median |error| ≤ 5 %, ≥ 90 % within ±10 %, "
            "Kendall tau ≥ 0.9)",
            "", summary_table(result["summary"])]
    by_phase = phase_scores(result["networks"])
    if by_phase:
        out += ["", f"### neuralpower by the host's phase (small-ops probe up to {PHASE_SLOW:g} "
                "times its fastest in the run: fast; above: slow)", "",
                markdown(["setting", "group", "phase", "networks", "median abs error %",
                          "within ±10 %", "Kendall tau"],
                         [[s["setting"], s["group"], s["phase"], s["n"], *score_cells(s)]
                          for s in by_phase])]
    if result.get("summary_power"):
        measured = [r for r in result["networks"] if r["measured"].get("power_w") is not None]
        out += ["", f"### Power and energy (neuralpower; measured by "
                f"{measured[0]['measured'].get('power_source')})", ""]
        for setting in dict.fromkeys(r["setting"] for r in measured):
            out += [f"{setting}:", "", power_table([r for r in measured
                                                    if r["setting"] == setting]), ""]
        out += [markdown(["setting", "group", "total", "networks", "median abs error %",
                          "within ±10 %", "Kendall tau"],
                         [[s["setting"], s["group"], s["target"], s["n"], *score_cells(s)]
                          for s in result["summary_power"]])]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True, type=Path, help="predictor file")
    ap.add_argument("--data", required=True, nargs="+", type=Path,
                    help="measurement CSV(s) to fit the baselines on (the predictor's own)")
    ap.add_argument("--nets", nargs="*", default=TORCHVISION,
                    help="torchvision networks (NAME or SOURCE:NAME; default: 27 classifiers)")
    ap.add_argument("--timm", nargs="*", default=TIMM,
                    help="held-out timm networks (default: 11; '--timm' alone for none)")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, help="input shapes")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu); on a "
                    "device with a power sensor, network power and energy are scored too")
    ap.add_argument("--target-s", type=float, default=1.0,
                    help="seconds of repeats per measurement (default 1.0)")
    ap.add_argument("--json", type=Path, help="write all numbers here (after every network)")
    ap.add_argument("--reuse", type=Path, help="take measurements from this earlier --json")
    ap.add_argument("--rescore", action="store_true", help="measure nothing: score the "
                    "--reuse file's measurements (of any device, noisy ones too) alone")
    ap.add_argument("--save-calibrated", type=Path, metavar="OUT", help="with --calibrate: "
                    "write the predictor calibrated on every torchvision network of the run "
                    "(as `neuralpower calibrate` would; the timm networks stay out)")
    ap.add_argument("--calibrate", action="store_true", help="also score neuralpower calibrated "
                    "on the run's torchvision networks (np_calibrated: each left out of its own "
                    "calibration; timm held out)")
    args = ap.parse_args(argv)
    try:
        result = run(args)
    except NeuralPowerError as e:
        print(f"network_accuracy: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("network_accuracy: interrupted" + (f" ({args.json} has every network done so far; "
              "--reuse it to go on)" if args.json else ""), file=sys.stderr)
        return 130
    print(report(result, args.reuse))
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    script_exit(main)
