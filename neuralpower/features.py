"""Layer features: the one place that turns a layer row into the numbers a model sees.

A row is a mapping (or a DataFrame row) in the measurement CSV schema of DESIGN.md. The
profiler's rows, the public data sets and the tracer's rows of a user's network all pass
through :func:`features`, so fitting and prediction see identical columns.

Every feature is a non-negative count or size; the regression takes logs of them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# The schema's columns that describe a layer (DESIGN.md, "Measurement CSV schema").
SHAPE_COLUMNS = [
    "batch", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w",
    "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w",
    "dilation_h", "dilation_w", "groups", "in_features", "out_features",
    # tensor ops (norms, activations, elementwise, softmax, concat, copies) and matmul
    "elements", "in_elements", "inner", "n_inputs", "rows",
]
TARGETS = ["runtime_ms", "power_w"]
# Optional columns a campaign on a GPU writes (inference): the host's and the GPU's own time for
# the layer, and the host's for the whole network (profiling/timing.py, TwoClocks).
CLOCK_COLUMNS = ["host_ms", "gpu_ms", "network_host_ms"]
# The layer's two clocks, fitted as targets where a campaign measured them (clocks.py).
CLOCK_TARGETS = ["host_ms", "gpu_ms"]
# What a measurement is of: inference (a forward pass) or a training step's forward and backward
# pass per layer (a campaign's ``runtime_ms`` is then their sum, beside ``forward_ms`` and
# ``backward_ms``). Rows without a ``mode`` column are inference.
MODES = ("inference", "train")
# Optional columns saying what ran around a layer inside its network (the tracer and the
# profiler fill them): elements read and written by the op just before it, and by the whole
# network per run; ops run since the last op of the same kind.
CONTEXT_COLUMNS = ["prev_elements", "net_elements", "kind_gap"]
# The first context feature: how much data the op before moved per element this op moves, per
# mille (so that the regression's log1p is a log from ratios of about 1/100 up). The same
# layer runs slower after an op that swept the caches than after one that left its input hot
# (benchmarks/context_effect.py); this ratio is what the layer's own shape cannot say. A row
# without ``prev_elements`` (public data, a search space's layers) gets the neutral 1000: a
# predictor fitted on such rows sees a constant and drops it. ``net_elements`` stays out: as a
# feature it let models fitted on synthetic networks, which put small layers in small networks,
# extrapolate badly to small layers in large real networks (27 torchvision networks: median
# error 75 % with both columns, 48 % without, same measurements).
# (CONTEXT_FEATURES, the names of all five, is defined below with the column each is made of.)
NEUTRAL_PERMILLE = 1000.0
# The second: ``kind_gap``, the ops run since the last op of the same kind (trace.kind_gaps): a
# kind not run for a while runs slower (the head's global pool of a network without SE blocks
# costs several times an SE block's pool of the same shape). A row without it gets 1.
NEUTRAL_GAP = 1.0
# The third, ``shape_seen``: 1 where an op of the same kind and shape (every
# :data:`SHAPE_COLUMNS` value) ran earlier in the same run, else 0 (:func:`shapes_seen`). The
# first op of a shape runs slower than its repeats (a stage's first block: its tensors are
# new sizes; in the 15-minute Xeon campaign the first of two twin convolutions of a network
# took 32 % longer, benchmarks/context_effect.py). Not a CSV column: the tracer gives it, and
# ``data.load`` derives it from a campaign's own rows of each network, in their order. A row
# without it gets 1, a layer that has just run (an isolated layer timed in a loop).
NEUTRAL_SEEN = 1.0
# The fourth, ``ops_ms``: the small-ops speed probe timed beside the row's measurement
# (``reference_ops_ms``, profiling.timing.Reference). A shared host's slow phases raise the
# cost of each op far more than the conv probe that scales every row shows, and by how much
# depends on the layer (small ops twice, large convolutions a tenth; benchmarks/results/
# probe_drift.md): as a feature each model learns its own. A predictor fills rows without it
# with its reference probe (card ``reference_ops_ms``, the median of its data's), so it
# predicts the reference phase unless told the probe (``predict(..., ops_probe_ms=)``);
# elsewhere a row without it gets 0, and data without any probe gives a constant, dropped.
OPS_PROBE_COLUMN = "reference_ops_ms"
# The fifth, ``synthetic``: 1 for a row of a synthetic network, 0 for one of a real network (a
# zoo campaign's). Synthetic networks, which mix small and large layers freely, run many
# layers at other speeds than real networks do (on the AMD VM small ops up to twice as slow,
# large GEMMs a tenth faster: ViT-B/16's MLP layers at batch 8 ran at 84 GMAC/s, the synthetic
# campaigns' GEMMs of their size at 100-110). With the mark, a fit on both learns the shapes
# from both and the offset between them, and a prediction, whose rows carry no mark, is for a
# real network. Not a CSV column: ``data.load`` derives it from the network id.
# The column each context feature is made of (``fit --without FEATURE`` leaves it out).
CONTEXT_INPUTS = {"prev_permille": "prev_elements", "kind_gap": "kind_gap",
                  "shape_seen": "shape_seen", "ops_ms": OPS_PROBE_COLUMN,
                  "synthetic": "synthetic"}
CONTEXT_FEATURES = list(CONTEXT_INPUTS)
# Columns the tracer adds and ``data.load`` derives for a campaign's rows, never written
# (``synthetic`` is neither: ``data.load`` alone derives it, and a traced network has none).
DERIVED_CONTEXT_COLUMNS = ["shape_seen"]
# Optional column saying what the values of a layer's data do to its time (the tracer and the
# profiler fill it; empty is none): the share of its work that meets subnormal numbers, which
# a CPU handles many times slower (subnormal.py). Not a feature: a predictor adds a measured
# cost per unit of such work (subnormal.fit_costs).
VALUE_COLUMNS = ["subnormal_share"]
# Optional column saying what the network's allocations cost a layer on a CPU (the tracer and
# the profiler fill it): MiB of its blocks that glibc's malloc maps fresh on every run, each page
# faulting on its first write (fresh_memory.py). Not a feature either: a predictor adds a
# measured cost per MiB.
MEMORY_COLUMNS = ["fresh_mib"]
# Every schema column features() reads: the layer's own, then the context it uses.
FEATURE_INPUTS = [*SHAPE_COLUMNS, *CONTEXT_INPUTS.values()]
# Every column a prediction reads: the features' inputs, the value and memory columns.
PREDICT_INPUTS = [*FEATURE_INPUTS, *VALUE_COLUMNS, *MEMORY_COLUMNS]


class _Columns(dict):
    """Float arrays by column name, readable as ``d.batch`` (numpy: a pandas op per term was
    most of the cost of predicting a network)."""

    __getattr__ = dict.__getitem__


def _conv(d: _Columns) -> dict:
    f = {c: d[c] for c in ("batch", "in_channels", "in_h", "in_w", "out_channels", "out_h",
                           "out_w", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h",
                           "pad_w", "dilation_h", "groups")}
    f["in_per_group"] = d.in_channels / d.groups
    f["out_pixels"] = d.batch * d.out_h * d.out_w
    f["macs"] = f["out_pixels"] * d.out_channels * f["in_per_group"] * d.kernel_h * d.kernel_w
    f["in_elems"] = d.batch * d.in_channels * d.in_h * d.in_w
    f["out_elems"] = f["out_pixels"] * d.out_channels
    f["weight_elems"] = d.out_channels * f["in_per_group"] * d.kernel_h * d.kernel_w
    return f


def _linear(d: _Columns) -> dict:
    f = {c: d[c] for c in ("batch", "in_features", "out_features")}
    f["macs"] = d.batch * d.in_features * d.out_features
    f["in_elems"] = d.batch * d.in_features
    f["out_elems"] = d.batch * d.out_features
    f["weight_elems"] = d.in_features * d.out_features
    return f


def _pool(d: _Columns) -> dict:
    f = {c: d[c] for c in ("batch", "in_channels", "in_h", "in_w", "out_h", "out_w",
                           "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")}
    f["out_elems"] = d.batch * d.in_channels * d.out_h * d.out_w
    f["in_elems"] = d.batch * d.in_channels * d.in_h * d.in_w
    f["macs"] = f["out_elems"] * d.kernel_h * d.kernel_w  # one compare or add per window element
    return f


def _matmul(d: _Columns) -> dict:
    """``batch`` products of (rows x in_features) by (in_features x out_features), both operands
    activations (attention's scores and mixing): nothing is a weight."""
    f = {c: d[c] for c in ("batch", "rows", "in_features", "out_features")}
    f["macs"] = d.batch * d.rows * d.in_features * d.out_features
    f["in_elems"] = d.batch * (d.rows + d.out_features) * d.in_features
    f["out_elems"] = d.batch * d.rows * d.out_features
    return f


def _attention(d: _Columns) -> dict:
    """Fused scaled dot-product attention (``F.scaled_dot_product_attention``, one kernel on CPU
    and GPU): ``batch`` heads of ``rows`` queries of size ``in_features`` against ``inner``
    keys, mixing values of size ``out_features``. The scores are never written out."""
    f = {c: d[c] for c in ("batch", "rows", "inner", "in_features", "out_features")}
    f["macs"] = d.batch * d.rows * d.inner * (d.in_features + d.out_features)
    f["in_elems"] = d.batch * (d.rows * d.in_features + d.inner * (d.in_features + d.out_features))
    f["out_elems"] = d.batch * d.rows * d.out_features
    return f


def _tensor(d: _Columns) -> dict:
    """An op that streams its tensors once: elementwise, activations, copies. Cost follows the
    elements read and written; ``inner`` (the contiguous last dimension) sets how well it
    vectorises, and a broadcast operand (SE's per-channel scale) shows in ``in_elems``."""
    return {"out_elems": d.elements, "in_elems": d.in_elements, "inner": d.inner}


def _grouped_mm(d: _Columns) -> dict:
    """A mixture of experts' grouped product: ``rows`` token-expert pairs, sorted by expert,
    each through its expert's (in_features x out_features) weight, one of ``groups``. The
    weights of the experts some row reaches are read (at most one expert per row)."""
    f = {c: d[c] for c in ("rows", "in_features", "out_features", "groups")}
    f["macs"] = d.rows * d.in_features * d.out_features
    f["in_elems"] = d.rows * d.in_features
    f["out_elems"] = d.rows * d.out_features
    f["weight_elems"] = np.minimum(d.groups, d.rows) * d.in_features * d.out_features
    return f


def _conv_transpose(d: _Columns) -> dict:
    """A transposed convolution (UNet decoders, GANs): every input pixel scatters a kernel's
    window into the output, so its work counts input pixels, not output pixels."""
    f = {c: d[c] for c in ("batch", "in_channels", "in_h", "in_w", "out_channels", "out_h",
                           "out_w", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h",
                           "pad_w", "groups")}
    f["out_per_group"] = d.out_channels / d.groups
    f["in_pixels"] = d.batch * d.in_h * d.in_w
    f["macs"] = f["in_pixels"] * d.in_channels * f["out_per_group"] * d.kernel_h * d.kernel_w
    f["in_elems"] = f["in_pixels"] * d.in_channels
    f["out_elems"] = d.batch * d.out_channels * d.out_h * d.out_w
    f["weight_elems"] = d.in_channels * f["out_per_group"] * d.kernel_h * d.kernel_w
    return f


def _group_norm(d: _Columns) -> dict:
    return {**_tensor(d), "groups": d.groups}              # inner: the elements of a group


def _batch_norm(d: _Columns) -> dict:
    return {**_tensor(d), "in_channels": d.in_channels}   # inner: the H*W plane of a channel


def _cat(d: _Columns) -> dict:
    return {**_tensor(d), "n_inputs": d.n_inputs}          # inner: the block copied per input


def _embedding(d: _Columns) -> dict:
    """``batch`` lookups of rows of length ``out_features`` in a table of ``in_features`` rows."""
    f = {c: d[c] for c in ("batch", "in_features", "out_features")}
    f["out_elems"] = d.batch * d.out_features
    return f


# Kinds that stream tensors; each is its own kind because their cost per element differs
# (gelu's erf against relu's max), and each is profiled as a layer of its own.
ACTIVATIONS = ("relu", "gelu", "silu", "hardswish", "sigmoid", "hardsigmoid", "tanh",
               "hardtanh",      # ReLU6 (MobileNetV2)
               "leaky_relu",    # CSPDarknet, YOLO, GANs
               "softplus")      # state-space models' step sizes, xIELU (Apertus)
ELEMENTWISE = ("add", "mul", "sub", "div")
# Unary math that normalisations and rotary embeddings are written in (RMSNorm: pow, mean,
# add, rsqrt, mul; a LayerNorm by hand: sqrt, div; rotate_half: neg, cat), op by op, as eager
# PyTorch runs them; then exp (Swin-V2's logit scale), cos and sin (position tables), clamp
# (activation clipping) and clamp_min (F.normalize's floor).
UNARY = ("pow", "sqrt", "rsqrt", "neg", "exp", "cos", "sin", "clamp", "clamp_min")
# Reductions over some dimensions (not global average pooling, which is avg_pool2d): their
# output is the smaller tensor. ``inner``: mean's is its output's last dimension (1 for a
# reduction over the last, kept); the later ones' the elements after the last dimension reduced
# (ConvNeXt-V2's norm over the rows and columns of a channels-last map: the channels; over the
# last: 1), which a reduction that drops the dimension does not change.
REDUCTIONS = ("mean", "sum", "amax", "linalg_vector_norm")
# bias + weight * x in one pass over three tensors (ConvNeXt-V2's global response norm).
FUSED_ELEMENTWISE = ("addcmul",)
# Resizing a map (FPNs, UNets, segmentation heads: ``F.interpolate``): each output element
# reads one input element (nearest) or four (bilinear); ``inner``: the output's width.
UPSAMPLES = ("upsample_nearest2d", "upsample_bilinear2d")
# Zero padding as an op of its own (TensorFlow's "same" padding before a conv: timm's
# ``pad_same``, EfficientNets ported from TensorFlow): a copy into a larger tensor.
PADDING = ("constant_pad_nd",)
# A map shifted around its edges (Swin's shifted windows: ``torch.roll`` over rows and
# columns): a copy per dimension rolled (``in_elements``: the elements times the dimensions),
# ``inner`` the elements after the last dimension rolled.
SHIFTS = ("roll",)
# Rows of a table gathered by an index tensor (``table[idx]``: the relative position biases of
# Swin, BEiT, MaxViT; position embeddings looked up): ``inner``, the elements of one row.
GATHERS = ("index",)
# Masks: a comparison (eq, ne, gt, lt, ge, le: one kind, the same kernel writing a bool per
# element), and the selections a mask drives (Swin's attention masks between windows' regions,
# language models' padding and causal masks).
MASKS = ("compare", "masked_fill", "where")
COMPARISON_OPS = ("eq", "ne", "gt", "lt", "ge", "le")   # the ATen ops of ``compare``
# Tensors made, not computed from others: filled with a constant (``fill``: zeros, ones, full
# and their ``_like``, ``new_`` and in-place forms) or with positions (``arange``); they read
# nothing (``in_elements`` 1).
FILLS = ("fill", "arange")
# Copies that change what they copy: a dtype cast (``_to_copy``: positions to float, a bool
# mask to the scores' dtype) and a tiling (``repeat``: an expanded read, a dense write).
CONVERSIONS = ("cast", "repeat")
# A mixture of experts' routing, as transformers runs it (``grouped_mm_experts_forward``): the
# top k experts of each token (``topk``; ``inner``, the experts), the pairs sorted by expert
# (``sort``), each pair's token (``floor_divide`` by k), the tokens per expert (``histc``) and
# their running sum, the groups' offsets (``cumsum``), and the pairs put back in token order
# (``index_put``: ``in_elements``, the values and indices read).
ROUTING = ("topk", "sort", "floor_divide", "histc", "cumsum", "index_put")
# Along a dimension, by an index tensor: ``gather`` reads the indexed elements (DeepSeek's
# router picks its top scores so), ``scatter`` writes values there (its experts' group mask);
# and the bitwise ops that combine masks (``logical``: and, or, xor, not: a causal mask and a
# padding mask, sliding windows, DeBERTa's relative masks), one kind as ``compare`` is.
GATHERED = ("gather", "scatter", "logical")
LOGICAL_OPS = ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "logical_and",
               "logical_or", "logical_not")   # the ATen ops of ``logical``
