"""Time the layers of a network while the network runs, and the whole network, on CPU or CUDA.

Layers are timed inside the running network (DESIGN.md, "Measuring"): a forward pre-hook and a
forward hook on each layer module mark its start and end, so a layer sees the caches, memory
and thread pool state it has in a real network. The same network is also timed whole, with no
hooks, in runs interleaved with the hooked ones, so the gap between the sum of the layers and
the whole is measured under the same conditions.

CPU: ``time.perf_counter_ns`` around the call. CUDA: CUDA events recorded on the stream, read
after one synchronisation per run (no synchronisation inside the network, which would change it).

Training (``train=True``): a run is a training step's forward and backward pass (the gradient
of the output is ones; parameter gradients are reset to None between runs, as
``zero_grad(set_to_none=True)`` does). A layer's backward time runs from the moment the gradient
of its output is ready (a hook on the output tensor; module backward hooks would forbid in-place
layers) to the next such moment of any layer (or to the end of the pass): autograd on one
device runs the nodes one at a time in reverse creation order, so a layer's gradient work,
weight gradients included, sits between the two marks. A layer whose output needs no gradient (nothing before it has
parameters) has no backward pass, in profiling as in training.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn


def steady_allocator() -> str | None:
    """Make the C allocator behave as in a long-running process: glibc's malloc serves blocks
    up to 32 MiB from its heap and keeps freed heap memory instead of returning it to the
    system. Otherwise a fresh process maps new pages for many tensors on every run and pays a
    page fault per 4 KiB written: on the development VM, 2,600 faults per MobileNetV2 run and
    15 ms instead of 12 ms, varying with what the process allocated before (a long-running
    process gets near this state by itself: glibc raises its mapping threshold as large blocks
    are freed). Returns a description of what was set, or None where there is no glibc."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    if mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30):
        return "glibc malloc: mmap threshold 32 MiB, trim threshold 1 GiB"
    return None


@dataclass
class Timings:
    layers: dict[str, list[float]] = field(default_factory=dict)   # module name -> ms per run
    network: list[float] = field(default_factory=list)              # ms per whole run
    inputs: dict[str, tuple] = field(default_factory=dict)  # a layer's inputs, when asked
    reference_ms: float | None = None                               # see Reference
    reference_ops_ms: float | None = None                           # its small-ops probe
    backward: dict[str, list[float]] = field(default_factory=dict)  # training: ms per run
    # CUDA, inference only (see TwoClocks): host ms issuing each layer, GPU ms running its
    # kernels with none waiting on the host, and host ms issuing the whole network
    host: dict[str, list[float]] = field(default_factory=dict)
    gpu: dict[str, list[float]] = field(default_factory=dict)
    network_host: list[float] = field(default_factory=list)

    def summary(self, name: str) -> dict:
        """The layer's runtime (forward + backward when training) with its spread; training
        adds the medians of each pass, ``forward_ms`` and ``backward_ms``."""
        if not self.backward:
            return spread(self.layers[name])
        fwd, bwd = np.asarray(self.layers[name]), np.asarray(self.backward[name])
        return {**spread(fwd + bwd), "forward_ms": round(float(np.median(fwd)), 5),
                "backward_ms": round(float(np.median(bwd)), 5)}

    def clocks(self, name: str) -> dict:
        """The layer's ``host_ms`` and ``gpu_ms`` and the network's ``network_host_ms``
        (medians), where they were measured (CUDA, inference)."""
        out = {}
        for key, times in (("host_ms", self.host.get(name)), ("gpu_ms", self.gpu.get(name)),
                           ("network_host_ms", self.network_host)):
            if times:
                out[key] = round(float(np.median(times)), 5)
        return out


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

    def __init__(self, device, ops: bool = False):
        self.clock = _Clock(torch.device(device))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.module = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()
            self.x = torch.randn(1, 64, 28, 28)
            # with ``ops``, the small-ops probe too (``take_ops``): it says which phase of a
            # shared host a measurement was taken in
            self.ops, self.ops_x = small_ops_probe() if ops else (None, None)
        self.module, self.x = self.module.to(device), self.x.to(device)
        if self.ops is not None:
            self.ops, self.ops_x = self.ops.to(device), self.ops_x.to(device)
        self.times: list[float] = []
        self.ops_times: list[float] = []
        with torch.inference_mode():
            for _ in range(3):
                self.module(self.x)
                if self.ops is not None:
                    self.ops(self.ops_x)

    def sample(self) -> None:
        """The fastest of three runs now (a preempted run says nothing about speed)."""
        with torch.inference_mode():
            self.times.append(min(_whole_run(self.module, self.x, self.clock) for _ in range(3)))
            if self.ops is not None:
                self.ops_times.append(min(_whole_run(self.ops, self.ops_x, self.clock)
                                          for _ in range(3)))

    def take(self) -> float | None:
        """Median of the samples since the last call, and start afresh."""
        t, self.times = self.times, []
        return round(float(np.median(t)), 5) if t else None

    def take_ops(self) -> float | None:
        """The small-ops probe's median since the last call (None without ``ops``)."""
        t, self.ops_times = self.ops_times, []
        return round(float(np.median(t)), 5) if t else None


