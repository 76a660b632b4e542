"""Time the layers of a network while the network runs, and the whole network, on CPU or CUDA.

Layers are timed inside the running network (DESIGN.md, "Measuring"): a forward pre-hook and a
forward hook on each layer module mark its start and end, so a layer sees the caches, memory
and thread pool state it has in a real network. The same network is also timed whole, with no
hooks, in runs interleaved with the hooked ones, so the gap between the sum of the layers and
the whole is measured under the same conditions.

CPU: ``time.perf_counter_ns`` around the call. CUDA: CUDA events recorded on the stream, read
after one synchronisation per run (no synchronisation inside the network, which would change it).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


@dataclass
class Timings:
    layers: dict[str, list[float]] = field(default_factory=dict)   # module name -> ms per run
    network: list[float] = field(default_factory=list)              # ms per whole run
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)  # captured when asked

    def summary(self, name: str) -> dict:
        return spread(self.layers[name])


def spread(times_ms) -> dict:
    """Median, inter-quartile range and minimum of repeated times (the median is the figure:
    robust to the few runs a busy machine disturbs)."""
    t = np.asarray(times_ms, dtype=float)
    q1, med, q3 = np.percentile(t, [25, 50, 75])
    return {"runtime_ms": round(float(med), 5), "runtime_iqr_ms": round(float(q3 - q1), 5),
            "runtime_min_ms": round(float(t.min()), 5), "repeats": int(t.size)}


class _Clock:
    """Start/end marks for one run: wall time on CPU, CUDA events on a GPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter_ns()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) / 1e6

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)


def _whole_run(model: nn.Module, x, clock: _Clock) -> float:
    start = clock.mark()
    model(x)
    end = clock.mark()
    clock.sync()
    return clock.ms(start, end)


def time_whole(model: nn.Module, x, *, warmup: int = 3, min_repeats: int = 10,
               max_repeats: int = 1000, target_s: float = 1.0) -> list[float]:
    """Milliseconds of each of the repeated runs of the whole ``model`` (no hooks), after
    ``warmup`` runs; as many runs as fill ``target_s``, within the repeat bounds."""
    clock = _Clock(x.device)
    with torch.inference_mode():
        first = [_whole_run(model, x, clock) for _ in range(max(warmup, 1))][-1]
        repeats = min(max_repeats, max(min_repeats, math.ceil(target_s * 1e3 / max(first, 1e-3))))
        return [_whole_run(model, x, clock) for _ in range(repeats)]


def time_network(model: nn.Module, x: torch.Tensor, *, warmup: int = 2, min_repeats: int = 5,
                 max_repeats: int = 50, target_s: float = 0.25,
                 capture_inputs: bool = False) -> Timings:
    """Time every child module of ``model`` (a chain) inside the running network, and the
    whole network. Repeats adapt to the network's speed: enough runs to fill ``target_s`` per
    mode, within ``[min_repeats, max_repeats]``."""
    clock = _Clock(x.device)
    children = list(model.named_children())
    timings = Timings(layers={name: [] for name, _ in children})
    marks: dict[str, list] = {}

    def pre(name):
        def hook(module, inputs):
            if capture_inputs:
                timings.inputs[name] = inputs[0].detach().clone()
            marks[name] = [clock.mark()]
        return hook

    def post(name):
        def hook(module, inputs, output):
            marks[name].append(clock.mark())
        return hook

    def whole_run() -> float:
        return _whole_run(model, x, clock)

    def hooked_run():
        handles = []
        try:
            for name, module in children:
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
            model(x)
            clock.sync()
        finally:
            for h in handles:
                h.remove()
        for name, (start, end) in marks.items():
            timings.layers[name].append(clock.ms(start, end))
        marks.clear()

    with torch.inference_mode():
        first = [whole_run() for _ in range(max(warmup, 1))][-1]
        repeats = min(max_repeats, max(min_repeats, math.ceil(target_s * 1e3 / max(first, 1e-3))))
        for _ in range(repeats):  # hooked and whole runs interleaved: the same conditions
            hooked_run()
            capture_inputs = False
            timings.network.append(whole_run())
    return timings


def layer_power(module: nn.Module, x: torch.Tensor, meter, runtime_ms: float,
                window_s: float) -> tuple[float, float]:
    """Mean device power while ``module`` runs back to back on ``x`` for at least ``window_s``
    (a sensor needs a window far longer than one layer). Returns (watts, seconds measured).
    Raises the meter's error when a sensor read fails."""
    clock = _Clock(x.device)
    n = max(1, math.ceil(window_s * 1e3 / max(runtime_ms, 1e-3)))
    with torch.inference_mode():
        module(x)  # the layer's own warm-up, outside the window
        clock.sync()
        meter.start()
        start = time.perf_counter()
        for _ in range(n):
            module(x)
        clock.sync()
        seconds = time.perf_counter() - start
        watts = meter.stop()
    return watts, seconds