# The kinds above: each streams its tensors (features: ``_tensor``) and is a kind of its own.
STREAMED = (ACTIVATIONS + ELEMENTWISE + UNARY + REDUCTIONS + FUSED_ELEMENTWISE + SHIFTS
            + GATHERS + MASKS + FILLS + CONVERSIONS + ROUTING + GATHERED)
# kind -> feature builder. A kind with an entry here can be fitted and predicted.
FEATURES = {
    "conv2d": _conv,
    "depthwise_conv2d": _conv,   # groups == in_channels: memory-bound, a regime of its own
    "conv_transpose2d": _conv_transpose,
    "linear": _linear,
    "matmul": _matmul,
    "grouped_mm": _grouped_mm,   # mixtures of experts: every token through its top k experts
    "attention": _attention,     # fused: cheaper than its matmuls and softmax (see DECOMPOSED)
    "max_pool2d": _pool,
    "avg_pool2d": _pool,
    "batch_norm": _batch_norm,
    "layer_norm": _tensor,       # inner: the normalised size
    "group_norm": _group_norm,   # diffusion UNets, BiT, detection heads
    "softmax": _tensor,          # inner: the size along the softmax dimension
    **{k: _tensor for k in STREAMED},
    "copy": _tensor,             # a layout change that moves data (contiguous after a permute)
    **{k: _tensor for k in UPSAMPLES + PADDING},
    "cat": _cat,
    "stack": _cat,               # a cat along a new dimension: ``inner``, each input's run
    "embedding": _embedding,
}
MODELED_KINDS = tuple(FEATURES)
# A kind split off from another after predictors were fitted: where a predictor has no model of
# its own for it, the older kind's model predicts it (as it did before the split).
STAND_INS = {"depthwise_conv2d": "conv2d",
             "stack": "cat"}   # a cat along a new dimension, traced as cat until 2026-12-07


