"""Tensors too large for the C allocator's heap cost page faults on every run (CPU).

glibc's malloc serves a block larger than its mapping threshold with a fresh mapping of the
system's, which it returns when the block is freed, unless a free chunk of its heap can hold
it. The threshold is at most 32 MiB (the value ``timing.steady_allocator`` sets, and where a
long-running process's threshold ends up), so a network whose tensors are larger maps some of
them anew on every run, and the first write to each 4 KiB page faults. On this project's AMD
EPYC VM a 1x1 convolution writing 42 MiB (MobileNetV2's first expansion at batch 8 and 120x120)
took 26.7 ms instead of 9.1 ms with mappings off, the batch norm after it 11.6 instead of 3.5
ms and the depthwise convolution reading it 19.2 instead of 10.1 ms (its input is reordered
into a fresh buffer): 43,204 faults a run against 540 (``benchmarks/fresh_memory_effect.py``).

Which blocks are mapped, the tracer counts (:class:`Events`: the run's allocations replayed on a
model of the heap; column ``fresh_mib``). A shape's time alone does not say this: the models
are fitted on the rows without such blocks, and a predictor adds a cost per MiB of them, fitted
per kind, as it does for subnormal numbers (subnormal.py). A CUDA tensor comes from PyTorch's
caching allocator: no such cost.

Which rows: those of CPU campaigns whose sidecar records glibc's allocator with its threshold
(``data.load`` gives them the column :data:`COLUMN`); a prediction uses the threshold in the
predictor's card. A row without the tracer's count is judged by its sizes (:func:`units`); an
in-place op (its ATen name ends in ``_``: ``relu_``, ``add_``) allocates nothing, and such a row
does not say whether its op ran in place, so kinds that often do are left out (:data:`IN_PLACE`).
"""
from __future__ import annotations

import re
import weakref

import numpy as np
import pandas as pd

COLUMN = "mapped_above_bytes"   # a row's allocator maps blocks above this size fresh per run
BYTES = 4                       # float32, what campaigns and predictions use
MIB = float(1 << 20)
MIN_ROWS = 5
# Kinds that torchvision and the synthetic networks often run in place (profiling/synthetic.py)
IN_PLACE = ("relu", "hardswish", "silu", "hardtanh", "add", "mul")
# Convolutions on oneDNN reorder their input and their weight into buffers of their sizes on
# every call: a weight over the threshold (Wide-ResNet-50-2's 1024-channel 3x3 convolutions,
# 36 MiB) is mapped fresh each time, 9,217 page faults a call, and at batch 1 that doubles the
# layer's time (benchmarks/fresh_memory_effect.py --weights).
READS_FRESH = ("conv2d", "depthwise_conv2d")


THRESHOLD = 32 << 20            # bytes: glibc's largest, and what steady_allocator sets
_RUNS = 3                       # runs simulated: the last is the steady state a campaign times


