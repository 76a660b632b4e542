"""How repeatable are this device's layer measurements? The floor under every held-out error.

    python benchmarks/repeatability.py [--networks 60] [--seed 5] [--out benchmarks/results]

Measures the same synthetic networks twice in one campaign (a first pass over ``--networks``
networks of the seeded design, then a second pass over the same specs: each network is re-built
and re-measured minutes after its first measurement, in the same process), and compares each
layer's two runtimes, both brought to the speed probe's median speed (``data.at_reference_speed``,
as ``fit`` does). With ``--also A.csv B.csv``, it compares the layers two campaign files share
(same network id and layer: the same seed measured in two campaigns, e.g. the uniform and
adaptive runs of ``benchmarks/adaptive_profiling.py``, whose first 30 % are the same networks).

A model can predict a held-out measurement no better than that measurement repeats: if two
measurements of one layer differ by RMSPE r, one measurement is off its true value by about
r / sqrt(2), and that is the held-out error of a perfect predictor. Prints per kind: rows, RMSPE
between the two measurements, median |difference|, and the implied floor r / sqrt(2); writes
``repeatability.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.profiling import Campaign  # noqa: E402
from neuralpower.profiling.synthetic import sample  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from public_accuracy import markdown  # noqa: E402


def twice_in_one_campaign(n: int, seed: int, path: Path) -> pd.DataFrame:
    """Rows of ``n`` networks measured twice by one campaign: ids ``first-i`` and ``again-i``."""
    campaign = Campaign(path, seed=seed, log=lambda m: None)
    specs = [sample(seed, i) for i in range(n)]
    jobs = ([(f"first-{i}", s) for i, s in enumerate(specs)]
            + [(f"again-{i}", s) for i, s in enumerate(specs)])
    print(f"measuring {n} networks twice ...", file=sys.stderr)
    campaign.run(budget_s=3600, progress=False, specs=jobs)  # ends when the specs do
    rows = load(path)
    first = rows[rows.network.str.startswith("first-")].assign(
        network=lambda d: d.network.str.removeprefix("first-"))
    again = rows[rows.network.str.startswith("again-")].assign(
        network=lambda d: d.network.str.removeprefix("again-"))
    return pair(first, again)


def pair(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Layers measured in both, each at its campaign's probe speed: kind, the two runtimes."""
    a, _ = at_reference_speed(a)
    b, _ = at_reference_speed(b)
    m = a.merge(b, on=["network", "layer"], suffixes=("_a", "_b"))
    m = m[m.kind_a == m.kind_b]
    return pd.DataFrame({"kind": m.kind_a, "a": m.runtime_ms_a, "b": m.runtime_ms_b})


def summary(m: pd.DataFrame) -> pd.DataFrame:
    pe = 100 * (m.b / m.a - 1)
    rows = {"all kinds": pe}
    rows.update({k: pe[m.kind == k] for k in sorted(m.kind.unique())})
    out = pd.DataFrame({k: {"rows": len(v), "rmspe_pct": float(np.sqrt(np.mean(v ** 2))),
                            "median_abs_pct": float(np.median(np.abs(v))),
                            "floor_pct": float(np.sqrt(np.mean(v ** 2)) / np.sqrt(2))}
                        for k, v in rows.items()}).T
    out["rows"] = out["rows"].astype(int)
    return out.round(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=60)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--also", nargs=2, metavar="CSV", help="two campaign files to compare too")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    tables = {}
    with tempfile.TemporaryDirectory() as tmp:
        tables["same campaign, measured twice"] = summary(
            twice_in_one_campaign(args.networks, args.seed, Path(tmp) / "twice.csv"))
    if args.also:
        tables[f"two campaigns ({Path(args.also[0]).name}, {Path(args.also[1]).name})"] = summary(
            pair(load(args.also[0]), load(args.also[1])))
    lines = [f"`python benchmarks/repeatability.py --networks {args.networks} --seed {args.seed}"
             + (f" --also {' '.join(args.also)}" if args.also else "") + "`", ""]
    for name, t in tables.items():
        print(f"\n{name}: layer runtimes measured twice (per cent; floor = RMSPE / sqrt 2)")
        print(t.to_string())
        lines += [f"## {name}", "", markdown(t.rename_axis("kind").reset_index()), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "repeatability.md").write_text("\n".join(lines))
    (out / "repeatability.json").write_text(
        json.dumps({k: t.to_dict(orient="index") for k, t in tables.items()}, indent=2) + "\n")
    print(f"\nwrote {out / 'repeatability.md'}")


if __name__ == "__main__":
    script_exit(main)
