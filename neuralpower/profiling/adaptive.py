"""Adaptive profiling, in the spirit of nn-Meter's adaptive sampling: after a first, uniform share
of the budget, measure more networks built around the kinds whose models are least accurate.

Every ``REFIT_SHARE`` of the budget the rows measured so far are re-read and each kind's
cross-validated error is estimated; the next networks each focus on one kind, drawn with
probability proportional to that error (a kind with too few rows to estimate counts as the worst).
A focused network is the campaign's own Sobol point with its kinds restricted to the focus kind
and what a network of it needs (``needs``), so its layers are as varied as the uniform ones.

The error estimate is a fast stand-in for the predictor's: ``fit`` searches polynomial degrees,
penalties and boosted residuals for seconds per kind, which re-done every minute would eat the
time it is meant to save. The stand-in is the predictor's first stage at a fixed setting (a
degree-2 polynomial of the log features, ridge, 5-fold out-of-fold log error): it ranks the kinds
by how hard they are to predict, which is all the sampler needs.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..features import features

FIRST_SHARE = 0.3    # of the budget measured uniformly before the first estimate
REFIT_SHARE = 0.15   # of the budget between estimates
MIN_ROWS = 20        # fewer rows of a kind than this: its error is unknown, it is measured first

# Kinds that need a structural kind beside them for a synthetic network to hold them.
_CNN_NEEDS = ("conv2d",)
_TOKEN_NEEDS = ("linear",)
_NEEDS = {"batch_norm": _CNN_NEEDS, "max_pool2d": _CNN_NEEDS, "avg_pool2d": _CNN_NEEDS,
          "cat": _CNN_NEEDS, "depthwise_conv2d": _CNN_NEEDS, "layer_norm": _TOKEN_NEEDS,
          "softmax": _TOKEN_NEEDS, "matmul": _TOKEN_NEEDS, "embedding": _TOKEN_NEEDS}


def needs(kind: str, allowed) -> tuple[str, ...]:
    """The kinds a network focused on ``kind`` is built from (within ``allowed``)."""
    base = _NEEDS.get(kind, _CNN_NEEDS + _TOKEN_NEEDS)
    return tuple(k for k in allowed if k == kind or k in base)


def kind_errors(rows: pd.DataFrame, kinds) -> dict[str, float]:
    """Out-of-fold runtime error (%) of each kind's stand-in model, ``100 * (exp(RMS of the log
    error) - 1)``; ``inf`` where a kind has fewer than ``MIN_ROWS`` measured rows."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    out = {}
    ok = rows[(rows.get("status", "ok") == "ok") & (rows.runtime_ms > 0)] if len(rows) else rows
    for kind in kinds:
        r = ok[ok.kind == kind] if len(ok) else ok
        if len(r) < MIN_ROWS:
            out[kind] = float("inf")
            continue
        X = np.log1p(features(r, kind).to_numpy(dtype=float))
        y = np.log(r.runtime_ms.to_numpy(dtype=float))
        model = make_pipeline(StandardScaler(), PolynomialFeatures(2), Ridge(alpha=10.0))
        pred = cross_val_predict(model, X, y, cv=KFold(5, shuffle=True, random_state=0))
        # the typical factor off, from the RMS of the log error: one wild out-of-fold guess
        # of a nearly empty kind must not outweigh every other kind
        out[kind] = float(100 * np.expm1(np.sqrt(np.mean((pred - y) ** 2))))
    return out


def weights(errors: dict[str, float]) -> dict[str, float]:
    """Sampling probability of each kind: proportional to its error; unknown errors (inf) take
    the largest known one, so a barely measured kind is measured soon."""
    known = [e for e in errors.values() if np.isfinite(e)]
    top = max(known) if known else 1.0
    raw = {k: (top if not np.isfinite(e) else e) for k, e in errors.items()}
    total = sum(raw.values()) or 1.0
    return {k: v / total for k, v in raw.items()}


def pick(probabilities: dict[str, float], seed: int, index: int) -> str:
    """The focus kind of network ``index``: a seeded draw, so a campaign is reproducible given
    the same measurements."""
    kinds = list(probabilities)
    p = np.array([probabilities[k] for k in kinds])
    return kinds[int(np.random.default_rng([seed, index]).choice(len(kinds), p=p / p.sum()))]
