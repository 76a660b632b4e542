"""Why pooling misses issue 3's 10 %: which average pools the held-out error comes from.

For each zoo campaign: fit on a random 80 % of its pooling rows (seed 0, as
``profile_accuracy.py``), predict the other 20 %, and split the held-out ``avg_pool2d`` rows into
the classifier head's global pool (a top-level module, ``avgpool``) and the pools inside blocks
(squeeze-and-excitation, mostly): their count, the mean and spread of log(predicted / measured)
and the rows' own measurement spread (inter-quartile range over median).

    python benchmarks/pool_context.py [CSV ...]   (default: the dev CPU's zoo campaigns)
"""
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor  # noqa: E402
from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.regression import rmspe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from profile_accuracy import KINDS, held_out  # noqa: E402  (its split, beside this file)


def held_out_pools(path) -> pd.DataFrame:
    rows, _ = at_reference_speed(load(path))
    rows = rows[rows.kind.isin(KINDS)].reset_index(drop=True)
    test = held_out(rows, "rows")
    pools = rows.kind.isin(["max_pool2d", "avg_pool2d"]).to_numpy()
    p = Predictor.fit(rows[pools & ~test], log=lambda m: None)
    held = rows[pools & test]
    parts = []
    for kind in ("avg_pool2d", "max_pool2d"):
        part = held[held.kind == kind]
        parts.append(part.assign(pred=p.predict_rows(part, kind).runtime_ms.to_numpy()))
    return pd.concat(parts)


def main(argv) -> int:
    paths = argv or sorted(str(p) for p in (ROOT / "profiling" / "dev_cpu").glob("*_zoo*.csv.gz"))
    print("| campaign | pooling RMSPE % | avg_pool2d RMSPE % | pools | n | mean log(pred/meas) "
          "| sd | median IQR % of median |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        h = held_out_pools(path)
        avg = h[h.kind == "avg_pool2d"]
        head = ~avg.layer.astype(str).str.contains(".", regex=False)
        for name, part in (("head (top-level)", avg[head]), ("in blocks", avg[~head])):
            lr = np.log(part.pred / part.runtime_ms)
            iqr = 100 * (part.runtime_iqr_ms / part.runtime_ms).median()
            print(f"| {Path(path).name} | {rmspe(h.runtime_ms, h.pred):.1f} | "
                  f"{rmspe(avg.runtime_ms, avg.pred):.1f} | {name} | {len(part)} | "
                  f"{lr.mean():+.2f} | {lr.std():.2f} | {iqr:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    script_exit(main, sys.argv[1:])
