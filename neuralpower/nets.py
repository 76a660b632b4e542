"""Resolve a NET name to an ``nn.Module`` built on the meta device (structure, no weights).

``torchvision:resnet18``, ``timm:efficientnet_b0`` or ``path/to/file.py:function`` where the
function returns an ``nn.Module``. Weights are never downloaded: structure is enough.
"""
from __future__ import annotations

import importlib.util
import inspect
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import inputs, subnormal
from .errors import NeuralPowerError, first_line
from .trace import paused_gc


def resolve(net: str):
    """The constructor (no arguments) a NET name stands for, checked without building anything:
    a name that does not resolve fails here, in milliseconds."""
    source, sep, name = net.rpartition(":")
    if not sep or not name:
        raise NeuralPowerError(f"network {net!r}: expected torchvision:NAME, timm:NAME, "
                               "transformers:TYPE or path/to/file.py:FUNCTION")
    if source == "torchvision":
        import torchvision

        try:
            torchvision.models.get_model_builder(name)
        except ValueError:
            raise NeuralPowerError(f"torchvision has no model {name!r} (see "
                                   "torchvision.models.list_models())") from None
        return lambda: _torchvision(name)
    if source == "timm":
        return lambda: _timm(name)
    if source == "transformers":
        _transformers_type(name)
        return lambda: _transformers(name)
    if source.endswith(".py"):
        fn = _file_function(Path(source), name)
        return lambda: _call(fn, net)
    raise NeuralPowerError(f"network {net!r}: unknown source {source!r} (use torchvision, "
                           "timm, transformers or a .py file)")


def build(net: str, device="meta") -> nn.Module:
    """The module a NET name describes, in eval mode. On the meta device (the default: structure
    only, nothing allocated) or, to run it, built for real on ``device`` with its own random
    initialisation (weights are never downloaded)."""
    make = resolve(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torchvision's notes on init defaults
        built = _OnMeta() if str(device) == "meta" else None
        try:
            with torch.device(device), paused_gc(), built or nullcontext():
                model = make()
        except NotImplementedError:  # the constructor computes with tensors (e.g. RegNet)
            if built is None:
                raise
            built = None   # (its buffers' values are kept as they are registered)
            with _parameters_on_meta():
                model = make()
    if not isinstance(model, nn.Module):
        raise NeuralPowerError(f"network {net!r} is a {type(model).__name__}, not an nn.Module")
    if built is not None:
        built.remember(model)
    return model.eval()


# Weight initialisers' in-place ops. On a meta tensor they change nothing (there are no values)
# but torch derives each one's meta result in Python, most of the time spent building a zoo.
_FILLS = frozenset(getattr(torch.ops.aten, name) for name in (
    "normal_", "uniform_", "zero_", "fill_", "random_", "bernoulli_", "exponential_", "erfinv_",
    "clamp_", "mul_", "add_", "sub_", "div_", "copy_", "trunc_normal_") if hasattr(torch.ops.aten, name))


class _OnMeta(TorchDispatchMode):
    """A constructor run on meta: a meta tensor's in-place fill returned as the tensor itself,
    unchanged; small constants computed for real beside their meta tensors (subnormal.Values),
    so that a buffer the constructor computes (timm's Swin: its shifted windows' mask, which
    makes subnormal numbers) keeps its value for the tracer. (Not the vectors made from
    nothing: norms' statistics, 5,000 of them in torchvision's zoo, would double the time it
    takes to build.)"""

    def __init__(self):
        super().__init__()
        self.values = subnormal.Values()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func.overloadpacket in _FILLS and args and isinstance(args[0], torch.Tensor)
                and args[0].is_meta):
            self.values.compute(func, args, kwargs, args[0])   # (a known constant's fill)
            return args[0]
        out = func(*args, **kwargs)
        if not (func.overloadpacket in subnormal.MAKERS and getattr(out, "ndim", 0) == 1):
            self.values.compute(func, args, kwargs, out)
        return out

    def remember(self, model: nn.Module) -> None:
        for b in model.buffers():
            subnormal.remember(b, self.values.constants.get(b))


