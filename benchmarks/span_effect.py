"""What taking layers back onto the data's span changes: held-out errors with and without it.

A model's ``span`` (regression.LogLinkRegressor) lists the directions of its log inputs along
which the training rows hardly varied; a layer beyond them is predicted as the nearest layer on
them. The fit is the same either way, so each predictor is fitted once and scored twice: with
its spans, and with them removed (as a model fitted before them predicts).

    python benchmarks/span_effect.py --campaigns profiling/dev_cpu/*zoo*.csv.gz
    python benchmarks/span_effect.py --public profiling/public/*.csv profiling/unseen/*.csv

``--campaigns``: issue 3's test (``profile_accuracy.py --minutes 10``, rows held out and then
networks held out), runtime RMSPE % of conv2d, linear and pooling. ``--public``: the 80/20 split
of ``public_accuracy.py``, RMSPE % of every kind and target.
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from neuralpower import Predictor  # noqa: E402
from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.features import features  # noqa: E402
from neuralpower.regression import fit_regressor, rmspe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from profile_accuracy import KINDS, held_out, rmspe_by_kind  # noqa: E402
from public_accuracy import markdown, splits  # noqa: E402


def without_spans(models) -> int:
    """Remove every model's span; how many had one."""
    n = 0
    for model in models:
        if getattr(model, "span", None) is not None:
            model.span, n = None, n + 1
    return n


def campaigns(paths) -> pd.DataFrame:
    out = []
    for path in paths:
        rows, _ = at_reference_speed(load(path))
        rows = rows[rows.kind.isin(KINDS)].reset_index(drop=True)
        for unit in ("rows", "networks"):
            test = held_out(rows, unit)
            predictor = Predictor.fit(rows[~test & (rows.campaign_s <= 600)], log=lambda m: None)
            with_span = rmspe_by_kind(predictor, rows[test])
            spans = without_spans(predictor.models.values())
            before = rmspe_by_kind(predictor, rows[test])
            line = {"campaign": Path(path).name, "held out": unit}
            for kind in ("conv2d", "linear", "pooling"):
                line[kind] = f"{before[kind]} -> {with_span[kind]}"
            out.append({**line, "models with a span": spans})
            print(out[-1], file=sys.stderr, flush=True)
    return pd.DataFrame(out)


def public(paths) -> pd.DataFrame:
    out = []
    for path in paths:
        for kind, target, train, test in splits(pd.read_csv(path)):
            model, _ = fit_regressor(features(train, kind), train[target].to_numpy(float))
            X, y = features(test, kind), test[target].to_numpy(float)
            with_span = rmspe(y, model.predict(X))
            directions = len(model.span["basis"]) if model.span else 0
            without_spans([model])
            out.append({"file": Path(path).stem, "kind": kind, "target": target,
                        "RMSPE % without -> with": f"{rmspe(y, model.predict(X)):.2f} -> "
                                                   f"{with_span:.2f}",
                        "directions": directions})
            print(out[-1], file=sys.stderr, flush=True)
    return pd.DataFrame(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--campaigns", nargs="*", default=[], help="campaign CSVs (issue 3's test)")
    ap.add_argument("--public", nargs="*", default=[], help="public-format CSVs (80/20 split)")
    args = ap.parse_args()
    if not args.campaigns and not args.public:
        ap.error("give --campaigns or --public files")
    if args.campaigns:
        print("held-out runtime RMSPE % without -> with spans (10-minute fits)\n")
        print(markdown(campaigns(args.campaigns)) + "\n")
    if args.public:
        print("held-out RMSPE % without -> with spans (80/20 split, seed 0)\n")
        print(markdown(public(args.public)))


if __name__ == "__main__":
    script_exit(main)
