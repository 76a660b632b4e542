"""Adaptive zoo profiling replayed on measured campaigns: is one live run's result luck?

    python benchmarks/adaptive_replay.py --campaigns profiling/dev_cpu/amd_epyc_2t_zoo_s4.csv.gz \
        profiling/dev_cpu/amd_epyc_2t_zoo_s5.csv.gz profiling/dev_cpu/amd_epyc_2t_zoo_s6.csv.gz

A live comparison (``adaptive_profiling.py --zoo``) costs two campaigns of machine time and gives
one sample of a noisy measurement. This replays the choice on zoo campaigns already measured,
every way round: for each ordering (A, B, C) of the campaigns, the uniform arm is A as it was
measured, network by network; the adaptive arm measures A's first 30 % too, then every 15 %
estimates each kind's error from its rows so far (``adaptive.kind_errors``, as a campaign does)
and takes as its next network the best of six drawn at random (seeded) from the networks of A
and B it has not taken: the most estimated error (``adaptive.worth`` of its measured rows, as
``adaptive.choose`` weighs a zoo campaign's candidates) per second it took to measure, plus
``--overhead`` seconds of choosing (0.5 s a choice measured, ``profiling/adaptive.py``). Each
arm is fitted at half and at all of ``--budget`` and scored on every row of C (runtime RMSPE
per kind, brought to the speed each row was measured at; the median over kinds as
``adaptive_profiling.py`` prints it).

What differs from a live campaign: the candidates are networks measured before (a campaign
draws new ones) and their measuring time is known (a campaign estimates it from the trace).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor  # noqa: E402
from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.profiling import adaptive  # noqa: E402
from neuralpower.profiling.synthetic import PROFILED_KINDS  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

GOAL_KINDS = ["conv2d", "linear", "max_pool2d", "avg_pool2d"]


def networks(rows: pd.DataFrame) -> list[tuple[pd.DataFrame, float]]:
    """(rows, seconds it took) of each network of a campaign, in the order it was measured."""
    ends = rows.groupby("network", sort=False).campaign_s.max().sort_values()
    took = np.diff(np.r_[0.0, ends.to_numpy()])
    return [(rows[rows.network == net], s) for net, s in zip(ends.index, took)]


def adaptive_arm(first: list, others: list, budget: float, overhead: float, seed: int) -> list:
    rng = np.random.default_rng(seed)
    taken, spent, pool = [], 0.0, list(first) + list(others)
    while spent < adaptive.FIRST_SHARE * budget and pool:
        taken.append(pool.pop(0))
        spent += taken[-1][1]
    refit_at, weight = spent, None
    while spent < budget and pool:
        if spent >= refit_at:
            so_far = pd.concat([rows for rows, _ in taken], ignore_index=True)
            weight = adaptive.weights(adaptive.kind_errors(so_far, PROFILED_KINDS))
            counts = so_far.kind.value_counts().to_dict()
            refit_at = spent + adaptive.REFIT_SHARE * budget
        drawn = rng.choice(len(pool), size=min(adaptive.CANDIDATES, len(pool)), replace=False)
        best = max(drawn, key=lambda i: adaptive.worth(pool[i][0].kind, weight, counts)
                   / (pool[i][1] + overhead))
        rows, took = pool.pop(best)
        adaptive.count(counts, rows.kind)
        taken.append((rows, took + overhead))
        spent += took + overhead
    return taken


def scores(arm: list, test: pd.DataFrame, seconds: float) -> dict:
    ends = np.cumsum([s for _, s in arm])
    train = pd.concat([rows for (rows, _), end in zip(arm, ends) if end <= seconds],
                      ignore_index=True)
    per_kind = {k: v["runtime_ms"]["rmspe_pct"]
                for k, v in Predictor.fit(train, log=lambda m: None).score(test).items()
                if "runtime_ms" in v}
    return {"networks": int((ends <= seconds).sum()), "rows": len(train),
            "median %": round(float(np.median(list(per_kind.values()))), 1),
            **{k: round(per_kind[k], 1) for k in GOAL_KINDS if k in per_kind}}


def ordering(first: pd.DataFrame, also: pd.DataFrame, test: pd.DataFrame, names: list,
             budget: float, overhead: float) -> list[dict]:
    """Both arms of one ordering, scored at half and all of the budget."""
    uniform = networks(first)
    chosen = adaptive_arm(uniform, networks(also), budget, overhead, seed=0)
    return [{"uniform from": names[0], "pool also": names[1], "test": names[2], "arm": name,
             "seconds": budget * share, **scores(arm, test, budget * share)}
            for arm, name in ((uniform, "uniform"), (chosen, "adaptive"))
            for share in (0.5, 1.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", nargs=3, required=True, help="three zoo campaigns")
    ap.add_argument("--budget", type=float, default=600)
    ap.add_argument("--overhead", type=float, default=0.5,
                    help="seconds of choosing per adaptive network (default 0.5)")
    ap.add_argument("--jobs", type=int, default=2, help="orderings replayed at once")
    args = ap.parse_args()
    loaded = [load(p) for p in args.campaigns]
    _, nominal = at_reference_speed(loaded[0])  # every campaign at the first one's speed
    scaled = [at_reference_speed(d, nominal)[0] for d in loaded]
    names = [Path(p).name.split(".")[0] for p in args.campaigns]
    from joblib import Parallel, delayed

    lines = Parallel(n_jobs=args.jobs)(
        delayed(ordering)(scaled[a], scaled[b], loaded[c], [names[i] for i in (a, b, c)],
                          args.budget, args.overhead)
        for a, b, c in itertools.permutations(range(3)))
    table = [line for part in lines for line in part]
    out = pd.DataFrame(table)
    print(out.to_string(index=False))
    goal = out.pivot_table(index=["uniform from", "pool also", "test"], columns=["arm", "seconds"],
                           values="median %")
    half, full = args.budget / 2, args.budget
    met = goal[("adaptive", half)] <= goal[("uniform", full)]
    print(f"\nadaptive at {half:.0f} s at or below uniform at {full:.0f} s (median over kinds): "
          f"{int(met.sum())} of {len(met)} orderings")


if __name__ == "__main__":
    script_exit(main)
