"""Per-(kind, target) regression: the NeuralPower recipe, fitted for relative error.

NeuralPower (Cai et al., ACML 2017) models a layer's runtime and power with a sparse polynomial
(Lasso, cross-validated) of the layer's features plus MAC and data-size terms. This module keeps
that backbone but fits it where relative error lives:

* features and target are taken in log space, so a polynomial in the logs is a product of power
  laws (``runtime ~ macs^a * elems^b ...``) and the squared loss is a relative loss;
* the degree and the Lasso penalty are chosen by K-fold cross-validation on the training rows,
  scored by RMSPE (the paper's metric), not by hand; a degree above 1 is a candidate only with
  at least as many rows as terms;
* optionally (chosen by cross-validation) boosted trees correct the polynomial's residuals for
  local irregularities (GPU tile/wave quantisation, algorithm switches, cache effects), fitted
  on the log-residual ("log"), on the ratio ``y / poly`` with weights ``1/ratio^2`` so that the
  trees minimise the relative error itself ("rel"), or the mean of both ("log+rel"), with as
  many boosting rounds (``BOOSTER_ROUNDS``) as cross-validation finds best. Trees
  saturate outside the data they saw and their correction is clipped to the residual range of
  training, so far from the data the polynomial's trend rules;
* far outside the training box the polynomial is not evaluated as such (a cubic in the logs can
  bend back or explode): it is continued from the box's edge along the ray from the training
  centre as a power law, with the exponents of a degree-1 fit of the same rows
  (``LogLinkRegressor._backbone_log``), and for a work-bound target (a convolution's runtime)
  growing at least as fast as the MACs: no faster per MAC than at the edge;
* a multiplicative calibration, fitted on out-of-fold predictions, turns the log-space (median)
  estimate into the RMSPE-optimal one: with noisy targets the prediction that minimises
  ``mean(((p - y) / y)^2)`` lies below the median. Where the noise differs between layers
  (short layers measured with coarse timers or power counters), a small tree model of the
  out-of-fold squared log-residual scales that shrinkage per layer, its strength chosen by CV.

Candidates within 1 % (relative) of the best CV score are resolved towards the simpler one.
Fitting runs single-threaded (two fits side by side on a small machine would otherwise fight
over OpenMP threads) with convergence warnings silenced.

Everything fitted is a scikit-learn estimator or one of the small classes below, so the result
round-trips through ``skops.io`` with ``trusted=TRUSTED_TYPES``.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from sklearn._loss.link import IdentityLink
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, lasso_path
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

__all__ = [
    "TRUSTED_TYPES", "FAMILIES", "fit_regressor", "rmspe", "mape", "median_ape",
    "LayerFeatures", "LogLinkRegressor",
]


# ----------------------------------------------------------------------------------------- metrics
def _rel(y_true, y_pred) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    return (y_pred - y_true) / y_true


def rmspe(y_true, y_pred) -> float:
    """Root mean squared percentage error, in percent: ``100*sqrt(mean(((p-y)/y)^2))``."""
    return float(100.0 * np.sqrt(np.mean(_rel(y_true, y_pred) ** 2)))


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error, in percent."""
    return float(100.0 * np.mean(np.abs(_rel(y_true, y_pred))))


def median_ape(y_true, y_pred) -> float:
    """Median absolute percentage error, in percent."""
    return float(100.0 * np.median(np.abs(_rel(y_true, y_pred))))


# ---------------------------------------------------------------------------------------- features
# GEMM view of a layer (implicit-GEMM convolution, linear): output rows M, output columns N and
# reduction length K, from the named feature columns of neuralpower.features.
_GEMM = {
    "conv": ("out_pixels", "out_channels", ("in_per_group", "kernel_h", "kernel_w")),
    "matmul": ("rows", "out_features", ("in_features",)),   # before linear: it has batch too
    "linear": ("batch", "out_features", ("in_features",)),
}
_TILES = (32, 64, 128)
MAX_BINS = 255
_TANGENT_STEP = 0.05  # relative step along the ray for the backbone's slope at the boundary


def _gemm_dims(col: dict[str, np.ndarray]):
    """(M, N, K) of each row from the feature columns ``col`` (name -> values), or None."""
    for m, n, ks in _GEMM.values():
        if m in col and n in col and all(k in col for k in ks):
            k = np.ones(len(col[m]))
            for c in ks:
                k = k * col[c]
            return col[m], col[n], k
    return None


def _pow2_align(v: np.ndarray, cap: int = 64) -> np.ndarray:
    """Largest power of two (<= cap) dividing each positive integer value."""
    v = np.maximum(np.round(v), 1).astype(np.int64)
    out = np.ones(len(v))
    p = 2
    while p <= cap:
        out = np.where(v % p == 0, p, out)
        p *= 2
    return out


