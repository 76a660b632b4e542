"""Ground truth for a whole network on this machine: its measured runtime, power and energy.

The network runs for real (randomly initialised, never downloaded) after a warm-up, for as many
runs as fill a time target; the median is the figure, with the spread beside it. Power is read
by the device's meter while the network runs back to back for a window long enough for the
sensor; without a readable sensor, power and energy stay empty and the source says why.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from . import nets
from .devices import device_name
from .errors import NeuralPowerError
from .inputs import as_shapes, example, hint
from .inputs import text as text_of
from .trace import model_name
from .profiling import isolated
from .profiling.campaign import parse_device
from .profiling.meters import MeterError, open_meter
from .profiling.timing import Reference, layer_power, spread, steady_allocator, time_whole


def measure(model: nn.Module, input_shape, device="cpu", *, threads: int | None = None,
            meter=None, target_s: float = 1.0, power_window_s: float | None = None,
            train: bool = False) -> dict:
    """Measured totals of ``model`` (built on ``device``) for an input of ``input_shape``
    (with ``train``, of a training step: forward and backward, in training mode):
    ``{"device", "runtime_ms", "runtime_iqr_ms", "runtime_min_ms", "repeats", "reference_ms",
    "reference_ops_ms", "power_w", "energy_mj", "power_source", "threads"}``; power and energy
    are None when not measured; ``reference_ms`` is the device's speed meanwhile and
    ``reference_ops_ms`` the time of its small-ops probe (``timing.Reference``)."""
    device = parse_device(device) if isinstance(device, str) else device
    threads = int(threads or torch.get_num_threads())
    steady_allocator()  # as the profiler does: no page faults that a long-lived process avoids
    if device.type == "cpu":
        torch.set_num_threads(threads)
    own_meter = meter is None
    meter = open_meter(str(device)) if own_meter else meter
    try:
        shapes = as_shapes(input_shape)
        inputs = [example(s, model, device) for s in shapes]
        model = model.train(train)
        run = _Bound(model, inputs)
        try:
            reference = Reference(device, ops=True)
            times = spread(time_whole(run, inputs[0], target_s=target_s, reference=reference,
                                      train=train))
        except (RuntimeError, ValueError, TypeError, IndexError) as e:  # shapes, memory
            text = str(e).strip().splitlines()
            first = text[0] if text else type(e).__name__
            raise NeuralPowerError(f"cannot run {model_name(model)} with input "
                                   f"{text_of(shapes)}: {first}{hint(first, shapes)}") from None
        power, source = None, meter.source
        if meter.measures_power:
            window = power_window_s or max(1.0, meter.min_window_s)
            try:
                watts, _ = layer_power(run, inputs[0], meter, times["runtime_ms"], window,
                                       train=train)
                power = watts if math.isfinite(watts) else None
            except MeterError as e:
                source = f"{meter.source} (read failed: {e})"
        else:
            source = f"none ({meter.describe().get('reason', 'no sensor')})"
    finally:
        if own_meter:
            meter.close()
    return {"device": device_name(device, threads), **times,
            "reference_ms": reference.take(), "reference_ops_ms": reference.take_ops(),
            "power_w": power,
            "energy_mj": None if power is None else power * times["runtime_ms"],
            "power_source": source, "threads": threads,
            "mode": "train" if train else "inference"}


def measure_fresh(name: str, input_shape, device="cpu", **options) -> dict:
    """:func:`measure` of the network ``name`` (a NET: ``torchvision:resnet50``, ...) built on
    ``device``, in a fresh process on a CPU, as ``profile`` measures each network
    (``profiling/isolated.py``: a process that has run many networks runs small ones slower),
    in this process on a GPU. Adds ``process_cpu_s``: CPU seconds the measuring process used
    (what a caller subtracts to see other processes' load)."""
    if isinstance(device, str):
        device = parse_device(device)
    if device.type == "cpu" and isolated.available():
        return isolated.call(_measure_named, name, input_shape, device, options)
    return _measure_named(name, input_shape, device, options)


def _measure_named(name: str, input_shape, device, options: dict) -> dict:
    cpu = time.process_time()
    m = measure(nets.build(name, device=device), input_shape, device, **options)
    return {**m, "process_cpu_s": time.process_time() - cpu}


class _Bound(nn.Module):
    """The model called with all its inputs, as a one-argument module for the timers."""

    def __init__(self, model: nn.Module, inputs):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, first):
        return self.model(first, *self.inputs[1:])


def dispatched_ops(model: nn.Module, x: torch.Tensor) -> tuple[list[str], int]:
    """What one inference run of ``model`` on ``x`` (after one warm-up run) really dispatches,
    by ``torch.profiler``: the names of the ATen ops called at the top level (not from inside
    another op), what the tracer's working ops stand for, and the CUDA kernels launched."""
    from torch.profiler import ProfilerActivity, profile

    cuda = x.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode():
        model(x)
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            model(x)
            if cuda:
                torch.cuda.synchronize()
    events = prof.events()
    top = [e.name for e in events if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return top, sum(e.device_type.name == "CUDA" for e in events)
