"""Adaptive against uniform profiling: held-out error against profiling time, for both.

    python benchmarks/adaptive_profiling.py [--budget 240] [--heldout-budget 180] [--out DIR]
    python benchmarks/adaptive_profiling.py --zoo --budget 600 \
        --heldout profiling/dev_cpu/amd_epyc_2t_zoo_s6.csv.gz --out benchmarks/results/adaptive_zoo

Runs three CPU campaigns on this machine: a held-out one (uniform, its own seed: networks neither
of the others sees), then a uniform and an adaptive one (``profile --adaptive``) of the same seed
and budget, one after the other. For each of the two, it fits a predictor on the rows measured
within each cut of the profiling time and scores its runtime on the held-out campaign (per-kind
RMSPE, predictions brought to the speed each held-out row was measured at). Prints both curves
(the median over kinds, and per kind) and writes them as a PNG and JSON. Issue 7's goal: adaptive
reaches uniform's final held-out error in half the time.

``--zoo`` runs real networks instead (``profile --zoo``, with and without ``--adaptive``), and
``--heldout FILE`` scores on an existing campaign instead of measuring one (its rows are
predicted at the speed each was measured at, by the probe).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor  # noqa: E402
from neuralpower.data import load  # noqa: E402
from neuralpower.profiling import Campaign  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def campaign(path: Path, budget: float, seed: int, adaptive: bool, zoo: bool = False) -> None:
    if path.exists():
        print(f"{path} exists: reusing it", file=sys.stderr)
        return
    start = time.perf_counter()
    s = Campaign(path, seed=seed, adaptive=adaptive, zoo=zoo).run(budget_s=budget,
                                                                   progress=False)
    print(f"{path.name}: {s['networks']} networks, {s['rows']} rows in "
          f"{time.perf_counter() - start:.0f} s", file=sys.stderr)


def curve(path: Path, heldout: pd.DataFrame, cuts) -> list[dict]:
    rows = load(path)
    out = []
    for cut in cuts:
        train = rows[rows.campaign_s <= cut]
        predictor = Predictor.fit(train, log=lambda m: None)
        scores = predictor.score(heldout)
        per_kind = {k: round(v["runtime_ms"]["rmspe_pct"], 1) for k, v in scores.items()
                    if "runtime_ms" in v}
        out.append({"seconds": cut, "rows": len(train), "kinds": per_kind,
                    "median_rmspe_pct": round(float(np.median(list(per_kind.values()))), 1)})
        print(f"  {path.stem} {cut:>5.0f} s {len(train):>5} rows: median over kinds "
              f"{out[-1]['median_rmspe_pct']:.1f} %", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=240)
    ap.add_argument("--heldout-budget", type=float, default=180)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cuts", type=int, default=4, help="profiling-time cuts scored")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adaptive"))
    ap.add_argument("--zoo", action="store_true", help="real networks (profile --zoo)")
    ap.add_argument("--heldout", help="score on this campaign instead of measuring one")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.heldout:
        campaign(out / "heldout.csv", args.heldout_budget, seed=args.seed + 1000,
                 adaptive=False, zoo=args.zoo)
    campaign(out / "uniform.csv", args.budget, seed=args.seed, adaptive=False, zoo=args.zoo)
    campaign(out / "adaptive.csv", args.budget, seed=args.seed, adaptive=True, zoo=args.zoo)
    heldout = load(args.heldout or out / "heldout.csv")
    cuts = [args.budget * (i + 1) / args.cuts for i in range(args.cuts)]
    result = {name: curve(out / f"{name}.csv", heldout, cuts) for name in ("uniform", "adaptive")}
    kinds = sorted(set(result["uniform"][-1]["kinds"]) & set(result["adaptive"][-1]["kinds"]))
    table = pd.DataFrame(
        [{"seconds": u["seconds"], "uniform rows": u["rows"], "adaptive rows": a["rows"],
          "uniform median %": u["median_rmspe_pct"], "adaptive median %": a["median_rmspe_pct"]}
         for u, a in zip(result["uniform"], result["adaptive"])])
    print("held-out runtime RMSPE (%), median over kinds, by profiling time")
    print(table.to_string(index=False))
    last = pd.DataFrame({name: {k: result[name][-1]["kinds"].get(k) for k in kinds}
                         for name in result})
    print(f"\nper kind at {cuts[-1]:.0f} s:\n{last.to_string()}")
    target = result["uniform"][-1]["median_rmspe_pct"]
    reached = next((a["seconds"] for a in result["adaptive"] if a["median_rmspe_pct"] <= target),
                   None)
    print(f"\nuniform's final median error {target:.1f} %: adaptive reaches it at "
          + (f"{reached:.0f} s ({100 * reached / cuts[-1]:.0f} % of the time; goal 50 %)"
             if reached else "no cut (not within the budget)"))
    (out / "curves.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, out / "curves.png")
    print(f"wrote {out / 'curves.json'} and {out / 'curves.png'}")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in result.items():
        ax.plot([p["seconds"] for p in points], [p["median_rmspe_pct"] for p in points],
                marker="o", label=name)
    ax.set_xlabel("profiling time (s)")
    ax.set_ylabel("held-out runtime RMSPE, median over kinds (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    script_exit(main)