class LayerFeatures(TransformerMixin, BaseEstimator):
    """Named layer features -> log-space design matrix.

    ``mode="poly"``: ``log1p`` of the informative input columns (constant and duplicate columns
    dropped at fit) plus the log of the arithmetic intensity ``macs / (in + out + weight elems)``;
    this is what the polynomial sees.
    ``mode="tree"``: the same plus derived quantities a tree can split on: GEMM dimensions, tile
    counts and tile efficiency for 32/64/128 tiles, and power-of-two alignment of the GEMM
    dimensions. All derived values are computed from column names, nothing device-specific.
    """

    def __init__(self, mode: str = "poly"):
        self.mode = mode

    def _raw(self, X) -> tuple[np.ndarray, list[str]]:
        if isinstance(X, pd.DataFrame):
            if list(X.columns) != self.columns_:
                X = X.reindex(columns=self.columns_)
            V = X.to_numpy(dtype=float)
        else:
            V = np.asarray(X, dtype=float)
            if V.ndim != 2 or V.shape[1] != len(self.columns_):
                raise ValueError(f"expected {len(self.columns_)} feature columns, got "
                                 f"{V.shape[1:] or 'a 1-D array'}")
        V = np.clip(np.nan_to_num(V, nan=0.0, posinf=0.0), 0.0, None)  # counts: finite, >= 0
        col = {c: V[:, j] for j, c in enumerate(self.columns_)}
        cols = [f"log:{c}" for c in self.columns_]
        blocks = [np.log1p(V)]
        if {"macs", "in_elems", "out_elems"} <= col.keys():
            io = col["in_elems"] + col["out_elems"]
            if "weight_elems" in col:
                io = io + col["weight_elems"]
            blocks.append(np.log1p(col["macs"] / np.maximum(io, 1.0))[:, None])
            cols.append("log:intensity")
        if self.mode == "tree":
            extra, names = [], []
            out = col.get("out_elems")
            if out is not None and "macs" in col:  # work per output element
                extra.append(np.log1p(col["macs"] / np.maximum(out, 1.0)))
                names.append("log:macs_per_out")
            if out is not None and "in_elems" in col:  # reduction / expansion of the data
                extra.append(np.log1p(col["in_elems"] / np.maximum(out, 1.0)))
                names.append("log:in_per_out")
            if {"batch", "in_channels"} <= col.keys():  # independent planes (CPU threads)
                extra.append(np.log1p(col["batch"] * col["in_channels"]))
                names.append("log:planes")
            if extra:
                blocks.append(np.column_stack(extra))
                cols += names
            dims = _gemm_dims(col)
            if dims is not None:
                m, n, k = (np.maximum(np.nan_to_num(a), 1.0) for a in dims)
                extra, names = [np.log(k)], ["log:gemm_k"]
                for t in _TILES:
                    tiles = np.ceil(m / t) * np.ceil(n / t)
                    extra += [np.log(tiles), m * n / (tiles * t * t)]
                    names += [f"log:tiles{t}", f"tile_eff{t}"]
                for nm, a in (("m", m), ("n", n), ("k", k)):
                    extra.append(np.log2(_pow2_align(a)))
                    names.append(f"align_{nm}")
                blocks.append(np.column_stack(extra))
                cols += names
        return np.column_stack(blocks), cols

    def fit(self, X, y=None):
        self.columns_ = [str(c) for c in X.columns]
        Z, names = self._raw(X)
        keep, seen = [], []
        for j in range(Z.shape[1]):
            col = Z[:, j]
            if np.ptp(col) <= 1e-12:
                continue
            if any(np.allclose(col, Z[:, i]) for i in seen):
                continue
            seen.append(j)
            keep.append(j)
        if not keep:  # a single informative column at least, so downstream steps have input
            keep = [0]
        self.keep_ = np.asarray(keep, dtype=np.int64)
        self.feature_names_out_ = [names[j] for j in keep]
        # Tree mode: quantile bin codes (at most MAX_BINS distinct values per column), fixed
        # here from the unweighted distribution, so the trees bin the same way with or without
        # sample weights (HistGradientBoosting's weighted binning is slow and follows weights).
        self.bin_edges_ = []
        if self.mode == "tree":
            for j in self.keep_:
                col = Z[:, j]
                if np.unique(col).size > MAX_BINS:
                    q = np.percentile(col, np.linspace(0, 100, MAX_BINS + 1)[1:-1])
                    self.bin_edges_.append(np.unique(q))
                else:
                    self.bin_edges_.append(None)
        return self

    def transform(self, X):
        Z, _ = self._raw(X)
        Z = Z[:, self.keep_]
        if self.mode == "tree":
            Z = Z.copy()
            for i, edges in enumerate(self.bin_edges_):
                if edges is not None:
                    Z[:, i] = np.searchsorted(edges, Z[:, i], side="left")
        return Z

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.feature_names_out_, dtype=object)


