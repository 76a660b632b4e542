"""Baseline runtime predictors, fitted on the same measurement rows as a :class:`Predictor`.

They answer "is the regression worth it?": a network-level benchmark predicts each network with
them from the same trace and compares (``benchmarks/network_accuracy.py``). Runtime only.

- :class:`MacLinear`: ``runtime_ms = a + b * macs``, one line for every kind (the FLOPs proxy).
- :class:`Paleo`: per kind, ``c0 + macs / compute_rate + bytes / bandwidth`` (Qi et al., ICLR
  2017, with the effective rates fitted instead of taken from a datasheet).
- :class:`NnMeterForest`: per kind, a random forest on the layer's features (nn-Meter, Zhang et
  al., MobiSys 2021).

Each has ``fit(data) -> self``, ``predict_table(table)`` (runtime_ms per row of a traced layer
table, NaN where it has no model) and ``kinds``, the kinds it models. Features come from
:func:`neuralpower.features.features`, so every kind it knows (and every kind added to it later)
is handled the same way here as in the predictor.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.ensemble import RandomForestRegressor

from .data import at_reference_speed, fitted_speed_exponent
from .errors import NeuralPowerError
from .features import DECOMPOSED, MODELED_KINDS, features

MIN_ROWS = 5        # fewer rows of a kind than this: no model for it
BYTES_PER_ELEMENT = 4  # float32, as profiled


def _column(X: pd.DataFrame, name: str) -> np.ndarray:
    """A feature, 0 where the kind has none (a pool has no weights, a ReLU no MACs)."""
    return X[name].to_numpy(float) if name in X else np.zeros(len(X))


def _bytes(X: pd.DataFrame) -> np.ndarray:
    return BYTES_PER_ELEMENT * sum(_column(X, c) for c in ("in_elems", "out_elems", "weight_elems"))


def _training_sets(data: pd.DataFrame) -> list:
    """(kind, features, runtime_ms) of each modeled kind in ``data``; rows without a positive
    runtime, or that cannot be featured (an older CSV lacking a kind's columns), are left out."""
    sets = list(_kind_sets(data))
    if not sets:
        raise NeuralPowerError("no rows of a modeled kind with a measured runtime: nothing to "
                               f"fit (modeled kinds: {', '.join(MODELED_KINDS)})")
    return sets


def _kind_sets(data: pd.DataFrame):
    # the same runtimes the predictor is fitted on
    data, _ = at_reference_speed(data, exponent=fitted_speed_exponent(data)[0])
    if "status" in data:  # the profiler's failed configurations carry no runtime
        data = data[data["status"].fillna("ok").eq("ok")]
    runtime = pd.to_numeric(data["runtime_ms"], errors="coerce").to_numpy(float)
    kinds = data["kind"].astype(str).to_numpy()
    for kind in MODELED_KINDS:
        at = kinds == kind
        if at.sum() < MIN_ROWS:
            continue
        X, y = features(data[at], kind, context=False), runtime[at]
        ok = np.isfinite(y) & (y > 0) & np.isfinite(X.to_numpy(float)).all(axis=1)
        if ok.sum() >= MIN_ROWS:
            yield kind, X[ok], y[ok]


def _nnls(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares with columns scaled to unit max first: MACs reach 1e10 while
    the intercept is 1, and the solver is better conditioned on comparable columns."""
    scale = np.abs(A).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(A / scale, y)
    return coef / scale


class Baseline:
    name = "baseline"

    def __init__(self):
        self.kinds: tuple[str, ...] = ()

    def fit(self, data: pd.DataFrame) -> "Baseline":
        raise NotImplementedError

    def _design(self, kind: str, X: pd.DataFrame) -> np.ndarray:
        """The matrix this baseline reads for rows of ``kind`` (a row with a non-finite entry
        cannot be predicted)."""
        raise NotImplementedError

    def _predict(self, kind: str, A: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_table(self, table: pd.DataFrame) -> np.ndarray:
        """runtime_ms of each row of a layer table (the tracer's, or measured rows); NaN for a
        row whose kind has no model here. A kind with no model but parts that all have one
        (``features.DECOMPOSED``: fused attention, where the data has none) is the sum of its
        parts, as for the predictor."""
        out = np.full(len(table), np.nan)
        kinds = table["kind"].astype(str).to_numpy()
        for kind in set(self.kinds) & set(kinds):
            at = np.flatnonzero(kinds == kind)
            A = self._design(kind, features(table.iloc[at], kind, context=False))
            ok = np.isfinite(A).all(axis=1)
            out[at[ok]] = self._predict(kind, A[ok])
        for kind in (set(DECOMPOSED) & set(kinds)) - set(self.kinds):
            at = np.flatnonzero(kinds == kind)
            parts = DECOMPOSED[kind](table.iloc[at])
            if {k for k, _ in parts} <= set(self.kinds):
                out[at] = sum(self.predict_table(rows.assign(kind=k)) for k, rows in parts)
        return out

    def describe(self) -> dict:
        return {"name": self.name, "kinds": list(self.kinds)}


class MacLinear(Baseline):
    """``runtime_ms = a + b * macs`` over all rows of all kinds, by non-negative least squares
    for relative error, like the other models here (an unweighted fit is ruled by the largest
    layers and puts milliseconds of intercept on every small one)."""

    name = "mac_linear"

    def fit(self, data):
        sets = _training_sets(data)
        A = np.vstack([self._design(k, X) for k, X, _ in sets])
        y = np.concatenate([y for *_, y in sets])
        self.coef_ = _nnls(A / y[:, None], np.ones(len(y)))
        self.kinds = tuple(k for k, *_ in sets)
        return self

    def _design(self, kind, X):
        return np.column_stack([np.ones(len(X)), _column(X, "macs")])

    def _predict(self, kind, A):
        return A @ self.coef_

    def describe(self):
        a, b = self.coef_
        return {**super().describe(), "intercept_ms": float(a),
                "gmacs_per_s": float(1e-6 / b) if b > 0 else None}


class Paleo(Baseline):
    """Per kind, ``runtime_ms = c0 + c1 * macs + c2 * bytes`` with ``c >= 0``, i.e. a fixed
    overhead plus compute at an effective rate ``1 / c1`` plus data movement at an effective
    bandwidth ``1 / c2`` (Paleo's ``peak * efficiency``, fitted rather than assumed).

    Fitted to minimise *relative* error (each equation divided by its runtime): layer runtimes
    span five orders of magnitude, and an unweighted fit would serve only the slowest layers,
    while a network is mostly small ones. Bytes are float32 reads of input and weights plus
    writes of the output.
    """

    name = "paleo"

    def fit(self, data):
        self.coef_ = {}
        for kind, X, y in _training_sets(data):
            A = self._design(kind, X)
            self.coef_[kind] = _nnls(A / y[:, None], np.ones(len(y)))
        self.kinds = tuple(self.coef_)
        return self

    def _design(self, kind, X):
        return np.column_stack([np.ones(len(X)), _column(X, "macs"), _bytes(X)])

    def _predict(self, kind, A):
        return A @ self.coef_[kind]

    def describe(self):
        """Per kind: overhead in ms, effective GMAC/s and GB/s (None where the fit put no
        weight on that term)."""
        rate = lambda c: float(1e-6 / c) if c > 0 else None  # noqa: E731  ms per unit -> G/s
        return {**super().describe(), "per_kind": {
            k: {"overhead_ms": float(c[0]), "gmacs_per_s": rate(c[1]), "gbytes_per_s": rate(c[2])}
            for k, c in self.coef_.items()}}


class NnMeterForest(Baseline):
    """Per kind, a random forest on the kind's features against raw runtime, as nn-Meter's
    kernel predictors are (100 trees, fixed seed, one job so it does not compete with
    measurements)."""

    name = "nn_meter_rf"

    def __init__(self, n_estimators: int = 100, random_state: int = 0):
        super().__init__()
        self.n_estimators, self.random_state = n_estimators, random_state

    def fit(self, data):
        self.models_, self.columns_ = {}, {}
        for kind, X, y in _training_sets(data):
            self.columns_[kind] = list(X.columns)
            self.models_[kind] = RandomForestRegressor(
                n_estimators=self.n_estimators, random_state=self.random_state,
                n_jobs=1).fit(X.to_numpy(float), y)
        self.kinds = tuple(self.models_)
        return self

    def _design(self, kind, X):
        return X.reindex(columns=self.columns_[kind]).to_numpy(float)

    def _predict(self, kind, A):
        return self.models_[kind].predict(A)


BASELINES = (MacLinear, Paleo, NnMeterForest)


def fit_baselines(data: pd.DataFrame) -> dict[str, Baseline]:
    """Every baseline fitted on ``data``, by name."""
    return {cls.name: cls().fit(data) for cls in BASELINES}


def network_runtime(baseline: Baseline, table: pd.DataFrame) -> float:
    """Network runtime in ms: the sum over the rows of kinds the baseline models (like the
    predictor's total, which covers its modeled layers only)."""
    return float(np.nansum(baseline.predict_table(table)))
