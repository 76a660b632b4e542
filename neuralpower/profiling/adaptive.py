"""Adaptive profiling, in the spirit of nn-Meter's adaptive sampling: after a first, uniform share
of the budget, measure more of the layers whose models are least accurate.

Every ``REFIT_SHARE`` of the budget the rows measured so far are re-read and each kind's
cross-validated error is estimated. Each later network is then the best of ``CANDIDATES`` points
of another scrambling of the campaign's Sobol design (points the uniform part never gives): the
one that adds the most estimated error per second of measuring, its layers' kind errors added up
over the campaign's own estimate of its measuring time. Candidates are whole networks of every kind, so the layers
stay as varied as the uniform ones. (A first version built networks of the worst kind alone:
they had half the layers, so, a network's measuring time being mostly fixed, half the rows per
second, and lost to uniform sampling.)

A zoo campaign (``profile --zoo --adaptive``) weighs further draws of real networks the same
way (``zoo.draw`` of another stream), each counted by the rows the campaign writes of it (its
timed layers), and each row worth its kind's weight over the rows of that kind so far: a kind
common in quick networks (conv2d, batch norm) stops crowding out one found mostly in slow ones
(linear, layer norm), which the first version starved. Their builds and traces are cached:
choosing among six took 0.5 s a network with the caches (mean of 120 choices on the
development VM), about a second without, where a zoo network takes a few seconds to measure.

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
# Candidate j of adaptive network i is point CANDIDATES * i + j of another scrambling of the
# campaign's Sobol design (synthetic.draw's stream): points the uniform part never gives.
STREAM = 1


def kind_errors(rows: pd.DataFrame, kinds) -> dict[str, float]:
    """Out-of-fold runtime error (%) of each kind's stand-in model, ``100 * (exp(RMS of the log
    error) - 1)``; ``inf`` where a kind has fewer than ``MIN_ROWS`` measured rows."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    out = {}
    ok = measured(rows)
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


def measured(rows: pd.DataFrame) -> pd.DataFrame:
    """A campaign file's rows that were measured: status ok, with a runtime."""
    return rows[(rows.get("status", "ok") == "ok") & (rows.runtime_ms > 0)] if len(rows) else rows


def weights(errors: dict[str, float]) -> dict[str, float]:
    """Weight of each kind in a candidate's value (:func:`choose`): its error, as a share of
    all kinds' errors; unknown errors (inf) take the largest known one, so a barely measured
    kind is measured soon."""
    known = [e for e in errors.values() if np.isfinite(e)]
    top = max(known) if known else 1.0
    raw = {k: (top if not np.isfinite(e) else e) for k, e in errors.items()}
    total = sum(raw.values()) or 1.0
    return {k: v / total for k, v in raw.items()}


def choose(seed: int, index: int, kinds, limits, weight: dict[str, float], seconds,
           real: bool | str = False, counts: dict[str, float] | None = None
           ) -> tuple[int, dict]:
    """(candidate number, spec) of adaptive network ``index``: of its candidates, the one whose
    layers' kind weights add up to the most per second it will take to measure
    (``seconds(table, batch)``: the campaign's estimate from the network traced at batch 1),
    at a batch that fits. ``real``: the candidates are zoo networks (``zoo.draw``; ``"text"``:
    of the text zoo), whose layers count as the rows a campaign writes of them (its timed
    layers of ``kinds``).
    ``counts`` (rows of each kind so far): each row of a kind is worth its weight over them,
    so a kind's next rows are worth less the more it has (diminishing returns); the chosen
    network's rows are added to ``counts``. Seeded: the same weights give the same network."""
    from . import synthetic, zoo

    best = None
    for j in range(CANDIDATES):
        if real:
            spec, _, table = zoo.draw(seed, CANDIDATES * index + j, limits, STREAM,
                                      real if isinstance(real, str) else "vision")
            timed = zoo.timed_kinds(*zoo.batch_one(spec))
            rows = pd.Series([k for k in timed if k in kinds], dtype=object)
        else:
            spec, batch = synthetic.draw(seed, CANDIDATES * index + j, kinds, limits, STREAM)
            table = synthetic.trace_spec(spec)  # at batch 1
            spec["input"][0] = synthetic.fitted_batch(table, batch, limits)
            rows = table.kind
        gain = worth(rows, weight, counts) / seconds(table, spec["input"][0])
        if best is None or gain > best[0]:
            best = (gain, j, spec, rows)
    if counts is not None:
        count(counts, best[3])
    return best[1], best[2]


def worth(kinds: pd.Series, weight: dict[str, float],
          counts: dict[str, float] | None = None) -> float:
    """What rows of these ``kinds`` add: each its kind's weight, over the rows of that kind so
    far where ``counts`` are given (diminishing returns)."""
    w = kinds.map(weight).fillna(0.0)
    if counts is not None:
        w = w / kinds.map(counts).fillna(0.0).clip(lower=1.0)
    return float(w.sum())


def count(counts: dict[str, float], kinds: pd.Series) -> None:
    """Add rows of these ``kinds`` to ``counts``."""
    for kind, n in kinds.value_counts().items():
        counts[kind] = counts.get(kind, 0) + n