# ------------------------------------------------------------------------------ tree ensembles
class Forest(BaseEstimator):
    """A fitted HistGradientBoostingRegressor's trees as a handful of flat arrays.

    Its prediction is sklearn's, bit for bit: the same leaves, summed in the same order. Two
    reasons to keep trees so. Predicting: all trees are walked for all rows at once, without
    sklearn's one call (and one OpenMP parallel region) per tree, which for the few rows of a
    network is most of sklearn's time, and on a busy two-core machine far more. Loading: skops
    stores every array of every tree apart; a predictor of 23 kinds held 5,770 trees in 18,382
    arrays and took seconds to load, where the same trees as forests are about 300 arrays.

    Build one with :meth:`of`; learned state: ``roots_`` (first node of each tree),
    ``feature_`` and ``threshold_`` (a row goes left where ``x[feature] <= threshold``),
    ``missing_left_`` (where NaN goes), ``children_`` (``2 * node + go_left`` -> next node; a
    leaf points to itself), ``value_`` (leaf values), ``depth_`` (deepest leaf), ``baseline_``.
    """

    MAX_CELLS = 1 << 20     # rows x trees walked at once (bounds the walk's memory)

    @classmethod
    def of(cls, model):
        """``model`` as a Forest where it is a fitted booster of the plain kind (one output,
        identity link, numeric splits); anything else (a Forest, None) comes back as it is."""
        predictors = getattr(model, "_predictors", None)
        if (not isinstance(model, HistGradientBoostingRegressor) or not predictors
                or model.n_trees_per_iteration_ != 1
                or not isinstance(model._loss.link, IdentityLink)
                or np.size(model._baseline_prediction) != 1):
            return model
        trees = [p.nodes for (p,) in predictors]
        nodes = np.concatenate(trees)
        if nodes["is_categorical"].any():
            return model
        sizes = np.array([len(t) for t in trees])
        roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        leaf = nodes["is_leaf"].astype(bool)
        first = np.repeat(roots, sizes)  # the nodes of a tree number its children from 0
        here = np.arange(len(nodes), dtype=np.int64)
        left = np.where(leaf, here, nodes["left"].astype(np.int64) + first)
        right = np.where(leaf, here, nodes["right"].astype(np.int64) + first)
        forest = cls()
        forest.roots_ = roots
        forest.feature_ = nodes["feature_idx"].astype(np.int64)
        forest.threshold_ = nodes["num_threshold"].astype(float)
        forest.missing_left_ = nodes["missing_go_to_left"].astype(bool)
        forest.children_ = np.column_stack([right, left]).ravel()
        forest.value_ = nodes["value"].astype(float)
        forest.depth_ = int(nodes["depth"][leaf].max())
        forest.baseline_ = float(np.ravel(model._baseline_prediction)[0])
        forest.n_features_in_ = int(model.n_features_in_)
        return forest

    def check(self) -> "Forest":
        """Itself, where its arrays make a forest; else ValueError (a damaged or hostile file):
        every index in range, so a walk reads only the arrays' own cells and ends."""
        ints = ("roots_", "feature_", "children_")
        for name in (*ints, "threshold_", "missing_left_", "value_"):
            a = getattr(self, name, None)
            if not isinstance(a, np.ndarray) or a.ndim != 1 or not (
                    a.dtype.kind in "iu" if name in ints else a.dtype.kind in "fb"):
                raise ValueError(f"forest array {name} is not a 1-D array of its type")
        n, width = len(self.value_), getattr(self, "n_features_in_", None)
        depth = getattr(self, "depth_", None)
        if not (isinstance(width, int) and width > 0 and isinstance(depth, int)
                and 0 <= depth <= n and np.isfinite(getattr(self, "baseline_", np.nan))
                and len(self.feature_) == len(self.threshold_) == len(self.missing_left_) == n
                and len(self.children_) == 2 * n and 0 < len(self.roots_) <= n
                and all(((a >= 0) & (a < hi)).all() for a, hi in (
                    (self.roots_, n), (self.children_, n), (self.feature_, width)))):
            raise ValueError("forest arrays do not make a forest")
        return self

    def predict(self, T) -> np.ndarray:
        T = np.ascontiguousarray(T, dtype=float)
        if T.ndim != 2 or T.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_} tree features, got shape {T.shape}")
        step = max(1, self.MAX_CELLS // len(self.roots_))
        if len(T) > step:
            return np.concatenate([self.predict(T[i:i + step]) for i in range(0, len(T), step)])
        n, width = T.shape
        n_trees = len(self.roots_)
        flat = T.ravel()
        row_start = np.repeat(np.arange(n) * width, n_trees)
        node = np.tile(self.roots_, n)  # row-major: (row, tree)
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth_):  # a leaf stays where it is
            x = flat[row_start + self.feature_[node]]
            go_left = x <= self.threshold_[node]
            if has_nan:
                go_left |= np.isnan(x) & self.missing_left_[node]
            node = self.children_[2 * node + go_left]
        # sklearn's sum, in its order: baseline, then tree by tree (cumsum adds left to right)
        terms = np.column_stack([np.full(n, self.baseline_), self.value_[node].reshape(n, -1)])
        return np.cumsum(terms, axis=1)[:, -1]