class Events:
    """What a network's run allocates and frees, op by op, recorded by the tracer on the meta
    device (whose tensors live and die as the real ones do), and which of its blocks glibc's
    malloc maps fresh on every run: :meth:`fresh_mib`.

    Whether a block over the threshold is mapped depends on the heap: malloc serves it from a
    free heap chunk large enough where there is one (the heap holds what the run's smaller
    tensors needed at their peak, kept by the trim threshold), and maps it only where there is
    none. Counted so, on the AMD VM, the page faults of two steady runs in fresh processes match
    the count within 5 % in 11 of 18 networks (``benchmarks/fresh_memory_effect.py
    --networks``), where the sizes alone say 1.5 times as many for the batch-8 mobile networks;
    the two runs of one network vary by what else the process allocated (timm's ResNet-50 at
    batch 12: 37 and 184 MiB, counted 110), and small allocations the count does not see can
    fragment the heap (timm's EfficientNet-B0 at batch 8: 0 counted, 74-78 MiB measured)."""

    def __init__(self):
        self.log: list[tuple] = []   # ("alloc", op, bytes, token) or ("free", token), in order
        self._refs: list = []        # weak references whose callbacks log the frees
        self._largest = 0

    def op(self, index: int, reordered, outputs) -> None:
        """Op ``index`` allocates ``outputs`` (freed when their last reference goes), and with
        ``reordered`` tensors (a oneDNN convolution's input and weight) buffers of their and the
        outputs' sizes, freed as it ends."""
        temps = [*reordered, *outputs] if reordered else []
        log = self.log
        for n, t in enumerate(temps):
            log.append(("alloc", index, _nbytes(t), (index, "temp", n)))
        for n, t in enumerate(outputs):
            token = (index, n)
            size = _nbytes(t)
            self._largest = max(self._largest, size)
            log.append(("alloc", index, size, token))
            self._refs.append(weakref.ref(t, lambda _, token=token: log.append(("free", token))))
        log.extend(("free", (index, "temp", n)) for n in range(len(temps)))
        if temps:
            self._largest = max(self._largest, *(_nbytes(t) for t in temps))

    def fresh_mib(self, keep=None, threshold: float = THRESHOLD) -> dict[int, float]:
        """MiB each op maps fresh in a steady run (op index -> MiB; ops mapping none are left
        out), the allocations of ops not in ``keep`` (when given) left out."""
        if self._largest < threshold:   # nothing to map (most networks at batch 1)
            return {}
        events = [e for e in self.log if e[0] == "free" or keep is None or e[1] in keep]
        heap, mapped = _Heap(threshold), {}
        for run in range(_RUNS):
            mapped = {}
            for e in events:
                if e[0] == "alloc":
                    if not heap.malloc((run, e[3]), e[2]):
                        mapped[e[1]] = mapped.get(e[1], 0.0) + e[2] / MIB
                else:
                    heap.free((run, e[1]))
            heap.free_all(run)   # what outlived the run (its output) is gone before the next
        return mapped


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


