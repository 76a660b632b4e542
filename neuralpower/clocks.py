"""A GPU network's time from two clocks: the host issuing each op, the GPU running it.

In eager PyTorch the host issues one op after another and the GPU runs them from a queue. When
the GPU is faster than the host (small layers, small batches, fast GPUs) it waits, and a
network takes about the host's time; when the kernels are long the host runs ahead and the
network takes the GPU's time. Neither the sum of layers timed in the network (host time, hooks
included: an H100 predictor fitted on such times predicted 27 torchvision networks 47-63 %
too slow) nor the sum of kernel times says which. So on CUDA a campaign measures each layer's
host and GPU time apart (``profiling.timing.TwoClocks``), ``fit`` models both per kind
(targets ``host_ms`` and ``gpu_ms``), and here a network is replayed op by op in its order:
op ``i`` reaches the GPU when the host has issued it and starts when the GPU is free,

    host_end[i] = host_end[i-1] + host[i],   gpu_end[i] = max(gpu_end[i-1], host_end[i]) + gpu[i]

and a layer's runtime is how far it moves the GPU's end, so the layers still add up to the
network (DESIGN.md). Ops between the modeled layers (views, unmodeled ops, Python between
modules) cost host time too: :func:`fit_host_glue` fits it, with a scale on the layers' host
times (a hooked layer's host time carries some of its hooks' call overhead), on the real
networks a ``profile --zoo`` campaign measured whole (``network_host_ms``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

GLUE_KEYS = ("host_scale", "modeled_op_ms", "unmodeled_op_ms", "free_op_ms")
NO_GLUE = {"host_scale": 1.0, "modeled_op_ms": 0.0, "unmodeled_op_ms": 0.0, "free_op_ms": 0.0}


def gpu_ends(host: np.ndarray, gpu: np.ndarray, segment: np.ndarray | None = None) -> np.ndarray:
    """When each op ends on the GPU (ms from the start of its network), for ops in issue order;
    ``segment`` numbers the network of each op (ops of a network contiguous; default: one
    network). Vectorised form of the recurrence in the module docstring:
    ``gpu_end[i] = G[i] + max over k <= i of (H[k] - G[k-1])`` with H, G the running sums."""
    host, gpu = np.asarray(host, dtype=float), np.asarray(gpu, dtype=float)
    if not len(host):
        return np.zeros(0)
    seg = np.zeros(len(host), dtype=np.int64) if segment is None else np.asarray(segment)

    def within(x):  # per network
        return pd.Series(x).groupby(seg)

    H, G = within(host).cumsum().to_numpy(), within(gpu).cumsum().to_numpy()
    # H[k] - G[k-1]: when op k could start if the GPU had no work before it but its own
    return G + within(H - (G - gpu)).cummax().to_numpy()


def layer_runtimes(ends: np.ndarray, modeled: np.ndarray, segment: np.ndarray | None = None
                   ) -> np.ndarray:
    """Each modeled op's runtime: how far the GPU's end moves from the modeled op before it
    (or the network's start) to this one; the last modeled op of a network also takes what
    comes after it, so that the modeled ops add up to the network. NaN for the others."""
    ends = np.asarray(ends, dtype=float)
    seg = np.zeros(len(ends), dtype=np.int64) if segment is None else np.asarray(segment)
    out = np.full(len(ends), np.nan)
    at = np.flatnonzero(modeled)
    if not len(at):
        return out
    prev = np.r_[0.0, ends[at][:-1]]
    prev[np.r_[True, seg[at][1:] != seg[at][:-1]]] = 0.0  # a network's first modeled op
    out[at] = ends[at] - prev
    last = at[np.r_[seg[at][1:] != seg[at][:-1], True]]
    network_end = pd.Series(ends).groupby(seg).transform("last").to_numpy()
    out[last] += network_end[last] - ends[last]
    return out


def layer_energy(power, runtime, host, gpu, idle_w: float | None) -> np.ndarray:
    """Energy (mJ) of layers in a replayed network. A layer's power was read with the layer
    running back to back, one run every ``max(host, gpu)`` ms, the device drawing its idle
    power all along and more while the kernels run; in the network the device draws its idle
    power over the layer's ``runtime`` and that same extra per run:
    ``idle * runtime + (power - idle) * max(host, gpu)``. Without an idle power, or a clock,
    ``power * runtime``. (On the H100 it took the median error of 27 torchvision networks' power
    at batch 8 from 10.6-19.8 % to 4.3-7.6 %, three leases: docs/results.md, "On a GPU".)"""
    power, runtime = np.asarray(power, dtype=float), np.asarray(runtime, dtype=float)
    plain = power * runtime
    if idle_w is None:
        return plain
    loop = np.maximum(np.asarray(host, dtype=float), np.asarray(gpu, dtype=float))
    rhythm = idle_w * runtime + np.clip(power - idle_w, 0.0, None) * loop
    return np.where(np.isfinite(loop) & (loop > 0), rhythm, plain)


def op_clocks(kinds: np.ndarray, modeled: np.ndarray, host: np.ndarray, gpu: np.ndarray,
              glue: dict) -> tuple[np.ndarray, np.ndarray]:
    """Host and GPU time of every op: the models' figures for the modeled ones (host times
    scaled), the fitted host time per op for the others (no GPU time: unmodeled ops are
    reported apart, views have no kernel)."""
    free = np.asarray(kinds) == "free"
    h = np.where(modeled, glue["host_scale"] * np.nan_to_num(host) + glue["modeled_op_ms"],
                 np.where(free, glue["free_op_ms"], glue["unmodeled_op_ms"]))
    return h, np.where(modeled, np.nan_to_num(gpu), 0.0)


def fit_host_glue(networks: list[tuple[pd.DataFrame, float]]) -> dict:
    """Fit ``host = host_scale * sum(layers' host) + per-op times`` for relative error on
    ``(predicted table, measured network host ms)`` pairs: a table has ``kind``, ``modeled``
    and the models' ``host_ms``. Non-negative least squares; every coefficient stays >= 0."""
    from scipy.optimize import nnls

    A = np.array([[t.host_ms.where(t.modeled, 0.0).sum(), t.modeled.sum(),
                   (~t.modeled & (t.kind != "free")).sum(), (t.kind == "free").sum()]
                  for t, _ in networks], dtype=float)
    y = np.array([ms for _, ms in networks], dtype=float)
    coef, _ = nnls(A / y[:, None], np.ones(len(y)))
    if coef[0] <= 0:  # the layers' host times explain nothing: keep them as measured
        coef = np.r_[1.0, nnls((A[:, 1:]) / y[:, None], 1 - A[:, 0] / y)[0]]
    err = np.abs(A @ coef / y - 1) * 100
    return {**dict(zip(GLUE_KEYS, map(float, coef))), "networks": len(y),
            "network_host_median_abs_error_pct": float(np.median(err))}