# ------------------------------------------------------------------------------------------- model
class LogLinkRegressor(RegressorMixin, BaseEstimator):
    """``exp(poly(x) + trees(x) + log_scale - shrink * var(x))``, clipped to stay finite.

    ``backbone``: fitted pipeline predicting ``log(y)`` from the feature frame (polynomial Lasso).
    ``tree_features``: fitted :class:`LayerFeatures` (``mode="tree"``) feeding the two tree
    models below, with the backbone's log prediction appended as one more column.
    ``boosters``: fitted tree models of the backbone's residual, one per entry of
    ``booster_spaces`` ("log": of the log-residual; "rel": of the ratio ``y / backbone``, fitted
    for relative error); their log corrections, each clipped to ``resid_range`` (trees saturate,
    so far from the data the polynomial trend rules), are averaged.
    ``var_model``: optional fitted tree model of the squared out-of-fold log-residual (the noise
    level of such a layer); the log prediction is lowered by ``shrink * var`` (the RMSPE-optimal
    point estimate under log-normal noise lies ``1.5 * sigma^2`` below the median).
    ``input_range``: per-column (min, max) of the backbone's standardised log inputs in
    training (their means are 0); outside it the backbone is continued linearly along the ray
    from the centre (see ``_backbone_log``). ``trend``: coefficients of a power law (degree 1)
    fitted on the same standardised log inputs: where set (a backbone of degree 2 or 3), the
    continuation takes its slope from them rather than from the polynomial's edge.
    ``work_column``: the log feature of the work (``"log:macs"``) where the target is bound by
    it; beyond the data the continuation then grows at least as fast as the work (``Predictor``
    sets it for the runtime of the kinds of ``features.WORK_BOUND``).
    ``span``: the directions of the log inputs along which training hardly varied (``basis``,
    one row each, in raw log units; ``scale``: the backbone's standardisation) and the range it
    covered along each (``lo``, ``hi``): a layer beyond that range along one of them is taken
    back to its edge before anything else (see ``_backbone_log``). Files saved before it have
    none.
    ``log_scale``: global log calibration. ``log_range``: clip of the final log prediction, so
    the output is always finite and positive.
    """

    def __init__(self, backbone=None, tree_features=None, boosters=(), booster_spaces=(),
                 var_model=None, input_range=None, log_scale=0.0, shrink=0.0,
                 resid_range=(-50.0, 50.0), var_max=0.0, log_range=(-50.0, 50.0), trend=None,
                 work_column=None, span=None):
        self.backbone = backbone
        self.tree_features = tree_features
        self.boosters = boosters
        self.booster_spaces = booster_spaces
        self.var_model = var_model
        self.input_range = input_range
        self.log_scale = log_scale
        self.shrink = shrink
        self.resid_range = resid_range
        self.var_max = var_max
        self.log_range = log_range
        self.trend = trend
        self.work_column = work_column
        self.span = span

    def fit(self, X, y):  # pragma: no cover - fitted by fit_regressor; kept for the API
        raise NotImplementedError("use neuralpower.regression.fit_regressor")

    def flatten_trees(self) -> "LogLinkRegressor":
        """Its tree models as :class:`Forest` (same predictions, bit for bit; far fewer arrays
        to store and load): done at fitting, and on loading a file saved before."""
        self.boosters = [Forest.of(b) for b in self.boosters]
        self.var_model = Forest.of(self.var_model)
        for forest in (*self.boosters, self.var_model):
            if isinstance(forest, Forest):
                forest.check()
        return self

    def _backbone_log(self, X) -> np.ndarray:
        """The polynomial inside the training box; outside it, continued along the ray from the
        training centre through the point, with the slope it has where the ray leaves the box.

        In standardised log space the features' exact relations (``log macs`` = a sum of logs)
        are linear, so the ray stays among consistent layers; the continuation is a power law
        with the exponent the polynomial has at the edge of the data, so a cubic never bends
        back far from the data. With a ``trend``, the exponent is the global power law's: the
        edge slope of a quadratic fitted on few rows can be steep enough to predict a layer
        outside them at 10^5 times its runtime (91 linear rows, a Swin MLP layer)."""
        pre, post = self.backbone[:2], self.backbone[2:]
        U = _into_span(self._inputs(X), getattr(self, "span", None))
        if self.input_range is None:
            return np.asarray(post.predict(U), dtype=float)
        lo, hi = (np.asarray(a, dtype=float) for a in self.input_range)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(U > hi, hi / U, np.where(U < lo, lo / U, 1.0))
        t = np.clip(np.nan_to_num(t.min(axis=1), nan=1.0), 0.0, 1.0)
        out = np.flatnonzero(t < 1.0)
        if not out.size:
            return np.asarray(post.predict(U), dtype=float)  # t == 1: every row inside the box
        # the boundary points of all rows and the inner points of the rows outside: one call
        to = t[out]
        trend = getattr(self, "trend", None)  # (files saved before it have none)
        if trend is not None:
            z = np.asarray(post.predict(U * t[:, None]), dtype=float)
            step = (U[out] @ np.asarray(trend, dtype=float)) * (1.0 - to)
        else:
            inner = np.maximum(to * (1.0 - _TANGENT_STEP), 0.0)
            zz = np.asarray(post.predict(np.concatenate([U * t[:, None],
                                                         U[out] * inner[:, None]])), dtype=float)
            z, z_in = zz[:len(U)], zz[len(U):]
            step = (z[out] - z_in) / np.maximum(to - inner, 1e-12) * (1.0 - to)
        # Beyond the data the target changes at most as fast as the farthest-moved input (an
        # exponent of at most 1 in raw log units: MACs are an input, so work-bound layers keep
        # their linear scaling). A fit on few, correlated columns can otherwise continue with
        # exponents that cancel inside the data and not outside it (in an H100's 141 s synthetic
        # campaign, 5 concat rows: one 3x smaller than any seen was predicted at 29 s).
        scale = getattr(pre[-1], "scale_", None)
        if scale is not None:
            moved = U[out] * (1.0 - to)[:, None] * np.asarray(scale, dtype=float)
            cap = np.abs(moved).max(axis=1)
            step = np.clip(step, -cap, cap)
            # A work-bound target (``work_column``: a kind's runtime by its MACs) grows at
            # least as fast as the work beyond the data: the rate stays the edge's. A power law
            # fitted on small and large layers has a MAC exponent under 1 (overheads), which
            # made VGG-11's 15 GMAC convolutions at batch 8 run at 173 GMAC/s where the
            # campaigns' largest (5 GMAC) ran at 100-115 and the real ones ran at 113.
            work = getattr(self, "work_column", None)
            names = list(getattr(pre[0], "feature_names_out_", ())) if work else []
            if work in names:
                grow = moved[:, names.index(work)]
                step = np.where(grow > 0, np.maximum(step, grow), step)
        z[out] = z[out] + step
        return z

    def _inputs(self, X) -> np.ndarray:
        """The backbone's standardised log inputs of ``X``, finite."""
        return np.nan_to_num(np.asarray(self.backbone[:2].transform(X), dtype=float),
                             nan=0.0, posinf=1e6, neginf=-1e6)

    def off_span(self, X) -> np.ndarray:
        """Per row, how far it lies beyond the data along the directions the data never varied
        in (``span``), as a factor (``exp`` of the distance in log units): 1 on the span, and
        for every row of a model without one."""
        span = getattr(self, "span", None)
        if not span:
            return np.ones(len(X))
        return np.exp(np.sqrt((_beyond_span(self._inputs(X), span) ** 2).sum(axis=1)))

    def predict_log(self, X) -> np.ndarray:
        z = self._backbone_log(X)
        z = np.nan_to_num(z, nan=0.0, posinf=self.log_range[1], neginf=self.log_range[0])
        if len(self.boosters) or self.var_model is not None:
            T = np.column_stack([self.tree_features.transform(X), z])
        out = z
        if len(self.boosters):
            out = out + np.mean([_boost_correction(b.predict(T), sp, self.resid_range)
                                 for b, sp in zip(self.boosters, self.booster_spaces)], axis=0)
        if self.var_model is not None and self.shrink:
            out = out - self.shrink * np.clip(self.var_model.predict(T), 0.0, self.var_max)
        out = np.nan_to_num(out + self.log_scale, nan=0.0,
                            posinf=self.log_range[1], neginf=self.log_range[0])
        return np.clip(out, *self.log_range)

    def predict(self, X) -> np.ndarray:
        return np.exp(self.predict_log(X))


