"""How much of the public files' held-out error is the order the rows were measured in.

For each public file, kind and target, on the split of ``public_accuracy.py`` (80/20, seed 0):
the held-out RMSPE of ``fit`` as shipped; the mean log error (prediction over measurement) of
the held-out rows by fifth of the file, in file order (the order a campaign wrote its rows in,
as far as one can tell: nothing else in the NeuSight files changes along it); and the held-out
RMSPE of the same fit given each row's place in the file as one
more feature. That feature is no layer's property and no predictor can have it: the last
column says what the goal would need that the layers cannot give, where a drift over the
campaign (a device getting slower as it ran) is in the measurements.

    python benchmarks/public_drift.py [CSV ...]       # about 100 s on 2 cores
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from neuralpower.features import features  # noqa: E402
from neuralpower.regression import fit_regressor, rmspe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from public_accuracy import PUBLIC, markdown, recipe_figures, splits  # noqa: E402


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])] or sorted(
        PUBLIC.glob("*.csv"))
    recipe = recipe_figures(PUBLIC / "README.md")
    rows = []
    for path in paths:
        data = pd.read_csv(path)   # its index is the row's place in the file
        for kind, target, train, test in splits(data):
            y, y_test = train[target].to_numpy(float), test[target].to_numpy(float)
            X, X_test = features(train, kind), features(test, kind)
            pred = fit_regressor(X, y)[0].predict(X_test)
            place = fit_regressor(X.assign(file_row=train.index.to_numpy(float)), y)[0]
            pred_place = place.predict(X_test.assign(file_row=test.index.to_numpy(float)))
            fifth = pd.qcut(test.index, 5, labels=False)
            bias = pd.Series(np.log(pred / y_test)).groupby(fifth).mean()
            ref = recipe.get((path.stem, kind, target))
            rows.append({
                "file": path.stem, "kind": kind, "target": target,
                "rmspe_%": f"{rmspe(y_test, pred):.1f}",
                "goal_%": "–" if ref is None else f"{ref / 2:.1f}",
                "mean log error by fifth of the file": " ".join(f"{b:+.2f}" for b in bias),
                "rmspe_% with the row's place": f"{rmspe(y_test, pred_place):.1f}",
            })
            print(f"  {path.stem} {kind} {target}", file=sys.stderr, flush=True)
    print(markdown(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    script_exit(main)
