"""Predict a network layer by layer and add the layers up (DESIGN.md, "Network-level aggregation").

>>> import torchvision
>>> from neuralpower import Predictor, predict
>>> p = predict(torchvision.models.resnet18(), (1, 3, 224, 224),
...             Predictor.load("models/raptorlake_cpu.predictor"))
>>> sorted(p.totals)[:3]
['energy_mj', 'layers_free', 'layers_modeled']
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from torch import nn

from . import clocks
from .features import OPS_PROBE_COLUMN, PREDICT_INPUTS
from .inputs import as_shapes
from .predictor import Predictor
from .trace import model_name, trace


@dataclass
class Prediction:
    """Per-layer predictions of one network on one device.

    ``layers`` has one row per op of the network that does work (views and allocations, kind
    ``free``, are counted in ``totals`` but not listed), with ``runtime_ms``, ``power_w`` and
    ``energy_mj`` (NaN for an op no model covers, see ``unmodeled``).
    """

    network: str
    device: str
    input_shape: list   # of inputs.Shape: each input's sizes (a tuple) and dtype
    layers: pd.DataFrame
    totals: dict
    mode: str = "inference"   # or "train": figures are a training step's forward + backward
    idle_power_w: float | None = None   # the predictor's, where it replays two clocks

    def at_speed(self, speed: float) -> dict:
        """``runtime_ms``, ``energy_mj`` and ``power_w`` of the network on the device running
        ``speed`` times slower than the predictor's reference (``Predictor.speed``). The
        runtime scales; with an idle power the longer wait draws idle power and the kernels'
        own energy stays (a slower host makes a GPU wait, not work more), else energy scales
        with the runtime."""
        runtime, energy = self.totals["runtime_ms"], self.totals.get("energy_mj")
        if energy is not None:
            energy = (energy + self.idle_power_w * runtime * (speed - 1.0)
                      if self.idle_power_w is not None else energy * speed)
        runtime = runtime * speed
        return {"runtime_ms": runtime, "energy_mj": energy,
                "power_w": energy / runtime if energy is not None and runtime > 0 else None}

    @property
    def subnormal_ms(self) -> float:
        """Of the runtime, what the device's cost of subnormal numbers adds (subnormal.py)."""
        return float(self.layers["subnormal_ms"].sum()) if "subnormal_ms" in self.layers else 0.0

    @property
    def gpu_busy_share(self) -> float | None:
        """Of the runtime, the share the GPU spends running kernels, for a prediction replayed
        on two clocks (clocks.py); the rest it waits on the host. None otherwise."""
        if "gpu_ms" not in self.layers or not self.totals["runtime_ms"] > 0:
            return None
        return float(self.layers.gpu_ms.sum() / self.totals["runtime_ms"])

    def host_bound_note(self) -> str | None:
        """One line on what the two clocks say (None without them)."""
        busy = self.gpu_busy_share
        if busy is None:
            return None
        line = (f"replayed on two clocks (the host issuing each op, the GPU running it): the GPU "
                f"is busy {100 * busy:.0f} % of the runtime")
        if busy < 0.5:
            return (line + ", waiting on the host the rest: a larger batch (per input) or "
                    "fewer ops to issue (CUDA graphs, torch.compile) would save more than faster "
                    "kernels")
        return line + (", waiting on the host the rest" if busy < 0.9 else
                       ", the host keeping ahead")

    @property
    def modeled(self) -> pd.DataFrame:
        return self.layers[self.layers.modeled]

    @property
    def unmodeled(self) -> pd.DataFrame:
        """Unmodeled ops grouped by kind: how many, and their MACs."""
        rest = self.layers[~self.layers.modeled]
        total_macs = max(int(self.layers.macs.sum()), 1)
        g = rest.groupby("kind").agg(count=("name", "size"), macs=("macs", "sum"))
        g["macs_share_pct"] = 100.0 * g.macs / total_macs
        return g.sort_values(["macs", "count"], ascending=False).reset_index()  # work first

    def top(self, k: int = 5, by: str | None = None) -> pd.DataFrame:
        """The k modeled layers costing most ``by`` energy (runtime when power is unknown)."""
        by = by or ("energy_mj" if self.has_power else "runtime_ms")
        return self.modeled.nlargest(k, by)

    def by_kind(self) -> pd.DataFrame:
        return _group(self.modeled, "kind")

    def by_module(self, depth: int = 1) -> pd.DataFrame:
        """Totals per block: module paths cut to ``depth`` components (``layer1`` at depth 1)."""
        block = self.modeled.module.fillna("").str.split(".").str[:depth].str.join(".")
        return _group(self.modeled.assign(block=block.replace("", "<top>")), "block")

    @property
    def extrapolated(self) -> pd.DataFrame:
        """Modeled layers with a feature outside the ranges their model was fitted on."""
        return self.modeled[self.modeled.extrapolation.notna()]

    @property
    def has_power(self) -> bool:
        return bool(self.modeled.power_w.notna().any())


