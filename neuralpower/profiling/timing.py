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
    inputs: dict[str, tuple] = field(default_factory=dict)  # a layer's inputs, when asked
    reference_ms: float | None = None                               # see Reference

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


class Reference:
    """A fixed small workload (a 64-channel 3x3 conv and a ReLU on a 28x28 map) timed between a
    network's runs: how fast the device is at that moment. A shared or throttled host changes
    speed by tens of percent within seconds (this project's 2-core VM ran ResNet-18 in 36 to
    59 ms within one minute, while the ratio to this probe stayed within +-7 %). A campaign
    records the probe's time beside each network, ``fit`` brings every runtime to the campaign's
    median speed, and ``measure`` / ``validate`` state the speed a measurement was taken at."""

    def __init__(self, device):
        self.clock = _Clock(torch.device(device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.module = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()
            self.x = torch.randn(1, 64, 28, 28)
        self.module, self.x = self.module.to(device), self.x.to(device)
        self.times: list[float] = []
        with torch.inference_mode():
            for _ in range(3):
                self.module(self.x)

    def sample(self) -> None:
        """The fastest of three runs now (a preempted run says nothing about speed)."""
        with torch.inference_mode():
            self.times.append(min(_whole_run(self.module, self.x, self.clock) for _ in range(3)))

    def take(self) -> float | None:
        """Median of the samples since the last call, and start afresh."""
        t, self.times = self.times, []
        return round(float(np.median(t)), 5) if t else None


def _probe_every(repeats: int) -> int:
    return max(1, math.ceil(repeats / 8))   # about eight probes per measurement


def _whole_run(model: nn.Module, x, clock: _Clock) -> float:
    start = clock.mark()
    model(x)
    end = clock.mark()
    clock.sync()
    return clock.ms(start, end)


def time_whole(model: nn.Module, x, *, warmup: int = 3, min_repeats: int = 10,
               max_repeats: int = 1000, target_s: float = 1.0,
               reference: Reference | None = None) -> list[float]:
    """Milliseconds of each of the repeated runs of the whole ``model`` (no hooks), after
    ``warmup`` runs; as many runs as fill ``target_s``, within the repeat bounds. With a
    ``reference``, it is sampled between runs (read it with ``reference.take()``)."""
    clock = _Clock(x.device)
    times = []
    with torch.inference_mode():
        first = [_whole_run(model, x, clock) for _ in range(max(warmup, 1))][-1]
        repeats = min(max_repeats, max(min_repeats, math.ceil(target_s * 1e3 / max(first, 1e-3))))
        every = _probe_every(repeats)
        for i in range(repeats):
            times.append(_whole_run(model, x, clock))
            if reference is not None and i % every == 0:
                reference.sample()
    return times


def time_network(model: nn.Module, x: torch.Tensor, *, warmup: int = 2, min_repeats: int = 5,
                 max_repeats: int = 50, target_s: float = 0.25,
                 capture_inputs: bool = False, reference: Reference | None = None) -> Timings:
    """Time every child module of ``model`` (each running one op) inside the running network,
    and the whole network. Repeats adapt to the network's speed: enough runs to fill
    ``target_s`` per mode, within ``[min_repeats, max_repeats]``."""
    clock = _Clock(x.device)
    children = list(model.named_children())
    timings = Timings(layers={name: [] for name, _ in children})
    marks: dict[str, list] = {}

    def pre(name):
        def hook(module, inputs):
            if capture_inputs:
                timings.inputs[name] = tuple(t.detach().clone() for t in inputs)
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
        every = _probe_every(repeats)
        for i in range(repeats):  # hooked and whole runs interleaved: the same conditions
            hooked_run()
            capture_inputs = False
            timings.network.append(whole_run())
            if reference is not None and i % every == 0:
                reference.sample()
    if reference is not None:
        timings.reference_ms = reference.take()
    return timings


def layer_power(module: nn.Module, x, meter, runtime_ms: float,
                window_s: float) -> tuple[float, float]:
    """Mean device power while ``module`` runs back to back on ``x`` (a tensor, or the tuple of
    a layer's inputs) for at least ``window_s`` (a sensor needs a window far longer than one
    layer). Returns (watts, seconds measured). Raises the meter's error when a read fails."""
    args = x if isinstance(x, tuple) else (x,)
    clock = _Clock(args[0].device)
    n = max(1, math.ceil(window_s * 1e3 / max(runtime_ms, 1e-3)))
    with torch.inference_mode():
        module(*args)  # the layer's own warm-up, outside the window
        clock.sync()
        meter.start()
        start = time.perf_counter()
        for _ in range(n):
            module(*args)
        clock.sync()
        seconds = time.perf_counter() - start
        watts = meter.stop()
    return watts, seconds