# Along a direction of the log inputs (raw logs, not standardised) whose training variance is
# below this, the data did not vary (by more than about 3 %): an exact relation of the features
# (``macs`` is a product of others), a context the campaign happened to keep, or a relation it
# did (every max pool it measured was 3x3 of stride 2, so input and output sizes moved
# together). The polynomial's slope along such a direction is whatever the Lasso made of
# collinear columns, and standardising blows the direction up: a stride-1 pool after a concat
# was predicted up to 12.8 times its time (EMR seed-9 zoo campaign, GoogLeNet held out).
SPAN_VAR = 1e-3


def _span(U: np.ndarray, scale) -> dict | None:
    """The directions of the log inputs along which the training layers (``U``: their
    standardised log inputs, ``scale``: the standardisation's) hardly vary, and the range they
    cover along each; None if they vary along every direction."""
    if len(U) < 2:
        return None
    R = U * np.asarray(scale, dtype=float)
    _, s, Vt = np.linalg.svd(R - R.mean(axis=0), full_matrices=False)
    flat = Vt[s ** 2 / len(R) < SPAN_VAR]
    if not len(flat):
        return None
    P = R @ flat.T
    return {"basis": flat.tolist(), "lo": P.min(axis=0).tolist(), "hi": P.max(axis=0).tolist(),
            "scale": np.asarray(scale, dtype=float).tolist()}


def _into_span(U: np.ndarray, span: dict | None) -> np.ndarray:
    """``U`` (standardised log inputs) moved, along each direction in which training did not
    vary, back into the range training covered there: the data say nothing of the target along
    it, so a layer off it is predicted as the nearest layer on it. (``outside_fit`` names such a
    layer where a feature is beyond its range, as a stride the data never varied is.)"""
    if not span:
        return U
    back = _beyond_span(U, span) @ np.asarray(span["basis"], dtype=float)  # raw log units
    return U - back / np.asarray(span["scale"], dtype=float)


def _beyond_span(U: np.ndarray, span: dict) -> np.ndarray:
    """How far each row of ``U`` (standardised log inputs) lies beyond the range training
    covered along each direction of ``span`` (raw log units; 0 inside it)."""
    P = (U * np.asarray(span["scale"], dtype=float)) @ np.asarray(span["basis"], dtype=float).T
    return P - np.clip(P, np.asarray(span["lo"]), np.asarray(span["hi"]))


# ------------------------------------------------------------------------------------- fitting
K_FOLDS = 5
DEGREES = (1, 2, 3)
MAX_POLY_TERMS = 1200          # a degree whose expansion is wider than this is skipped
ROWS_PER_TERM = 1              # and a degree above 1 with fewer rows than terms: with 14 rows,
                               # a 35-term quadratic won CV and predicted 1e6 ms far out
