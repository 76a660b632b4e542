"""Synthetic networks in the NeuralPower style: random, valid graphs of the layer kinds the
predictor models, spread over the hyper-parameters real networks use.

Network ``i`` of a campaign is a pure function of ``(seed, i, kinds, limits)``: a point of a
scrambled Sobol sequence (a space-filling design of experiments, not a grid) decides its type,
input, length and every layer's hyper-parameters. A killed campaign can therefore regenerate
network ``i`` exactly when it resumes.

Three types of network, drawn as real architectures are built:

* **CNN** (image tensors): conv (dense, grouped, depthwise) followed by batch or group norm
  and an activation, pooling, residual adds, channel concatenation (DenseNet, Inception), squeeze
  and excitation (pool, 1x1 convs, sigmoid, a broadcast mul), channel shuffles (a copy), and the
  decoders' ops (UNets, FPNs, segmentation heads): transposed convs and upsampling;
* **tokens** (``[batch, tokens, features]``, optionally from an embedding): linear, layer norm,
  activations, attention (fused, ``F.scaled_dot_product_attention``, or its math: scores by
  ``bmm``, softmax, mixing by ``bmm``), residual adds, gating muls, head shuffles (a copy);
* **MLP** (``[batch, features]``): linear, activations, layer norm, residual adds, softmax.

A spec is plain JSON-able data: ``{"input": [...], "dtype": "float32"|"int64", "layers": [...]}``;
each layer may name the earlier tensors it reads in ``"inputs"`` (0: the network's input, ``k``:
the output of layer ``k - 1``; default: the previous one). :func:`build` turns a spec into a
:class:`Graph` whose children are the layers, each running one op, so the profiler times each op
by module hooks. Layers too costly for the device are kept in budget by the batch size first (as
real deployments do), then by narrowing the layer.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import qmc
from torch import nn
from torch.nn import functional as F

from ..errors import NeuralPowerError
from ..features import (ACTIVATIONS, COMPARISON_OPS, PADDING, REDUCTIONS, ROUTING, STREAMED,
                        UNARY, UPSAMPLES)

PROFILED_KINDS = ("conv2d", "depthwise_conv2d", "conv_transpose2d", "linear", "matmul",
                  "attention", "grouped_mm", "max_pool2d", "avg_pool2d", "batch_norm",
                  "group_norm", "layer_norm", "softmax", *STREAMED, "copy", "cat", "stack",
                  "embedding", *UPSAMPLES, *PADDING)
MAX_LAYERS = 10          # slots; a slot may hold a block of several layers
MIN_SIZE = 7             # smallest feature map a conv or pooling layer (but the head) sees
_NET_DIMS = 7            # type, batch, width, size, length, tokens, embedding
_LAYER_DIMS = 10         # kind, width, kernel, stride, padding, groups/heads, misc, act, norm, skip
DIMS = _NET_DIMS + MAX_LAYERS * _LAYER_DIMS
_POOLS = ("max_pool2d", "avg_pool2d")
# What one layer reads and writes, not MACs, bounds these kinds (the tracer's element counts).
STREAM_KINDS = (*_POOLS, "batch_norm", "group_norm", "layer_norm", "softmax", *STREAMED, "copy",
                "cat", "stack", "embedding", *UPSAMPLES, *PADDING)


@dataclass(frozen=True)
class Limits:
    """What one layer may cost on the device: MACs (conv2d, linear, matmul), window operations
    or elements streamed (pooling and the other memory-bound kinds), and the elements of its
    largest tensor."""
    max_macs: int = 2 * 10**9
    max_pool_macs: int = 2 * 10**8
    max_elements: int = 2**26           # 256 MiB of float32 per activation
    max_batch: int = 256


def _log_uniform(u: float, low: float, high: float) -> int:
    return int(round(math.exp(math.log(low) + u * (math.log(high) - math.log(low)))))


def _width(u: float, low: int, high: int) -> int:
    """Channels or features: log-uniform; from 8 up, a multiple of 8, as in real networks
    (vectorised kernels are tuned for them, so odd widths would measure a rare slow path)."""
    w = _log_uniform(u, low, high)
    return w if w < 8 else max(8, min(high, round(w / 8) * 8))


def _image_channels(u: float) -> int:
    """A CNN's input: an image (3 channels, as every real network's first layer sees) or a
    feature map from inside a network."""
    return 3 if u < 0.2 else _width((u - 0.2) / 0.8, 8, 2048)


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
_ACTIVATIONS = [("relu", 3), ("gelu", 1.5), ("silu", 1.5), ("hardswish", 1), ("sigmoid", 1),
                ("hardsigmoid", .7), ("tanh", .3), ("hardtanh", 1), ("leaky_relu", .5),
                ("softplus", .5)]
# torchvision runs these in place (timm's CSPDarknet its leaky ReLUs)
_INPLACE = ("relu", "hardswish", "silu", "hardtanh", "leaky_relu")


class _Net:
    """A spec being drawn: its layers, the shape of every tensor, the kinds allowed."""

    def __init__(self, inputs: list, kinds, limits: Limits):
        self.layers, self.shapes, self.kinds, self.limits = [], [list(inputs)], set(kinds), limits
        self.aside = set()   # tensors no later layer may pick up: masks, constants, positions

    @property
    def shape(self) -> list:
        return self.shapes[-1]

    def allows(self, *kinds) -> bool:
        return all(k in self.kinds for k in kinds)

    def add(self, layer: dict, shape: list, aside: bool = False) -> int:
        self.layers.append(layer)
        self.shapes.append(list(shape))
        if aside:
            self.aside.add(len(self.shapes) - 1)
        return len(self.shapes) - 1

    def activation(self, u: float, inplace_u: float = 1.0):
        choices = [(k, w) for k, w in _ACTIVATIONS if k in self.kinds]
        if choices:
            kind = _pick(u, choices)
            # never in place on the network's input: repeated runs would keep changing it
            inplace = bool(kind in _INPLACE and inplace_u < 0.5 and len(self.shapes) > 1)
            self.add({"kind": kind, "inplace": inplace}, self.shape)

    def earlier(self, u: float, match) -> int | None:
        """An earlier tensor (not the current one) whose shape ``match`` accepts; ``u`` picks."""
        found = self.others(match)
        return found[min(int(u * len(found)), len(found) - 1)] if found else None

    def others(self, match) -> list[int]:
        """The earlier tensors (not the current one, none set aside) whose shape ``match``
        accepts."""
        return [j for j, s in enumerate(self.shapes[:-1]) if match(s) and j not in self.aside]


def sample(seed: int, index: int, kinds=PROFILED_KINDS, limits: Limits = Limits()) -> dict:
    """The spec of network ``index`` of the campaign seeded ``seed``."""
    spec, batch = draw(seed, index, kinds, limits)
    return fit_batch(spec, batch, limits)


NETWORK_ID = re.compile(r"s(\d+)-(\d+)")   # a synthetic network's id: s<seed>-<index>


def campaign_spec(network_id: str, settings: dict) -> dict | None:
    """The spec of a campaign's synthetic network ``network_id`` (``s<seed>-<index>``, as
    ``Campaign`` names them), from the settings its sidecar keeps (kinds and limits); None for
    another id or settings without them."""
    m = NETWORK_ID.fullmatch(str(network_id))
    if m is None or not {"kinds", "limits"} <= set(settings):
        return None
    return sample(int(m[1]), int(m[2]), tuple(settings["kinds"]), Limits(**settings["limits"]))


def fit_batch(spec: dict, batch: int, limits: Limits = Limits()) -> dict:
    """``spec`` (at batch 1, as :func:`draw` gives it) at the largest batch up to ``batch``
    that keeps it within ``limits``."""
    spec["input"][0] = fitted_batch(trace_spec(spec), batch, limits)
    return spec


def draw(seed: int, index: int, kinds=PROFILED_KINDS, limits: Limits = Limits(),
         stream: int = 0) -> tuple[dict, int]:
    """Network ``index``'s spec at batch 1 and the batch it asks for (:func:`fit_batch` makes
    it fit: that traces the network, so a sampler weighing many candidates draws first).
    ``stream`` > 0 draws from another scrambling of the design (the adaptive sampler's
    candidates): points the campaign's own sequence never gives. (A far index of the same
    sequence would do too, but reaching index n costs O(n): 0.3 s at 2**24.)"""
    engine = qmc.Sobol(DIMS, scramble=True,
                       seed=seed if not stream else np.random.default_rng([seed, stream]))
    if index:
        engine.fast_forward(index)
    u = engine.random(1)[0]
    kinds = set(kinds)
    layer_u = [u[_NET_DIMS + i * _LAYER_DIMS:_NET_DIMS + (i + 1) * _LAYER_DIMS]
               for i in range(MAX_LAYERS)][:1 + int(u[4] * MAX_LAYERS)]
    types = [(t, w) for t, w, needs in (("cnn", 2, _CNN_KINDS), ("tokens", 1.3, _TOKEN_KINDS),
                                         ("mlp", .6, _MLP_KINDS)) if kinds & needs]
    kind = _pick(u[0], types)
    if kind == "cnn":
        batch = _log_uniform(u[1], 1, limits.max_batch)
        channels = _image_channels(u[2])
        size = max(7, min(_log_uniform(u[3], 7, 224), math.isqrt(limits.max_elements // channels)))
        net = _Net([1, channels, size, size], kinds, limits)
        _cnn(net, layer_u)
    elif kind == "tokens":
        batch = _log_uniform(u[1], 1, 64)
        width = _width(u[2], 16, 2048)
        tokens = max(4, min(_log_uniform(u[5], 4, 1024), limits.max_elements // width))
        if "embedding" in kinds and (u[6] < 0.3 or kinds <= {"embedding"}):
            net = _Net([1, tokens], kinds, limits)
            vocab = min(_log_uniform(u[3], 100, 100_000), 2**25 // width)
            net.add({"kind": "embedding", "num": vocab, "out_features": width},
                    [1, tokens, width])
        else:
            net = _Net([1, tokens, width], kinds, limits)
        _tokens(net, layer_u)
    else:
        batch = _log_uniform(u[1], 1, 4096)
        net = _Net([1, _width(u[2], 16, 8192)], kinds, limits)
        _mlp(net, layer_u)
    spec = {"input": net.shapes[0], "dtype": "int64" if net.layers and
            net.layers[0]["kind"] == "embedding" else "float32", "layers": net.layers}
    if not spec["layers"]:  # nothing of the allowed kinds fitted: one op on the input itself
        spec["layers"] = [{"kind": next(k for k in ("relu", *ACTIVATIONS, "copy", "layer_norm",
                                                        "softmax") if k in kinds or k == "copy")}]
    return spec, batch


# ------------------------------------------------------------------------------------------ CNN
_CNN_KINDS = {"conv2d", "depthwise_conv2d", "conv_transpose2d", *_POOLS, "batch_norm",
              "group_norm", "cat", *UPSAMPLES, *PADDING}


def _cnn(net: _Net, layer_u) -> None:
    for v in layer_u:
        choices = [(k, w) for k, w in (("conv2d", 3), ("depthwise_conv2d", 1.5),
                                       ("max_pool2d", .7), ("avg_pool2d", .7), ("add", 1),
                                       ("cat", .8), ("mul", .8), ("copy", .5),
                                       ("conv_transpose2d", 1), ("upsample", 1),
                                       ("constant_pad_nd", 1), *_LATER_BLOCKS)
                   if k in net.kinds or k == "upsample" and net.kinds & set(UPSAMPLES)
                   or _later_block(net, k)]
        if not choices:
            return
        kind = _pick(v[0], choices)
        if kind in ("conv2d", "depthwise_conv2d"):
            if not _conv_block(net, v, depthwise=kind == "depthwise_conv2d"):
                return
        elif kind in _POOLS:
            layer = _pool(kind, v, net.shape[2])
            if layer is not None and _out_size(layer, net.shape[2]) >= MIN_SIZE:
                net.add(layer, [*net.shape[:2], *[_out_size(layer, net.shape[2])] * 2])
        elif kind == "add":   # a residual block: a shape-keeping conv, added to its input
            start = len(net.shapes) - 1
            if net.allows("conv2d") and not _conv_block(net, v, keep_shape=True):
                return
            other = start if len(net.shapes) - 1 > start else net.earlier(v[9], net.shape.__eq__)
            if other is not None:
                net.add({"kind": "add", "inputs": [len(net.shapes) - 1, other]}, net.shape)
        elif kind == "cat":   # concatenate the current map with earlier ones of its size
            if net.allows("conv2d") and v[8] < 0.5:
                _conv_block(net, v, keep_size=True)
            same = net.others(lambda s: len(s) == 4 and s[2:] == net.shape[2:])
            picked = same[::-1][:1 + int(v[9] * 3)]
            if picked:
                channels = net.shape[1] + sum(net.shapes[j][1] for j in picked)
                if _elements([net.shape[0], channels, *net.shape[2:]]) <= net.limits.max_elements:
                    net.add({"kind": "cat", "inputs": [len(net.shapes) - 1, *picked]},
                            [net.shape[0], channels, *net.shape[2:]])
        elif kind == "mul":
            _squeeze_excite(net, v)
        elif kind == "copy":  # a channel shuffle / layout change: a strided read, a dense write
            net.add({"kind": "copy"}, net.shape)
        elif kind == "conv_transpose2d":
            _conv_transpose_block(net, v)
        elif kind == "upsample":
            _upsample(net, v)
        elif kind == "constant_pad_nd":
            _pad(net, v)
        else:
            _LATER_DRAWS[kind](net, v)


def _conv_block(net: _Net, v, depthwise=False, keep_shape=False, keep_size=False) -> bool:
    """conv, then (as real networks do) batch norm and an activation. False: no conv fits."""
    c, h = net.shape[1], net.shape[2]
    layer = _conv(v, c, h, net.limits, depthwise=depthwise,
                  out=c if keep_shape else None, same=keep_shape or keep_size)
    if layer is None:
        return False
    c_next, h_next = _out(layer, c, h)
    if h_next < MIN_SIZE and h_next < h:  # real networks stop shrinking at 7x7, then pool
        return False
    net.add(layer, [net.shape[0], c_next, h_next, h_next])
    _norm_activation(net, v)
    return True


def _norm_activation(net: _Net, v) -> None:
    """What follows a conv in real networks: batch norm (group norm in UNets, BiT, detection
    heads), then an activation."""
    norms = [(k, w) for k, w in (("batch_norm", 3), ("group_norm", 1)) if k in net.kinds]
    if norms and v[8] < 0.75:
        if _pick(v[8] / 0.75, norms) == "batch_norm":
            net.add({"kind": "batch_norm"}, net.shape)
        else:   # 32 groups as most networks use, where the channels divide
            c = net.shape[1]
            groups = [(g, 4 if g == 32 else 1) for g in (32, 16, 8, 4, 1) if c % g == 0]
            net.add({"kind": "group_norm", "groups": _pick(v[5], groups)}, net.shape)
    if v[7] < 0.8:
        net.activation(v[7] / 0.8, v[6])


# (kernel, stride, padding, output padding) of the transposed convs decoders use: UNet's 2x2,
# DCGAN's 4x4, a 3x3 that doubles the size, one that keeps it.
_TRANSPOSED = [((2, 2, 0, 0), 3), ((4, 2, 1, 0), 2), ((3, 2, 1, 1), 1), ((3, 1, 1, 0), .5)]
MAX_UP_SIZE = 448        # largest map the decoders' ops write


def _conv_transpose_block(net: _Net, v) -> None:
    """A transposed conv (UNet's decoder, a GAN's generator), then norm and activation."""
    b, c, h, _ = net.shape
    kernel, stride, padding, extra = _pick(v[2], _TRANSPOSED)
    size = (h - 1) * stride - 2 * padding + kernel + extra
    out = _width(v[1], 8, 2048)
    too_big = lambda: (h * h * c * out * kernel ** 2 > net.limits.max_macs  # noqa: E731
                       or _elements([b, out, size, size]) > net.limits.max_elements)
    while out > 8 and too_big():
        out = max(8, out // 2 // 8 * 8)    # narrowed, as a decoder is where maps are large
    if size > MAX_UP_SIZE or too_big():
        return
    net.add({"kind": "conv_transpose2d", "out_channels": out, "kernel": kernel,
             "stride": stride, "padding": padding, "output_padding": extra}, [b, out, size, size])
    _norm_activation(net, v)


def _upsample(net: _Net, v) -> None:
    """``F.interpolate`` by 2 (FPN, UNet), 4 or 8 (a segmentation head back to the input)."""
    b, c, h, _ = net.shape
    mode = _pick(v[2], [(k, 1) for k in UPSAMPLES if k in net.kinds])
    scale = _pick(v[3], [(2, 4), (4, 1), (8, .5)])
    while scale > 1 and (h * scale > MAX_UP_SIZE
                         or _elements([b, c, h * scale, h * scale]) > net.limits.max_elements
                         or (scale ** 2 + 1) * _elements(net.shape) > net.limits.max_pool_macs):
        scale //= 2
    if scale > 1:
        net.add({"kind": mode, "scale": scale}, [b, c, h * scale, h * scale])


def _pad(net: _Net, v) -> None:
    """Zero padding before a conv, as TensorFlow's "same" pads: one more row and column after
    (a stride-2 conv of an even map), or around."""
    b, c, h, _ = net.shape
    pad = _pick(v[4], [((0, 1, 0, 1), 3), ((1, 1, 1, 1), 2), ((1, 2, 1, 2), 1), ((2, 2, 2, 2), 1)])
    size = h + pad[0] + pad[1]
    if (_elements([b, c, size, size]) <= net.limits.max_elements
            and 2 * _elements([b, c, size, size]) <= net.limits.max_pool_macs):
        net.add({"kind": "constant_pad_nd", "pad": list(pad)}, [b, c, size, size])


def _squeeze_excite(net: _Net, v) -> None:
    """MobileNetV3 / EfficientNet's SE: global pool, 1x1 down, act, 1x1 up, gate, broadcast mul."""
    if not net.allows("avg_pool2d", "conv2d"):
        return
    b, c, h, _ = net.shape
    start = len(net.shapes) - 1
    net.add({"kind": "avg_pool2d", "kernel": h, "stride": h, "padding": 0}, [b, c, 1, 1])
    mid = max(8, c // 4 // 8 * 8)
    net.add(_plain_conv(mid), [b, mid, 1, 1])
    net.activation(v[7] * 0.5)  # relu or gelu/silu, the squeeze's activations
    net.add(_plain_conv(c), [b, c, 1, 1])
    gates = [(k, 1) for k in ("sigmoid", "hardsigmoid") if k in net.kinds]
    if gates:
        net.add({"kind": _pick(v[6], gates), "inplace": False}, [b, c, 1, 1])
    net.add({"kind": "mul", "inputs": [start, len(net.shapes) - 1]}, net.shapes[start])


def _plain_conv(out: int) -> dict:
    return {"kind": "conv2d", "out_channels": out, "kernel": 1, "stride": 1, "padding": 0,
            "dilation": 1, "groups": 1}


def _conv(v, c, h, limits, depthwise=False, out=None, same=False):
    kernel = 3 if same and v[2] > 0.5 else (1 if same else _pick(v[2], _KERNELS))
    dilation = 2 if kernel == 3 and v[6] < 0.1 else 1
    reach = dilation * (kernel - 1) + 1
    padding = reach // 2 if same else _pick(v[4], [(reach // 2, 7), (0, 2),
                                                   (max(reach // 2 - 1, 0), 1)])
    if h + 2 * padding < reach:
        padding = (reach - h + 1) // 2
        if padding > reach // 2:  # input too small for this kernel: use a 1x1 instead
            kernel, dilation, reach, padding = 1, 1, 1, 0
    stride = 1 if same else min(_pick(v[3], _STRIDES), max(1, (h + 2 * padding - reach) // 2 + 1))
    if depthwise:
        stride = min(stride, 2)
    groups, out = (c, c) if depthwise else (1, out or _width(v[1], 8, 2048))
    if not depthwise and v[5] < 0.15 and not same:                       # grouped
        g = _pick(v[5] / 0.15, [(2, 1), (4, 1), (8, 1), (32, 1)])
        if c % g == 0 and c > g:
            groups, out = g, max(g, out // g * g)
    layer = {"kind": "conv2d", "out_channels": out, "kernel": kernel, "stride": stride,
             "padding": padding, "dilation": dilation, "groups": groups}
    # Too costly or too large even at batch 1: narrow it (real networks are narrow where they
    # are large). (No committed campaign's conv was over the elements' limit before it was
    # checked here, so their networks regenerate as they were.)
    too_big = lambda: (_conv_macs(layer, c, h) > limits.max_macs  # noqa: E731
                       or _out(layer, c, h)[1] ** 2 * layer["out_channels"] > limits.max_elements)
    while too_big() and layer["out_channels"] > 3:
        if groups == c and c > 1 or same and out == c:
            return None                   # a depthwise or residual conv cannot narrow
        narrower = layer["out_channels"] // 2 // groups * groups  # a multiple of the groups
        if narrower < max(3, groups):
            return None
        layer["out_channels"] = narrower
    return None if too_big() else layer


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


def _out_size(layer, h) -> int:
    reach = layer.get("dilation", 1) * (layer["kernel"] - 1) + 1
    return (h + 2 * layer["padding"] - reach) // layer["stride"] + 1


def _out(layer, c, h) -> tuple[int, int]:
    return (layer["out_channels"] if layer["kind"] == "conv2d" else c), _out_size(layer, h)


# ------------------------------------------- blocks of later networks, in maps and in tokens
# Drawn only where a campaign's kinds allow them (a block's name is not a kind), so that the
# networks of campaigns profiled before them regenerate as they were. Each works on a map
# (batch, channels, rows, columns) or on tokens (batch, tokens, width).
_GRN = ("linalg_vector_norm", "mul", "addcmul")  # ConvNeXt-V2: x + b + w * (x * norm / mean)
_SHIFT = ("roll",)                              # Swin's shifted windows
_STACK = ("stack",)                             # stacked heads, queries-keys-values, features
_MATH = ("exp", "cos", "sin", "clamp", "clamp_min")
_STATS = ("sum", "amax", "linalg_vector_norm")  # a statistic, then the tensor scaled by it
_GATHER = ("index",)                            # a table's rows looked up (tokens only)
_LATER_BLOCKS = [("grn", .6), ("shift", .5), ("stack", .6), ("math", 1), ("stat", .8),
                 ("lookup", .6), ("mask", .8), ("constant", .5), ("positions", .5), ("tile", .5),
                 ("experts", 1.5), ("pick", .6), ("combined", .6)]
# A mixture of experts as transformers runs it (tokens only; activations optional)
_EXPERTS = ("linear", "softmax", *ROUTING, "index", "cast", "grouped_mm", "mul", "arange",
            "sum", "add")
# blocks of a made tensor (a constant, positions, a tiled slice) added to the current one
# (a block's name is no kind's: the draws take a kind's name as that kind allowed)
_ADDED = {"constant": "fill", "positions": "arange", "tile": "repeat"}


def _later_block(net: _Net, block: str) -> bool:
    """Whether the campaign's kinds allow ``block`` (False for a name of no such block)."""
    if block == "lookup":   # added back to the tokens (its rows alone would end them)
        return net.allows(*_GATHER, "add") and len(net.shape) == 3
    if block in ("grn", "shift", "stack"):
        return net.allows(*{"grn": _GRN, "shift": _SHIFT, "stack": _STACK}[block])
    if block == "stat":   # a statistic is combined back (a map of 1 column would end a CNN)
        return any(net.allows(k, _combined_by(k)) for k in _STATS)
    if block == "mask":   # a mask of positions, used (a bool tensor would end the network)
        used = bool(net.kinds & {"masked_fill", "where"}) or net.allows("cast", "mul")
        return net.allows("compare", "arange") and used
    if block in _ADDED:
        return net.allows(_ADDED[block], "add")
    if block == "experts":
        return net.allows(*_EXPERTS) and len(net.shape) == 3
    if block == "pick":
        return net.allows("gather", "scatter")
    if block == "combined":   # masks combined, then used as the mask block uses one
        used = bool(net.kinds & {"masked_fill", "where"}) or net.allows("cast", "mul")
        return net.allows("compare", "arange", "logical") and used
    return block == "math" and bool(net.kinds & set(_MATH))


def _grn_block(net: _Net, v) -> None:
    """Global response norm: each channel's L2 norm over the map (tokens: over the tokens,
    which reads a channels-last map the same way), over its mean across the channels; the
    input times it, scaled and shifted by one addcmul; the input added back."""
    start = len(net.shapes) - 1
    cnn = len(net.shape) == 4
    b, c = net.shape[0], net.shape[1 if cnn else -1]
    stat = [b, c, 1, 1] if cnn else [b, 1, c]
    norm = net.add({"kind": "linalg_vector_norm", "dims": [2, 3] if cnn else [1],
                    "keepdim": True}, stat)
    if net.allows("mean", "div"):
        mean = [b, 1, 1, 1] if cnn else [b, 1, 1]
        net.add({"kind": "mean", "dims": [1 if cnn else -1], "keepdim": True}, mean)
        if "add" in net.kinds:   # + eps
            net.add({"kind": "add"}, mean)
        net.add({"kind": "div", "inputs": [norm, len(net.shapes) - 1]}, stat)
    net.add({"kind": "mul", "inputs": [start, len(net.shapes) - 1]}, net.shapes[start])
    net.add({"kind": "addcmul"}, net.shape)
    if "add" in net.kinds:
        net.add({"kind": "add", "inputs": [len(net.shapes) - 1, start]}, net.shape)


def _shift_block(net: _Net, v) -> None:
    """``torch.roll`` of the rows and columns (Swin's shift of a channels-last map: tokens
    whose count is a square, viewed as one), of one of them, or of the tokens."""
    if len(net.shape) == 4:
        dims, side, n = [2, 3], None, net.shape[2]
    else:
        side = math.isqrt(net.shape[1])
        dims, n = ([1, 2], side) if side > 1 and side * side == net.shape[1] else ([1], None)
        n = n or net.shape[1]
    if v[4] < 0.3:
        dims = dims[:1]
    shift = max(1, int(v[3] * n / 2))
    net.add({"kind": "roll", "shifts": [-shift] * len(dims), "dims": dims,
             "side": side if dims == [1, 2] else None}, net.shape)


def _stack_block(net: _Net, v) -> None:
    """Stack the current tensor with 1 to 3 earlier ones of its shape along a new first,
    second or last dimension, viewed back as one tensor of n times the channels (width)."""
    same = net.others(net.shape.__eq__)
    picked = same[::-1][:1 + int(v[9] * 3)]
    if not picked:
        return
    shape = list(net.shape)
    shape[1 if len(shape) == 4 else -1] *= 1 + len(picked)
    if (_elements(shape) > net.limits.max_elements
            or 2 * _elements(shape) > net.limits.max_pool_macs):
        return
    net.add({"kind": "stack", "dim": _pick(v[6], [(0, 1), (1, 1), (-1, 1)]),
             "inputs": [len(net.shapes) - 1, *picked]}, shape)


def _math_block(net: _Net, v) -> None:
    """One of the elementwise math ops on the whole tensor."""
    net.add({"kind": _pick(v[6], [(k, 1) for k in _MATH if k in net.kinds])}, net.shape)


def _stat_block(net: _Net, v) -> None:
    """A sum, maximum or L2 norm over the last dimension (F.normalize's, floored by clamp_min),
    over the channels (CBAM's maps of channel statistics), or over the rows and columns; then
    the tensor divided by it (less it, a maximum)."""
    kind = _pick(v[6], [(k, 1) for k in _STATS if net.allows(k, _combined_by(k))])
    start = len(net.shapes) - 1
    rank = len(net.shape)
    dims = _pick(v[4], [([rank - 1], 2), ([1], 1)] + ([([2, 3], 1)] if rank == 4 else []))
    stat = [1 if i in dims else d for i, d in enumerate(net.shape)]
    net.add({"kind": kind, "dims": dims, "keepdim": True}, stat)
    if kind == "linalg_vector_norm" and "clamp_min" in net.kinds:
        net.add({"kind": "clamp_min"}, stat)
    net.add({"kind": _combined_by(kind), "inputs": [start, len(net.shapes) - 1]},
            net.shapes[start])


def _combined_by(stat: str) -> str:
    """The op a statistic is combined back with: the tensor less its maximum, else over it."""
    return "sub" if stat == "amax" else "div"


def _gather_block(net: _Net, v) -> None:
    """Rows of a table looked up by an index per token: one row of the width (a position
    embedding), or ``heads`` rows of width / heads each (as relative position biases gather
    a few values per pair of tokens); added to the tokens."""
    b, t, c = net.shape
    per = _heads(v[5], c)                 # rows gathered per token
    rows = max(t, int(t * (1 + 7 * v[3])))
    start = len(net.shapes) - 1
    net.add({"kind": "index", "rows": rows, "per": per}, [t, c])
    net.add({"kind": "add", "inputs": [start, len(net.shapes) - 1]}, [b, t, c])


def _mask_block(net: _Net, v) -> None:
    """A mask, then what it drives: a masked_fill, a where, or the mask cast to float and
    multiplied in. The mask compares positions over the tensor's last dimensions with a bound
    (one run of true and one of false, broadcast over the rest), as real masks are built from
    positions, padding or windows' regions: masked_fill and where take 4 to 6 times longer on
    a mask of random values (``x > 0``), whose branches the CPU cannot predict (the first
    campaign of this block, thrown away)."""
    start, shape = len(net.shapes) - 1, _tail(net, v[4])
    pos = net.add({"kind": "arange", "dims": len(shape), "dtype": "float32"}, shape, aside=True)
    op = _pick(v[2], [(k, 1) for k in COMPARISON_OPS])
    bound = float(int(v[8] * math.prod(shape)))
    mask = net.add({"kind": "compare", "op": op, "value": bound, "inputs": [pos]}, shape,
                   aside=True)
    _use_mask(net, v, start, mask, shape)


def _use_mask(net: _Net, v, start: int, mask: int, shape: list) -> None:
    """The tensor ``start`` with the mask applied: a masked_fill, a where, or the mask cast to
    float and multiplied in."""
    uses = [k for k in ("masked_fill", "where") if k in net.kinds]
    use = _pick(v[6], [(k, 1) for k in uses + (["cast"] if net.allows("cast", "mul") else [])])
    if use == "cast":
        mask = net.add({"kind": "cast"}, shape, aside=True)
        net.add({"kind": "mul", "inputs": [start, mask]}, net.shapes[start])
    else:
        net.add({"kind": use, "inputs": [start, mask]}, net.shapes[start])


def _logical_block(net: _Net, v) -> None:
    """Two masks of positions combined (and, or, xor: a causal mask and a padding mask, a
    sliding window), or one inverted (not), then used as :func:`_mask_block` uses one."""
    start, shape = len(net.shapes) - 1, _tail(net, v[4])
    pos = net.add({"kind": "arange", "dims": len(shape), "dtype": "float32"}, shape, aside=True)
    n = math.prod(shape)
    first = net.add({"kind": "compare", "op": "lt", "value": float(int(v[8] * n)),
                     "inputs": [pos]}, shape, aside=True)
    op = _pick(v[2], [("bitwise_and", 2), ("bitwise_or", 1), ("bitwise_xor", .5),
                      ("bitwise_not", 1.5)])
    if op == "bitwise_not":
        mask = net.add({"kind": "logical", "op": op, "inputs": [first]}, shape, aside=True)
    else:
        second = net.add({"kind": "compare", "op": "ge", "value": float(int(v[3] * n)),
                          "inputs": [pos]}, shape, aside=True)
        mask = net.add({"kind": "logical", "op": op, "inputs": [first, second]}, shape,
                       aside=True)
    _use_mask(net, v, start, mask, shape)


# Layers whose output their backward does not read, so a scatter may write into it in place
# (a training step fails after a relu, sigmoid or softmax written so); never the input.
_WRITABLE = ("linear", "conv2d", "add", "layer_norm")


def _pick_block(net: _Net, v) -> None:
    """``k`` elements of each row along the last dimension read by index (``gather``: a
    router's top scores), optionally through an activation, and written back by the same
    index (``scatter`` of them, out of place), or a constant written there in place (DeepSeek's
    group mask); the indices are fixed at random, per row."""
    last = net.shape[-1]
    k = max(1, min(last, int(round(last * (0.05 + 0.95 * v[3] ** 2)))))
    start = len(net.shapes) - 1
    if v[6] < 0.4 and start > 0 and net.layers[-1]["kind"] in _WRITABLE:   # in place
        net.add({"kind": "scatter", "k": k, "inplace": True}, net.shape)
        return
    net.add({"kind": "gather", "k": k}, [*net.shape[:-1], k], aside=True)
    if v[8] < 0.5:
        net.activation(v[7], v[9])
        net.aside.add(len(net.shapes) - 1)
    net.add({"kind": "scatter", "k": k, "inplace": False,
             "inputs": [start, len(net.shapes) - 1]}, net.shapes[start])

def _tail(net: _Net, u: float) -> list:
    """The last 1 to all dimensions of the current tensor (``u`` picks how many)."""
    rank = len(net.shape)
    return net.shape[rank - 1 - min(int(u * rank), rank - 1):]


def _constant_block(net: _Net, v) -> None:
    """A tensor of a constant over the current one's last dimensions or all of them (a mask's
    or a buffer's start: Swin's window mask is ``new_zeros``), added to it."""
    start, shape = len(net.shapes) - 1, _tail(net, v[4])
    ops = [("new_zeros", 1), ("new_ones", 1), ("new_full", 1)]
    op = _pick(v[6], ops + ([("zeros_like", 1)] if shape == net.shape else []))
    made = net.add({"kind": "fill", "op": op, "dims": len(shape)}, shape, aside=True)
    net.add({"kind": "add", "inputs": [start, made]}, net.shapes[start])


def _positions_block(net: _Net, v) -> None:
    """Positions 0..n-1 over the current tensor's last dimensions (a sequence's, a map's), made
    as integers and cast to float (language models' position ids) or made in float; added."""
    start, shape = len(net.shapes) - 1, _tail(net, v[4])
    cast = "cast" in net.kinds and v[6] < 0.5
    made = net.add({"kind": "arange", "dims": len(shape), "dtype": "int64" if cast else "float32"},
                   shape, aside=True)
    if cast:
        made = net.add({"kind": "cast"}, shape, aside=True)
    net.add({"kind": "add", "inputs": [start, made]}, net.shapes[start])


def _tile_block(net: _Net, v) -> None:
    """One slice of the tensor along a dimension (a class token, a row, a channel) repeated
    back to the dimension's size, added to the tensor."""
    start = len(net.shapes) - 1
    dim = 1 + min(int(v[4] * (len(net.shape) - 1)), len(net.shape) - 2)
    made = net.add({"kind": "repeat", "dim": dim}, net.shape)
    net.add({"kind": "add", "inputs": [start, made]}, net.shape)


_EXPERT_COUNTS = [(4, 1), (8, 2), (16, 1.5), (32, 1), (64, 1), (128, .5)]
_TOP_K = [(1, 1), (2, 2), (4, 1), (8, 1)]
MAX_EXPERT_WEIGHTS = 2**24   # elements of one projection's experts (64 MiB of float32)


def _experts_block(net: _Net, v) -> None:
    """A mixture-of-experts layer as transformers runs it (``grouped_mm_experts_forward``): a
    router (linear, softmax over the experts, top k), the token-expert pairs sorted by expert,
    each pair's token row gathered, the tokens per expert counted (``histc`` of the ids as
    float, as on a CPU) and summed into offsets; the rows through their experts' up projection
    (one grouped matmul), an activation, the down projection; each row weighted by its
    router probability, put back in token order (the inverse permutation by ``index_put``)
    and the k rows of a token summed; added to the tokens. The routing is real: random
    weights spread the tokens over the experts, as a trained router's balance loss does."""
    b, t, c = net.shape
    start = len(net.shapes) - 1
    experts = _pick(v[2], _EXPERT_COUNTS)
    k = min(_pick(v[3], _TOP_K), experts)
    hidden = _width(v[1], 16, 4096)
    while experts * c * hidden > MAX_EXPERT_WEIGHTS and hidden > 16:
        hidden = max(16, hidden // 2 // 8 * 8)
    pairs = b * t * k
    if (experts * c * hidden > MAX_EXPERT_WEIGHTS or pairs * c * hidden > net.limits.max_macs
            or pairs * max(c, hidden) > net.limits.max_elements):
        return
    net.add({"kind": "linear", "out_features": experts}, [b, t, experts], aside=True)
    probs = net.add({"kind": "softmax"}, [b, t, experts], aside=True)
    top = net.add({"kind": "topk", "k": k, "inputs": [probs]}, [b, t, k], aside=True)
    order = net.add({"kind": "sort", "inputs": [top]}, [pairs], aside=True)
    token = net.add({"kind": "floor_divide", "k": k, "inputs": [order]}, [pairs], aside=True)
    rows = net.add({"kind": "index", "op": "rows", "inputs": [start, token]}, [pairs, c],
                   aside=True)
    weights = net.add({"kind": "index", "op": "weights", "inputs": [top, order]}, [pairs],
                      aside=True)
    ids = net.add({"kind": "cast", "op": "ids", "inputs": [order]}, [pairs], aside=True)
    counts = net.add({"kind": "histc", "experts": experts, "inputs": [ids]}, [experts],
                     aside=True)
    offsets = net.add({"kind": "cumsum", "inputs": [counts]}, [experts], aside=True)
    transposed = bool(v[4] < 0.5)   # weights stored (experts, in, out), else (experts, out, in)
    net.add({"kind": "grouped_mm", "experts": experts, "out_features": hidden,
             "transposed": transposed, "inputs": [rows, offsets]}, [pairs, hidden], aside=True)
    net.activation(v[7], v[6])
    net.aside.add(len(net.shapes) - 1)
    down = net.add({"kind": "grouped_mm", "experts": experts, "out_features": c,
                    "transposed": transposed, "inputs": [len(net.shapes) - 1, offsets]},
                   [pairs, c], aside=True)
    weighted = net.add({"kind": "mul", "op": "rows", "inputs": [down, weights]}, [pairs, c],
                       aside=True)
    positions = net.add({"kind": "arange", "dims": 1, "dtype": "int64", "inputs": [token]},
                        [pairs], aside=True)
    inverse = net.add({"kind": "index_put", "inputs": [order, positions]}, [pairs], aside=True)
    back = net.add({"kind": "index", "op": "rows", "inputs": [weighted, inverse]}, [pairs, c],
                   aside=True)
    summed = net.add({"kind": "sum", "k": k, "inputs": [back, start]}, [b, t, c])
    net.add({"kind": "add", "inputs": [start, summed]}, [b, t, c])


_LATER_DRAWS = {"grn": _grn_block, "shift": _shift_block, "stack": _stack_block,
                "math": _math_block, "stat": _stat_block, "lookup": _gather_block,
                "mask": _mask_block, "constant": _constant_block, "positions": _positions_block,
                "tile": _tile_block, "experts": _experts_block, "pick": _pick_block,
                "combined": _logical_block}


# --------------------------------------------------------------------------- tokens and MLP
_TOKEN_KINDS = {"matmul", "attention", "layer_norm", "softmax", "embedding", "linear", "add",
                "mul", "sub", "div", "copy", *ACTIVATIONS, *UNARY, *REDUCTIONS}
# Normalisations and rotary embeddings written op by op, as Hugging Face's Llama family and
# older LayerNorms are (each block is drawn only where all its kinds are allowed):
_RMS_NORM = ("pow", "mean", "rsqrt", "mul")       # x * rsqrt(mean(x^2) + eps) * weight
_BY_HAND_NORM = ("mean", "sub", "pow", "sqrt", "div")  # (x - m) / sqrt(mean((x - m)^2) + eps)
_ROTARY = ("neg", "cat")                           # x * cos + cat(-x2, x1) * sin, per head
_MLP_KINDS = {"linear", "layer_norm", "softmax", "add", *ACTIVATIONS}


def _linear(net: _Net, out: int, exact: bool = False) -> bool:
    """A linear layer to ``out`` features, narrowed to fit the limits unless ``exact``."""
    rows = math.prod(net.shape[:-1])
    while rows * net.shape[-1] * out > net.limits.max_macs and out > 16 and not exact:
        out = max(16, out // 2 // 8 * 8)
    if "linear" not in net.kinds or rows * net.shape[-1] * out > net.limits.max_macs:
        return False
    net.add({"kind": "linear", "out_features": out}, [*net.shape[:-1], out])
    return True


def _tokens(net: _Net, layer_u) -> None:
    for v in layer_u:
        b, t, c = net.shape
        blocks = {"norm": net.allows(*_RMS_NORM) or net.allows(*_BY_HAND_NORM),
                  "rotary": net.allows(*_ROTARY)}
        kind = _pick(v[0], [(k, w) for k, w in (("linear", 3), ("layer_norm", 1),
                                                ("activation", 1), ("add", 1), ("matmul", 1.5),
                                                ("mul", .5), ("copy", .5), ("softmax", .3),
                                                ("norm", .8), ("rotary", .4), *_LATER_BLOCKS)
                            if k == "activation" or k in net.kinds or blocks.get(k)
                            or k == "matmul" and "attention" in net.kinds
                            or _later_block(net, k)] or [("activation", 1)])
        if kind == "linear":
            _linear(net, _width(v[1], 16, 4096))
        elif kind == "layer_norm":
            net.add({"kind": "layer_norm"}, net.shape)
        elif kind == "activation":
            net.activation(v[7], v[6])
        elif kind == "add":   # residual: a projection back to the width, added to its input
            start = len(net.shapes) - 1
            if _linear(net, c, exact=True):
                net.add({"kind": "add", "inputs": [len(net.shapes) - 1, start]}, net.shape)
        elif kind == "mul":   # a gate (SwiGLU) with an earlier tensor, or a scale by a constant
            other = net.earlier(v[9], net.shape.__eq__)
            gate = other is not None and v[8] < 0.6
            scale = "div" if not gate and "div" in net.kinds and v[6] < 0.3 else "mul"
            net.add({"kind": scale, "inputs": [len(net.shapes) - 1] + ([other] if gate else [])},
                    net.shape)
        elif kind == "copy":  # heads split or merged: x.view(b, t, h, d).transpose(1, 2)
            net.add({"kind": "copy", "heads": _heads(v[5], c)}, net.shape)
        elif kind == "matmul":
            _attention(net, v)
        elif kind == "softmax":
            net.add({"kind": "softmax"}, net.shape)
        elif kind == "norm":
            _norm(net, v)
        elif kind == "rotary":
            _rotary(net, v)
        elif kind in _LATER_DRAWS:
            _LATER_DRAWS[kind](net, v)
    if "mean" in net.kinds and layer_u[0][5] < 0.2 and len(net.shape) == 3:
        net.add({"kind": "mean", "dim": 1}, [net.shape[0], net.shape[2]])  # pooled tokens (ViT)


def _norm(net: _Net, v) -> None:
    """RMSNorm (Llama, T5) or a LayerNorm by hand, over the last dimension, op by op."""
    b, t, c = net.shape
    start = len(net.shapes) - 1
    stats = [b, t, 1]
    if net.allows(*_RMS_NORM) and (v[8] < 0.7 or not net.allows(*_BY_HAND_NORM)):
        net.add({"kind": "pow"}, net.shape)
        net.add({"kind": "mean", "dim": -1}, stats)
        if "add" in net.kinds:   # + eps
            net.add({"kind": "add"}, stats)
        net.add({"kind": "rsqrt"}, stats)
        net.add({"kind": "mul", "inputs": [start, len(net.shapes) - 1]}, [b, t, c])
        net.add({"kind": "mul"}, [b, t, c])          # the weight
        return
    net.add({"kind": "mean", "dim": -1}, stats)
    centred = net.add({"kind": "sub", "inputs": [start, len(net.shapes) - 1]}, [b, t, c])
    net.add({"kind": "pow"}, [b, t, c])
    net.add({"kind": "mean", "dim": -1}, stats)
    if "add" in net.kinds:
        net.add({"kind": "add"}, stats)
    net.add({"kind": "sqrt"}, stats)
    net.add({"kind": "div", "inputs": [centred, len(net.shapes) - 1]}, [b, t, c])


def _rotary(net: _Net, v) -> None:
    """Rotary position embedding over each head: the half-rotation (neg of the second half,
    concatenated before the first), then, where allowed, the mix x * cos + rotated * sin."""
    b, t, c = net.shape
    heads = _heads(v[5], c)
    start = len(net.shapes) - 1
    d = c // heads
    net.add({"kind": "neg", "heads": heads}, [b, t, heads, d - d // 2])
    net.add({"kind": "cat", "heads": heads, "inputs": [len(net.shapes) - 1, start]}, [b, t, c])
    if "mul" in net.kinds:
        net.add({"kind": "mul"}, [b, t, c])          # * sin
        if "add" in net.kinds:
            cos = net.add({"kind": "mul", "inputs": [start]}, [b, t, c])
            net.add({"kind": "add", "inputs": [cos - 1, cos]}, [b, t, c])


def _heads(u: float, width: int) -> int:
    options = [h for h in (1, 2, 4, 8, 12, 16, 32) if width % h == 0 and width // h >= 8] or [1]
    return options[min(int(u * len(options)), len(options) - 1)]


def _attention(net: _Net, v) -> None:
    """Fused attention (half the time where both forms are profiled), or its math: scores (bmm
    of queries and keys), softmax over keys, mixing (bmm with values)."""
    b, t, c = net.shape
    heads = _heads(v[5], c)
    start = len(net.shapes) - 1
    scores = [b * heads, t, t]
    macs = b * heads * t * t * (c // heads)  # of each product
    if "attention" in net.kinds and (v[7] < 0.5 or "matmul" not in net.kinds):
        if 2 * macs <= net.limits.max_macs:  # fused: both products, the scores never stored
            net.add({"kind": "attention", "heads": heads}, net.shape)
        return
    if (macs > net.limits.max_macs or _elements(scores) > net.limits.max_elements
            or "matmul" not in net.kinds):
        return
    net.add({"kind": "matmul", "op": "scores", "heads": heads}, scores)
    if "softmax" in net.kinds:
        if v[8] < 0.3 and t > 1:  # a mask that makes subnormal numbers, as Swin's does
            u = v[8] / 0.3
            net.add({"kind": "mask", "rows": max(1, math.ceil(t * (0.1 + 0.9 * u))),
                     "keys": max(1, int((t - 1) * (1 - 0.9 * u)))}, scores)
        net.add({"kind": "softmax"}, scores)
    net.add({"kind": "matmul", "op": "mix", "heads": heads,
             "inputs": [len(net.shapes) - 1, start]}, [b, t, c])


def _mlp(net: _Net, layer_u) -> None:
    for v in layer_u:
        start = len(net.shapes) - 1
        residual = v[9] < 0.3 and "add" in net.kinds
        if not _linear(net, net.shape[-1] if residual else _width(v[1], 16, 8192), exact=residual):
            return
        if v[8] < 0.3 and "layer_norm" in net.kinds:
            net.add({"kind": "layer_norm"}, net.shape)
        if v[7] < 0.7:
            net.activation(v[7] / 0.7, v[6])
        if residual:
            net.add({"kind": "add", "inputs": [len(net.shapes) - 1, start]}, net.shape)
    if "softmax" in net.kinds and layer_u[0][6] < 0.3:
        net.add({"kind": "softmax"}, net.shape)


# ----------------------------------------------------------------------- budget and building
def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)


def work(table) -> tuple[np.ndarray, np.ndarray]:
    """Per traced row, its MACs for the compute-bound kinds and, for the memory-bound ones
    (:data:`STREAM_KINDS`), its window operations or elements streamed: what the device's
    calibrated rates turn into time."""
    stream = table.kind.isin(STREAM_KINDS).to_numpy()
    moved = (table.elements.fillna(0) + table.in_elements.fillna(0)).to_numpy()
    pools = table.kind.isin(_POOLS).to_numpy()
    streamed = np.where(pools, table.macs.to_numpy(), moved) * stream
    return np.where(stream, 0, table.macs.to_numpy()), streamed


def trace_spec(spec: dict):
    """The tracer's layer table of a spec's network (what the profiler writes rows from)."""
    from ..trace import trace

    return trace(build(spec), tuple(spec["input"]), dtype=_DTYPES[spec.get("dtype", "float32")])


def one_op_modules(table, among=None) -> list[tuple[int, str, object]]:
    """``(position, module name, trace row)`` of the modules of a traced network that run exactly
    one op besides views (every child of a :class:`Graph`), only those named in ``among`` if
    given; ``position`` counts every module that does work, in order."""
    real = table[table.kind != "free"]
    return [(position, module, ops.iloc[0]) for position, (module, ops)
            in enumerate(real.groupby("module", sort=False))
            if len(ops) == 1 and (among is None or module in among)]


def fitted_batch(table, batch: int, limits: Limits) -> int:
    """The largest batch up to ``batch`` that keeps every layer of a network traced at batch 1
    (``table``) within ``limits`` (work and activations grow with the batch)."""
    compute, streamed = work(table)
    largest = max(elements(s) for s in list(table.input_shape) + list(table.output_shape))
    return max(1, min(batch, limits.max_macs // max(int(compute.max()), 1),
                      limits.max_pool_macs // max(int(streamed.max()), 1),
                      limits.max_elements // max(largest, 1)))


def elements(shape: str) -> int:
    """Elements of the largest tensor in a tracer shape string (``2x3x8x8,4x4``)."""
    if not isinstance(shape, str) or not shape or shape == "scalar":
        return 1
    return max(math.prod(int(d) for d in s.split("x")) for s in shape.split(","))


_DTYPES = {"float32": torch.float32, "int64": torch.long}


def example_input(spec: dict, device) -> torch.Tensor:
    """A real input for the spec's network on ``device``: normal values, or token ids."""
    if spec.get("dtype") == "int64":
        return torch.randint(0, spec["layers"][0]["num"], spec["input"], device=device)
    return torch.randn(*spec["input"], device=device)


class Graph(nn.Module):
    """Layers run in order; each reads the tensors its spec names (default: the previous one).
    Each child runs one op, so hooks on the children time every op of the network.

    A tensor is dropped as soon as no later layer reads it, as in a real network's forward: the
    allocator then hands the next layer memory that is already mapped and in cache. Keeping
    every output alive made each op write to fresh memory, and the layers of real networks ran
    1.3 to 1.9 times faster than the same layers here (mobilenet_v2, resnet50)."""

    def __init__(self, layers, inputs):
        super().__init__()
        for i, m in enumerate(layers):
            self.add_module(str(i), m)
        self.inputs = inputs
        last = {}  # tensor index (0: the input, k: layer k-1's output) -> its last reader
        for i, reads in enumerate(inputs):
            for j in reads:
                last[j] = i
        self.free_after = [[j for j in set(reads) if last[j] == i]
                           for i, reads in enumerate(inputs)]

    def forward(self, x):
        outs = [x]
        for i, (m, reads) in enumerate(zip(self.children(), self.inputs)):
            outs.append(m(*(outs[j] for j in reads)))
            for j in self.free_after[i]:
                outs[j] = None
        return outs[-1]


class _Add(nn.Module):
    def forward(self, a, b=None):
        return a + (b if b is not None else 1e-6)    # a residual, or a norm's eps


class _Sub(nn.Module):
    def forward(self, a, b):
        return a - b


class _Div(nn.Module):
    def forward(self, a, b=None):
        return a / (b if b is not None else 8.0)     # a norm, or attention's scaling


class _Unary(nn.Module):
    """A norm's square, square root or reciprocal square root (of a mean of squares: never
    negative). (Rotary's negation is a :class:`_RotateHalf`.)"""
    OPS = {"pow": lambda x: x.pow(2), "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
           "exp": torch.exp, "cos": torch.cos, "sin": torch.sin,
           "clamp": lambda x: x.clamp(-3.0, 3.0), "clamp_min": lambda x: x.clamp_min(1e-12)}

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        return self.OPS[self.kind](x)


class _Mean(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.mean(self.dim, keepdim=self.dim == -1)   # a norm's statistic, or token pooling


class _Reduce(nn.Module):
    """A sum, maximum, mean or L2 norm over ``dims``."""
    OPS = {"sum": torch.sum, "amax": torch.amax, "mean": torch.mean,
           "linalg_vector_norm": lambda x, dim, keepdim: torch.linalg.vector_norm(
               x, dim=dim, keepdim=keepdim)}

    def __init__(self, kind: str, dims: list, keepdim: bool):
        super().__init__()
        self.kind, self.dims, self.keepdim = kind, tuple(dims), keepdim

    def forward(self, x):
        return self.OPS[self.kind](x, dim=self.dims, keepdim=self.keepdim)


class _Addcmul(nn.Module):
    """``bias + weight * x`` in one op, per channel (ConvNeXt-V2's response norm's affine)."""

    def __init__(self, shape: list):
        super().__init__()
        c = shape[1] if len(shape) == 4 else shape[-1]
        size = (1, c, 1, 1) if len(shape) == 4 else (c,)
        self.weight, self.bias = nn.Parameter(torch.empty(size)), nn.Parameter(torch.empty(size))
        self.reset_parameters()

    def reset_parameters(self):
        """Real values (a campaign calls it after ``to_empty``: uninitialised memory may hold
        subnormal numbers, which slow the op tens of times)."""
        nn.init.normal_(self.weight, 1.0, 0.1)
        nn.init.normal_(self.bias, 0.0, 0.1)

    def forward(self, x):
        return torch.addcmul(self.bias, self.weight, x)


class _Roll(nn.Module):
    """``torch.roll``; ``side``: tokens viewed as a square channels-last map first (Swin)."""

    def __init__(self, shifts: list, dims: list, side: int | None = None):
        super().__init__()
        self.shifts, self.dims, self.side = tuple(shifts), tuple(dims), side

    def forward(self, x):
        if self.side:
            b, t, c = x.shape
            return torch.roll(x.view(b, self.side, self.side, c), self.shifts,
                              self.dims).view(b, t, c)
        return torch.roll(x, self.shifts, self.dims)


def _fix_indices(idx: torch.Tensor, high: int) -> None:
    """Fill ``idx`` with indices below ``high``, drawn at random seeded by its size: the same
    for every build of a network, as a model's are fixed at init."""
    g = torch.Generator().manual_seed(idx.numel())
    idx.copy_(torch.randint(high, idx.shape, generator=g))


class _Gather(nn.Module):
    """``table[idx]``: ``per`` rows of a ``rows`` x (width / per) table for each token, viewed
    as (tokens, width); the indices are fixed at random (seeded), as a model's are at init."""

    def __init__(self, rows: int, per: int, shape: list):
        super().__init__()
        t, c = shape[1], shape[2]
        self.table = nn.Parameter(torch.empty(rows, c // per))
        self.register_buffer("idx", torch.empty(t, per, dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self):
        """Real values (a campaign calls it after ``to_empty``: indices out of range fail)."""
        nn.init.normal_(self.table, 0.0, 0.02)
        _fix_indices(self.idx, self.table.shape[0])

    def forward(self, x):
        return self.table[self.idx].view(self.idx.shape[0], -1)


class _Stack(nn.Module):
    """``torch.stack`` along ``dim``, viewed back with n times the channels (width)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, *xs):
        y, shape = torch.stack(xs, self.dim), xs[0].shape
        return y.view(shape[0], -1, *shape[2:]) if len(shape) == 4 else y.view(*shape[:2], -1)


class _Compare(nn.Module):
    """``x > value`` and the like: a bool mask."""

    def __init__(self, op: str, value: float):
        super().__init__()
        self.op, self.value = op, value

    def forward(self, x):
        return getattr(torch, self.op)(x, self.value)


class _Select(nn.Module):
    """``x.masked_fill(mask, 0)`` or ``torch.where(mask, x, 0)`` (a 0-d buffer: a Python 0
    would add a ``scalar_tensor`` to the module's one op)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.register_buffer("zero", torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self):
        """A real zero (a campaign calls it after ``to_empty``)."""
        self.zero.zero_()

    def forward(self, x, mask):
        if self.kind == "masked_fill":
            return x.masked_fill(mask, 0.0)
        return torch.where(mask, x, self.zero)


class _Cast(nn.Module):
    def forward(self, x):
        return x.to(torch.float32)    # a mask or positions to the activations' dtype


class _Fill(nn.Module):
    """A constant over the input's last ``dims`` dimensions (``zeros_like``: all of them)."""

    def __init__(self, op: str, dims: int):
        super().__init__()
        self.op, self.dims = op, dims

    def forward(self, x):
        shape = x.shape[x.dim() - self.dims:]
        if self.op == "zeros_like":
            return torch.zeros_like(x)
        if self.op == "new_full":
            return x.new_full(shape, 0.5)
        return getattr(x, self.op)(shape)


class _Arange(nn.Module):
    """Positions over the input's last ``dims`` dimensions (the view is free)."""

    def __init__(self, dims: int, dtype: str):
        super().__init__()
        self.dims, self.dtype = dims, dtype

    def forward(self, x):
        shape = x.shape[x.dim() - self.dims:]
        return torch.arange(math.prod(shape), dtype=_DTYPES[self.dtype],
                            device=x.device).view(shape)


class _Repeat(nn.Module):
    """The first slice along ``dim`` (a view) repeated to the dimension's size."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        times = [1] * x.dim()
        times[self.dim] = x.shape[self.dim]
        return x.narrow(self.dim, 0, 1).repeat(times)


class _TopK(nn.Module):
    """Each token's ``k`` most probable experts: (probabilities, expert ids)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, probs):
        return torch.topk(probs, self.k, dim=-1)


class _SortPairs(nn.Module):
    """The token-expert pairs sorted by expert: (sorted ids, the permutation)."""

    def forward(self, top):
        return torch.sort(top[1].reshape(-1))


class _PairToken(nn.Module):
    """Each sorted pair's token: its place in the unsorted pairs over ``k``."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, order):
        return order[1] // self.k


class _Rows(nn.Module):
    """Rows of ``x`` (its last dimension a row) picked by an index: the pairs' token rows, or
    rows put back in token order."""

    def forward(self, x, index):
        return x.reshape(-1, x.shape[-1])[index]


class _PairWeights(nn.Module):
    """Each sorted pair's router probability."""

    def forward(self, top, order):
        return top[0].reshape(-1)[order[1]]


class _ExpertIds(nn.Module):
    def forward(self, order):
        return order[0].float()   # histc counts floats only on a CPU


class _Histc(nn.Module):
    def __init__(self, experts: int):
        super().__init__()
        self.experts = experts

    def forward(self, ids):
        return torch.histc(ids, bins=self.experts, min=0, max=self.experts - 1)


class _Offsets(nn.Module):
    def forward(self, counts):
        return torch.cumsum(counts, 0, dtype=torch.int32)


class _Experts(nn.Module):
    """``experts`` projections of the rows to ``out`` features, each row by the expert its
    group (``offs``) gives: one grouped matmul. Stored (experts, in, out) when ``transposed``,
    else (experts, out, in) and read transposed, as transformers' models keep either."""

    def __init__(self, experts: int, cin: int, out: int, transposed: bool):
        super().__init__()
        self.transposed = transposed
        self.weight = nn.Parameter(torch.empty((experts, cin, out) if transposed
                                               else (experts, out, cin)))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.weight, 0.0, self.weight.shape[-1 if not self.transposed else 1]
                        ** -0.5)

    def forward(self, x, offs):
        w = self.weight if self.transposed else self.weight.transpose(-2, -1)
        try:
            return torch._grouped_mm(x, w, offs=offs)
        except RuntimeError:
            if not x.is_meta:
                raise
            from ..trace import _grouped_mm_meta   # (torch's meta kernel takes bfloat16 alone)
            return _grouped_mm_meta(x, w, offs)


class _Scale(nn.Module):
    def forward(self, x, weights):
        return x * weights.unsqueeze(-1)


class _Unsort(nn.Module):
    """The inverse of the sort's permutation: ``inverse[perm] = positions``."""

    def forward(self, order, positions):
        inverse = torch.empty_like(positions)
        inverse[order[1]] = positions
        return inverse


class _Combine(nn.Module):
    """The ``k`` weighted rows of each token summed, in the tokens' shape (``like``)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, rows, like):
        return rows.view(-1, self.k, rows.shape[-1]).sum(1).view(like.shape)


class _Logical(nn.Module):
    """``a & b``, ``a | b``, ``a ^ b`` or ``~a`` of bool masks."""

    def __init__(self, op: str):
        super().__init__()
        self.op = op

    def forward(self, a, b=None):
        return getattr(torch, self.op)(a) if b is None else getattr(torch, self.op)(a, b)


class _Picks(nn.Module):
    """Indices of ``k`` elements of each row along the last dimension, fixed at random (seeded)
    for the tensor's shape past the batch, the same for every sample of it."""

    def __init__(self, k: int, shape: list):
        super().__init__()
        self.register_buffer("idx", torch.empty((1, *shape[1:-1], k), dtype=torch.long))
        self.last = shape[-1]
        self.reset_parameters()

    def reset_parameters(self):
        """Real indices (a campaign calls it after ``to_empty``: out of range ones fail)."""
        _fix_indices(self.idx, self.last)

    def index(self, x):
        return self.idx.expand(*x.shape[:-1], self.idx.shape[-1])


class _GatherPicks(_Picks):
    def forward(self, x):
        return x.gather(-1, self.index(x))


class _ScatterPicks(_Picks):
    def __init__(self, k: int, shape: list, inplace: bool):
        super().__init__(k, shape)
        self.inplace = inplace

    def forward(self, x, src=None):
        if self.inplace:
            return x.scatter_(-1, self.index(x), 1.0)
        return x.scatter(-1, self.index(x), src)


class _RotateHalf(nn.Module):
    """Rotary's rotate_half per head: ``-x2`` (kind neg) or ``cat(-x2, x1)`` (kind cat) of
    each head's halves x1, x2, as Hugging Face's Llama writes it."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, x, first=None):
        if first is None:   # neg of the second halves
            b, t, c = x.shape
            d = c // self.heads
            return -x.view(b, t, self.heads, d)[..., d // 2:]
        b, t, c = first.shape
        d = c // self.heads
        return torch.cat((x, first.view(b, t, self.heads, d)[..., :d // 2]), -1).view(b, t, c)


class _Mul(nn.Module):
    def forward(self, a, b=None):
        return a * (b if b is not None else 0.125)   # a gate, or attention's scaling


class _Cat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, dim=1)


class _Copy(nn.Module):
    """Move the data to another layout and view it back in the same shape: a strided read and
    a dense write, as after a permute (channel shuffle, attention heads)."""

    def __init__(self, heads: int = 0):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        if x.dim() == 3 and self.heads:
            b, t, c = x.shape
            y = x.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        else:
            y = x.flatten(2).transpose(1, 2) if x.dim() == 4 else x.transpose(0, -1)
        return y.contiguous().view(x.shape)


class _Mask(nn.Module):
    """Scores brought to order one, with -95 added to the first ``keys`` keys of the first
    ``rows`` queries: the softmax after it makes subnormal numbers there (exp(-95) is 5.5e-42),
    as Swin's -100 between windows' regions does; the tracer knows where (subnormal.py)."""

    def __init__(self, rows: int, keys: int):
        super().__init__()
        self.rows, self.keys = rows, keys

    def forward(self, x):
        offsets = x.new_zeros(x.shape[-2:])
        offsets[:self.rows, :self.keys] = -95.0
        return x.clamp(-3.0, 3.0) + offsets


class _Scores(nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q = x.view(b * self.heads, t, c // self.heads)
        return torch.bmm(q, q.transpose(1, 2))


class _Attention(nn.Module):
    """Self-attention of ``heads`` heads over the tokens, one fused kernel. The heads are split
    by a view and a transpose, as in a real network (the kernel reads them strided), and merged
    back by the transpose the kernel's output layout makes a view."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        b, t, c = x.shape
        q = x.view(b, t, self.heads, c // self.heads).transpose(1, 2)
        return F.scaled_dot_product_attention(q, q, q).transpose(1, 2).reshape(b, t, c)


class _Mix(nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads

    def forward(self, scores, x):
        b, t, c = x.shape
        return torch.bmm(scores, x.view(b * self.heads, t, c // self.heads)).view(b, t, c)


_ACTIVATION_MODULES = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU,
                       "hardswish": nn.Hardswish, "sigmoid": nn.Sigmoid, "hardtanh": nn.ReLU6,
                       "hardsigmoid": nn.Hardsigmoid, "tanh": nn.Tanh,
                       "leaky_relu": lambda inplace=False: nn.LeakyReLU(0.1, inplace),
                       "softplus": nn.Softplus}


def _module(layer: dict, shape: list) -> nn.Module:
    kind = layer["kind"]
    experts = _experts_module(layer, shape)
    if experts is not None:
        return experts
    if kind == "conv2d":
        return nn.Conv2d(shape[1], layer["out_channels"], layer["kernel"], layer["stride"],
                         layer["padding"], layer["dilation"], layer["groups"])
    if kind == "max_pool2d":
        return nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"])
    if kind == "avg_pool2d":
        return nn.AvgPool2d(layer["kernel"], layer["stride"], layer["padding"])
    if kind == "linear":
        return nn.Linear(shape[-1], layer["out_features"])
    if kind == "batch_norm":
        return nn.BatchNorm2d(shape[1])
    if kind == "group_norm":
        return nn.GroupNorm(layer["groups"], shape[1])
    if kind == "conv_transpose2d":
        return nn.ConvTranspose2d(shape[1], layer["out_channels"], layer["kernel"],
                                  layer["stride"], layer["padding"], layer["output_padding"])
    if kind in UPSAMPLES:
        return nn.Upsample(scale_factor=layer["scale"], mode=kind[len("upsample_"):-2])
    if kind == "constant_pad_nd":
        return nn.ZeroPad2d(tuple(layer["pad"]))
    if kind == "layer_norm":
        return nn.LayerNorm(shape[-1])
    if kind == "softmax":
        return nn.Softmax(dim=-1)
    if kind in _ACTIVATION_MODULES:
        cls = _ACTIVATION_MODULES[kind]
        return cls(inplace=True) if layer.get("inplace") and kind in _INPLACE else cls()
    if kind == "embedding":
        return nn.Embedding(layer["num"], layer["out_features"])
    if kind in ("neg", "cat") and "heads" in layer:
        return _RotateHalf(layer["heads"])
    if kind in _Unary.OPS:
        return _Unary(kind)
    if kind in _Reduce.OPS and "dims" in layer:
        return _Reduce(kind, layer["dims"], layer["keepdim"])
    if kind == "mean":
        return _Mean(layer["dim"])
    if kind == "addcmul":
        return _Addcmul(shape)
    if kind == "roll":
        return _Roll(layer["shifts"], layer["dims"], layer.get("side"))
    if kind == "stack":
        return _Stack(layer["dim"])
    if kind == "index":
        return _Gather(layer["rows"], layer["per"], shape)
    if kind == "attention":
        return _Attention(layer["heads"])
    if kind == "matmul":
        return (_Scores if layer["op"] == "scores" else _Mix)(layer["heads"])
    if kind == "mask":
        return _Mask(layer["rows"], layer["keys"])
    if kind == "compare":
        return _Compare(layer["op"], layer["value"])
    if kind in ("masked_fill", "where"):
        return _Select(kind)
    if kind == "fill":
        return _Fill(layer["op"], layer["dims"])
    if kind == "arange":
        return _Arange(layer["dims"], layer["dtype"])
    if kind == "repeat":
        return _Repeat(layer["dim"])
    if kind == "logical":
        return _Logical(layer["op"])
    if kind == "gather":
        return _GatherPicks(layer["k"], shape)
    if kind == "scatter":
        return _ScatterPicks(layer["k"], shape, layer["inplace"])
    simple = {"add": _Add, "mul": _Mul, "sub": _Sub, "div": _Div, "cat": _Cat, "cast": _Cast,
              "flatten": nn.Flatten}
    if kind == "copy":
        return _Copy(layer.get("heads", 0))
    if kind in simple:
        return simple[kind]()
    raise NeuralPowerError(f"synthetic network: unknown layer kind {kind!r}")


def _experts_module(layer: dict, shape: list) -> nn.Module | None:
    """The module of a layer of a mixture of experts (:func:`_experts_block`), else None."""
    kind, op = layer["kind"], layer.get("op")
    if kind == "topk":
        return _TopK(layer["k"])
    if kind == "sort":
        return _SortPairs()
    if kind == "floor_divide":
        return _PairToken(layer["k"])
    if kind == "index" and op in ("rows", "weights"):
        return _Rows() if op == "rows" else _PairWeights()
    if kind == "cast" and op == "ids":
        return _ExpertIds()
    if kind == "histc":
        return _Histc(layer["experts"])
    if kind == "cumsum":
        return _Offsets()
    if kind == "grouped_mm":
        return _Experts(layer["experts"], shape[-1], layer["out_features"], layer["transposed"])
    if kind == "mul" and op == "rows":
        return _Scale()
    if kind == "index_put":
        return _Unsort()
    if kind == "sum" and "k" in layer:
        return _Combine(layer["k"])
    return None


def realise(spec: dict, device) -> Graph:
    """The spec's network on ``device`` with real weights (``reset_parameters`` after
    ``to_empty``: uninitialised memory may hold subnormal numbers, or indices out of range)."""
    model = build(spec).to_empty(device=device)
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def build(spec: dict) -> Graph:
    """The :class:`Graph` a spec describes, on the meta device, in eval mode (``.to_empty`` it
    to run)."""
    dtype = _DTYPES[spec.get("dtype", "float32")]
    modules, reads = [], []
    with torch.device("meta"):
        outs = [torch.empty(spec["input"], dtype=dtype)]
        for i, layer in enumerate(spec["layers"]):
            inputs = layer.get("inputs", [i])
            first = outs[inputs[0]]   # (a tuple: topk's or sort's values and indices)
            m = _module(layer, list((first[0] if isinstance(first, tuple) else first).shape))
            outs.append(m(*(outs[j] for j in inputs)))
            modules.append(m)
            reads.append(inputs)
    return Graph(modules, reads).eval()
