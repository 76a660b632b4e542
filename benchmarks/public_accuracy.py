"""Held-out accuracy of neuralpower.regression on the public measurement sets.

For each CSV (default: every ``profiling/public/*.csv``), each layer kind in it and each target
(``runtime_ms``, ``power_w``; rows with a missing or non-positive target skipped), the rows of that
kind are split 80/20 at random (``train_test_split(test_size=0.2, random_state=0)``), a model is
fitted on the 80 % with :func:`neuralpower.regression.fit_regressor` and scored on the 20 % by
RMSPE. The table compares it with the NeuralPower recipe's figure from
``profiling/public/README.md``.

    python benchmarks/public_accuracy.py [CSV ...]
    python benchmarks/public_accuracy.py --check-families   # skops round trip of every family

Every fitted model is also round-tripped through skops.io (column ``skops``).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower.features import FEATURES, TARGETS, features  # noqa: E402
from neuralpower.regression import FAMILIES, TRUSTED_TYPES, fit_regressor, rmspe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

PUBLIC = ROOT / "profiling" / "public"


def recipe_figures(readme: Path) -> dict[tuple[str, str, str], float]:
    """(file stem, kind, target) -> the recipe's RMSPE, parsed from the README's table."""
    out: dict[tuple[str, str, str], float] = {}
    if not readme.exists():
        return out
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or "%" not in line:
            continue
        stem, kinds, rt, pw = cells
        kinds = [k.strip() for k in kinds.split("/")]
        for target, cell in (("runtime_ms", rt), ("power_w", pw)):
            nums = [float(v) for v in re.findall(r"[0-9]+(?:\.[0-9]+)?", cell)]
            if len(nums) == len(kinds):
                for kind, v in zip(kinds, nums):
                    out[(stem, kind, target)] = v
    return out


def fmt_config(info: dict) -> str:
    s = f"{info['family']} d{info['degree']}"
    if info.get("alpha_rel") is not None:
        s += f" a={info['alpha_rel']:.0e}"
    if info.get("noise_shrink"):
        s += f" shrink={info['noise_shrink']:g}"
    return s + f" cv={info['rmspe_pct']:.1f}"


def roundtrip_ok(model, X: pd.DataFrame) -> bool:
    """skops.io dumps/loads with TRUSTED_TYPES gives identical predictions."""
    import skops.io as sio

    loaded = sio.loads(sio.dumps(model), trusted=TRUSTED_TYPES)
    return bool(np.array_equal(model.predict(X), loaded.predict(X)))


def check_families(path: Path, n_rows: int = 600) -> list[dict]:
    """Force every configuration family (with and without the noise model) on the first kind of
    ``path`` and check the skops round trip and finite, positive predictions, also far outside
    the training ranges."""
    data = pd.read_csv(path)
    kind = next(k for k in data["kind"].dropna().unique() if k in FEATURES)
    d = data[(data["kind"] == kind) & (pd.to_numeric(data["runtime_ms"], errors="coerce") > 0)]
    d = d.sample(min(n_rows, len(d)), random_state=0)
    X, y = features(d, kind), d["runtime_ms"].to_numpy(float)
    far = d.head(20).copy()
    for c in ("batch", "in_channels", "out_channels", "in_features", "out_features"):
        if c in far and far[c].notna().all():
            far[c] = far[c].astype(float) * 1000
    X_far = features(far, kind)
    out = []
    for family in FAMILIES:
        for shrink in (0.0, 1.0):
            model, info = fit_regressor(X, y, family=family, noise_shrink=shrink)
            p = np.concatenate([model.predict(X), model.predict(X_far)])
            out.append({"file": path.stem, "kind": kind, "family": info["family"],
                        "noise_shrink": shrink, "skops_roundtrip": roundtrip_ok(model, X_far),
                        "finite_positive": bool(np.all(np.isfinite(p)) and np.all(p > 0))})
    return out


def splits(data: pd.DataFrame):
    """(kind, target, train, test) for every modeled kind and measured target of ``data`` with
    at least 10 rows: the 80/20 split (seed 0) all accuracy benchmarks share."""
    for kind in sorted(data["kind"].dropna().unique()):
        if kind not in FEATURES:
            continue
        dk = data[data["kind"] == kind]
        for target in TARGETS:
            if target not in dk.columns:
                continue
            yk = pd.to_numeric(dk[target], errors="coerce")
            d = dk[yk.notna() & (yk > 0)]
            if len(d) >= 10:
                yield (kind, target, *train_test_split(d, test_size=0.2, random_state=0))


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    rows = [[str(v) for v in r] for r in df.itertuples(index=False)]
    width = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, width)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in width) + "|"]
                     + [line(r) for r in rows])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", nargs="*", type=Path, help="measurement CSVs (default: profiling/public)")
    ap.add_argument("--check-families", action="store_true",
                    help="only check the skops round trip of every configuration family")
    args = ap.parse_args(argv)
    paths = args.csv or sorted(PUBLIC.glob("*.csv"))
    if args.check_families:
        res = pd.DataFrame([r for p in paths[:1] for r in check_families(p)])
        print(markdown(res))
        return 0 if res["skops_roundtrip"].all() and res["finite_positive"].all() else 1
    recipe = recipe_figures(PUBLIC / "README.md")
    rows = []
    for path in paths:
        data = pd.read_csv(path)
        for kind, target, train, test in splits(data):
            model, info = fit_regressor(features(train, kind), train[target].to_numpy(float))
            X_test = features(test, kind)
            pred = model.predict(X_test)
            assert np.all(np.isfinite(pred)) and np.all(pred > 0)
            err = rmspe(test[target].to_numpy(float), pred)
            ref = recipe.get((path.stem, kind, target))
            rows.append({
                "file": path.stem, "kind": kind, "target": target, "n_train": len(train),
                "rmspe_%": f"{err:.1f}",
                "recipe_%": "–" if ref is None else f"{ref:.1f}",
                "ratio": "–" if ref is None else f"{err / ref:.2f}",
                "fit_s": f"{info['fit_seconds']:.1f}",
                "skops": "ok" if roundtrip_ok(model, X_test) else "MISMATCH",
                "config": fmt_config(info),
            })
            print(f"  {path.stem} {kind} {target}: {err:.1f} % ({info['fit_seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
    print(markdown(pd.DataFrame(rows)))
    return 0


if __name__ == "__main__":
    script_exit(main)
