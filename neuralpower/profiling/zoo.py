"""Real networks as a profiling source: torchvision's classifiers at seeded random batches and
input sizes, each layer timed inside the running network (``profile --zoo``).

Why: a layer costs differently in different networks (``benchmarks/context_effect.py``), and
synthetic networks, which mix small and large layers freely, run the small layers of a mobile
network up to twice as slow as the network itself does (MobileNetV2's ReLU6 on 401k elements:
0.065 ms in synthetic networks, 0.03 ms in MobileNetV2). Layers measured where real
architectures put them teach the models the contexts real networks have. Only a network's leaf
modules that run exactly one op, once per run, are timed (a reused ReLU module or a residual add
in a block's ``forward`` is not: its hooks would time something else); so a zoo network's rows do
not add up to the network. Its whole time is written beside them (``network_runtime_ms``): not
for the network-level fit of ``Predictor._fit_network``, which needs every op's row, but for
``fit --calibrate`` (``calibrate.observed_in_data``), which traces the network again.

A spec is ``{"zoo": "torchvision:NAME", "input": [batch, 3, size, size]}``; network ``index`` of
seed ``seed`` is the same spec on every machine (the draw is seeded; torchvision's list is
sorted). Its rows carry the id ``z<seed>-<index>-<NAME>`` (:func:`network_id`, :func:`net_of`).
With ``--adaptive``, after a first uniform share, each network is the best of several further
draws (``profiling/adaptive.py``).

The text zoo (``profile --zoo text``) draws language models the same way: a model type of
Hugging Face transformers from :data:`TEXT` at its default configuration, bare or with its
language-model head, at a sequence length of 8-512 token ids and a batch of 1-8:
``{"zoo": "transformers:gpt2/lm", "input": [batch, seq], "dtype": "int64"}``, id
``t<seed>-<index>-<TYPE>[+lm]-<batch>x<seq>``. Their layers run where language models put
them (a linear layer of BERT-base at 128 tokens took 5.6 ms inside the model and 4.1 ms in a
loop on this project's VM: its 9 MiB of weights come from memory on each pass, not from
cache). On that VM a predictor fitted without them already predicted 13 language models within
a few percent, and ten minutes of them changed that by a few points either way
(``docs/results.md``, "Language models"); a device whose language-model layers run otherwise
is what they are for.
"""
from __future__ import annotations

import functools
import re

import numpy as np
import torch

from .. import nets
from ..errors import NeuralPowerError

MAX_PARAMS = 100_000_000    # larger classifiers (ViT-L/H, RegNet-Y 16-128GF) take long to build
SIZES = range(96, 321, 16)  # input sizes drawn
MAX_BATCH = 32
FAMILIES = ("vision", "text")
# transformers model types the text zoo draws (default configurations of 13-125M parameters;
# each takes token ids alone). Other types are kept out of it to check predictions on
# architectures no campaign measured (benchmarks/language_accuracy.py).
TEXT = ("bert", "bloom", "camembert", "electra", "ernie", "gpt-sw3", "gpt2", "mobilebert",
        "openai-gpt", "roberta", "xlm-roberta")
SEQ = (8, 512)              # token ids per sequence (log-uniform): every TEXT model takes 512
MAX_TEXT_BATCH = 8
NET_LAYERS = 20             # a network's work at most this many of the largest layers allowed
_TRIES = 20                 # draws per index before giving up (a network refuses a size)


