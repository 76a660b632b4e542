"""How fast a device is learned: held-out error against profiling time.

Runs a CPU campaign (or reads one), holds out a random 20 % of its rows (seed 0), fits on the
rows of the other 80 % measured within the first 1, 2, 5 and 10 minutes, and prints the held-out
runtime RMSPE per kind for each. Issue 3's goal: at most 10 % for conv2d, linear and pooling
after a 10-minute campaign on a 2-core CPU.

Every row is brought to the campaign's median speed by the speed probe's ratio to the power
`fit` reads off the training rows (``data.fitted_speed_exponent``; 1 where they cannot tell it,
column ``probe_power``), so a held-out row is scored as its measured time against a prediction
taken to its own probe's speed.

    python benchmarks/profile_accuracy.py                      # profiles for 10 minutes first
    python benchmarks/profile_accuracy.py --csv profiling/dev_cpu/amd_epyc_2t_zoo_s4.csv.gz
    python benchmarks/profile_accuracy.py --csv profiling/dev_cpu/intel_xeon_2t_zoo.csv.gz \
        --hold-out architectures

``--test OTHER.csv`` scores on every row of another campaign instead (the stricter test: a
different draw of networks, measured at another time; its rows are brought to the first
campaign's speed by the probe).

``--hold-out`` says what the 20 % are: rows (the default), whole networks, or whole
architectures (a ``profile --zoo`` campaign draws the same torchvision classifier at several
inputs; held out by name, none of its layers is seen in training; for synthetic campaigns it is
the same as networks). A layer repeated inside a network (a ResNet's blocks) has twins in
training when rows are held out, so the network splits are the stricter test.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor  # noqa: E402
from neuralpower.data import at_reference_speed, fitted_speed_exponent, load  # noqa: E402
from neuralpower.profiling import Campaign, zoo  # noqa: E402
from neuralpower.regression import rmspe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

KINDS = ["conv2d", "linear", "max_pool2d", "avg_pool2d"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", help="an existing campaign CSV (default: run a new campaign)")
    ap.add_argument("--budget", type=float, default=600, help="seconds of a new campaign")
    ap.add_argument("--threads", type=int, help="CPU threads of a new campaign")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--hold-out", choices=["rows", "networks", "architectures"], default="rows",
                    help="what the held-out 20 %% are (default rows)")
    ap.add_argument("--test", help="score on all rows of this other campaign instead of a "
                    "held-out share")
    args = ap.parse_args()
    path = Path(args.csv) if args.csv else Path(tempfile.mkdtemp()) / "campaign.csv"
    if not args.csv:
        start = time.perf_counter()
        s = Campaign(path, threads=args.threads).run(budget_s=args.budget)
        took = time.perf_counter() - start
        print(f"campaign: {s['networks']} networks, {s['rows']} rows in {took:.0f} s "
              f"(budget {args.budget:.0f} s, {100 * (took / args.budget - 1):+.1f} %)")
    raw = load(path)
    mine, nominal = campaign_rows(raw)  # the split is drawn on these
    rows = mine
    if args.test:
        other_raw = load(args.test)
        other, _ = campaign_rows(other_raw, nominal)
        test = np.r_[np.zeros(len(rows), bool), np.ones(len(other), bool)]
        rows = pd.concat([rows, other.assign(campaign_s=np.inf)], ignore_index=True)
        print(f"{(~test).sum()} rows of {', '.join(KINDS)}; scored on the {test.sum()} of "
              f"{args.test}\n")
    else:
        test = held_out(rows, args.hold_out)
        print(f"{len(rows)} rows of {', '.join(KINDS)}; {test.sum()} held out ({args.hold_out})\n")
    table = []
    for minutes in args.minutes:
        if not (~test & (rows.campaign_s <= minutes * 60)).any():
            continue
        # the probe's power (data.fitted_speed_exponent), read off the training rows alone, as
        # `fit` on that much of the campaign would; every row, held out or not, is brought to
        # the reference speed by it (scoring held-out rows so is scoring their measured times
        # against predictions taken to each row's probe)
        exponent = fitted_speed_exponent(training_rows(
            raw, mine, test[: len(mine)], minutes, args.hold_out != "rows"))[0]
        scaled = campaign_rows(raw, nominal, exponent)[0]
        if args.test:
            scaled = pd.concat([scaled, campaign_rows(other_raw, nominal, exponent)[0]
                                .assign(campaign_s=np.inf)], ignore_index=True)
        train = scaled[~test & (scaled.campaign_s <= minutes * 60)]
        start = time.perf_counter()
        predictor = Predictor.fit(train, log=lambda m: None)
        fit_s = time.perf_counter() - start
        line = {"minutes": minutes, "train_rows": len(train), "probe_power": round(exponent, 2),
                "fit_s": round(fit_s, 1)}
        table.append({**line, **rmspe_by_kind(predictor, scaled[test])})
    out = pd.DataFrame(table)
    print("held-out runtime RMSPE % by profiling time (goal at 10 min: <= 10 % for conv2d, "
          "linear, pooling)")
    print(out.to_markdown(index=False) if _has_tabulate() else out.to_string(index=False))


def campaign_rows(raw: pd.DataFrame, nominal: float | None = None, exponent: float = 1.0
                  ) -> tuple[pd.DataFrame, float | None]:
    """The rows of :data:`KINDS` brought to the speed where the probe takes ``nominal`` (the
    campaign's median) by the probe's ratio to ``exponent``, in the file's order; ``source``
    is each row's index in ``raw``. The rows kept do not depend on the power."""
    rows, nominal = at_reference_speed(raw, nominal, exponent)
    rows = rows[rows.kind.isin(KINDS)]
    return rows.assign(source=rows.index).reset_index(drop=True), nominal


def training_rows(raw: pd.DataFrame, rows: pd.DataFrame, held: np.ndarray, minutes: float,
                  whole_networks: bool) -> pd.DataFrame:
    """The rows of every kind of ``raw`` that a fit on its first ``minutes`` sees: measured by
    then and not ``held`` out (``rows`` are :func:`campaign_rows` of ``raw``); with
    ``whole_networks``, no row of a held-out network either."""
    gone = rows[held]
    out = raw.drop(index=gone.source)
    if whole_networks:
        out = out[~out.network.isin(set(gone.network))]
    return out[pd.to_numeric(out.campaign_s, errors="coerce") <= minutes * 60]


def rmspe_by_kind(predictor, held: pd.DataFrame) -> dict:
    """Runtime RMSPE % of the ``held`` rows per kind of :data:`KINDS` and for pooling (both
    pool kinds together); NaN where the rows or a model are missing."""
    out = {}
    for kind in KINDS + ["pooling"]:
        of_kind = held.kind.isin(["max_pool2d", "avg_pool2d"] if kind == "pooling" else [kind])
        part = held[of_kind]
        models = [k for k in part.kind.unique() if (k, "runtime_ms") in predictor.models]
        if part.empty or len(models) < part.kind.nunique():
            out[kind] = np.nan
            continue
        pred = np.concatenate([predictor.predict_rows(part[part.kind == k], k).runtime_ms
                               for k in models])
        true = np.concatenate([part[part.kind == k].runtime_ms.to_numpy() for k in models])
        out[kind] = round(rmspe(true, pred), 1)
    return out


def held_out(rows: pd.DataFrame, unit: str) -> np.ndarray:
    """A random 20 % (seed 0) of the rows, or of the networks or architectures (zoo ids
    ``z<seed>-<index>-<name>``: the name) with all their rows."""
    rng = np.random.default_rng(0)
    if unit == "rows":
        return rng.random(len(rows)) < 0.2
    groups = rows.network.astype(str)
    if unit == "architectures":
        groups = groups.map(lambda i: zoo.net_of(i) or i)
    names = groups.unique()
    chosen = set(names[rng.random(len(names)) < 0.2])
    return groups.isin(chosen).to_numpy()


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    script_exit(main)
