"""Coverage: does every timm architecture, and every language model of transformers, build,
trace and predict, and which ops stay unmodeled?

    python benchmarks/coverage.py [--source timm|transformers] [--limit N] [--jobs 2]
        [--predictor models/intel_xeon_2t_cpu.predictor] [--out benchmarks/results/coverage_timm.md]

``timm``: each architecture of ``timm.list_models()``, predicted at its own default input
(``pretrained_cfg['input_size']``, batch 1). ``transformers``: each model type with a causal or
masked language-model head, as ``transformers:TYPE/lm`` at its default configuration, predicted
at ``1x128:int64``. Each is built on the meta device the way ``neuralpower predict`` builds it
(``nets.build``: no weights). Prints how many traced and predicted, the failures grouped by
message (a failure not caught as one line is the tool's bug, and the exit status says so), how
many are covered op for op (no unmodeled op), and the unmodeled kinds by the number of models
that have them. The tests trace a handful of models; this walks all of them (timm 1.0's 1,371
architectures in about 5 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_PREDICTOR = None


def _init(path: str) -> None:
    global _PREDICTOR
    import resource

    import torch
    # a model that allocates real weights despite the meta device fails, not the machine
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, resource.RLIM_INFINITY))

    from neuralpower import Predictor
    torch.set_num_threads(1)
    _PREDICTOR = Predictor.load(path)


def _one(net: str) -> dict:
    from neuralpower import NeuralPowerError, predict
    from neuralpower.errors import first_line
    from neuralpower.nets import build

    out = {"name": net.split(":", 1)[1]}
    start = time.perf_counter()
    try:
        model = build(net)
        if net.startswith("timm:"):
            size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
            out["input"] = "x".join(str(v) for v in (1, *size))
        else:
            out["input"] = "1x128:int64"
        p = predict(model, out["input"], _PREDICTOR)
        out["ops"] = p.totals["layers_modeled"] + p.totals["layers_unmodeled"]
        out["unmodeled"] = dict(zip(p.unmodeled["kind"], p.unmodeled["count"])) \
            if len(p.unmodeled) else {}
    except NeuralPowerError as e:
        out["error"] = str(e)
    except MemoryError:
        out["error"] = "MemoryError: over the 8 GiB this benchmark gives a model"
    except Exception as e:  # noqa: BLE001 -- what the tool let through is the finding
        out["error"] = f"UNCAUGHT {first_line(e)}"
    out["s"] = time.perf_counter() - start
    return out


def report(results: list[dict], predictor: str) -> str:
    ok = [r for r in results if "error" not in r]
    failed = [r for r in results if "error" in r]
    covered = [r for r in ok if not r["unmodeled"]]
    lines = [f"models: {len(results)}; traced and predicted: {len(ok)}; failed: "
             f"{len(failed)} ({sum('UNCAUGHT' in r['error'] for r in failed)} not caught as a "
             f"one-line error)",
             f"covered op for op by {predictor}: {len(covered)} of {len(ok)}; ops unmodeled: "
             f"{sum(sum(r['unmodeled'].values()) for r in ok)} of {sum(r['ops'] for r in ok)}",
             f"seconds per architecture: median {sorted(r['s'] for r in results)[len(results) // 2]:.2f}, "
             f"max {max(r['s'] for r in results):.1f}", ""]
    by_error = collections.defaultdict(list)
    for r in failed:
        # the message past the model's own name, so one cause groups across architectures
        by_error[r["error"].split(": ", 1)[-1]].append(r["name"])
    if by_error:
        lines += ["| failures | message | architectures |", "|---|---|---|"]
        for msg, names in sorted(by_error.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            lines.append(f"| {len(names)} | {msg[:120]} | {shown} |")
        lines.append("")
    kinds = collections.Counter(k for r in ok for k in r["unmodeled"])
    ops = collections.Counter()
    for r in ok:
        ops.update(r["unmodeled"])
    lines += ["| unmodeled kind | architectures | ops | e.g. |", "|---|---|---|---|"]
    for kind, n in kinds.most_common(25):
        eg = ", ".join(r["name"] for r in ok if kind in r["unmodeled"])[:60]
        lines.append(f"| {kind} | {n} | {ops[kind]} | {eg} |")
    slow = sorted(results, key=lambda r: -r["s"])[:3]
    lines += ["", "slowest: " + ", ".join(f"{r['name']} {r['s']:.1f} s" for r in slow)]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", choices=["timm", "transformers"], default="timm")
    ap.add_argument("--predictor", default=str(ROOT / "models" / "intel_xeon_2t_cpu.predictor"))
    ap.add_argument("--limit", type=int, help="only the first N architectures")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    if args.source == "timm":
        import timm as lib
        nets = [f"timm:{n}" for n in lib.list_models()]
    else:
        import transformers as lib
        from transformers.models.auto import modeling_auto as auto
        nets = [f"transformers:{t}/lm" for t in sorted(
            {*auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, *auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES})]
    nets = nets[:args.limit]
    # a fresh worker every 20 models: the libraries' registries and caches grow
    with multiprocessing.get_context("spawn").Pool(args.jobs, _init, (args.predictor,),
                                                   maxtasksperchild=20) as pool:
        results = list(tqdm(pool.imap_unordered(_one, nets), total=len(nets), unit="model"))
    text = (f"{args.source} {lib.__version__}, predictor `{Path(args.predictor).name}`\n\n"
            + report(sorted(results, key=lambda r: r["name"]), Path(args.predictor).name))
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if all("UNCAUGHT" not in r.get("error", "") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