def small_ops_probe() -> tuple[nn.Module, torch.Tensor]:
    """A probe of many small ops and its input: 16 1x1 convs with ReLUs on a 64x14x14 map, each
    a parallel region the threads enter and leave together. A shared host's slow phases raise
    the cost of each op far more than the conv probe shows (benchmarks/results/probe_drift.md)."""
    module = nn.Sequential(*[m for _ in range(16) for m in (nn.Conv2d(64, 64, 1), nn.ReLU())])
    return module.eval(), torch.randn(1, 64, 14, 14)


def _probe_every(repeats: int) -> int:
    return max(1, math.ceil(repeats / 8))   # about eight probes per measurement


def _whole_run(model: nn.Module, x, clock: _Clock, train: bool = False,
               host: list | None = None) -> float:
    """One run's milliseconds; with ``host``, appends the host's milliseconds issuing it."""
    if train:
        _zero_grad(model)
    start = clock.mark()
    t0 = time.perf_counter_ns()
    out = model(x)
    if train and out.requires_grad:
        out.backward(torch.ones_like(out))
    t1 = time.perf_counter_ns()
    end = clock.mark()
    clock.sync()
    if host is not None:
        host.append((t1 - t0) / 1e6)
    return clock.ms(start, end)


def _needs_grad(t) -> bool:
    """A tensor that needs a gradient (not a layer's tuple: top k's values and ids)."""
    return isinstance(t, torch.Tensor) and t.requires_grad


def _kept(t):
    """A copy of a layer's input for its own measurement, with the gradient flag it had in the
    network (a tuple, such as top k's values and ids, element by element)."""
    if isinstance(t, (tuple, list)):
        return tuple(_kept(a) for a in t)
    return t.detach().clone().requires_grad_(t.requires_grad)


