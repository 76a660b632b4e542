"""A network's inputs as the command line writes them: sizes joined by ``x``, several inputs
joined by commas, each with an optional dtype after a colon.

``1x3x224x224`` is an image batch (float32, the default); ``1x128:int64`` is a sequence of 128
token ids, what a language model's embedding takes (a float input there fails: an embedding
indexes its table); ``1x128:int64,1x128:int64`` two such inputs (ids and a mask, say).

A :class:`Shape` is a tuple of sizes that also knows its dtype, so everything that takes a
shape takes it, and the tracer, ``measure`` and the worker processes that trace NET names in
parallel (it pickles) make the input of the right dtype.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from .errors import NeuralPowerError

DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16,
          "half": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "double": torch.float64, "int64": torch.int64, "long": torch.int64,
          "int32": torch.int32, "int": torch.int32, "bool": torch.bool}
_NAMES = {v: k for k, v in reversed(DTYPES.items())}   # each dtype's first name above
_SPEC = re.compile(r"^(\d+(?:x\d+)*)(?::([a-z0-9]+))?$")
# Elements of one input tensor beyond which a shape is a typo, not a workload (8 GiB of fp32).
MAX_INPUT_ELEMENTS = 2**31


class Shape(tuple):
    """The sizes of one input tensor (a tuple of ints) and its dtype (``.dtype``, a torch
    dtype; float32 unless given)."""

    def __new__(cls, sizes, dtype: torch.dtype | str = torch.float32):
        self = super().__new__(cls, (int(v) for v in sizes))
        self.dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
        return self

    def __reduce__(self):   # (a tuple subclass with an attribute: pickled with it)
        return (Shape, (tuple(self), _NAMES[self.dtype]))

    def __repr__(self) -> str:
        return text([self])

    def with_batch(self, batch: int) -> "Shape":
        return Shape((batch, *self[1:]), self.dtype)


def parse(spec: str) -> list[Shape]:
    """``"1x3x224x224"`` -> ``[Shape((1, 3, 224, 224))]``; ``"1x128:int64"`` -> a Shape of
    dtype int64; several inputs separated by commas. Bad text: a one-line NeuralPowerError."""
    shapes = []
    for part in spec.split(","):
        m = _SPEC.match(part.strip().lower())
        if not m:
            raise NeuralPowerError(f"input shape {spec!r}: expected sizes joined by x, with an "
                                   "optional dtype, e.g. 1x3x224x224 or 1x128:int64")
        if m.group(2) and m.group(2) not in DTYPES:
            raise NeuralPowerError(f"input shape {spec!r}: unknown dtype {m.group(2)!r} (one of "
                                   f"{', '.join(sorted(set(_NAMES.values())))})")
        shape = Shape(m.group(1).split("x"), m.group(2) or torch.float32)
        if 0 in shape:
            raise NeuralPowerError(f"input shape {spec!r}: sizes must be positive")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            raise NeuralPowerError(f"input shape {spec!r}: {math.prod(shape):.3g} elements is too "
                                   f"large (at most {MAX_INPUT_ELEMENTS:.3g} per input)")
        shapes.append(shape)
    return shapes


def as_shapes(input_shape) -> list[Shape]:
    """The inputs of ``input_shape``: one shape (a tuple of ints, or a Shape), several (a list
    of them), or the command line's text."""
    if isinstance(input_shape, str):
        return parse(input_shape)
    if len(input_shape) and isinstance(input_shape[0], int):
        input_shape = [input_shape]
    return [s if isinstance(s, Shape) else Shape(s) for s in input_shape]


def text(shapes) -> str:
    """The command line's text of ``shapes`` (the dtype written where it is not float32)."""
    return ",".join("x".join(map(str, s)) + ("" if s.dtype == torch.float32
                                             else f":{_NAMES[s.dtype]}") for s in as_shapes(shapes))


def hint(error: str, shapes) -> str:
    """What to do where a model refused its input's dtype: an embedding given floats."""
    if "'indices'" in error and any(s.dtype.is_floating_point for s in as_shapes(shapes)):
        return (" (an embedding takes integer ids: give the input's dtype, e.g. "
                f"{text([Shape(as_shapes(shapes)[0], torch.int64)])})")
    return ""


def example(shape: Shape, model: nn.Module, device="cpu") -> torch.Tensor:
    """A random input of ``shape`` for a real run of ``model``: normal values for a float dtype;
    for an integer one, token ids over the model's vocabulary (a transformers model names its
    input embedding), else ids valid for every embedding table of the model (below the
    smallest one's size: which table an input indexes is the model's business), else 0 and 1."""
    if shape.dtype.is_floating_point:
        return torch.randn(*shape, dtype=shape.dtype, device=device)
    if shape.dtype == torch.bool:
        return torch.ones(*shape, dtype=torch.bool, device=device)
    named = getattr(getattr(model, "wrapped", model), "get_input_embeddings", None)
    table = named() if callable(named) else None
    tables = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    high = table.num_embeddings if isinstance(table, nn.Embedding) else min(tables, default=2)
    return torch.randint(0, high, tuple(shape), dtype=shape.dtype, device=device)
