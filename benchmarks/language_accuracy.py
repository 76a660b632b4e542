"""Language models: predicted against measured on this CPU, for one or more predictors.

Each (network, input) is measured once, in a fresh process (``measure_fresh``, as ``validate``
does), and every predictor given is scored on that same measurement, its prediction taken to the
speed the device ran at meanwhile (the speed probe). Networks are transformers model types at
their default configurations (``transformers:TYPE``, ``/lm`` with the language-model head):
those the text zoo never measures (``held out``: no layer of theirs was profiled) and a few it
does (``in zoo``: their layers were profiled at other lengths and batches).

    python benchmarks/language_accuracy.py --predictor models/amd_epyc_2t_cpu.predictor \
        [--predictor OTHER.predictor ...] [--inputs 1x128:int64 8x64:int64 1x256:int64] \
        [--nets NET ...] [--json OUT.json] [--reuse EARLIER.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor, nets, predict  # noqa: E402
from neuralpower.inputs import parse, text  # noqa: E402
from neuralpower.measure import measure_fresh  # noqa: E402
from neuralpower.profiling import zoo  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

HELD_OUT = ["transformers:distilbert", "transformers:mpnet", "transformers:opt",
            "transformers:opt/lm", "transformers:gpt_bigcode", "transformers:gpt_bigcode/lm",
            "transformers:modernbert", "transformers:data2vec-text", "transformers:nomic_bert"]
IN_ZOO = ["transformers:bert", "transformers:gpt2/lm", "transformers:roberta",
          "transformers:electra"]
assert not {n.split(":")[1].split("/")[0] for n in HELD_OUT} & set(zoo.TEXT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", action="append", required=True, help="predictor file(s)")
    ap.add_argument("--inputs", nargs="+", default=["1x128:int64", "8x64:int64", "1x256:int64"])
    ap.add_argument("--nets", nargs="+", help="NETs (default: the held-out and in-zoo lists)")
    ap.add_argument("--json", help="write every measurement and prediction here")
    ap.add_argument("--reuse", help="measure nothing: score the measurements of this earlier "
                    "--json (its networks and inputs)")
    args = ap.parse_args(argv)
    predictors = {Path(p).stem: Predictor.load(p) for p in args.predictor}
    names = args.nets or HELD_OUT + IN_ZOO
    earlier = {}
    if args.reuse:
        stored = json.loads(Path(args.reuse).read_text())["rows"]
        earlier = {(r["input"], r["network"]): r for r in stored}
        args.inputs = list(dict.fromkeys(i for i, _ in earlier))
        names = list(dict.fromkeys(n for _, n in earlier))
    rows = []
    for spec in args.inputs:
        shape = parse(spec)[0]
        for name in names:
            if earlier:
                r = earlier.get((spec, name))
                if r is None:
                    continue
                m = {"runtime_ms": r["measured_ms"], "runtime_iqr_ms": r["iqr_pct"]
                     * r["measured_ms"] / 100, "reference_ms": r["reference_ms"],
                     "reference_ops_ms": r["reference_ops_ms"]}
            else:
                m = measure_fresh(name, shape, "cpu")
            row = {"input": text([shape]), "network": name,
                   "group": "in zoo" if name in IN_ZOO else "held out",
                   "measured_ms": m["runtime_ms"], "iqr_pct": 100 * m["runtime_iqr_ms"]
                   / m["runtime_ms"], "reference_ms": m["reference_ms"],
                   "reference_ops_ms": m["reference_ops_ms"]}
            for label, predictor in predictors.items():
                p = predict(nets.build(name), shape, predictor, network=name,
                            ops_probe_ms=m.get("reference_ops_ms"))
                speed = predictor.speed(m["reference_ms"])
                row[f"{label} ms"] = p.at_speed(speed)["runtime_ms"]
                row[f"{label} err %"] = 100 * (row[f"{label} ms"] / m["runtime_ms"] - 1)
                row[f"{label} unmodeled"] = int(p.totals.get("layers_unmodeled", 0))
            rows.append(row)
            print(f"  {row['input']} {name}: measured {m['runtime_ms']:.1f} ms, "
                  + ", ".join(f"{k} {row[f'{k} err %']:+.1f} %" for k in predictors),
                  file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(table.round(1).to_string(index=False))
    print()
    summary = []
    for (setting, group), part in [*table.groupby(["input", "group"]),
                                   *[((s, "all"), p) for s, p in table.groupby("input")]]:
        for label in predictors:
            err = part[f"{label} err %"].abs()
            tau = (kendalltau(part[f"{label} ms"], part.measured_ms).statistic
                   if len(part) > 1 else np.nan)
            summary.append({"input": setting, "group": group, "predictor": label,
                            "n": len(part), "median |err| %": round(float(err.median()), 1),
                            "within ±10 %": f"{100 * float((err <= 10).mean()):.0f} %",
                            "tau": round(float(tau), 2)})
    print(pd.DataFrame(summary).to_string(index=False))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    script_exit(main)
