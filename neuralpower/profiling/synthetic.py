"""Synthetic networks in the NeuralPower style: random, valid chains of the layer kinds the
predictor models, spread over the hyper-parameters real networks use.

Network ``i`` of a campaign is a pure function of ``(seed, i, limits)``: a point of a scrambled
Sobol sequence (a space-filling design of experiments, not a grid) decides its input, its
length and every layer's hyper-parameters. A killed campaign can therefore regenerate network
``i`` exactly when it resumes.

A spec is plain JSON-able data (``{"input": [b, c, h, w], "layers": [{...}, ...]}``);
:func:`build` turns it into an ``nn.Sequential``. Layers too costly for the device are kept
in budget by the batch size first (as real deployments do), then by narrowing the layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.stats import qmc
from torch import nn

from ..errors import NeuralPowerError

PROFILED_KINDS = ("conv2d", "linear", "max_pool2d", "avg_pool2d")
MAX_LAYERS = 8
MIN_SIZE = 7             # smallest feature map a conv or pooling layer (but the head) sees
_NET_DIMS = 5            # network type, batch, channels / features, size, length
_LAYER_DIMS = 8          # kind, width, kernel, stride, padding, groups, dilation, activation
DIMS = _NET_DIMS + MAX_LAYERS * _LAYER_DIMS


@dataclass(frozen=True)
class Limits:
    """What one layer may cost on the device: MACs and the elements of its largest tensor."""
    max_macs: int = 2 * 10**9           # conv2d, linear
    max_pool_macs: int = 2 * 10**8      # pooling: window operations, far slower per "MAC"
    max_elements: int = 2**26           # 256 MiB of float32 per activation
    max_batch: int = 256


def _log_uniform(u: float, low: float, high: float) -> int:
    return int(round(math.exp(math.log(low) + u * (math.log(high) - math.log(low)))))


def _width(u: float, low: int, high: int) -> int:
    """Channels or features: log-uniform; from 16 up, a multiple of 8, as in real networks
    (vectorised kernels are tuned for them, so odd widths would measure a rare slow path)."""
    w = _log_uniform(u, low, high)
    return w if w < 16 else max(16, min(high, round(w / 8) * 8))


def _pick(u: float, choices):
    """``choices``: (value, weight) pairs; ``u`` in [0, 1) selects by cumulative weight."""
    total = sum(w for _, w in choices)
    acc = 0.0
    for value, w in choices:
        acc += w / total
        if u < acc:
            return value
    return choices[-1][0]


# Weights follow what torchvision's classifiers use, with room for the rest of the range.
_KERNELS = [(1, 3), (3, 4), (5, 1), (7, 1), (11, .3), (2, .3), (4, .2), (6, .2), (9, .2)]
_STRIDES = [(1, 6), (2, 3), (3, .5), (4, .5)]


def sample(seed: int, index: int, kinds=PROFILED_KINDS, limits: Limits = Limits()) -> dict:
    """The spec of network ``index`` of the campaign seeded ``seed``."""
    engine = qmc.Sobol(DIMS, scramble=True, seed=seed)
    if index:
        engine.fast_forward(index)
    u = engine.random(1)[0]
    kinds = tuple(kinds)
    spatial = [k for k in kinds if k != "linear"]
    mlp = not spatial or ("linear" in kinds and u[0] < 0.25)
    n_layers = 1 + int(u[4] * MAX_LAYERS) if mlp else 2 + int(u[4] * (MAX_LAYERS - 1))
    layer_u = [u[_NET_DIMS + i * _LAYER_DIMS:_NET_DIMS + (i + 1) * _LAYER_DIMS]
               for i in range(n_layers)]
    if mlp:
        batch = _log_uniform(u[1], 1, 4096)
        layers, shape = _mlp(_width(u[2], 16, 8192), layer_u)
        spec = {"input": [1, shape], "layers": layers}
    else:
        batch = _log_uniform(u[1], 1, limits.max_batch)
        channels, size = _width(u[2], 3, 2048), _log_uniform(u[3], 7, 224)
        layers = _cnn(channels, size, layer_u, spatial, "linear" in kinds, limits)
        spec = {"input": [1, channels, size, size], "layers": layers}
    spec["input"][0] = _fit_batch(spec, batch, limits)
    return spec


def _mlp(features: int, layer_u) -> tuple[list, int]:
    layers = []
    for v in layer_u:
        layers.append({"kind": "linear", "out_features": _width(v[1], 16, 8192)})
        if v[7] < 0.5:
            layers.append({"kind": "relu"})
    return layers, features


def _cnn(channels, size, layer_u, spatial_kinds, with_linear, limits) -> list:
    layers, c, h = [], channels, size
    for v in layer_u:
        kind = _pick(v[0], [(k, 3 if k == "conv2d" else 1) for k in spatial_kinds])
        layer = (_conv(v, c, h, limits) if kind == "conv2d" else _pool(kind, v, h))
        if layer is None:
            break
        c_next, h_next = _out(layer, c, h)
        if h_next < MIN_SIZE:  # real networks stop shrinking at 7x7, then pool globally
            break
        layers.append(layer)
        c, h = c_next, h_next
        if kind == "conv2d" and v[7] < 0.5:
            layers.append({"kind": "relu"})
    if with_linear:  # the classifier head: global average pooling, flatten, linear
        if "avg_pool2d" in spatial_kinds and h > 1:
            layers.append({"kind": "avg_pool2d", "kernel": h, "stride": h, "padding": 0})
            h = 1
        if c * h * h > 25088:  # VGG's head is the widest in torchvision
            return layers
        layers += [{"kind": "flatten"},
                   {"kind": "linear", "out_features": _width(layer_u[-1][1], 10, 4096)}]
    return layers


def _conv(v, c, h, limits):
    kernel = _pick(v[2], _KERNELS)
    dilation = 2 if kernel == 3 and v[6] < 0.1 else 1
    reach = dilation * (kernel - 1) + 1
    padding = _pick(v[4], [(reach // 2, 7), (0, 2), (max(reach // 2 - 1, 0), 1)])
    if h + 2 * padding < reach:
        padding = (reach - h + 1) // 2
        if padding > reach // 2:  # input too small for this kernel: use a 1x1 instead
            kernel, dilation, reach, padding = 1, 1, 1, 0
    stride = min(_pick(v[3], _STRIDES), max(1, (h + 2 * padding - reach) // 2 + 1))
    out = _width(v[1], 3, 2048)
    groups = 1
    if v[5] < 0.25:                       # depthwise
        groups = out = c
    elif v[5] < 0.35:                     # grouped
        g = _pick((v[5] - 0.25) / 0.1, [(2, 1), (4, 1), (8, 1), (32, 1)])
        if c % g == 0:
            groups, out = g, max(g, out // g * g)
    layer = {"kind": "conv2d", "out_channels": out, "kernel": kernel, "stride": stride,
             "padding": padding, "dilation": dilation, "groups": groups}
    # Too costly even at batch 1: narrow it (real networks are narrow where they are large).
    while _conv_macs(layer, c, h) > limits.max_macs and layer["out_channels"] > 3:
        if groups == c and c > 3:
            return None                   # a depthwise layer cannot narrow: end the chain
        layer["out_channels"] = max(3, layer["out_channels"] // 2 // groups * groups)
        if layer["out_channels"] < groups:
            return None
    return layer if _conv_macs(layer, c, h) <= limits.max_macs else None


def _conv_macs(layer, c, h) -> int:
    _, oh = _out(layer, c, h)
    return oh * oh * layer["out_channels"] * (c // layer["groups"]) * layer["kernel"] ** 2


def _pool(kind, v, h):
    kernel = min(_pick(v[2], [(2, 3), (3, 4), (5, .5), (7, .5)]), h)
    stride = min(_pick(v[3], [(2, 5), (1, 2), (kernel, 2)]), kernel)
    padding = min(_pick(v[4], [(0, 5), (kernel // 2, 3)]), kernel // 2)
    if kernel == 1 and stride == 1:
        return None                       # the identity: nothing to measure
    return {"kind": kind, "kernel": kernel, "stride": stride, "padding": padding}


def _out(layer, c, h) -> tuple[int, int]:
    if layer["kind"] == "conv2d":
        reach = layer["dilation"] * (layer["kernel"] - 1) + 1
        return layer["out_channels"], (h + 2 * layer["padding"] - reach) // layer["stride"] + 1
    return c, (h + 2 * layer["padding"] - layer["kernel"]) // layer["stride"] + 1


def _fit_batch(spec: dict, batch: int, limits: Limits) -> int:
    """The largest batch up to ``batch`` that keeps every layer within ``limits``."""
    from ..trace import trace

    t = trace(build(spec), tuple(spec["input"]))
    pool = t.kind.isin(["max_pool2d", "avg_pool2d"])
    largest = max(elements(s) for s in list(t.input_shape) + list(t.output_shape))
    return max(1, min(batch, limits.max_macs // max(int(t.macs[~pool].max()), 1),
                      limits.max_pool_macs // max(int(t.macs[pool].max()) if pool.any() else 1, 1),
                      limits.max_elements // max(largest, 1)))


def elements(shape: str) -> int:
    """Elements of the largest tensor in a tracer shape string (``2x3x8x8,4x4``)."""
    if not isinstance(shape, str) or not shape or shape == "scalar":
        return 1
    return max(math.prod(int(d) for d in s.split("x")) for s in shape.split(","))


def build(spec: dict) -> nn.Sequential:
    """The ``nn.Sequential`` a spec describes, on the meta device (``.to_empty`` it to run)."""
    layers, shape = [], list(spec["input"])
    with torch.device("meta"):
        for layer in spec["layers"]:
            kind = layer["kind"]
            if kind == "conv2d":
                m = nn.Conv2d(shape[1], layer["out_channels"], layer["kernel"], layer["stride"],
                              layer["padding"], layer["dilation"], layer["groups"])
            elif kind == "max_pool2d":
                m = nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"])
            elif kind == "avg_pool2d":
                m = nn.AvgPool2d(layer["kernel"], layer["stride"], layer["padding"])
            elif kind == "linear":
                m = nn.Linear(shape[-1], layer["out_features"])
            elif kind == "relu":
                m = nn.ReLU(inplace=True)
            elif kind == "flatten":
                m = nn.Flatten()
            else:
                raise NeuralPowerError(f"synthetic network: unknown layer kind {kind!r}")
            shape = list(m(torch.empty(shape)).shape)
            layers.append(m)
    return nn.Sequential(*layers)