ALPHA_GRID = np.logspace(-1.0, -6.0, 11)   # Lasso penalty, relative to alpha_max
LASSO_SOLVER = dict(tol=1e-3, max_iter=1000)  # every Lasso fit: CV paths, backbone, trend
SIMPLER_TOL = 0.01             # prefer the simpler candidate when within 1 % (relative) of best
BOOSTER_PARAMS = dict(learning_rate=0.08, max_iter=250, max_leaf_nodes=15, min_samples_leaf=20,
                      l2_regularization=1.0)
# Boosting rounds tried by cross-validation (read from the staged predictions of one fit per
# fold and space: round k of a longer fit is exactly a k-round fit). BOOSTER_PARAMS' max_iter
# is the default where a family is forced without CV.
BOOSTER_ROUNDS = (100, 250, 500)
VAR_PARAMS = dict(learning_rate=0.1, max_iter=60, max_leaf_nodes=7, min_samples_leaf=40,
                  l2_regularization=1.0)
BOOSTER_SPACES = ("log", "rel")
SHRINK_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def _calibrate(logp: np.ndarray, logy: np.ndarray) -> float:
    """Log of the factor c minimising mean((c*p/y - 1)^2): c = sum(r) / sum(r^2), r = p/y."""
    r = np.exp(np.clip(logp - logy, -30, 30))
    return float(np.log(np.sum(r) / np.sum(r * r)))