class _Heap:
    """glibc's main heap, coarsely: chunks in address order, best fit, free neighbours merged,
    grown at the top for blocks under the threshold and never shrunk (the trim threshold is
    1 GiB); a block over it comes from a free chunk or is mapped."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.chunks: list[list] = []    # [size, free]
        self.live: dict = {}            # token -> chunk

    def malloc(self, token, nbytes: int) -> bool:
        """Whether the heap serves the block (False: it is mapped fresh)."""
        n = (nbytes + 31) // 16 * 16    # a header and 16-byte alignment
        fits = [c for c in self.chunks if c[1] and c[0] >= n]
        if fits:
            chunk = min(fits, key=lambda c: c[0])
            i = next(k for k, c in enumerate(self.chunks) if c is chunk)
            if chunk[0] > n:
                self.chunks.insert(i + 1, [chunk[0] - n, True])
            chunk[0], chunk[1] = n, False
        elif n >= self.threshold:
            return False
        elif self.chunks and self.chunks[-1][1]:   # the top chunk grows
            chunk = self.chunks[-1]
            chunk[0], chunk[1] = n, False
        else:
            chunk = [n, False]
            self.chunks.append(chunk)
        self.live[token] = chunk
        return True

    def free(self, token) -> None:
        chunk = self.live.pop(token, None)
        if chunk is None:       # mapped, or never allocated here
            return
        i = next(k for k, c in enumerate(self.chunks) if c is chunk)
        chunk[1] = True
        if i + 1 < len(self.chunks) and self.chunks[i + 1][1]:
            chunk[0] += self.chunks.pop(i + 1)[0]
        if i > 0 and self.chunks[i - 1][1]:
            self.chunks[i - 1][0] += self.chunks.pop(i)[0]

    def free_all(self, run: int) -> None:
        for token in [t for t in self.live if t[0] == run]:
            self.free(token)


def threshold(sidecar: dict) -> float | None:
    """The mapping threshold in bytes of a CPU campaign's allocator, from its sidecar (None for
    a GPU campaign or an allocator not recorded)."""
    device = str((sidecar.get("settings") or {}).get("device", ""))
    m = re.match(r"glibc malloc: mmap threshold (\d+) MiB",
                 str((sidecar.get("software") or {}).get("allocator", "")))
    return float(int(m.group(1)) << 20) if m and device.startswith("cpu") else None


def units(rows: pd.DataFrame, kind: str, above: float | None = None,
          train: bool = False) -> np.ndarray:
    """MiB of each row's blocks mapped fresh on every run where a threshold applies (``above``,
    else the rows' :data:`COLUMN`): the tracer's count (``fresh_mib``, :class:`Events`), or
    where a row has none (a search space's layers) or is of a training step (``train``, or
    the rows' ``mode``), its sizes alone: its output where larger than the threshold, and a
    convolution's input and weight too; 0 for an op that runs in place."""
    from .features import features

    limit = (np.full(len(rows), above, dtype=float) if above is not None else
             pd.to_numeric(rows[COLUMN], errors="coerce").to_numpy(float) if COLUMN in rows
             else np.full(len(rows), np.nan))
    traced = (pd.to_numeric(rows["fresh_mib"], errors="coerce").to_numpy(float, copy=True)
              if "fresh_mib" in rows else np.full(len(rows), np.nan))
    if train:            # the tracer runs a forward pass: a training step allocates otherwise
        traced[:] = np.nan
    elif "mode" in rows:
        traced[rows["mode"].astype(str).eq("train").to_numpy()] = np.nan
    if np.isnan(limit).all():
        return np.zeros(len(rows))
    if not np.isnan(traced).any():
        return np.where(np.isnan(limit), 0.0, traced)
    out = np.zeros(len(rows))
    if kind not in IN_PLACE:
        f = features(rows, kind, context=False)
        mapped = ("out_elems", "in_elems", "weight_elems") if kind in READS_FRESH else (
            "out_elems",)
        for c in mapped:
            if c in f:
                size = f[c].to_numpy(float) * BYTES
                out += np.where(size > limit, size, 0.0)
        if "op" in rows:  # a traced table: an in-place op writes into its input
            out[rows["op"].astype(str).str.endswith("_").to_numpy()] = 0.0
    out = np.nan_to_num(out) / MIB
    return np.where(np.isnan(traced), out, np.where(np.isnan(limit), 0.0, traced))


def meets(rows: pd.DataFrame) -> pd.Series:
    """Rows with tensors mapped fresh on every run (their time is not the shape's alone)."""
    hit = pd.Series(False, index=rows.index)
    if COLUMN not in rows:
        return hit
    for kind, part in rows.groupby("kind"):
        try:
            hit[part.index] = units(part, kind) > 0
        except KeyError:   # a kind with no features: no model, nothing to add
            pass
    return hit


def fit_costs(rows: pd.DataFrame, base_ms) -> dict:
    """Per kind, the device's extra milliseconds per MiB mapped fresh
    (``subnormal.median_cost`` over the measured ``rows`` of that kind, ``base_ms(rows,
    kind)`` the models' time for the same shape), kept where it lowers those rows' median
    error. Kinds with fewer than :data:`MIN_ROWS` such rows get none."""
    from .subnormal import median_cost

    out = {}
    for kind, r in rows[rows.runtime_ms.notna()].groupby("kind"):
        mib = units(r, kind)
        if (mib > 0).sum() < MIN_ROWS:
            continue
        r, mib = r[mib > 0], mib[mib > 0]
        cost = median_cost(r.runtime_ms.to_numpy(float),
                           np.asarray(base_ms(r, kind), dtype=float), mib)
        if cost is not None:
            out[kind] = {"ms_per_mib": cost[0], "rows": int(len(r)),
                         "median_abs_error_pct_without": cost[1],
                         "median_abs_error_pct": cost[2]}
    return out


def extra_ms(card: dict | None, rows: pd.DataFrame, kind: str,
             train: bool = False) -> np.ndarray | None:
    """Each row's extra milliseconds from tensors mapped fresh (None when none applies), for
    a training step's rows with ``train``."""
    cost = ((card or {}).get("kinds") or {}).get(kind)
    if not cost:
        return None
    return cost["ms_per_mib"] * units(rows, kind, above=card["threshold_bytes"], train=train)
