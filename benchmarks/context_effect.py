"""The context effect in a campaign: the same layer, measured at two places, runs at two speeds.

    python benchmarks/context_effect.py [--data profiling/dev_cpu/intel_xeon_2t.csv] [--out DIR]

Groups a campaign's rows (at the speed probe's speed, as ``fit`` reads them) by the exact layer
configuration (every feature column of the kind), and for configurations that occur more than once
prints the spread of their log runtime: within one network (the same layer twice in one network,
timed in the same runs) and over all networks. Then, within a network, how much slower the first
occurrence is than the later ones, and how the deviation follows the data the op before it
touched (``prev_elements``, as the tracer records it). A per-layer model sees one configuration
and so cannot predict that spread; compare it with ``benchmarks/repeatability.py`` (the same
layer in the same place, measured twice), which is what the timer alone scatters.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.features import INPUT_COLUMNS  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from public_accuracy import markdown  # noqa: E402

OPTIONAL = ["pad_h", "pad_w", "groups", "dilation_h", "dilation_w"]


def _pooled_sd(log_runtime: pd.Series, groups) -> tuple[float, int]:
    """Within-group standard deviation (pooled, unbiased) and the rows in groups of two or more."""
    by = log_runtime.groupby(groups)
    size = by.transform("size")
    dev = (log_runtime - by.transform("mean"))[size > 1]
    dof = int((by.size()[lambda s: s > 1] - 1).sum())
    return (float(np.sqrt((dev ** 2).sum() / dof)) if dof else float("nan")), int((size > 1).sum())


def effect(rows: pd.DataFrame, kind: str) -> dict | None:
    g = rows[rows.kind == kind]
    cols = [c for c in INPUT_COLUMNS[kind] + OPTIONAL if c in g]
    config = g[cols].fillna(-1).astype(float).astype(str).agg("|".join, axis=1)
    lr = np.log(g.runtime_ms.astype(float))
    same_sd, same_n = _pooled_sd(lr, [config, g.network])
    any_sd, any_n = _pooled_sd(lr, config)
    if same_n < 20:
        return None
    key = [config, g.network]
    twice = lr.groupby(key).transform("size") > 1
    dev = (lr - lr.groupby(key).transform("mean"))[twice]
    first = (g.position == g.position.groupby(key).transform("min"))[twice]
    prev = np.log(g.prev_elements.clip(lower=1).astype(float))
    prev_dev = (prev - prev.groupby(key).transform("mean"))[twice]
    corr = float(np.corrcoef(dev, prev_dev)[0, 1]) if prev_dev.std() > 0 else float("nan")
    return {"kind": kind, "rows twice in a network": same_n,
            "spread in a network %": round(100 * np.expm1(same_sd), 1),
            "rows twice anywhere": any_n, "spread anywhere %": round(100 * np.expm1(any_sd), 1),
            "first vs later %": round(100 * np.expm1(dev[first].mean() - dev[~first].mean()), 1),
            "corr with prev op's data": round(corr, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "profiling" / "dev_cpu" / "intel_xeon_2t.csv"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    rows, _ = at_reference_speed(load(args.data))
    rows = rows[rows.get("status", "ok") == "ok"]
    table = pd.DataFrame([e for k in sorted(set(rows.kind) & set(INPUT_COLUMNS))
                          if (e := effect(rows, k)) is not None])
    print(f"{args.data}: layers whose exact configuration occurs more than once "
          "(spread = exp(sd of log runtime) - 1)")
    print(table.to_string(index=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "context_effect.md").write_text(
        f"`python benchmarks/context_effect.py --data {args.data}`\n\n{markdown(table)}\n")
    print(f"wrote {out / 'context_effect.md'}")


if __name__ == "__main__":
    script_exit(main)