def _attention_parts(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Fused attention as the ops of its math (what the tracer saw of it before ``attention``
    was a kind): queries and keys each scaled (a mul), the scores (a matmul), the softmax over
    the keys, the mixing of the values (a matmul)."""
    b, q, k = (_numbers(rows, c) for c in ("batch", "rows", "inner"))
    e, v = _numbers(rows, "in_features"), _numbers(rows, "out_features")
    frame = lambda **c: pd.DataFrame(c, index=rows.index)  # noqa: E731
    return [("mul", frame(elements=b * q * e, in_elements=b * q * e, inner=e)),
            ("mul", frame(elements=b * k * e, in_elements=b * k * e, inner=e)),
            ("matmul", frame(batch=b, rows=q, in_features=e, out_features=k)),
            ("softmax", frame(elements=b * q * k, in_elements=b * q * k, inner=k)),
            ("matmul", frame(batch=b, rows=q, in_features=k, out_features=v))]


# A kind added after predictors were fitted, which such a predictor predicts as the sum of the
# ops it stands for: kind -> rows -> [(kind of each part, its rows)].
DECOMPOSED = {"attention": _attention_parts}

# Defaults the schema allows to be left empty.
_DEFAULTS = {"dilation_h": 1, "dilation_w": 1, "groups": 1, "pad_h": 0, "pad_w": 0}


# Schema columns each kind reads; a row missing one of them cannot be featured.
INPUT_COLUMNS = {
    "conv2d": ["batch", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w",
               "kernel_h", "kernel_w", "stride_h", "stride_w"],
    "linear": ["batch", "in_features", "out_features"],
    "max_pool2d": ["batch", "in_channels", "in_h", "in_w", "out_h", "out_w",
                   "kernel_h", "kernel_w", "stride_h", "stride_w"],
}
INPUT_COLUMNS["avg_pool2d"] = INPUT_COLUMNS["max_pool2d"]
INPUT_COLUMNS["depthwise_conv2d"] = INPUT_COLUMNS["conv2d"]
INPUT_COLUMNS["conv_transpose2d"] = INPUT_COLUMNS["conv2d"]
INPUT_COLUMNS["matmul"] = ["batch", "rows", "in_features", "out_features"]
INPUT_COLUMNS["attention"] = ["batch", "rows", "inner", "in_features", "out_features"]
INPUT_COLUMNS["grouped_mm"] = ["rows", "in_features", "out_features", "groups"]
INPUT_COLUMNS["embedding"] = ["batch", "in_features", "out_features"]
for _k in ("layer_norm", "softmax", "copy", *STREAMED, *UPSAMPLES, *PADDING):
    INPUT_COLUMNS[_k] = ["elements", "in_elements", "inner"]
INPUT_COLUMNS["group_norm"] = ["elements", "in_elements", "inner", "groups"]
INPUT_COLUMNS["batch_norm"] = ["elements", "in_elements", "inner", "in_channels"]
INPUT_COLUMNS["cat"] = INPUT_COLUMNS["stack"] = ["elements", "in_elements", "inner", "n_inputs"]
# Kinds whose MACs features.py states (the tracer keeps torch's flop count for the rest).
MAC_KINDS = ("conv2d", "depthwise_conv2d", "conv_transpose2d", "linear", "matmul", "attention",
             "grouped_mm", "max_pool2d", "avg_pool2d")
# Kinds whose time, beyond the largest layers measured, grows at least as their MACs do (a
# rate no higher than at the data's edge: regression.LogLinkRegressor's ``work_column``).
WORK_BOUND = ("conv2d", "depthwise_conv2d", "conv_transpose2d", "linear", "matmul", "attention",
              "grouped_mm")


def _check_kind(kind: str) -> None:
    if kind not in FEATURES:
        raise KeyError(f"no features for kind {kind!r}; modeled kinds: {', '.join(MODELED_KINDS)}")


def _feature_columns(columns: dict[str, np.ndarray], kind: str) -> dict[str, np.ndarray]:
    """Features from float arrays of the schema's columns (NaN: empty)."""
    d = _Columns()
    for c in SHAPE_COLUMNS:
        v = columns[c]
        d[c] = np.where(np.isnan(v), _DEFAULTS[c], v) if c in _DEFAULTS else v
    return FEATURES[kind](d)


def _numbers(rows: pd.DataFrame, c: str) -> np.ndarray:
    """Column ``c`` as floats (absent, empty or text: NaN). Float before any product: int64
    MACs of a large layer would overflow."""
    col = rows[c] if c in rows else None
    if col is None:
        return np.full(len(rows), np.nan)
    if not pd.api.types.is_numeric_dtype(col):
        col = pd.to_numeric(col, errors="coerce")
    return col.to_numpy(dtype=float, na_value=np.nan)


def ops_probe(rows: pd.DataFrame) -> pd.Series:
    """The rows' small-ops probe (:data:`OPS_PROBE_COLUMN`) in ms: NaN where absent or not
    positive."""
    v = pd.Series(_numbers(rows, OPS_PROBE_COLUMN), index=rows.index)
    return v.where(v > 0)


def shapes_seen(keys) -> list[int]:
    """``shape_seen`` of each op of a run, given in order by a key of its kind and shape (the
    tracer's ``trace.shape_key``; ``data.load`` adds the network to it): 1 where an op with the
    same key came earlier, else 0."""
    seen, out = set(), []
    for k in keys:
        out.append(int(k in seen))
        seen.add(k)
    return out


def features(rows: pd.DataFrame, kind: str, context: bool = True) -> pd.DataFrame:
    """Named features of the rows of one ``kind`` (float, same index as ``rows``): the layer's
    own, then (``context``) :data:`CONTEXT_FEATURES`."""
    _check_kind(kind)
    f = _feature_columns({c: _numbers(rows, c) for c in SHAPE_COLUMNS}, kind)
    if context:
        own = np.maximum(f.get("in_elems", 0.0) + f.get("out_elems", 0.0), 1.0)
        prev = _numbers(rows, "prev_elements")
        f["prev_permille"] = np.where(np.isnan(prev), NEUTRAL_PERMILLE, 1000.0 * prev / own)
        gap = _numbers(rows, "kind_gap")
        f["kind_gap"] = np.where(np.isnan(gap), NEUTRAL_GAP, gap)
        seen = _numbers(rows, "shape_seen")
        f["shape_seen"] = np.where(np.isnan(seen), NEUTRAL_SEEN, seen)
        f["ops_ms"] = ops_probe(rows).fillna(0.0).to_numpy()
        synthetic = _numbers(rows, "synthetic")
        f["synthetic"] = np.where(np.isnan(synthetic), 0.0, synthetic)
    return pd.DataFrame(f, index=rows.index)


def macs(rows, kind: str) -> np.ndarray:
    """Multiply-accumulates (window operations for pooling) of each row: a DataFrame, or a list
    of dicts (the tracer's rows, featured without building a frame)."""
    if isinstance(rows, pd.DataFrame):
        return features(rows, kind)["macs"].to_numpy()
    _check_kind(kind)
    columns = {c: np.array([r.get(c, np.nan) for r in rows], dtype=float) for c in SHAPE_COLUMNS}
    return _feature_columns(columns, kind)["macs"]
