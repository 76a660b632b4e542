"""Turn any ``nn.Module`` into a layer table, on the meta device: no weights, no compute.

The model runs once under a ``TorchDispatchMode`` with meta tensors standing in for its
parameters, buffers and input, so every ATen op it calls is seen — module calls and
functional ones alike (``F.conv2d``, ``x @ w``, ``torch.cat``, ``x + y``). Each op becomes
one row: its kind, its hyper-parameters in the measurement CSV schema, its MACs and the
module path that called it. Ops of kinds the regression models are mapped by the handlers
in ``OP_HANDLERS``; every other op keeps its ATen name as its kind and is reported, never
dropped. The only values computed are small constants a forward builds from nothing but shapes
(Swin's window mask), to find the ops that meet subnormal numbers (``subnormal.py``).

>>> import torchvision
>>> from neuralpower.trace import trace
>>> t = trace(torchvision.models.resnet18(), (1, 3, 224, 224))
>>> t[t.kind == "conv2d"].macs.sum()
1814083072
"""
from __future__ import annotations

import gc
import itertools
import math
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import pandas as pd
import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module   # functional_call's, held open
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from .errors import NeuralPowerError, first_line
from . import fresh_memory
from .inputs import as_shapes
from .inputs import hint as inputs_hint
from .inputs import text as inputs_text
from .features import (ACTIVATIONS, COMPARISON_OPS, CONTEXT_COLUMNS, DERIVED_CONTEXT_COLUMNS,
                       ELEMENTWISE, LOGICAL_OPS, MAC_KINDS, MEMORY_COLUMNS, SHAPE_COLUMNS,
                       UNARY, VALUE_COLUMNS, macs, shapes_seen)
from . import subnormal

aten = torch.ops.aten

# Ops that only allocate or re-describe memory: no kernel does arithmetic. They are kept in
# the table as kind "free" (zero cost by definition) so nothing is silently dropped.
_FREE_OPS = {
    aten._unsafe_view, aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty,
    aten.new_empty_strided, aten.lift_fresh, aten.scalar_tensor, aten._local_scalar_dense,
    aten.sym_size, aten.sym_stride, aten.sym_numel, aten.sym_storage_offset, aten.dim,
    aten.is_same_size, aten.as_strided_,  # (in-place restride: metadata only)
}
# Ops through which a parameter stays "a weight" (so `x @ w.t()` is still a linear layer).
_WEIGHT_PRESERVING = {aten.clone, aten.contiguous, aten._to_copy, aten._unsafe_view}
_WEIGHT = "_neuralpower_weight"


def _pair(v, default=None):
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _read(args, first) -> int:
    """Elements an op reads for ``moved``: its first activation, or, where its first argument
    is a list of tensors (``cat``, ``stack``), all of them: a concatenation reads everything
    it writes."""
    if args and isinstance(args[0], (list, tuple)) and args[0] \
            and all(isinstance(a, torch.Tensor) for a in args[0]):
        return sum(a.numel() for a in args[0])
    return first.numel() if first is not None else 0


def _is_weight(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _WEIGHT, False)


def _spatial(x: torch.Tensor):
    """(batch, channels, h, w) of a 4-D (or unbatched 3-D) image tensor."""
    s = tuple(x.shape)
    return (1, *s) if len(s) == 3 else s


def _line(x: torch.Tensor):
    """(batch, channels, 1, length) of a 3-D (or unbatched 2-D) sequence tensor."""
    s = tuple(x.shape)
    return (1, s[0], 1, s[1]) if len(s) == 2 else (s[0], s[1], 1, s[2])


def _conv(args, out):
    x, w = args[0], args[1]
    stride, padding, dilation, transposed, _, groups = args[3:9]
    if w.dim() == 3 and not transposed:
        # A 1-D convolution runs as a 2-D one of height 1 (ATen's view1d_as_2d, on CPUs and
        # GPUs alike), so it is that conv2d.
        (b, c, h, wd), (_, oc, oh, ow) = _line(x), _line(out)
        (kh, kw), (sh, sw) = (1, w.shape[2]), (1, _pair(stride)[0])
        (ph, pw), (dh, dw) = (0, _pair(padding)[0]), (1, _pair(dilation)[0])
    elif w.dim() != 4 or x.dim() not in (3, 4):
        return {"kind": f"conv_transpose{w.dim() - 2}d" if transposed else f"conv{w.dim() - 2}d"}
    else:   # (a transposed one's weight is (in, out / groups, kh, kw): the same kernel sizes)
        b, c, h, wd = _spatial(x)
        _, oc, oh, ow = _spatial(out)
        (kh, kw), (sh, sw) = tuple(w.shape[2:]), _pair(stride)
        (ph, pw), (dh, dw) = _pair(padding), _pair(dilation)
    kind = ("conv_transpose2d" if transposed
            else "depthwise_conv2d" if groups > 1 and groups == c else "conv2d")
    return dict(kind=kind, batch=b, in_channels=c,
                in_h=h, in_w=wd, out_channels=oc,
                out_h=oh, out_w=ow, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw,
                pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw, groups=int(groups))


def _linear_from(a, b):
    """A product a @ b is a linear layer when one side is a weight; else an activation matmul."""
    if _is_weight(b):  # x @ w, w possibly expanded to a batch of copies (bmm)
        rows = a.numel() // a.shape[-1]
        return dict(kind="linear", batch=rows, in_features=b.shape[-2], out_features=b.shape[-1])
    if _is_weight(a):  # w @ x: x's columns are the rows
        rows = b.numel() // b.shape[-2]
        return dict(kind="linear", batch=rows, in_features=a.shape[-1], out_features=a.shape[-2])
    if a.dim() in (2, 3) and b.dim() == a.dim():  # mm or bmm of two activations
        return dict(kind="matmul", batch=a.shape[0] if a.dim() == 3 else 1, rows=a.shape[-2],
                    in_features=a.shape[-1], out_features=b.shape[-1])
    return {"kind": "matmul"}


