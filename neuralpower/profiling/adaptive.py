"""Adaptive profiling, in the spirit of nn-Meter's adaptive sampling: after a first, uniform share
of the budget, measure more of the layers whose models are least accurate.

Every ``REFIT_SHARE`` of the budget the rows measured so far are re-read and each kind's
cross-validated error is estimated. Each later network is then the best of ``CANDIDATES`` points
of the campaign's Sobol design (points the uniform part never uses): the one whose layers have
the highest mean estimated error. Candidates are whole networks of every kind, so the layers stay
as varied as the uniform ones and as many are measured per second. (A first version built
networks of the worst kind alone: they had half the layers, so half the rows per second, and lost
to uniform sampling; a second chose by the sum of its layers' errors, so the longest networks,
which take longer to measure: again half the rows per second.)

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

CANDIDATES = 6       # design points weighed for each adaptive network
# Adaptive candidates come from this far along the Sobol sequence: the uniform part (network
# i is point i) never reaches it, and candidate j of network i is point BASE + CANDIDATES*i + j.
CANDIDATE_BASE = 2**24


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


def layer_kind(layer: dict) -> str:
    """The kind the tracer gives a synthetic spec's layer."""
    if layer["kind"] == "conv2d" and layer["groups"] > 1 and layer["groups"] == layer["out_channels"]:
        return "depthwise_conv2d"
    return layer["kind"]


def value(spec: dict, weight: dict[str, float]) -> float:
    """What measuring a network is worth per unit of time: the mean weight of its layers'
    kinds. A mean, not a sum: a longer network also takes longer to measure (a sum chose the
    longest candidates and measured half as many rows per second as uniform sampling)."""
    layers = spec["layers"]
    return sum(weight.get(layer_kind(layer), 0.0) for layer in layers) / max(len(layers), 1)


def choose(seed: int, index: int, kinds, limits, weight: dict[str, float]) -> tuple[int, dict]:
    """(candidate number, spec) of adaptive network ``index``: the candidate of most
    :func:`value` (the first of equals), at a batch that fits. Seeded: the same weights give the
    same network."""
    from . import synthetic

    drawn = [synthetic.draw(seed, CANDIDATE_BASE + CANDIDATES * index + j, kinds, limits)
             for j in range(CANDIDATES)]
    best = max(range(CANDIDATES), key=lambda j: (value(drawn[j][0], weight), -j))
    spec, batch = drawn[best]
    return best, synthetic.fit_batch(spec, batch, limits)
