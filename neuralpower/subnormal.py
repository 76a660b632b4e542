"""Where a traced network meets subnormal numbers, which the tracer sees without running it.

On x86 CPUs an operation on a subnormal float (below 1.18e-38 in float32) takes a slow path:
on this project's Xeon a batched matmul with some of them in an operand ran 9 to 87 times
slower (1.09-1.15 ns more per such multiply-add), a softmax whose rows produce them 7 to 10
times slower (``benchmarks/subnormal_effect.py``). Real networks make them on purpose: Swin's
shifted windows add -100 to the attention scores of tokens from different regions, and
``exp(-100)`` is subnormal (3.7e-44). In torchvision's Swin-T at batch 1 the shifted blocks'
products take 15.6 ms per run (the whole network about 73 ms), whatever the weights.

The tracer runs on meta tensors, which hold no values, but such a mask is built in ``forward``
from nothing (zeros, slices filled with region numbers, comparisons, fills). :class:`Values`
computes such constants for real on the CPU beside their meta stand-ins, while they are small;
marks the entries of a tensor that a constant offset in the subnormal range reached; carries the
marks through views and copies to a softmax, whose outputs there are subnormal; and gives the
softmax and the product that reads its output the share of their work that meets them
(``subnormal_share`` in the layer table: a softmax's share of rows that produce one, a
product's share of multiply-adds with one as operand). A predictor turns that share into time
with a cost per device measured by ``profile`` (:func:`fit_costs`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

aten = torch.ops.aten

# exp(v) in float32 is subnormal for v in (-103.97, -87.34): such an offset added to scores of
# order one leaves softmax outputs subnormal (an offset below gives exact zeros, which are fast,
# as -inf and -1e9 masks do)
LOW, HIGH = -103.97, -87.34
MAX_CONSTANT = 1 << 20   # elements: a constant larger than this is not computed
MAX_MARKED = 1 << 26     # elements (a profiled layer's largest tensor): larger ones are not followed

_FACTORIES = {aten.zeros, aten.ones, aten.full, aten.arange, aten.scalar_tensor, aten.eye}
_NEW = {aten.new_zeros, aten.new_ones, aten.new_full}
MAKERS = _FACTORIES | _NEW   # ops that make a constant from nothing
_COPIES = {aten.clone, aten._unsafe_view, aten.alias}
_OFFSETS = {aten.add, aten.add_}
_FILLS = {aten.masked_fill, aten.masked_fill_}
_SOFTMAX = {aten._softmax, aten._safe_softmax}
_PRODUCTS = {aten.mm, aten.bmm}


class _Unknown(Exception):
    pass


# A buffer's value, kept on its meta tensor where the constructor computed it (nets.build):
# timm's Swin builds its shifted windows' mask into a buffer when it is made, not in forward.
VALUE = "_neuralpower_value"


def small_value(t) -> torch.Tensor | None:
    """The value of a real tensor small enough to follow, on the CPU (None otherwise)."""
    if isinstance(t, torch.Tensor) and not t.is_meta and t.numel() <= MAX_CONSTANT:
        return t.detach().cpu()
    return None


def remember(t: torch.Tensor, value: torch.Tensor | None) -> None:
    """Keep ``value`` (a small CPU tensor of ``t``'s shape, or None) on the meta tensor ``t``."""
    if value is not None and value.shape == t.shape:
        setattr(t, VALUE, value)


def _in_range(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and LOW < v < HIGH


class Values:
    """What the tracer knows of values: small constants, and where subnormal numbers arise."""

    def __init__(self, known: dict | None = None):
        self.constants = WeakIdKeyDictionary()  # meta tensor -> its value, on the CPU
        self.marks = WeakIdKeyDictionary()      # meta tensor -> bool CPU tensor of its shape
        for t, value in (known or {}).items():  # buffers whose values are known
            self.constants[t] = value

    def see(self, func, args, kwargs, out) -> float | None:
        """Record what ``func`` made of ``args``; for a softmax or a product that meets
        subnormal numbers, the share of its work that does (else None)."""
        packet = func.overloadpacket
        self.compute(func, args, kwargs, out)
        if not (self.constants or self.marks) or not isinstance(out, torch.Tensor):
            return None
        try:
            return self._follow(func, packet, args, out)
        except (RuntimeError, TypeError, ValueError, IndexError):
            return None

    def compute(self, func, args, kwargs, out) -> None:
        """Compute ``out`` for real when every tensor it depends on is a known constant."""
        packet = func.overloadpacket
        made = packet in MAKERS
        if not (made or self.constants and self._all_known(args)):
            return
        flat, _ = tree_flatten(out)
        if not flat or any(not isinstance(t, torch.Tensor) or t.numel() > MAX_CONSTANT
                           for t in flat):
            return
        if packet in _NEW:  # values from the arguments, never from the tensor it is called on
            args = (torch.empty(0, dtype=args[0].dtype), *args[1:])

        def real(a):
            if isinstance(a, torch.Tensor):
                if not a.is_meta:
                    return a  # a tensor made for real in forward (``torch.tensor(3)``)
                value = self.constants.get(a)
                if value is None:
                    raise _Unknown
                return value
            if isinstance(a, torch.device) and a.type == "meta":
                return torch.device("cpu")
            return a
        try:
            cpu_args, cpu_kwargs = tree_map(real, (args, kwargs))
            if made:
                cpu_kwargs = {**cpu_kwargs, "device": torch.device("cpu")}
            value = func(*cpu_args, **cpu_kwargs)
        except (_Unknown, RuntimeError, TypeError, ValueError, IndexError):
            return
        for t, v in zip(flat, tree_flatten(value)[0]):
            if isinstance(v, torch.Tensor) and t.is_meta and v.shape == t.shape:
                self.constants[t] = v

    def _all_known(self, args) -> bool:
        """Some tensor among ``args`` (or in a list there), and every meta one a known constant:
        else ``out`` cannot be computed (most ops, such as a weight's initialisation, end here;
        an op of no tensor, a random draw, makes no constant)."""
        some = False
        for a in args:
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(t, torch.Tensor):
                    if t.is_meta and t not in self.constants:
                        return False
                    some = True
        return some

    def _follow(self, func, packet, args, out) -> float | None:
        if out.is_meta and out in self.constants:
            return None
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if packet in _OFFSETS and out.numel() <= MAX_MARKED:
            marked = [self._offset_marks(a, out.shape) for a in args[:2]
                      if isinstance(a, torch.Tensor)]
            self._mark(out, [m for m in marked if m is not None])
        elif packet in _FILLS and len(args) > 2 and _in_range(args[2]) \
                and out.numel() <= MAX_MARKED:
            mask = args[1] if isinstance(args[1], torch.Tensor) else None
            mask = self.constants.get(mask) if mask is not None and mask.is_meta else mask
            if mask is not None and mask.dtype == torch.bool:
                self._mark(out, [mask.expand(out.shape), self.marks.get(x)])
        elif x is not None and x in self.marks and (func.is_view or packet in _COPIES):
            carried = func(self.marks[x], *args[1:])
            if isinstance(carried, torch.Tensor) and carried.shape == out.shape:
                self.marks[out] = carried
        elif packet in _SOFTMAX and x is not None and x in self.marks:
            marks = self.marks[x]
            self.marks[out] = marks  # there the outputs are subnormal
            return float(marks.any(dim=args[1]).float().mean())
        elif packet in _PRODUCTS:
            share = sum(float(self.marks[t].float().mean()) for t in args[:2]
                        if isinstance(t, torch.Tensor) and t in self.marks)
            return min(share, 1.0) if share else None
        return None

    def _offset_marks(self, t: torch.Tensor, shape):
        """Entries of a result of ``shape`` that ``t`` (an operand of an add) marks."""
        if t.is_meta and t in self.marks:
            return self.marks[t].expand(shape)
        value = self.constants.get(t) if t.is_meta else t
        if value is None or not value.is_floating_point():
            return None
        return ((value > LOW) & (value < HIGH)).expand(shape)

    def _mark(self, out: torch.Tensor, marks: list) -> None:
        marks = [m for m in marks if m is not None]
        if not marks:
            return
        m = marks[0]
        for other in marks[1:]:
            m = m | other
        if bool(m.any()):
            self.marks[out] = m.contiguous()
        else:
            self.marks.pop(out, None)


# What a kind's extra time is proportional to: a product's multiply-adds with a subnormal
# operand, a softmax's elements in rows that produce one (measured: 1.1-1.3 ns per such
# multiply-add for any batch, size and share; a softmax 6-8 times slower in such rows).
WORK = {"matmul": "macs", "softmax": "elements"}
MIN_ROWS = 3


def _units(rows: pd.DataFrame, kind: str) -> np.ndarray:
    """Units of work that meet subnormal numbers, per row (from the schema's shape columns)."""
    def col(c):
        return pd.to_numeric(rows[c], errors="coerce").to_numpy(float) if c in rows else np.nan
    share = col("subnormal_share")
    work = (col("batch") * col("rows") * col("in_features") * col("out_features")
            if kind == "matmul" else col("elements"))
    return np.nan_to_num(share * work)


def meets(rows: pd.DataFrame) -> pd.Series:
    """Rows whose work meets subnormal numbers (their time is not the shape's alone)."""
    if "subnormal_share" not in rows:
        return pd.Series(False, index=rows.index)
    return pd.to_numeric(rows["subnormal_share"], errors="coerce").fillna(0.0) > 0


def median_cost(measured: np.ndarray, base: np.ndarray, units: np.ndarray):
    """A device's extra milliseconds per unit of some work that a shape does not say (numbers
    that meet subnormals here, blocks mapped fresh in fresh_memory.py): the median over the
    rows of (``measured`` - ``base``, the models' time) / ``units``, at least 0. Returns
    ``(ms, median |error| % without, with)``, or None where it does not lower the rows'
    median error (a short campaign's few rows may not)."""
    per = (measured - base) / units
    per = per[np.isfinite(per)]
    if not len(per):   # (no base model: every row of the kind was such a row)
        return None
    ms = max(float(np.median(per)), 0.0)
    rel = lambda p: float(np.median(np.abs(p / measured - 1)) * 100)  # noqa: E731
    without, with_cost = rel(base), rel(base + ms * units)
    return (ms, without, with_cost) if with_cost < without else None


def fit_costs(rows: pd.DataFrame, base_ms, log=lambda m: None) -> dict:
    """Per kind, the device's extra milliseconds per unit of work that meets subnormal
    numbers (:func:`median_cost` over the measured ``rows`` that meet them, ``base_ms(rows,
    kind)`` the models' time for the same shape), kept where it helps; ``log`` names the kinds
    it does not. Kinds with fewer than ``MIN_ROWS`` such rows are left out (their extra time is
    then not predicted)."""
    out = {}
    for kind in WORK:
        r = rows[(rows.kind == kind) & meets(rows) & rows.runtime_ms.notna()]
        if len(r) < MIN_ROWS:
            continue
        cost = median_cost(r.runtime_ms.to_numpy(float),
                           np.asarray(base_ms(r, kind), dtype=float), _units(r, kind))
        if cost is None:
            log(f"{kind:>11} subnormal: no cost helps its rows; their extra time is not predicted")
            continue
        out[kind] = {"per": WORK[kind], "ms": cost[0], "rows": int(len(r)),
                     "median_abs_error_pct_without": cost[1], "median_abs_error_pct": cost[2]}
    return out


def extra_ms(costs: dict | None, rows: pd.DataFrame, kind: str) -> np.ndarray | None:
    """Each row's extra milliseconds from subnormal numbers (None when none applies)."""
    cost = (costs or {}).get(kind)
    if not cost or "subnormal_share" not in rows:
        return None
    return cost["ms"] * _units(rows, kind)