def _group(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    g = rows.groupby(key).agg(layers=("name", "size"), macs=("macs", "sum"),
                              runtime_ms=("runtime_ms", "sum"),
                              energy_mj=("energy_mj", lambda s: s.sum(min_count=1)))
    g["power_w"] = g.energy_mj / g.runtime_ms
    return g.sort_values("runtime_ms", ascending=False).reset_index()


def predict_table(table: pd.DataFrame, predictor: Predictor,
                  extrapolation: bool = True, in_order: bool = True) -> pd.DataFrame:
    """Add ``runtime_ms``, ``power_w``, ``energy_mj``, ``modeled`` and ``extrapolation`` (the
    features outside the fitted ranges, see ``Predictor.extrapolation``; left None when not
    asked for: scoring a search space needs only the totals) to a layer table. A predictor
    with host and GPU models (clocks.py) adds each op's ``host_ms`` and ``gpu_ms`` and, for a
    table of one network's ops ``in_order``, replays them into the layers' runtimes (a table
    of layers of many networks is replayed by its caller, ``archs.predict_many``)."""
    runtime, power = np.full(len(table), np.nan), np.full(len(table), np.nan)
    host, gpu = np.full(len(table), np.nan), np.full(len(table), np.nan)
    subnormal_ms = np.zeros(len(table))  # of runtime: what subnormal numbers add (subnormal.py)
    modeled = np.zeros(len(table), dtype=bool)
    outside = np.full(len(table), None, dtype=object)
    kinds = table["kind"].to_numpy()
    # what predictions read (and the op's name: an in-place op allocates nothing, fresh_memory.py)
    shapes = table[[c for c in [*PREDICT_INPUTS, "op"] if c in table.columns]]
    for kind in pd.unique(kinds):
        model = predictor.model_for(kind)
        if model is None:
            continue
        at = np.flatnonzero(kinds == kind)
        pred = predictor.predict_arrays(shapes.iloc[at], model)
        runtime[at], power[at], modeled[at] = pred["runtime_ms"], pred["power_w"], True
        subnormal_ms[at] = pred.get("subnormal_ms", 0.0)
        # (on the two clocks, subnormal numbers slow the kernels: the GPU's clock)
        host[at] = pred.get("host_ms", np.nan)
        gpu[at] = pred.get("gpu_ms", np.nan) + subnormal_ms[at]
        for i, e in zip(at, predictor.extrapolation(shapes.iloc[at], model)
                        if extrapolation else ()):
            outside[i] = e  # one by one: numpy would read a list of lists as a 2-D block
    out = {}
    if predictor.clocks:
        host, gpu = clocks.op_clocks(kinds, modeled, host, gpu, predictor.clocks)
        out = {"host_ms": host, "gpu_ms": gpu}
        if in_order:
            runtime = clocks.layer_runtimes(clocks.gpu_ends(host, gpu), modeled)
        runtime = predictor.runtime_of_layers(runtime, kinds, clocks=True)
        if in_order:  # each layer's power in the network's rhythm (clocks.layer_energy)
            energy = clocks.layer_energy(power, runtime, host, gpu, predictor.idle_power_w)
            power = np.where(runtime > 0, energy / np.where(runtime > 0, runtime, 1.0), power)
    else:
        runtime = predictor.runtime_of_layers(runtime, kinds)
    return table.assign(runtime_ms=runtime, power_w=power, energy_mj=power * runtime,
                        modeled=modeled, extrapolation=outside, subnormal_ms=subnormal_ms, **out)


def totals(table: pd.DataFrame) -> dict:
    """Network totals: runtime = sum T, energy = sum P*T, power = energy / runtime.

    Energy and power are given only when every modeled layer has a power prediction: a total
    that silently left layers out would be wrong by an unknown amount.
    """
    free = table.kind == "free"
    modeled = table[table.modeled]
    unmodeled = table[~table.modeled & ~free]
    runtime = float(modeled.runtime_ms.sum())
    energy = float(modeled.energy_mj.sum()) if modeled.power_w.notna().all() and len(modeled) else None
    return {
        "runtime_ms": runtime,
        "energy_mj": energy,
        "power_w": energy / runtime if energy is not None and runtime > 0 else None,
        "macs": int(table.macs.sum()),
        "layers_modeled": int(len(modeled)),
        "layers_unmodeled": int(len(unmodeled)),
        "layers_free": int(free.sum()),
        "unmodeled_macs": int(unmodeled.macs.sum()),
    }


def predict(model: nn.Module | pd.DataFrame, input_shape, predictor: Predictor | str,
            network: str | None = None, ops_probe_ms: float | None = None) -> Prediction:
    """Trace ``model`` (or take an already traced layer table) and predict every layer.
    ``ops_probe_ms``: the device's small-ops probe now (a measurement's
    ``reference_ops_ms``), to predict the phase it is in rather than the predictor's
    reference one (features.OPS_PROBE_COLUMN)."""
    if not isinstance(predictor, Predictor):
        predictor = Predictor.load(predictor)
    table = model if isinstance(model, pd.DataFrame) else trace(model, input_shape)
    if ops_probe_ms:
        table = table.assign(**{OPS_PROBE_COLUMN: float(ops_probe_ms)})
    table = predict_table(table, predictor)
    name = network or (model_name(model) if isinstance(model, nn.Module) else "network")
    return Prediction(network=name, device=predictor.device, input_shape=as_shapes(input_shape),
                      layers=table[table.kind != "free"].reset_index(drop=True),
                      totals=totals(table), mode=predictor.mode,
                      idle_power_w=predictor.idle_power_w)