def _mm(args, out):
    return _linear_from(args[0], args[1])


def _addmm(args, out):
    return _linear_from(args[1], args[2])


def _pool(kind, x, out, kernel, stride, padding, dilation=1):
    b, c, h, w = _spatial(x)
    _, _, oh, ow = _spatial(out)
    (kh, kw) = _pair(kernel)
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride, (kh, kw)), _pair(padding), _pair(dilation)
    return dict(kind=kind, batch=b, in_channels=c, in_h=h, in_w=w, out_channels=c, out_h=oh,
                out_w=ow, kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph,
                pad_w=pw, dilation_h=dh, dilation_w=dw, groups=1)


def _max_pool(args, out):
    x, kernel = args[0], args[1]
    stride, padding, dilation = (list(args[2:5]) + [None, 0, 1])[:3]
    return _pool("max_pool2d", x, out, kernel, stride, padding or 0, dilation or 1)


def _avg_pool(args, out):
    x, kernel = args[0], args[1]
    stride, padding = (list(args[2:4]) + [None, 0])[:2]
    return _pool("avg_pool2d", x, out, kernel, stride, padding or 0)


def _adaptive(kind):
    """Adaptive pooling as the fixed pooling PyTorch runs when sizes divide (the common case)."""
    def handler(args, out):
        x = args[0]
        _, _, h, w = _spatial(x)
        _, _, oh, ow = _spatial(out)
        kernel = (-(-h // oh), -(-w // ow))  # ceil: the largest window adaptive pooling uses
        # an output larger than the input (AlexNet at a small input) overlaps windows: stride 1
        return _pool(kind, x, out, kernel, (max(1, h // oh), max(1, w // ow)), 0)
    return handler


def _mean(args, out):
    """Global average pooling written as ``x.mean((2, 3))`` (torchvision does this for 1x1)."""
    x, dims = args[0], args[1] if len(args) > 1 else None
    if dims is not None and x.dim() == 4 and {d % 4 for d in dims} == {2, 3}:
        return _pool("avg_pool2d", x, out.reshape(x.shape[0], x.shape[1], 1, 1),
                     tuple(x.shape[2:]), tuple(x.shape[2:]), 0)
    return _mean_op(args, out)


def _numel(t) -> int:
    if isinstance(t, torch.Tensor):
        return t.numel()
    if isinstance(t, (list, tuple)):
        return sum(_numel(a) for a in t)
    return 0


def _tensor_op(kind, data=slice(0, 1), inner=lambda args, out: out.shape[-1] if out.dim() else 1):
    """A kind that streams tensors: its elements out and in (the arguments at ``data``; a
    Python scalar operand reads nothing) and its innermost contiguous extent."""
    def handler(args, out):
        if not isinstance(out, torch.Tensor) or out.numel() == 0:
            return {"kind": kind}
        return dict(kind=kind, batch=out.shape[0] if out.dim() else 1, elements=out.numel(),
                    in_elements=max(_numel(list(args[data])), 1),
                    inner=max(int(inner(args, out)), 1))
    return handler


def _dim(args, out) -> int:
    return (args[1] if len(args) > 1 else 0) % max(out.dim(), 1)


# Built once: the tracer calls a handler for every op of every network it traces.
_batch_norm_op = _tensor_op("batch_norm", inner=lambda a, o: o[0, 0].numel() if o.dim() > 2 else 1)
_softmax = _tensor_op("softmax", inner=lambda a, o: o.shape[a[1]] if o.dim() else 1)
_mean_op = _tensor_op("mean")
_group_norm_op = _tensor_op("group_norm")


def _batch_norm(args, out):
    x = args[0]
    return {**_batch_norm_op(args, out), "in_channels": x.shape[1] if x.dim() > 1 else 1}


def _group_norm(args, out):
    """``native_group_norm(x, weight, bias, N, C, HxW, groups, eps)``: ``inner``, the elements
    of one group, which its statistics run over."""
    x, groups = args[0], int(args[6])
    row = _group_norm_op(args, out)
    if "elements" in row:
        row.update(inner=max(x.numel() // max(x.shape[0] * groups, 1), 1), groups=groups)
    return row


def _joined(kind):
    """``cat`` or ``stack`` of a list of tensors: ``inner``, the output's elements from the
    dimension joined on; ``n_inputs``, the tensors joined (empty ones do nothing)."""
    op = _tensor_op(kind, inner=lambda a, o: math.prod(o.shape[_dim(a, o):]))

    def handler(args, out):
        tensors = [t for t in args[0] if isinstance(t, torch.Tensor) and t.numel()]
        return {**op(args, out), "n_inputs": len(tensors)}
    return handler


def _after(x, dims) -> int:
    """The elements after the last of ``dims`` (an int or a list; 1 for none: every one)."""
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    return math.prod(x.shape[max(d % x.dim() for d in dims) + 1:]) if dims and x.dim() else 1


def _reduction(kind, dims_at: int):
    """A reduction whose dimensions are argument ``dims_at``: ``inner``, the elements after
    the last dimension reduced (1: over the last, or over every dimension)."""
    return _tensor_op(kind, inner=lambda a, o: _after(a[0], a[dims_at] if len(a) > dims_at
                                                       else None))


def _rolled_dims(args) -> list:
    return list(args[2]) if len(args) > 2 and args[2] is not None else []


_roll_op = _tensor_op("roll", inner=lambda a, o: _after(a[0], _rolled_dims(a)))


def _roll(args, out):
    """``roll(x, shifts, dims)``: a copy per dimension rolled (one when it flattens)."""
    row = _roll_op(args, out)
    if "elements" in row:
        row["in_elements"] = args[0].numel() * max(len(_rolled_dims(args)), 1)
    return row


def _indexed(args) -> list:
    """The dimensions an ``index`` op indexes (its non-None index tensors)."""
    return [i for i, t in enumerate(args[1]) if t is not None]


_index_op = _tensor_op("index", inner=lambda a, o: _after(a[0], _indexed(a)[-1:]))


def _index(args, out):
    """``x[idx]`` (``index(x, [None, ..., idx, ...])``): the rows gathered, and the indices
    read; ``inner``, the elements after the last dimension indexed (one row of a table)."""
    row = _index_op(args, out)
    if "elements" in row:
        row["in_elements"] = out.numel() + sum(args[1][i].numel() for i in _indexed(args))
    return row


def _grouped(args, out):
    """``_grouped_mm(rows, weights, offs)``: rows (M, K) through experts (G, K, N) (or G
    batches (G, M, K)): ``rows``, every row; ``groups``, the experts."""
    a, b = args[0], args[1]
    if not (isinstance(out, torch.Tensor) and b.dim() == 3 and a.numel()):
        return {"kind": "grouped_mm"}
    return dict(kind="grouped_mm", batch=1, rows=a.numel() // a.shape[-1],
                in_features=a.shape[-1], out_features=b.shape[-1], groups=b.shape[0])


def _first_out(kind, inner):
    """A kind whose op returns a tuple (values and indices: ``topk``, ``sort``): its rows from
    the first tensor, ``inner`` the size of the dimension it runs along (argument 2 or 1)."""
    op = _tensor_op(kind, inner=inner)
    return lambda args, out: op(args, out[0] if isinstance(out, (tuple, list)) else out)


def _along(at: int):
    """The input's size along the dimension given as argument ``at`` (default the last)."""
    return lambda a, o: (a[0].shape[a[at] % a[0].dim()] if len(a) > at and a[0].dim()
                         else (a[0].shape[-1] if a[0].dim() else 1))


_index_put_op = _tensor_op("index_put", inner=lambda a, o: _after(a[0], _indexed(a)[-1:]))


def _index_put(args, out):
    """``x[indices] = values`` (``index_put_(x, indices, values)``): the values written and,
    with the indices, read; ``inner``, the elements of one row put."""
    x, indices, values = args[0], args[1], args[2]
    row = _index_put_op((x, indices), values)   # (its rows from the values, not from x)
    if "elements" in row:
        row["in_elements"] = values.numel() + sum(indices[i].numel()
                                                  for i in _indexed((x, indices)))
    return row


_gather_op = _tensor_op("gather", inner=_along(1))


def _gather(args, out):
    """``gather(x, dim, index)``: an element read per index (``in_elements``: those and the
    indices); ``inner``, the input's size along ``dim``."""
    row = _gather_op(args, out)
    if "elements" in row:
        row["in_elements"] = 2 * args[2].numel()
    return row


_scatter_op = _tensor_op("scatter", inner=_along(1))


def _scatter(inplace: bool):
    """``scatter(x, dim, index, src or value)``: the out-of-place op copies ``x`` and then
    writes an element per index, the in-place one only writes (``elements``); both read the
    indices and a source tensor if there is one."""
    def handler(args, out):
        row = _scatter_op(args, out)
        if "elements" in row:
            index, src = args[2], args[3] if len(args) > 3 else None
            moved = index.numel() * (2 if isinstance(src, torch.Tensor) else 1)
            row["elements"] = index.numel() if inplace else out.numel()
            row["in_elements"] = moved + (0 if inplace else args[0].numel())
        return row
    return handler


def _embedding(args, out):
    weight, indices = args[0], args[1]
    return dict(kind="embedding", batch=indices.numel(), in_features=weight.shape[0],
                out_features=weight.shape[1])


# The ops that fill a tensor with a constant (``fill_`` and ``zero_`` in place; ``zeros`` and
# ``full`` read nothing, nor do the ``_like`` and ``new_`` forms read the tensor they take the
# shape of).
_FILL_OPS = ("zeros", "ones", "full", "zeros_like", "ones_like", "full_like", "new_zeros",
             "new_ones", "new_full", "fill_", "zero_")

# ATen op packet -> handler(args, out) returning the kind and its schema columns.
# Supporting a new op is one line here plus, if it is a new kind, a builder in features.py.
OP_HANDLERS = {
    aten.convolution: _conv,
    aten._convolution: _conv,
    aten.mm: _mm,
    aten.addmm: _addmm,
    aten.bmm: _mm,
    aten.baddbmm: _addmm,
    aten._grouped_mm: _grouped,
    aten.max_pool2d_with_indices: _max_pool,
    aten.max_pool2d: _max_pool,
    aten.avg_pool2d: _avg_pool,
    aten._adaptive_avg_pool2d: _adaptive("avg_pool2d"),
    aten.adaptive_max_pool2d: _adaptive("max_pool2d"),
    aten.mean: _mean,
    aten.native_batch_norm: _batch_norm,
    aten._native_batch_norm_legit_no_training: _batch_norm,
    aten._native_batch_norm_legit: _batch_norm,
    aten.native_layer_norm: _tensor_op("layer_norm", inner=lambda a, o: math.prod(a[1])),
    aten.native_group_norm: _group_norm,
    aten.upsample_nearest2d: _tensor_op("upsample_nearest2d"),
    aten.upsample_bilinear2d: _tensor_op("upsample_bilinear2d"),
    aten.constant_pad_nd: _tensor_op("constant_pad_nd", inner=lambda a, o: o.shape[-1]),
    aten._softmax: _softmax,
    aten._safe_softmax: _softmax,
    aten.cat: _joined("cat"),
    aten.stack: _joined("stack"),
    aten.roll: _roll,
    aten.index: _index,
    aten.sum: _reduction("sum", 1),
    aten.amax: _reduction("amax", 1),
    aten.linalg_vector_norm: _reduction("linalg_vector_norm", 2),   # (x, ord, dims, keepdim)
    aten.addcmul: _tensor_op("addcmul", data=slice(0, 3)),   # (x, a, b): x + value * a * b
    aten.embedding: _embedding,
    aten.clone: _tensor_op("copy"),
    aten.copy: _tensor_op("copy", data=slice(1, 2)),   # (destination, source)
    aten.copy_: _tensor_op("copy", data=slice(1, 2)),
    **{getattr(aten, k): _tensor_op(k) for k in ACTIVATIONS + UNARY},
    **{getattr(aten, k): _tensor_op(k, data=slice(0, 2)) for k in ELEMENTWISE},
    **{getattr(aten, k): _tensor_op("compare", data=slice(0, 2)) for k in COMPARISON_OPS},
    aten.masked_fill: _tensor_op("masked_fill", data=slice(0, 2)),   # (x, mask, value)
    aten.where: _tensor_op("where", data=slice(0, 3)),               # (mask, a, b)
    **{getattr(aten, k): _tensor_op("fill", data=slice(0, 0)) for k in _FILL_OPS},
    aten.arange: _tensor_op("arange", data=slice(0, 0)),
    aten._to_copy: _tensor_op("cast"),
    aten.repeat: _tensor_op("repeat"),
    aten.topk: _first_out("topk", _along(2)),      # (x, k, dim)
    aten.sort: _first_out("sort", _along(1)),      # (x, dim)
    aten.floor_divide: _tensor_op("floor_divide", data=slice(0, 2)),
    aten.histc: _tensor_op("histc", inner=lambda a, o: o.numel()),   # inner: the bins
    aten.cumsum: _tensor_op("cumsum", inner=_along(1)),
    aten.index_put: _index_put,
    aten.index_put_: _index_put,
    aten.gather: _gather,
    aten.scatter: _scatter(inplace=False),
    aten.scatter_: _scatter(inplace=True),
    **{getattr(aten, k): _tensor_op("logical", data=slice(0, 2)) for k in LOGICAL_OPS
       if hasattr(aten, k)},
}
# In-place variants (relu_, add_) cost what their functional ops do.
OP_HANDLERS.update({getattr(aten, k + "_"): OP_HANDLERS[getattr(aten, k)]
                    for k in (*ACTIVATIONS, *ELEMENTWISE, *UNARY, *COMPARISON_OPS, *LOGICAL_OPS,
                              "masked_fill") if hasattr(aten, k + "_")})


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    """``torch.empty_like(t, device="meta")``; on a meta tensor ``empty_like`` runs a slow Python
    decomposition, so a dense tensor's layout is stated directly (what ``empty_like`` keeps)."""
    if t.is_contiguous():
        return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return torch.empty_like(t, device="meta")


def _batch_norm_meta(x, *args):
    """Output shapes of batch norm: torch's meta kernel for it is a slow Python decomposition."""
    if not x.is_meta:
        return None
    c = x.shape[1] if x.dim() > 1 else 0
    return (_meta_like(x), x.new_empty((c,)), x.new_empty((c,)))


def _conv_meta(x, w, bias, stride, padding, dilation, transposed, output_padding, groups):
    """Output of a plain 2-D convolution (torch's meta kernel for it is Python); None for any
    other case, or a bad shape, which torch then derives itself (and reports)."""
    if (transposed or not (x.is_meta and w.is_meta) or x.dim() != 4 or w.dim() != 4
            or x.shape[1] == 0
            or w.shape[1] * groups != x.shape[1]
            or not len(stride) == len(padding) == len(dilation) == 2):
        return None
    out_hw = [(n + 2 * p - d * (k - 1) - 1) // s + 1
              for n, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation)]
    if min(out_hw) <= 0:
        return None
    return x.new_empty((x.shape[0], w.shape[0], *out_hw))


def _pointwise_shape(x, rest):
    """The output shape of an activation or a binary elementwise op on dense meta tensors of one
    floating dtype (with Python numbers beside them): the broadcast shape. None for any other
    mix (type promotion, strided inputs, a bad broadcast), which is left to torch."""
    if (not isinstance(x, torch.Tensor) or not x.is_meta or not x.is_floating_point()
            or not x.is_contiguous()):
        return None  # a real tensor (a constant made in forward) needs its values computed
    shapes = [x.shape]
    for a in rest:
        if isinstance(a, torch.Tensor):
            if a.dtype != x.dtype or not a.is_meta or not a.is_contiguous():
                return None
            shapes.append(a.shape)
        elif not isinstance(a, (int, float)) or isinstance(a, bool):
            return None
    try:
        return torch.broadcast_shapes(*shapes)
    except RuntimeError:
        return None


def _pointwise_meta(x, *rest):
    """A new dense tensor of the broadcast shape, in the input's dtype."""
    shape = _pointwise_shape(x, rest)
    return None if shape is None else x.new_empty(shape)


def _pointwise_inplace_meta(x, *rest):
    """An in-place op returns its first argument, whose shape the other must broadcast to."""
    return x if _pointwise_shape(x, rest) == x.shape else None


def _layer_norm_meta(x, normalized_shape, *rest):
    """(output, mean, rstd) of layer norm: mean and rstd keep the leading dims, 1 elsewhere."""
    if not isinstance(x, torch.Tensor) or not x.is_meta or not x.is_contiguous():
        return None
    axis = x.dim() - len(normalized_shape)
    if axis < 0 or tuple(x.shape[axis:]) != tuple(normalized_shape):
        return None
    stats = (*x.shape[:axis], *([1] * len(normalized_shape)))
    return (x.new_empty(x.shape), x.new_empty(stats), x.new_empty(stats))


def _addmm_meta(bias, a, b, *rest):
    """(n, k) @ (k, m) plus a bias that broadcasts to (n, m): linear's op."""
    if (not (a.is_meta and b.is_meta and bias.is_meta) or a.dim() != 2 or b.dim() != 2
            or a.shape[1] != b.shape[0] or a.dtype != b.dtype or bias.dtype != a.dtype):
        return None
    out = (a.shape[0], b.shape[1])
    try:
        if torch.broadcast_shapes(bias.shape, out) != out:
            return None
    except RuntimeError:
        return None
    return a.new_empty(out)


_POINTWISE = ACTIVATIONS + ELEMENTWISE + UNARY
# Ops whose output shapes are cheap to state here and slow for torch to derive on meta (its
# meta kernels for them are Python decompositions, most of a zoo's tracing time). A function
# returning None leaves the op to torch; tests/test_trace.py checks both ways agree.
_FAST_META = {
    aten.native_batch_norm: _batch_norm_meta,
    aten._native_batch_norm_legit_no_training: _batch_norm_meta,
    aten.convolution: _conv_meta,
    aten.native_layer_norm: _layer_norm_meta,
    aten.addmm: _addmm_meta,
    **{getattr(aten, k): _pointwise_meta for k in _POINTWISE},
    **{getattr(aten, k + "_"): _pointwise_inplace_meta for k in _POINTWISE
       if hasattr(aten, k + "_")},
}


def _strip_inplace(op: str) -> str:
    """``relu_`` -> ``relu``: an op with no handler takes its ATen name as its kind."""
    return op[:-1] if op.endswith("_") and not op.startswith("__") else op


def _macs(func, args, kwargs, out) -> int:
    counter = flop_registry.get(func.overloadpacket)
    if counter is None:
        return 0
    return int(counter(*args, **kwargs, out_val=out)) // 2


def _grouped_mm_meta(a, b, offs=None, bias=None, out_dtype=None):
    """Output of a grouped matmul (mixture-of-experts layers: each token's rows through its
    expert's weight), whose meta kernel accepts bfloat16 alone although CPUs run float32 too:
    rows (M, K) over experts (G, K, N) give (M, N); (G, M, K) with (G, K, N) give (G, M, N).
    None for any other case, left to torch."""
    if not (a.is_meta and b.is_meta and b.dim() == 3 and a.shape[-1] == b.shape[1]
            and a.dim() in (2, 3) and (a.dim() == 2 or a.shape[0] == b.shape[0])):
        return None
    return a.new_empty((*a.shape[:-1], b.shape[-1]), dtype=out_dtype or a.dtype)


def _shape(t) -> str:
    if isinstance(t, torch.Tensor):
        return "x".join(map(str, t.shape)) or "scalar"
    if isinstance(t, (list, tuple)):
        return ",".join(_shape(a) for a in t if isinstance(a, torch.Tensor))
    return ""


_MAC_KINDS = frozenset(MAC_KINDS)
# Convolutions that a CPU runs on oneDNN, which reorders the input, the weight and the output
# through buffers of their sizes on every call (fresh_memory.py)
_REORDERS = frozenset({aten.convolution, aten._convolution, aten.conv2d})
_ATTENTION_STEPS = frozenset({aten.mul, aten._safe_softmax, aten.bmm, aten.mm, aten._unsafe_view})


def _reordered(packet, first, tensors) -> list:
    """The tensors op ``packet`` copies into buffers of their sizes as it runs: a
    convolution's input (``first``) and weight (its second operand), else none."""
    if packet not in _REORDERS or first is None:
        return []
    return [first, *tensors[1:2]]


class _Recorder(TorchDispatchMode):
    def __init__(self, module_stack: list[str], known: dict):
        super().__init__()
        self.rows: list[dict] = []
        self.stack = module_stack
        self.values = subnormal.Values(known)  # the few values a trace knows (subnormal.py)
        self.scaled, self.sdpa = [], None  # attention's math so far (_attention_layout)
        self.memory = fresh_memory.Events()  # what the run allocates and frees, op by op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        fast = _FAST_META.get(packet)
        out = fast(*args) if fast is not None and not kwargs else None
        if packet is aten._grouped_mm:
            out = _grouped_mm_meta(*args, **kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if packet in _ATTENTION_STEPS or self.sdpa:
            out = self._attention_layout(packet, args, out)
        tensors = [a for a in itertools.chain(args, kwargs.values()) if isinstance(a, torch.Tensor)]
        if func.is_view or packet in _WEIGHT_PRESERVING:
            if tensors and _is_weight(tensors[0]) and isinstance(out, torch.Tensor):
                setattr(out, _WEIGHT, True)
        result = out[0] if isinstance(out, (tuple, list)) and out else out  # e.g. (values, indices)
        if func.is_view or packet in _FREE_OPS:
            row = {"kind": "free"}
        elif packet in OP_HANDLERS:
            row = OP_HANDLERS[packet](args, result)
        else:
            row = {"kind": _strip_inplace(packet.__name__)}
        first = next((t for t in tensors if not _is_weight(t)), None)
        module, call = self.stack[-1]
        moved = (_read(args, first)
                 + (result.numel() if isinstance(result, torch.Tensor) else 0))
        row.update(module=module, call=call, op=str(packet).removeprefix("aten."),
                   input_shape=_shape(first), output_shape=_shape(result), moved=moved,
                   # a modeled kind's MACs come from features.py, in trace()
                   macs=0 if row["kind"] in _MAC_KINDS else _macs(func, args, kwargs, out))
        share = self.values.see(func, args, kwargs, result)
        if share:
            row["subnormal_share"] = round(share, 4)
        self.rows.append(row)
        if not (func.is_view or packet.__name__.endswith("_")):   # views and in-place ops
            self.memory.op(len(self.rows) - 1, _reordered(packet, first, tensors),
                           [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                            if isinstance(o, torch.Tensor) and not _is_weight(o)])
        return out

    def _attention_layout(self, packet, args, out):
        """The output of attention's math (``_fuse_attention``) in the layout of the fused
        kernel's: the query's (heads inner to tokens when the query is a transpose, as it
        usually is) where the math writes heads outer, so that the model's own transpose and
        reshape after it are the view they are on a real device, not a copy."""
        if packet is aten.mul:  # the queries, then the keys, scaled: their layouts only (a
            # reference would keep the tensor alive in the trace, and the heap model with it)
            x = args[0]
            self.scaled = [*self.scaled[-1:],
                           (x.dim(), x.stride()) if isinstance(x, torch.Tensor) else None]
        elif packet is aten._safe_softmax:
            self.sdpa = "softmax"
        elif packet in (aten.bmm, aten.mm) and self.sdpa == "softmax":
            self.sdpa = "mixed"
        elif packet is aten._unsafe_view and self.sdpa == "mixed":
            self.sdpa = None
            q = self.scaled[0] if len(self.scaled) == 2 else None   # (dims, strides)
            if q is not None and q[0] == out.dim() == 4 and q[1][1] < q[1][2]:
                b, h, t, d = out.shape
                out = torch.empty_strided(out.shape, (t * h * d, d, h * d, 1), dtype=out.dtype,
                                          device=out.device)
        elif self.sdpa == "mixed":
            self.sdpa = None
        return out


@contextmanager
def paused_gc():
    """No cyclic garbage collection inside: building and tracing a network make tens of
    thousands of objects, and the collections they trigger scan every live one (a fifth of a
    zoo's time). Nothing made there needs the cycle collector before it ends."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _module_hooks(model: nn.Module, stack: list, types: dict[str, str], hooks: ExitStack):
    """Keep ``stack`` holding (path, call number) of the module call now running, and put every
    module in eval mode until ``hooks`` closes (each then gets its own mode back).

    Two global module hooks, not two per module: registering and removing tens of thousands of
    hooks took a fifth of a zoo's tracing. A module that is not the model's own (one made inside
    forward) counts as part of the call around it, as it had no hooks before."""
    calls = itertools.count(1)
    paths = {}
    for name, mod in model.named_modules():
        types[name] = type(mod).__name__
        paths[id(mod)] = name
        if mod.training:
            mod.training = False
            hooks.callback(setattr, mod, "training", True)

    def pre(m, inputs):
        name = paths.get(id(m))
        stack.append(stack[-1] if name is None else (name, next(calls)))

    def post(m, inputs, output):
        stack.pop()

    hooks.callback(nn.modules.module.register_module_forward_pre_hook(pre).remove)
    hooks.callback(nn.modules.module.register_module_forward_hook(post, always_call=True).remove)


def _name_layers(rows: list[dict], types: dict[str, str]) -> list[str]:
    """Unique, readable names. A leaf module call that runs one real op gives it the module's
    path (``layer1.0.conv1``); other ops are ``path.op`` (``layer1.0.add``). Repeats get ``_k``."""
    parents = {n.rpartition(".")[0] for n in types if n}  # every path that has a child
    leaves = set(types) - parents
    real_ops_per_call = Counter(r["call"] for r in rows if r["kind"] != "free")
    seen: Counter = Counter()
    names = []
    for r in rows:
        path = r["module"]
        single = path in leaves and r["kind"] != "free" and real_ops_per_call[r["call"]] == 1
        base = path if single and path else ".".join(p for p in (path, _strip_inplace(r["op"])) if p)
        names.append(base if seen[base] == 0 else f"{base}_{seen[base]}")
        seen[base] += 1
    return names


# What torch's math builds an ``is_causal`` mask with, between scaling the queries and the keys
_CAUSAL = ("ones", "tril", "where")


def _fuse_attention(rows: list[dict]) -> list[dict]:
    """Each ``F.scaled_dot_product_attention`` as the one op a real device runs. CPUs and GPUs
    run it as one fused kernel (flash or memory-efficient attention; ``nn.MultiheadAttention``
    runs it too, inside its fused ``_native_multi_head_attention``); the meta device runs its
    math: the queries and keys scaled (two muls; with ``is_causal``, the causal mask built
    between them), the scores (a matmul), a mask added, the softmax, the mixing (a matmul). Torch's math is the only caller of ``_safe_softmax``, so
    each one marks such a call: its ops, from the first scaling to the mixing, become one
    ``attention`` row (views among them stay, as free rows)."""
    work = [i for i, r in enumerate(rows) if r["kind"] != "free"]
    fused, drop = {}, set()
    for n, s in enumerate(work):
        if rows[s]["op"] != "_safe_softmax":
            continue
        call = rows[s]["call"]
        ours = lambda m: 0 <= m < len(work) and rows[work[m]]["call"] == call  # noqa: E731
        kind = lambda m: rows[work[m]]["kind"]  # noqa: E731
        scores = n - 1   # back past a mask's ops (an add, a masked_fill) and copies
        while ours(scores) and kind(scores) != "matmul" and n - scores < 4:
            scores -= 1
        mix = n + 1      # on past a copy the product makes of a strided operand
        while ours(mix) and kind(mix) == "copy" and mix - n < 3:
            mix += 1
        if not (ours(scores) and kind(scores) == "matmul" and ours(mix) and kind(mix) == "matmul"):
            continue
        first, muls = scores, 0  # back over the two scalings, the copies after them and a
        while muls < 2 and ours(first - 1) and (   # causal mask built between them
                kind(first - 1) in ("mul", "copy") or rows[work[first - 1]]["op"] in _CAUSAL):
            first -= 1
            muls += kind(first) == "mul"
        while kind(first) == "copy":   # a copy before the first scaling is the model's own
            first += 1
        a, b = rows[work[scores]], rows[work[mix]]
        row = dict(kind="attention", batch=a["batch"], rows=a["rows"], inner=a["out_features"],
                   in_features=a["in_features"], out_features=b["out_features"],
                   module=b["module"], call=call, op="scaled_dot_product_attention",
                   _op=b["_op"],
                   input_shape=rows[work[first]]["input_shape"], output_shape=b["output_shape"])
        row["moved"] = row["batch"] * (row["rows"] * (row["in_features"] + row["out_features"])
                                       + row["inner"] * (row["in_features"] + row["out_features"]))
        fused[work[mix]] = row
        drop.update(work[first:mix + 1])
    if not fused:
        return rows
    return [fused.get(i, r) for i, r in enumerate(rows) if i not in drop or i in fused]


COLUMNS = ["name", "kind", "op", "module", "module_type", *SHAPE_COLUMNS, "macs",
           "input_shape", "output_shape", *CONTEXT_COLUMNS, *DERIVED_CONTEXT_COLUMNS,
           *VALUE_COLUMNS, *MEMORY_COLUMNS]


def _context(rows: list[dict]) -> None:
    """What runs around each op in a network run over and over (features.CONTEXT_COLUMNS):
    the elements read and written by the op before it (the last op, for the first) and by all
    ops, and how many ops ran since the last op of its kind (counting back into the run
    before: the only op of its kind has the network's op count), and whether an op of its kind
    and shape ran before it in the run (features.DERIVED_CONTEXT_COLUMNS). Allocations and views
    move no data and are left out."""
    work = [r for r in rows if r["kind"] != "free"]
    total = sum(r["moved"] for r in work)
    for i, (r, gap) in enumerate(zip(work, kind_gaps([r["kind"] for r in work]))):
        r["prev_elements"] = work[i - 1]["moved"]
        r["net_elements"] = total
        r["kind_gap"] = gap
    for r, seen in zip(work, shapes_seen([shape_key(r) for r in work])):
        r["shape_seen"] = seen


def shape_key(row) -> tuple:
    """An op's kind and every shape column, for :func:`features.shapes_seen` (an empty one as
    -1: NaN never equals itself)."""
    return (row["kind"], *(-1.0 if pd.isna(v := row.get(c)) else float(v) for c in SHAPE_COLUMNS))


def kind_gaps(kinds: list) -> list[int]:
    """For each op of a network run over and over (its kinds in order), the ops since the last
    op of the same kind, counting back into the run before (the only op of its kind: the
    network's op count). A kernel that has not run for a while runs slower (its code and data
    out of the caches): a ResNet's one global pool took 0.13 ms in the network on the AMD VM and
    0.03 ms when the same pool had just run (benchmarks/kind_gap_effect.py)."""
    last = {k: i - len(kinds) for i, k in enumerate(kinds)}  # where each ran in the run before
    gaps = []
    for i, k in enumerate(kinds):
        gaps.append(i - last[k])
        last[k] = i
    return gaps


class _NeedsValues(NeuralPowerError):
    """A forward that reads values a meta tensor does not have."""


def _record(model: nn.Module, run, stack, shapes, known: dict) -> "_Recorder":
    """The recorder of a run of ``model`` (``run``; ``known``: the values of its buffers that
    are known, by their meta tensors), or the model's failure in one line. A forward that
    caches tensors on the model the first time (ConViT's position indices, 140 ops at 224x224)
    is recorded a second time: a deployed model pays for that once, and ``measure`` warms up."""
    modules = list(model.modules())
    cached = _cached_tensors(modules)
    recorder = _record_once(model, run, stack, shapes, known)
    if _cached_tensors(modules) != cached:
        stack[:] = [("", 0)]
        known = {**known, **recorder.values.constants}  # what the first run computed
        recorder = _record_once(model, run, stack, shapes, known)
    return recorder


def _cached_tensors(modules: list) -> list:
    """The tensors the modules hold (buffers and plain attributes), in order, by identity."""
    return [id(v) for m in modules for v in itertools.chain(m._buffers.values(), vars(m).values())
            if isinstance(v, torch.Tensor)]


def _record_once(model: nn.Module, run, stack, shapes, known: dict) -> "_Recorder":
    recorder = _Recorder(stack, known)
    try:
        with torch.no_grad(), paused_gc(), recorder:
            run()
    except NotImplementedError as e:
        raise _NeedsValues(f"cannot trace {model_name(model)}: its forward needs real values, "
                           f"not only shapes ({first_line(e, (NotImplementedError,))})") from None
    except Exception as e:
        plain = (RuntimeError, TypeError, ValueError, IndexError)   # others: KeyError: ...
        if not isinstance(e, plain) and _raised_here(e):
            raise   # a bug of ours, not the model's: the CLI calls it an internal error
        first = first_line(e, plain)
        if "on meta tensors" in first:  # Tensor.item() and the like: a value, not a shape
            raise _NeedsValues(f"cannot trace {model_name(model)}: its forward needs real "
                               f"values, not only shapes ({first})") from None
        raise NeuralPowerError(f"cannot trace {model_name(model)} with input "
                               f"{inputs_text(shapes)}: {first}"
                               f"{inputs_hint(first, shapes)}") from None
    return recorder


def _raised_here(e: Exception) -> bool:
    """Whether ``e`` was raised in neuralpower's own code (its last frame is ours)."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and Path(tb.tb_frame.f_code.co_filename).parent == Path(__file__).parent


def model_name(model: nn.Module) -> str:
    """The class name of ``model``, or of the model inside a wrapper (``nets.FirstTensor``)."""
    return type(getattr(model, "wrapped", model)).__name__


def trace(model: nn.Module, input_shape=(1, 3, 224, 224), dtype=None) -> pd.DataFrame:
    """Layer table of ``model`` for an input of ``input_shape`` (one shape, or a list of shapes
    for several inputs, or the command line's text: ``"1x128:int64"``, see inputs.py). Each
    input has its shape's dtype (float32 for a plain tuple) unless ``dtype`` (one, or one per
    input) says otherwise. The model's own weights are never read or copied: meta tensors of
    the same shapes stand in for them. Returns one row per ATen op, in call order, with the
    columns of :data:`COLUMNS`.
    """
    # Inside a caller's inference mode the stand-ins would be inference tensors, which lose the
    # marks that tell weights from activations: traced as in plain no_grad, whatever the mode.
    with torch.inference_mode(False):
        return _trace(model, input_shape, dtype)


def _trace(model: nn.Module, input_shape, dtype) -> pd.DataFrame:
    shapes = as_shapes(input_shape)
    dtypes = ([s.dtype for s in shapes] if dtype is None else list(dtype)
              if isinstance(dtype, (list, tuple)) else [dtype] * len(shapes))
    inputs = tuple(torch.empty(tuple(s), dtype=d, device="meta") for s, d in zip(shapes, dtypes))
    stack, types = [("", 0)], {}
    with ExitStack() as hooks:
        params = list(model.parameters())
        if all(t.is_meta for t in itertools.chain(params, model.buffers())):
            # built on meta (nets.build): run as it is, its weights marked while it runs
            for p in params:
                setattr(p, _WEIGHT, True)
                hooks.callback(delattr, p, _WEIGHT)
            known = {b: getattr(b, subnormal.VALUE) for b in model.buffers()
                     if hasattr(b, subnormal.VALUE)}   # what its constructor computed
        else:  # real weights: meta stand-ins of the same shapes, the model's own untouched
            state, twins = {}, {}   # tied weights (an LM head's) share one stand-in
            for name, p in model.named_parameters(remove_duplicate=False):
                if id(p) not in twins:
                    twins[id(p)] = _meta_like(p)
                    setattr(twins[id(p)], _WEIGHT, True)
                state[name] = twins[id(p)]
            known = {}   # small buffers' values (a mask made at init), for subnormal.py
            for name, b in model.named_buffers(remove_duplicate=False):
                if id(b) not in twins:
                    twins[id(b)] = _meta_like(b)
                    if (value := subnormal.small_value(b)) is not None:
                        known[twins[id(b)]] = value
                state[name] = twins[id(b)]
            # the stand-ins stay in place over every run (what a run caches on the model stays
            # for the next, as it does for the real model), and are taken out after
            hooks.enter_context(_reparametrize_module(model, state))
        run = lambda: model(*inputs)  # noqa: E731
        _module_hooks(model, stack, types, hooks)
        try:
            recorder = _record(model, run, stack, shapes, known)
            compiled = False
        except _NeedsValues as eager:
            # transformers skips the checks that read values (a padding warning, shortcuts of
            # the attention mask) while torch.compile traces a model: so does this retry
            stack[:] = [("", 0)]
            try:
                with mock.patch.object(torch.compiler, "is_compiling", return_value=True):
                    recorder = _record(model, run, stack, shapes, known)
            except NeuralPowerError:
                raise eager from None
            compiled = True
    for i, r in enumerate(recorder.rows):
        r["_op"] = i
    rows = _fuse_attention(recorder.rows)
    # a fused attention allocates its output only (the math's scores are never written)
    fresh = recorder.memory.fresh_mib(keep={r["_op"] for r in rows})
    for r in rows:
        r["fresh_mib"] = round(fresh.get(r.pop("_op"), 0.0), 4)
    for r, name in zip(rows, _name_layers(rows, types)):
        r["name"] = name
        r["module_type"] = types.get(r["module"], "")
    for kind in MAC_KINDS:  # their MACs come from features.py (pooling: flop_counter has none)
        of_kind = [r for r in rows if r["kind"] == kind]
        for r, m in zip(of_kind, macs(of_kind, kind) if of_kind else ()):
            r["macs"] = int(m)
    _context(rows)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table["macs"] = table["macs"].astype("int64")
    if compiled:
        table.attrs["traced"] = "as torch.compile traces it (its forward reads values otherwise)"
    return table