def _score(logp: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    """(RMSPE after calibration, log calibration) of log predictions."""
    ls = _calibrate(logp, logy)
    return rmspe(np.exp(logy), np.exp(logp + ls)), ls


def _poly_pipeline(degree: int, alpha: float | None = None) -> Pipeline:
    steps = [("features", LayerFeatures("poly")), ("scale", StandardScaler())]
    if degree > 1:
        steps += [("poly", PolynomialFeatures(degree, include_bias=False)),
                  ("scale_poly", StandardScaler())]
    if alpha is not None:
        steps.append(("lasso", Lasso(alpha=alpha, precompute=True, **LASSO_SOLVER)))
    return Pipeline(steps)


def _booster(seed: int, **params) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(random_state=seed, early_stopping=False, **params)


def _boost_fit(T: np.ndarray, resid: np.ndarray, space: str, seed: int,
               rounds: int = BOOSTER_PARAMS["max_iter"]):
    """Fit the residual booster. ``space="log"``: squared error on the log-residual.
    ``space="rel"``: squared error on the ratio q = y / backbone with weights 1/q^2, i.e. the
    relative error itself; a leaf then holds sum(1/q)/sum(1/q^2), the RMSPE-optimal factor.
    Returns the model and the log-range its correction is clipped to."""
    rng = (float(resid.min()), float(resid.max()))
    params = {**BOOSTER_PARAMS, "max_iter": int(rounds)}
    if space == "log":
        return _booster(seed, **params).fit(T, resid), rng
    q = np.exp(resid)
    return _booster(seed, **params).fit(T, q, sample_weight=1.0 / q**2), rng


def _boost_correction(out: np.ndarray, space: str, rng) -> np.ndarray:
    """A booster's raw output as a log-correction, clipped to the training residuals' range."""
    if space == "log":
        return np.clip(out, *rng)
    return np.log(np.clip(out, math.exp(rng[0]), math.exp(rng[1])))


def _boost_stages(model, T: np.ndarray, space: str, rng, rounds) -> dict[int, np.ndarray]:
    """The correction after each of ``rounds`` boosting rounds (at most the model's)."""
    wanted, out = set(rounds), {}
    for k, raw in enumerate(model.staged_predict(T), start=1):
        if k in wanted:
            out[k] = _boost_correction(raw, space, rng)
    return out


FAMILIES = ("poly", "poly+trees[log]", "poly+trees[rel]", "poly+trees[log+rel]")


def fit_regressor(X: pd.DataFrame, y: np.ndarray, *, seed: int = 0, family: str | None = None,
                  noise_shrink: float | None = None) -> tuple[object, dict]:
    """Fit one model for one (kind, target); see the module docstring.

    ``X``: ``features(rows, kind)``; ``y``: the target (> 0). Returns ``(estimator, info)``:
    ``estimator.predict(X_new)`` is finite and > 0; ``info`` (JSON-serialisable) holds the chosen
    configuration and its cross-validated (out-of-fold) RMSPE, MAPE and median APE.
    ``family`` (one of ``FAMILIES``) and ``noise_shrink`` force what cross-validation would
    otherwise choose; they exist for tests (e.g. a serialisation check of every family).
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    t_start = time.perf_counter()
    X = pd.DataFrame(X).reset_index(drop=True).astype(float)
    y = np.asarray(y, dtype=float).ravel()
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows, y has {len(y)}")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("targets must be finite and > 0")
    # One thread: on a small machine, OpenMP/BLAS threads competing with another fit (the two
    # targets of a kind fitted side by side, a test run) slow both down by orders of magnitude.
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        est, info = _fit(X, y, seed, family, noise_shrink)
    info["fit_seconds"] = round(time.perf_counter() - t_start, 2)
    return est, info


WORK_COLUMNS = ("macs", "in_elems", "out_elems")  # a layer's work, the first one it has


def _work_column(X: pd.DataFrame) -> str | None:
    """The first of ``WORK_COLUMNS`` that ``X`` has and varies; None if none."""
    return next((c for c in WORK_COLUMNS if c in X and X[c].nunique() > 1), None)


def _best_column(X: pd.DataFrame, logy: np.ndarray) -> str:
    """The column whose log follows ``logy`` most closely (largest |correlation|); the first
    column when none varies."""
    best, score = X.columns[0], -1.0
    for c in X.columns:
        v = np.log1p(np.clip(np.nan_to_num(X[c].to_numpy(dtype=float)), 0.0, None))
        if np.ptp(v) > 1e-12 and np.ptp(logy) > 1e-12:
            r = abs(float(np.corrcoef(v, logy)[0, 1]))
            if r > score:
                best, score = c, r
    return best


def _fit(X: pd.DataFrame, y: np.ndarray, seed: int, family: str | None,
         noise_shrink: float | None):
    n = len(y)
    logy = np.log(y)
    log_range = (float(logy.min() - math.log(1e6)), float(logy.max() + math.log(1e6)))
    feat = LayerFeatures("poly").fit(X)
    Z0 = feat.transform(X)
    if n < 8:  # too few rows to cross-validate: a power law in one feature (with 5 rows and
        # 5 correlated features a fit is exact inside the data and arbitrary outside: an H100
        # concat fitted so was predicted at 29 s), the layer's work where it has one: with 2 or
        # 3 rows every column "follows" the target and the best-correlated one was arbitrary
        # (2,350 W for an H100 max pool from 2 rows, 2026-12-06; docs/results.md, "The fit")
        alpha, work = 1e-3, _work_column(X)
        X = X[[work or _best_column(X, logy)]]
        if work and np.corrcoef(np.log1p(X[work].to_numpy(dtype=float)), logy)[0, 1] < 0:
            alpha = 1e6  # less for more work is noise: no slope, the rows' geometric mean
        bb = _poly_pipeline(1, alpha).fit(X, logy)
        U = bb[:2].transform(X)
        est = LogLinkRegressor(backbone=bb, input_range=[U.min(0).tolist(), U.max(0).tolist()],
                               log_range=log_range, span=_span(U, bb[1].scale_))
        p = est.predict(X)
        return est, {"family": "poly", "degree": 1, "alpha": alpha, "alpha_rel": None,
                     "n_terms": int(np.count_nonzero(bb.named_steps["lasso"].coef_)),
                     "booster": None, "noise_shrink": 0.0, "scale": 1.0,
                     "rmspe_pct": rmspe(y, p), "mape_pct": mape(y, p),
                     "median_ape_pct": median_ape(y, p), "cv": None, "n_rows": int(n),
                     "k_folds": 0}
    k = min(K_FOLDS, n // 2)
    folds = list(KFold(k, shuffle=True, random_state=seed).split(X))

    # --- stage 1: polynomial degree x Lasso penalty, one Lasso path per fold and degree
    cands = {}  # (degree, alpha_index) -> oof log prediction
    fold_models = {}  # degree -> list of (pipeline without lasso, coefs (p, n_alpha), y mean)
    alphas = {}
    for degree in DEGREES:
        width = math.comb(Z0.shape[1] + degree, degree) - 1
        if degree > 1 and (width > MAX_POLY_TERMS or n < ROWS_PER_TERM * width):
            continue
        pre = _poly_pipeline(degree)
        Zall = pre.fit_transform(X)
        yc = logy - logy.mean()
        amax = max(float(np.max(np.abs(Zall.T @ yc))) / n, 1e-12)
        alphas[degree] = amax * ALPHA_GRID
        oof = np.zeros((n, len(ALPHA_GRID)))
        models = []
        for tr, va in folds:
            p = _poly_pipeline(degree)
            Ztr = p.fit_transform(X.iloc[tr])
            ym = logy[tr].mean()
            _, coefs, _ = lasso_path(Ztr, logy[tr] - ym, alphas=alphas[degree],
                                     precompute=True, **LASSO_SOLVER)
            oof[va] = p.transform(X.iloc[va]) @ coefs + ym
            models.append((p, coefs, ym))
        fold_models[degree] = models
        for j in range(len(ALPHA_GRID)):
            cands[(degree, j)] = oof[:, j]
    scores = {key: _score(lp, logy)[0] for key, lp in cands.items()}
    best = min(scores.values())
    # simplest (lowest degree, then largest penalty) within tolerance of the best
    degree, j = min((key for key, s in scores.items() if s <= best * (1 + SIMPLER_TOL)),
                    key=lambda key: (key[0], key[1]))
    oof_log = cands[(degree, j)]
    poly_score = scores[(degree, j)]
    alpha = float(alphas[degree][j])

    # --- stage 2: boosted-tree correction of the residuals (kept if CV says it helps); its
    # space and number of rounds chosen by CV
    tfeat = LayerFeatures("tree").fit(X)
    T0 = tfeat.transform(X)
    rounds = BOOSTER_ROUNDS if family is None else (BOOSTER_PARAMS["max_iter"],)
    boost_oof = {(space, r): np.zeros(n) for space in BOOSTER_SPACES for r in rounds}
    for (tr, va), (p, coefs, ym) in zip(folds, fold_models[degree]):
        zb_tr = p.transform(X.iloc[tr]) @ coefs[:, j] + ym
        for space in BOOSTER_SPACES:
            b, rng = _boost_fit(np.column_stack([T0[tr], zb_tr]), logy[tr] - zb_tr, space, seed,
                                max(rounds))
            corr = _boost_stages(b, np.column_stack([T0[va], oof_log[va]]), space, rng, rounds)
            for r in rounds:
                boost_oof[(space, r)][va] = oof_log[va] + corr[r]
    for r in rounds:
        boost_oof[("+".join(BOOSTER_SPACES), r)] = np.mean(
            [boost_oof[(sp, r)] for sp in BOOSTER_SPACES], axis=0)
    boost_scores = {key: _score(lp, logy)[0] for key, lp in boost_oof.items()}
    best_boost = min(boost_scores.values())
    # fewest rounds within tolerance of the best, then the best space at that count
    n_rounds = min(r for (_, r), v in boost_scores.items() if v <= best_boost * (1 + SIMPLER_TOL))
    space = min((key for key in boost_scores if key[1] == n_rounds), key=boost_scores.get)[0]
    use_booster = boost_scores[(space, n_rounds)] < poly_score * (1 - SIMPLER_TOL)
    if family is not None:
        use_booster = family != "poly"
        if use_booster:
            space = family[len("poly+trees["):-1]
    if use_booster:
        oof_log = boost_oof[(space, n_rounds)]
    spaces = tuple(space.split("+")) if use_booster else ()

    # --- stage 3: per-layer noise level -> RMSPE-optimal shrinkage (CV-chosen strength)
    r2 = (logy - oof_log) ** 2
    Tv = np.column_stack([T0, oof_log])
    v_oof = np.zeros(n)
    for tr, va in folds:
        v_oof[va] = _booster(seed, **VAR_PARAMS).fit(Tv[tr], r2[tr]).predict(Tv[va])
    v_max = float(np.max(r2))
    v_oof = np.clip(v_oof, 0.0, v_max)
    shrink_scores = {s: _score(oof_log - s * v_oof, logy)[0] for s in SHRINK_GRID}
    s_best = min(shrink_scores.values())
    shrink = min(s for s, v in shrink_scores.items() if v <= s_best * (1 + SIMPLER_TOL / 2))
    if noise_shrink is not None:
        shrink = float(noise_shrink)
    final_oof = oof_log - shrink * v_oof
    cv_rmspe, log_scale = _score(final_oof, logy)
    p_oof = np.exp(final_oof + log_scale)

    # --- final fit on all rows
    backbone = _poly_pipeline(degree, alpha).fit(X, logy)
    zb = backbone.predict(X)
    U = backbone[:2].transform(X)
    input_range = [U.min(axis=0).tolist(), U.max(axis=0).tolist()]
    trend = None  # the power law that continues a curved backbone outside the data
    if degree > 1:
        trend = Lasso(alpha=alpha, **LASSO_SOLVER).fit(U, logy).coef_.tolist()
    boosters, var_model = [], None
    resid_range = (float(np.min(logy - zb)), float(np.max(logy - zb)))
    for sp in spaces:
        boosters.append(_boost_fit(np.column_stack([T0, zb]), logy - zb, sp, seed, n_rounds)[0])
    if shrink > 0:
        var_model = _booster(seed, **VAR_PARAMS).fit(np.column_stack([T0, zb]), r2)
    est = LogLinkRegressor(backbone=backbone, tree_features=tfeat, boosters=boosters,
                           booster_spaces=list(spaces), input_range=input_range,
                           var_model=var_model, log_scale=log_scale, shrink=float(shrink),
                           resid_range=resid_range, var_max=v_max, log_range=log_range,
                           trend=trend, span=_span(U, backbone[1].scale_)).flatten_trees()
    lasso = backbone.named_steps["lasso"]
    info = {
        "family": f"poly+trees[{space}]" if use_booster else "poly",
        "degree": int(degree),
        "alpha": alpha,
        "alpha_rel": float(ALPHA_GRID[j]),
        "n_terms": int(np.count_nonzero(lasso.coef_)),
        "booster": {**BOOSTER_PARAMS, "max_iter": int(n_rounds)} if use_booster else None,
        "noise_shrink": float(shrink),
        "scale": float(math.exp(log_scale)),
        "rmspe_pct": float(cv_rmspe),
        "mape_pct": mape(y, p_oof),
        "median_ape_pct": median_ape(y, p_oof),
        "cv": {"poly_rmspe_pct": float(poly_score),
               **{f"poly+trees[{k}]_rmspe_pct": float(boost_scores[(k, n_rounds)])
                  for k in (*BOOSTER_SPACES, "+".join(BOOSTER_SPACES))},
               "booster_rounds": {int(r): float(min(v for (_, rr), v in boost_scores.items()
                                                    if rr == r)) for r in rounds},
               "by_degree": {int(d): float(min(v for (dd, _), v in scores.items() if dd == d))
                             for d in sorted({d for d, _ in scores})}},
        "n_rows": int(n),
        "k_folds": int(k),
    }
    return est, info


TRUSTED_TYPES: list[str] = [
    f"{__name__}.LayerFeatures",
    f"{__name__}.LogLinkRegressor",
    f"{__name__}.Forest",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._polynomial.PolynomialFeatures",
    "sklearn.linear_model._coordinate_descent.Lasso",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "numpy.float64",
    "numpy.int64",
    "numpy.dtype",
    "builtins.float",
]