def _zero_grad(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def _mode(train: bool):
    """Autograd on for a training step; off (and cheaper) for inference."""
    return torch.enable_grad() if train else torch.inference_mode()


def time_whole(model: nn.Module, x, *, warmup: int = 3, min_repeats: int = 10,
               max_repeats: int = 1000, target_s: float = 1.0,
               reference: Reference | None = None, train: bool = False) -> list[float]:
    """Milliseconds of each of the repeated runs of the whole ``model`` (no hooks), after
    ``warmup`` runs; as many runs as fill ``target_s``, within the repeat bounds. With a
    ``reference``, it is sampled between runs (read it with ``reference.take()``). With
    ``train``, a run is a forward and backward pass."""
    clock = _Clock(x.device)
    times = []
    with _mode(train):
        first = [_whole_run(model, x, clock, train) for _ in range(max(warmup, 1))][-1]
        repeats = min(max_repeats, max(min_repeats, math.ceil(target_s * 1e3 / max(first, 1e-3))))
        every = _probe_every(repeats)
        for i in range(repeats):
            times.append(_whole_run(model, x, clock, train))
            if reference is not None and i % every == 0:
                reference.sample()
    return times


def time_network(model: nn.Module, x: torch.Tensor, *, warmup: int = 2, min_repeats: int = 5,
                 max_repeats: int = 50, target_s: float = 0.25,
                 capture_inputs: bool = False, reference: Reference | None = None,
                 train: bool = False, modules=None, clocks: bool | None = None) -> Timings:
    """Time every child module of ``model`` (each running one op), or the ``(name, module)``
    pairs of ``modules`` (the one-op modules of a real network), inside the running network,
    and the whole network. Repeats adapt to the network's speed: enough runs to fill
    ``target_s`` per mode, within ``[min_repeats, max_repeats]``. With ``train``, each run is
    a forward and a backward pass, and each layer's backward is timed too (module docstring).
    ``clocks`` (default: on CUDA, for inference) also times the host and the GPU apart
    (:class:`TwoClocks`)."""
    clock = _Clock(x.device)
    children = list(model.named_children()) if modules is None else list(modules)
    timings = Timings(layers={name: [] for name, _ in children},
                      backward={name: [] for name, _ in children} if train else {})
    marks: dict[str, list] = {}
    backward_marks: list = []  # (name, mark) in the order autograd reached the layers

    two = clock.cuda and not train if clocks is None else clocks  # TwoClocks
    if two:
        timings.host = {name: [] for name, _ in children}
        timings.gpu = {name: [] for name, _ in children}
    host_marks: dict[str, int] = {}
    primed = False  # a run whose layers each start after a GPU sleep (TwoClocks)

    def pre(name):
        def hook(module, inputs):
            if capture_inputs:  # (with the gradient flag they had in the network)
                timings.inputs[name] = tuple(_kept(t) for t in inputs)
            if primed:
                TwoClocks.sleep(2 * max(timings.host[name][-3:], default=0.1) + 0.02)
            marks[name] = [clock.mark()]
            if two:
                host_marks[name] = time.perf_counter_ns()
        return hook

    def post(name):
        def hook(module, inputs, output):
            if two and not primed:
                timings.host[name].append((time.perf_counter_ns() - host_marks[name]) / 1e6)
            marks[name].append(clock.mark())
            if train and _needs_grad(output):  # the layer's backward starts with this gradient
                output.register_hook(lambda grad: backward_marks.append((name, clock.mark())))
        return hook

    def whole_run() -> float:
        return _whole_run(model, x, clock, train, timings.network_host if two else None)

    def hooked_run():
        handles = []
        try:
            for name, module in children:
                handles.append(module.register_forward_pre_hook(pre(name)))
                handles.append(module.register_forward_hook(post(name)))
            if train:
                _zero_grad(model)
            out = model(x)
            if train and out.requires_grad:
                out.backward(torch.ones_like(out))
            end = clock.mark()
            clock.sync()
        finally:
            for h in handles:
                h.remove()
        for name, (start, stop) in marks.items():
            (timings.gpu if primed else timings.layers)[name].append(clock.ms(start, stop))
        if train:
            spent = dict.fromkeys(timings.backward, 0.0)  # no backward pass: none spent
            for (name, start), (_, stop) in zip(backward_marks,
                                                 backward_marks[1:] + [(None, end)]):
                spent[name] += clock.ms(start, stop)
            for name, ms in spent.items():
                timings.backward[name].append(ms)
        marks.clear()
        backward_marks.clear()

    with _mode(train):
        first = [whole_run() for _ in range(max(warmup, 1))][-1]
        timings.network_host.clear()  # (warm-up runs)
        if two:  # the sleep's first call measures the GPU's clock: not inside a timed run
            TwoClocks.sleep(0.0)
        repeats = min(max_repeats, max(min_repeats, math.ceil(target_s * 1e3 / max(first, 1e-3))))
        every = _probe_every(repeats)
        for i in range(repeats):  # hooked and whole runs interleaved: the same conditions
            hooked_run()
            capture_inputs = False
            if two:
                primed = True
                hooked_run()
                primed = False
            timings.network.append(whole_run())
            if reference is not None and i % every == 0:
                reference.sample()
    if reference is not None:
        timings.reference_ms = reference.take()
        timings.reference_ops_ms = reference.take_ops()
    return timings


class TwoClocks:
    """On a GPU the host issues kernels and the GPU runs them, each on its own clock. With
    small layers (small batches, fast GPUs) the GPU waits on the host, and the time between a
    layer's two CUDA events is the host's, hooks included: an H100 ran ResNet-18 at batch 1 in
    1.48 ms while its hooked layers' event times added up to 1.69 ms
    (``benchmarks/gpu_hook_check.py``). So a campaign on CUDA also measures each layer's two
    clocks apart: ``host_ms``, the host's wall time from the layer's start to its end (the
    hooks' own work outside it), and ``gpu_ms``, the CUDA-event time in a run where the GPU
    first sleeps (``torch.cuda._sleep``) for twice the layer's host time, so that all its
    kernels are queued before the GPU reaches them: their time with no wait on the host. With
    the whole network's host time (``network_host_ms``), a predictor can replay the two clocks
    (``predict``: a layer's GPU work starts when the host has issued it and the GPU is free)."""

    _cycles_per_ms: float | None = None

    @classmethod
    def sleep(cls, ms: float) -> None:
        """Keep the current CUDA stream busy for about ``ms`` milliseconds."""
        if cls._cycles_per_ms is None:
            cycles = 1_000_000
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(cycles)  # (the first call loads the kernel)
            start.record()
            torch.cuda._sleep(cycles)
            end.record()
            torch.cuda.synchronize()
            cls._cycles_per_ms = cycles / max(start.elapsed_time(end), 1e-3)
        torch.cuda._sleep(max(1, int(ms * cls._cycles_per_ms)))


def layer_power(module: nn.Module, x, meter, runtime_ms: float,
                window_s: float, train: bool = False) -> tuple[float, float]:
    """Mean device power while ``module`` runs back to back on ``x`` (a tensor, or the tuple of
    a layer's inputs) for at least ``window_s`` (a sensor needs a window far longer than one
    layer); with ``train``, a forward and backward pass each time. Returns (watts, seconds
    measured). Raises the meter's error when a read fails."""
    args = x if isinstance(x, tuple) else (x,)
    clock = _Clock(args[0].device)
    n = max(1, math.ceil(window_s * 1e3 / max(runtime_ms, 1e-3)))

    def step():
        if not train:
            return module(*args)
        _zero_grad(module)
        # a non-leaf copy of an input that needs a gradient, as in the network (an in-place
        # layer may not write into a leaf)
        out = module(*(a.clone() if _needs_grad(a) else a for a in args))
        if _needs_grad(out):
            out.backward(torch.ones_like(out))

    with _mode(train):
        step()  # the layer's own warm-up, outside the window
        clock.sync()
        meter.start()
        start = time.perf_counter()
        for _ in range(n):
            step()
        clock.sync()
        seconds = time.perf_counter() - start
        watts = meter.stop()
    return watts, seconds