@contextmanager
def _parameters_on_meta():
    """Build normally but move each parameter and buffer to meta as it is registered."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self, name, tensor, persistent=True):
        meta = None if tensor is None else tensor.to("meta")
        if meta is not None:
            subnormal.remember(meta, subnormal.small_value(tensor))
        register_buffer(self, name, meta, persistent)

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def _torchvision(name: str) -> nn.Module:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
        # detection and segmentation builders default to downloading their backbone's weights
        none = {k: None for k in ("weights", "weights_backbone")
                if k in inspect.signature(builder).parameters}
        return builder(**none)
    except ValueError:
        raise NeuralPowerError(f"torchvision has no model {name!r} (see "
                               "torchvision.models.list_models())") from None


def _timm(name: str) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise NeuralPowerError("timm is not installed: pip install timm") from None
    try:
        return timm.create_model(name, pretrained=False)
    except NotImplementedError:  # build() retries with parameters on meta
        raise
    except Exception as e:  # an unknown name, or timm's own failure: the library's, one line
        raise NeuralPowerError(f"timm cannot build {name!r}: "
                               f"{first_line(e, plain=(RuntimeError,))}") from None


def _transformers_type(name: str):
    """``(transformers, model type, head)`` of ``TYPE`` or ``TYPE/lm``, checked against
    transformers' own list of model types (no model is built, nothing is downloaded)."""
    try:
        import transformers
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    except ImportError:
        raise NeuralPowerError("transformers is not installed: pip install transformers") from None
    kind, _, head = name.partition("/")
    if kind not in CONFIG_MAPPING_NAMES:
        raise NeuralPowerError(f"transformers has no model type {kind!r} (a config's model_type: "
                               "bert, gpt2, roberta, ...)")
    if head not in ("", "lm"):
        raise NeuralPowerError(f"transformers:{name}: after the model type, only /lm (its "
                               "language-model head) is understood")
    return transformers, kind, head


def _transformers(name: str) -> nn.Module:
    """A Hugging Face transformers model of a model type at that type's default configuration
    (``transformers:bert`` is BERT-base, ``transformers:gpt2`` GPT-2 small), built from the
    configuration alone: nothing is downloaded. The bare model, or with ``/lm`` its language-
    model head (causal where the type has one, else masked), whose projection onto the
    vocabulary is often its largest layer. Its outputs are the model's first tensor."""
    transformers, kind, head = _transformers_type(name)
    transformers.logging.set_verbosity_error()
    autos = ([transformers.AutoModelForCausalLM, transformers.AutoModelForMaskedLM] if head
             else [transformers.AutoModel])
    try:
        config = transformers.AutoConfig.for_model(kind)
        for auto in autos:
            if type(config) in auto._model_mapping:
                return FirstTensor(auto.from_config(config))
    except NotImplementedError:  # build() retries with parameters on meta
        raise
    except Exception as e:  # some types do not build at their default configuration
        raise NeuralPowerError(f"transformers cannot build {kind} at its default "
                               f"configuration: {first_line(e, plain=(RuntimeError,))}") from None
    raise NeuralPowerError(f"transformers:{name}: {kind} has no "
                           f"{'language-model head' if head else 'bare model'}")


class FirstTensor(nn.Module):
    """A model whose forward returns a tuple or a dict of tensors (transformers' ModelOutput),
    returning the first tensor: what the timers and a training step's backward pass take. Its
    submodules keep their names (this wrapper adds none)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.__dict__["wrapped"] = model    # not a child: module paths stay the model's own
        self._modules = model._modules
        self._parameters, self._buffers = model._parameters, model._buffers

    def forward(self, *args, **kwargs):
        out = self.wrapped(*args, **kwargs)
        while not isinstance(out, torch.Tensor):
            out = next(iter(out.values())) if isinstance(out, dict) else out[0]
        return out

    def train(self, mode: bool = True):
        self.wrapped.train(mode)
        return super().train(mode)


def _file_function(path: Path, function: str):
    if not path.is_file():
        raise NeuralPowerError(f"network file {str(path)!r} not found")
    spec = importlib.util.spec_from_file_location(f"_neuralpower_net_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: any failure is theirs to see, on one line
        raise NeuralPowerError(f"cannot import {str(path)!r}: {type(e).__name__}: {e}") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise NeuralPowerError(f"{str(path)!r} has no function {function!r}")
    return fn


def _call(fn, net: str) -> nn.Module:
    try:
        return fn()
    except NotImplementedError:  # build() retries with parameters on meta
        raise
    except Exception as e:
        raise NeuralPowerError(f"network '{net}' failed: {first_line(e)}") from None


def check(net: str, shapes) -> None:
    """Resolve ``net`` and trace it at each input shape (on meta: fast, nothing allocated), so a
    bad name or shape is refused before any long measurement starts."""
    from .trace import trace

    model = build(net)
    trace(model, shapes if len(shapes) > 1 else shapes[0])


parse_input = inputs.parse   # ``--input`` text -> shapes (the commands call it by this name)