def names() -> list[str]:
    """torchvision's classification models, sorted (the draw depends on the order)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def text_names() -> list[str]:
    """The NETs of the text zoo: each type of :data:`TEXT`, bare and with its head."""
    return [f"transformers:{t}{head}" for t in TEXT for head in ("", "/lm")]


def is_zoo(spec: dict) -> bool:
    return "zoo" in spec


_ID = re.compile(r"z\d+-\d+(?:a\d+)?-(.+)")
_TEXT_ID = re.compile(r"t\d+-\d+(?:a\d+)?-(.+?)(\+lm)?-(\d+)x(\d+)")


def network_id(seed: int, index: int, spec: dict, candidate: int | None = None) -> str:
    """The ``network`` column of zoo network ``index``'s rows; an adaptive campaign's chosen
    ``candidate`` is named too (``z<seed>-<index>a<candidate>-<NAME>``). A text zoo network's
    id also says its input (``t<seed>-<index>-<TYPE>[+lm]-<batch>x<seq>``: its rows cannot)."""
    chosen = "" if candidate is None else f"a{candidate}"
    name = spec["zoo"].rpartition(":")[2]
    if spec["zoo"].startswith("transformers:"):
        kind, _, head = name.partition("/")
        batch, seq = spec["input"]
        return f"t{seed}-{index:06d}{chosen}-{kind}{'+lm' if head else ''}-{batch}x{seq}"
    return f"z{seed}-{index:06d}{chosen}-{name}"


def net_of(network_id: str) -> str | None:
    """The NET (``torchvision:NAME``, ``transformers:TYPE[/lm]``) a zoo network id names; None
    for any other id."""
    m = _TEXT_ID.fullmatch(str(network_id))
    if m:
        return f"transformers:{m.group(1)}{'/lm' if m.group(2) else ''}"
    m = _ID.fullmatch(str(network_id))
    return f"torchvision:{m.group(1)}" if m else None


def sample(seed: int, index: int, limits, stream: int = 0, family: str = "vision") -> dict:
    """Spec of zoo network ``index``: a classifier, an input size and a batch drawn from
    ``(seed, index)``, the batch cut so every layer stays within ``limits`` (as synthetic
    networks' batches are) and the whole network within :data:`NET_LAYERS` such layers (a
    real network has up to hundreds: one run of it must not take a large share of a budget).
    Draws again where a network refuses the size (ViTs take 224 only) or has more than
    :data:`MAX_PARAMS` parameters. ``stream`` 0 is the campaign's design; others are further
    draws of the same kind (adaptive profiling's candidates, ``adaptive.choose``). ``family``
    ``"text"``: a language model of the text zoo (module docstring)."""
    return draw(seed, index, limits, stream, family)[0]


def draw(seed: int, index: int, limits, stream: int = 0, family: str = "vision"):
    """``(spec, meta model, table)`` of :func:`sample`: the network built on the meta device
    and its layer table traced at batch 1 (the spec's batch multiplies its work). Both are
    kept for the next draw of the same network and size (an adaptive campaign weighs six
    draws per network it measures, ``adaptive.choose``)."""
    if family == "text":
        return _draw_text(seed, index, limits, stream)
    rng = np.random.default_rng([seed, index, 0x200] + ([stream] if stream else []))
    zoo = names()
    for _ in range(_TRIES):
        name = f"torchvision:{zoo[rng.integers(len(zoo))]}"
        size = int(rng.choice(SIZES))
        batch = int(np.exp(rng.uniform(0, np.log(MAX_BATCH + 1))))
        spec = {"zoo": name, "input": [1, 3, size, size]}
        try:
            model, params = meta(name)
            if params > MAX_PARAMS:
                continue
            table = _traced(name, (3, size, size))
        except (NeuralPowerError, RuntimeError, ValueError, AssertionError, IndexError):
            continue  # a size the network cannot take
        return _fit(spec, model, table, batch, limits)
    raise NeuralPowerError(f"zoo: no network of seed {seed}, index {index} fits this device")


def _draw_text(seed: int, index: int, limits, stream: int):
    rng = np.random.default_rng([seed, index, 0x7E7] + ([stream] if stream else []))
    zoo = text_names()
    for _ in range(_TRIES):
        name = zoo[rng.integers(len(zoo))]
        seq = int(np.exp(rng.uniform(np.log(SEQ[0]), np.log(SEQ[1] + 1))))
        batch = int(np.exp(rng.uniform(0, np.log(MAX_TEXT_BATCH + 1))))
        spec = {"zoo": name, "input": [1, seq], "dtype": "int64"}
        try:
            model, params = meta(name)
            if params > MAX_PARAMS * 1.5:   # (TEXT's largest default has 125M)
                continue
            table = _traced(name, (seq,), "int64")
        except (NeuralPowerError, RuntimeError, ValueError, AssertionError, IndexError):
            continue
        return _fit(spec, model, table, batch, limits)
    raise NeuralPowerError(f"zoo: no language model of seed {seed}, index {index} fits this "
                           "device (is transformers installed?)")


def _fit(spec: dict, model, table, batch: int, limits):
    """The draw with its batch cut: every layer within ``limits``, the whole network within
    :data:`NET_LAYERS` of the largest layers allowed."""
    from .synthetic import fitted_batch, work

    compute, _ = work(table)
    batch = min(batch, max(1, NET_LAYERS * limits.max_macs // max(int(compute.sum()), 1)))
    spec["input"][0] = fitted_batch(table, batch, limits)
    return spec, model, table


@functools.lru_cache(maxsize=None)
def meta(name: str):
    """The network on the meta device and its parameter count, built once per process
    (read-only: drawing, tracing and timing a network each reuse it)."""
    model = nets.build(name)
    return model, sum(p.numel() for p in model.parameters())


@functools.lru_cache(maxsize=256)
def _traced(name: str, sizes: tuple, dtype: str = "float32"):
    """Its layer table at batch 1 and input ``sizes`` after the batch (read-only: kept for
    reuse; about 0.4 MB each)."""
    return _trace(meta(name)[0], {"input": [1, *sizes], "dtype": dtype})


def batch_one(spec: dict) -> tuple:
    """The arguments of :func:`timed_kinds` for a spec: its network and input at batch 1."""
    return spec["zoo"], tuple(spec["input"][1:]), spec.get("dtype", "float32")


@functools.lru_cache(maxsize=None)
def timed_kinds(name: str, sizes: tuple, dtype: str = "float32") -> tuple[str, ...]:
    """The kinds of the rows a campaign writes of network ``name`` at input ``sizes`` (after
    the batch; its :func:`timed_layers`), for a drawn network (:func:`draw` has traced it)."""
    model, _ = meta(name)
    return tuple(op.kind for _, _, op in timed_layers(model, _traced(name, sizes, dtype)))


def _trace(model, spec: dict):
    from ..inputs import Shape
    from ..trace import trace

    return trace(model, Shape(spec["input"], spec.get("dtype", "float32")))


def trace_spec(spec: dict):
    """The tracer's layer table of a zoo spec's network."""
    return _trace(meta(spec["zoo"])[0], spec)


def network_inputs(rows) -> dict:
    """The input (an ``inputs.Shape``) of each zoo network measured in ``rows``, by network id:
    of a text zoo network, from its id; of a vision one (``z<seed>-<index>-<NET>``), from its
    first timed layer, which reads its input."""
    if not {"network", "position"} <= set(rows.columns):
        return {}
    from ..inputs import Shape

    cols = ["batch", "in_channels", "in_h", "in_w"]
    out = {}
    for net_id in rows.network.dropna().unique():   # a text zoo network's id says its input
        m = _TEXT_ID.fullmatch(str(net_id))
        if m:
            out[net_id] = Shape((int(m.group(3)), int(m.group(4))), "int64")
    for net_id, g in rows[rows.network.map(net_of).notna()
                          & ~rows.network.isin(list(out))].groupby("network", sort=False):
        first = g.sort_values("position").iloc[0]
        if first[cols].notna().all():
            out[net_id] = Shape(first[c] for c in cols)
    return out


def build(spec: dict, device) -> torch.nn.Module:
    """The spec's network with its own random initialisation on ``device``, in eval mode."""
    return nets.build(spec["zoo"], device=device)


def timed_layers(model: torch.nn.Module, table) -> list[tuple[int, str, object]]:
    """``(position, module name, trace row)`` of the ``model``'s leaf modules that run exactly
    one op (besides views) once per run: those whose hooks time that op alone."""
    from .synthetic import one_op_modules

    return one_op_modules(table, among={name for name, m in model.named_modules()
                                        if next(m.children(), None) is None})
