"""Many networks at once: architectures described by their layers (a search space as JSON lines),
predicted in one vectorised pass.

A JSON-lines file has one architecture per line::

    {"name": "a0", "top1_error": 0.28, "layers": [
        {"kind": "conv2d", "batch": 1, "in_channels": 3, "in_h": 224, "in_w": 224,
         "out_channels": 32, "out_h": 112, "out_w": 112, "kernel_h": 3, "kernel_w": 3,
         "stride_h": 2, "stride_w": 2, "pad_h": 1, "pad_w": 1, "count": 1}, ...]}

Layers use the measurement CSV schema's columns (DESIGN.md), as ``trace`` writes them; ``count``
(default 1) repeats a layer. ``top1_error`` is optional (a fraction, for ``rank``). A kind no model
covers is counted as unmodeled, as for a traced network. Nothing is built or traced: a search
space is scored without constructing modules.

>>> from neuralpower import Predictor
>>> from neuralpower.archs import predict_many, read_jsonl
>>> archs = read_jsonl("space.jsonl")                                       # doctest: +SKIP
>>> predict_many(archs, Predictor.load("models/raptorlake_cpu.predictor"))  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import clocks
from .data import invalid_size, lowest_size
from .errors import NeuralPowerError
from .features import INPUT_COLUMNS, MAC_KINDS, PREDICT_INPUTS, VALUE_COLUMNS, macs
from .predict import predict_table
from .predictor import Predictor

@dataclass
class Architectures:
    """A search space, stored once per distinct layer (architectures share most of theirs).

    ``layers``: the distinct layer rows (schema columns, ``kind``, ``count``); ``uses``: one row
    per layer of each architecture, ``network`` and ``layer`` indexing ``networks`` and
    ``layers``; ``networks``: one row per architecture (``network`` name, ``top1_error`` or
    NaN), in file order."""

    layers: pd.DataFrame
    uses: pd.DataFrame
    networks: pd.DataFrame

    @classmethod
    def from_table(cls, table: pd.DataFrame) -> "Architectures":
        """From a layer table with a ``network`` column (each row its own layer)."""
        codes, names = pd.factorize(table["network"])
        return cls(table.drop(columns="network").reset_index(drop=True),
                   pd.DataFrame({"network": codes, "layer": np.arange(len(table))}),
                   pd.DataFrame({"network": names, "top1_error": np.nan}))

    @classmethod
    def concat(cls, parts: list["Architectures"]) -> "Architectures":
        layers, uses, networks, n_layers, n_networks = [], [], [], 0, 0
        for a in parts:
            layers.append(a.layers)
            uses.append(a.uses + [n_networks, n_layers])
            networks.append(a.networks)
            n_layers, n_networks = n_layers + len(a.layers), n_networks + len(a.networks)
        return cls(pd.concat(layers, ignore_index=True), pd.concat(uses, ignore_index=True),
                   pd.concat(networks, ignore_index=True))


def read_jsonl(path) -> Architectures:
    """Architectures of a JSON-lines file, checked: a bad line is refused with its number."""
    path = Path(path)
    if not path.is_file():
        raise NeuralPowerError(f"architecture file {str(path)!r} not found")
    distinct, first_seen, use_net, use_layer, networks, seen = {}, [], [], [], [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise NeuralPowerError(f"{path}: not a UTF-8 text file of JSON lines") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            arch = json.loads(line)
        except json.JSONDecodeError as e:
            raise NeuralPowerError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
            raise NeuralPowerError(f"{where}: expected an object with a list of \"layers\"")
        name = str(arch.get("name", f"line{number}"))
        if name in seen:
            raise NeuralPowerError(f"{where}: name {name!r} is used by line {seen[name]} too")
        seen[name] = number
        error = arch.get("top1_error")
        if error is not None and not (isinstance(error, (int, float)) and 0 < error <= 1):
            raise NeuralPowerError(f"{where}: top1_error must be a fraction in (0, 1], got "
                                   f"{error!r}")
        if not arch["layers"]:
            raise NeuralPowerError(f"{where}: {name} has no layers")
        net = len(networks)
        for i, layer in enumerate(arch["layers"]):
            try:
                key = tuple(layer.items())  # a layer repeated across architectures: stored once
                layer_id = distinct.setdefault(key, len(distinct))
            except (AttributeError, TypeError):
                raise NeuralPowerError(f"{where}, layer {i}: not an object of numbers and a "
                                       "\"kind\"") from None
            if layer_id == len(first_seen):
                first_seen.append(f"{where}, layer {i}")
            use_net.append(net)
            use_layer.append(layer_id)
        networks.append({"network": name, "top1_error": np.nan if error is None else error})
    if not networks:
        raise NeuralPowerError(f"{path}: no architectures in it")
    table = pd.DataFrame.from_records([dict(k) for k in distinct])
    _check_layers(table, first_seen)
    return Architectures(table, pd.DataFrame({"network": use_net, "layer": use_layer}),
                         pd.DataFrame(networks))


def _check_layers(table: pd.DataFrame, where: list[str]) -> None:
    """Every layer has a kind; a layer of a modeled kind has its columns, as whole numbers in
    range. ``where[i]`` says where layer ``i`` was first written."""
    kind = table["kind"] if "kind" in table else pd.Series(None, index=table.index)
    no_kind = ~kind.map(lambda k: isinstance(k, str)).to_numpy()
    if no_kind.any():
        raise NeuralPowerError(f"{where[int(np.flatnonzero(no_kind)[0])]}: not an object with "
                               "a \"kind\"")
    if "count" not in table:
        table["count"] = 1
    for c in ("count", *[c for c in PREDICT_INPUTS if c in table]):
        values = pd.to_numeric(table[c], errors="coerce")
        text = values.isna() & table[c].notna()
        if text.any():
            row = int(np.flatnonzero(text.to_numpy())[0])
            raise NeuralPowerError(f"{where[row]}: {c} = {table[c].iloc[row]!r} is not a number")
        table[c] = values
    table["count"] = table["count"].fillna(1)
    for c in [c for c in VALUE_COLUMNS if c in table]:  # shares
        bad = ~table[c].between(0, 1) & table[c].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise NeuralPowerError(f"{where[row]}: {c} {table[c].iloc[row]:g} (a share from 0 "
                                   "to 1 is needed)")
    for kind, cols in INPUT_COLUMNS.items():
        rows = table["kind"] == kind
        if not rows.any():
            continue
        for c in cols + ["count"]:
            v = table.loc[rows, c] if c in table else pd.Series(np.nan, index=table.index[rows])
            bad = v.isna() | invalid_size(v, c)
            if bad.any():
                row = int(bad[bad].index[0])
                value = "missing" if pd.isna(v[bad].iloc[0]) else f"{v[bad].iloc[0]:g}"
                raise NeuralPowerError(f"{where[row]}: {kind} {c} {value} (a whole number "
                                       f"from {lowest_size(c)} is needed)")


def _build_and_trace(job) -> pd.DataFrame:
    from .nets import build
    from .trace import trace

    net, input_shape = job
    return trace(build(net), input_shape).assign(network=net)


def trace_many(nets: list[str], input_shape=(1, 3, 224, 224), workers: int | None = None
               ) -> pd.DataFrame:
    """Layer tables of NET names (``torchvision:resnet50``...), one after another with a
    ``network`` column. Building and tracing are Python-bound, so with more than a few networks
    they run in ``workers`` forked processes (default: one per CPU this process may use)."""
    import multiprocessing
    import os

    import torch

    jobs = [(net, input_shape) for net in nets]
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                          else os.cpu_count() or 1)
    if workers < 2 or len(jobs) < 4 or "fork" not in multiprocessing.get_all_start_methods():
        return pd.concat(map(_build_and_trace, jobs), ignore_index=True)
    # fork: the workers start in milliseconds with torch already imported (spawn would import
    # it again, seconds each); they build modules and compute on meta tensors, and on a few
    # small real ones (subnormal.py), in one thread: an OpenMP pool the parent started does not
    # survive a fork, and a child entering it waited for ever (benchmarks/search_space.py)
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs)),
                                                  initializer=torch.set_num_threads,
                                                  initargs=(1,)) as pool:
        return pd.concat(pool.imap(_build_and_trace, jobs, chunksize=1), ignore_index=True)


def predict_many(archs, predictor, input_shape=(1, 3, 224, 224)) -> pd.DataFrame:
    """Totals per network of ``archs``, in one pass: each distinct layer is predicted once, by
    one model call per kind for all networks. ``archs``: ``Architectures`` (``read_jsonl``), a
    layer table with a ``network`` column (and optional ``count``), ``{name: nn.Module}``
    (traced at ``input_shape``) or a list of NET names (built and traced by ``trace_many``).
    Columns: ``network``, ``runtime_ms``, ``energy_mj`` (NaN where
    a modeled layer has no power prediction), ``power_w``, ``macs``, ``layers_modeled`` and
    ``layers_unmodeled`` (counted with repeats), in network order. Same aggregation as
    ``predict``."""
    if not isinstance(predictor, Predictor):
        predictor = Predictor.load(predictor)
    if isinstance(archs, (list, tuple)):
        archs = trace_many(list(archs), input_shape)
    if isinstance(archs, dict):
        from .trace import trace

        archs = pd.concat([trace(m, input_shape).assign(network=name)
                           for name, m in archs.items()], ignore_index=True)
    if isinstance(archs, pd.DataFrame):
        archs = Architectures.from_table(archs)
    table = archs.layers.copy()
    count = (pd.to_numeric(table["count"], errors="coerce").fillna(1).to_numpy()
             if "count" in table else np.ones(len(table)))
    if "macs" not in table:
        table["macs"] = 0.0
    for kind in set(table.kind) & set(MAC_KINDS):  # MACs as the tracer states them
        at = table.kind == kind
        table.loc[at, "macs"] = macs(table[at], kind)
    table = predict_table(table, predictor, extrapolation=False, in_order=False)
    modeled = table.modeled.to_numpy()
    energy = table.energy_mj.to_numpy()
    per_layer = {  # each distinct layer's share of its network's totals, repeats included
        "runtime_ms": np.where(modeled, table.runtime_ms, 0.0) * count,
        "energy_mj": np.where(modeled, np.nan_to_num(energy), 0.0) * count,
        "no_power": (modeled & np.isnan(energy)).astype(float),
        "macs": pd.to_numeric(table.macs, errors="coerce").fillna(0).to_numpy() * count,
        "layers_modeled": modeled * count,
        "layers_unmodeled": (~modeled & (table.kind != "free").to_numpy()) * count,
    }
    order = np.argsort(archs.uses["network"].to_numpy(), kind="stable")
    net, layer = (archs.uses[c].to_numpy()[order] for c in ("network", "layer"))
    n = len(archs.networks)
    per_use = {k: v[layer] for k, v in per_layer.items()}
    if predictor.clocks:  # each network replayed in its order (a repeated layer as one op)
        host, gpu = (table[c].to_numpy()[layer] * count[layer] for c in ("host_ms", "gpu_ms"))
        runtime = predictor.runtime_of_layers(
            clocks.layer_runtimes(clocks.gpu_ends(host, gpu, net), modeled[layer], net),
            table.kind.to_numpy()[layer], clocks=True)
        per_use["runtime_ms"] = np.nan_to_num(runtime)
        per_use["energy_mj"] = np.where(modeled[layer], np.nan_to_num(clocks.layer_energy(
            table.power_w.to_numpy()[layer], runtime, host, gpu, predictor.idle_power_w)), 0.0)
    g = pd.DataFrame({k: np.bincount(net, weights=v, minlength=n) for k, v in per_use.items()})
    g.loc[g.no_power > 0, "energy_mj"] = np.nan  # a total that left layers out would mislead
    g["power_w"] = g.energy_mj / g.runtime_ms.where(g.runtime_ms > 0)
    g[["layers_modeled", "layers_unmodeled"]] = g[["layers_modeled", "layers_unmodeled"]].astype(int)
    g.insert(0, "network", archs.networks["network"].to_numpy())
    return g.drop(columns="no_power")


def to_jsonl(rows, path) -> None:
    """Write architectures (``{"name", "layers", ...}`` dicts) as JSON lines."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n")


def layers_of(table: pd.DataFrame) -> list[dict]:
    """A traced layer table as JSON-lines layers: the schema columns each row has, and kind
    (views and allocations, kind ``free``, cost nothing and are left out)."""
    keep = ["kind", *PREDICT_INPUTS, "macs"]
    out = []
    for r in table.loc[table.kind != "free", [c for c in keep if c in table]].to_dict("records"):
        out.append({k: (int(v) if isinstance(v, float) and v.is_integer() else v)
                    for k, v in r.items() if not (isinstance(v, float) and math.isnan(v))})
    return out
