"""Tensors too large for the C allocator's heap cost page faults on every run (CPU).

glibc's malloc serves a block larger than its mapping threshold with a fresh mapping of the
system's, which it returns when the block is freed. The threshold is at most 32 MiB (the value
``timing.steady_allocator`` sets, and where a long-running process's threshold ends up), so a
network whose tensors are larger maps them anew on every run, and the first write to each
4 KiB page faults. On this project's AMD EPYC VM a 1x1 convolution writing 42 MiB (MobileNetV2's
first expansion at batch 8 and 120x120) took 26.7 ms instead of 9.1 ms with mappings off, the
batch norm after it 11.6 instead of 3.5 ms and the depthwise convolution reading it 19.2
instead of 10.1 ms (its input is reordered into a fresh buffer): 43,204 faults a run against
540 (``benchmarks/fresh_memory_effect.py``).
A shape's time alone does not say this: the models are fitted on the rows without such
tensors, and a predictor adds a cost per MiB of them, fitted per kind, as it does for subnormal
numbers (subnormal.py). A CUDA tensor comes from PyTorch's caching allocator: no such cost.

Which rows: those of CPU campaigns whose sidecar records glibc's allocator with its threshold
(``data.load`` gives them the column :data:`COLUMN`); a prediction uses the threshold in the
predictor's card. An in-place op (its ATen name ends in ``_``: ``relu_``, ``add_``) allocates
nothing; a profiled row does not say whether its op ran in place, so kinds that often do are
left out of the cost (:data:`IN_PLACE`).
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

COLUMN = "mapped_above_bytes"   # a row's allocator maps blocks above this size fresh per run
BYTES = 4                       # float32, what campaigns and predictions use
MIB = float(1 << 20)
MIN_ROWS = 5
# Kinds that torchvision and the synthetic networks often run in place (profiling/synthetic.py)
IN_PLACE = ("relu", "hardswish", "silu", "hardtanh", "add", "mul")
# Convolutions on oneDNN reorder a large input into a fresh buffer of its size too.
READS_FRESH = ("conv2d", "depthwise_conv2d")


def threshold(sidecar: dict) -> float | None:
    """The mapping threshold in bytes of a CPU campaign's allocator, from its sidecar (None for
    a GPU campaign or an allocator not recorded)."""
    device = str((sidecar.get("settings") or {}).get("device", ""))
    m = re.match(r"glibc malloc: mmap threshold (\d+) MiB",
                 str((sidecar.get("software") or {}).get("allocator", "")))
    return float(int(m.group(1)) << 20) if m and device.startswith("cpu") else None


def units(rows: pd.DataFrame, kind: str, above: float | None = None) -> np.ndarray:
    """MiB of each row's tensors mapped fresh on every run: its output where larger than the
    threshold (``above``, else the rows' :data:`COLUMN`), and a convolution's input too; 0 for
    an op that runs in place."""
    from .features import features

    limit = (np.full(len(rows), above, dtype=float) if above is not None else
             pd.to_numeric(rows[COLUMN], errors="coerce").to_numpy(float) if COLUMN in rows
             else np.full(len(rows), np.nan))
    if kind in IN_PLACE or np.isnan(limit).all():
        return np.zeros(len(rows))
    f = features(rows, kind, context=False)
    size = {c: f[c].to_numpy(float) * BYTES for c in ("out_elems", "in_elems") if c in f}
    out = np.zeros(len(rows))
    for c in ("out_elems", "in_elems") if kind in READS_FRESH else ("out_elems",):
        if c in size:
            out += np.where(size[c] > limit, size[c], 0.0)
    if "op" in rows:  # a traced table: an in-place op writes into its input
        out[rows["op"].astype(str).str.endswith("_").to_numpy()] = 0.0
    return np.nan_to_num(out) / MIB


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
    """Per kind, the device's extra milliseconds per MiB mapped fresh: the median over measured
    ``rows`` of that kind of (measured - ``base_ms(rows, kind)``, the models' time for the same
    shape) / MiB, kept where it lowers those rows' median error. Kinds with fewer than
    :data:`MIN_ROWS` such rows get none."""
    out = {}
    for kind, r in rows[rows.runtime_ms.notna()].groupby("kind"):
        mib = units(r, kind)
        if (mib > 0).sum() < MIN_ROWS:
            continue
        r, mib = r[mib > 0], mib[mib > 0]
        base = np.asarray(base_ms(r, kind), dtype=float)
        measured = r.runtime_ms.to_numpy(float)
        per = (measured - base) / mib
        per = per[np.isfinite(per)]
        if not len(per):   # no base model (every row of the kind had such tensors)
            continue
        ms = max(float(np.median(per)), 0.0)
        rel = lambda p: float(np.median(np.abs(p / measured - 1)) * 100)  # noqa: E731
        without, with_cost = rel(base), rel(base + ms * mib)
        if with_cost < without:   # kept only where it helps (batch norm's rows: some fault,
            out[kind] = {"ms_per_mib": ms, "rows": int(len(r)),   # some not, unexplained)
                         "median_abs_error_pct_without": without,
                         "median_abs_error_pct": with_cost}
    return out


def extra_ms(card: dict | None, rows: pd.DataFrame, kind: str) -> np.ndarray | None:
    """Each row's extra milliseconds from tensors mapped fresh (None when none applies)."""
    cost = ((card or {}).get("kinds") or {}).get(kind)
    if not cost:
        return None
    return cost["ms_per_mib"] * units(rows, kind, above=card["threshold_bytes"])
