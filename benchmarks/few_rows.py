"""Models of a few rows (fewer than 8: no cross-validation), held out on the rest of a kind.

A model of under 8 rows is a power law in one feature. This compares the one the fit uses (the
layer's work: MACs, else the elements it reads or writes; no slope where the rows say less for
more work) with the column that follows the target best (the rule before 2026-12-06) and with
a constant (the rows' geometric mean). For each kind with at least 30 rows of a target, 15
seeded draws of n rows; the RMSPE and median APE of the other rows of that kind; medians over
draws, then over kinds.

    python benchmarks/few_rows.py FILE [FILE ...]      # one device's files
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.features import features  # noqa: E402
from neuralpower.regression import _best_column, fit_regressor  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def errors(pred, y):
    e = pred / y - 1
    return 100 * float(np.sqrt(np.mean(e ** 2))), 100 * float(np.median(np.abs(e)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 3, 5])
    ap.add_argument("--draws", type=int, default=15)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows, _ = at_reference_speed(load(args.files))
    rng = np.random.default_rng(0)
    out = []
    for target in ("runtime_ms", "power_w"):
        for kind, r in rows.groupby("kind"):
            r = r[pd.to_numeric(r[target], errors="coerce") > 0]
            if len(r) < 30:
                continue
            X, y = features(r, kind).reset_index(drop=True), r[target].to_numpy(float)
            for n in args.sizes:
                for _ in range(args.draws):
                    fit = rng.choice(len(y), n, replace=False)
                    rest = np.setdiff1d(np.arange(len(y)), fit)
                    model, _ = fit_regressor(X.iloc[fit], y[fit])
                    used = errors(model.predict(X.iloc[rest]), y[rest])
                    col = [_best_column(X.iloc[fit], np.log(y[fit]))]
                    model, _ = fit_regressor(X.iloc[fit][col], y[fit])
                    best = errors(model.predict(X.iloc[rest][col]), y[rest])
                    const = errors(np.full(len(rest), np.exp(np.log(y[fit]).mean())), y[rest])
                    out.append((target, n, kind, *used, *best, *const))
    d = pd.DataFrame(out, columns=["target", "n", "kind", "work RMSPE", "work median",
                                   "best column RMSPE", "best column median", "constant RMSPE",
                                   "constant median"])
    table = d.groupby(["target", "n", "kind"]).median().groupby(["target", "n"]).median()
    print(f"{', '.join(args.files)}: held-out % (medians over {args.draws} draws, then kinds)")
    print(table.round(1).to_string())


if __name__ == "__main__":
    script_exit(main)
