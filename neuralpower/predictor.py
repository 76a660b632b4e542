"""A predictor: one fitted model per (layer kind, target), its model card, and its file format.

The file is a zip holding ``card.json`` (format version, provenance, held-out errors, feature
ranges) and one ``.skops`` file per model. skops rebuilds scikit-learn objects from a
declared list of types and never unpickles, so loading a shared predictor cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from . import __version__, fresh_memory, subnormal
from .clocks import GLUE_KEYS
from .devices import one_device
from .errors import NeuralPowerError, first_line
from .features import (CLOCK_TARGETS, CONTEXT_FEATURES, CONTEXT_INPUTS, DECOMPOSED,
                       MODELED_KINDS, MODES, OPS_PROBE_COLUMN, STAND_INS, TARGETS, WORK_BOUND,
                       features, ops_probe)

FORMAT = "neuralpower-predictor"
FORMAT_VERSION = 2      # 2: tree models stored as regression.Forest (fewer arrays, fast to load)
READS_VERSIONS = (1, 2)  # 1: as sklearn's boosters, turned into Forests on loading
# A layer this many times off the data's span (regression: the directions the training rows
# never varied in) is named as outside the fit, as a feature beyond its range is.
OFF_SPAN = 1.1


@dataclass
class Predictor:
    """Models keyed by ``(kind, target)`` plus the card describing how they were made."""

    models: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)

    def __post_init__(self):
        from .regression import LogLinkRegressor

        # the time of a work-bound kind grows at least as its MACs beyond the data (also in
        # predictors saved before this was a model attribute)
        for (kind, target), model in self.models.items():
            if (kind in WORK_BOUND and target in ("runtime_ms", "gpu_ms")
                    and isinstance(model, LogLinkRegressor)):
                model.work_column = "log:macs"

    @property
    def device(self) -> str:
        return self.card.get("device", "unknown device")

    @property
    def mode(self) -> str:
        """``inference`` (a forward pass per layer) or ``train`` (forward and backward)."""
        return self.card.get("mode", "inference")

    def speed(self, reference_ms) -> float:
        """How much slower than this predictor's reference speed the device is when its speed
        probe takes ``reference_ms`` (1.0 when either side has no probe): the probes' ratio to
        the power the data showed layers follow it (``speed_exponent``; 1 in predictors fitted
        before it, or where the data could not tell)."""
        nominal = self.card.get("reference_ms")
        if not (nominal and reference_ms):
            return 1.0
        return (reference_ms / nominal) ** self.card.get("speed_exponent", 1.0)

    def in_phase(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``rows`` with the small-ops probe this predictor's reference where they have none
        (features.OPS_PROBE_COLUMN): predictions for the reference phase unless a row says
        which phase the device is in."""
        reference = self.card.get("reference_ops_ms")
        if not reference:
            return rows
        probe = ops_probe(rows)
        return rows if probe.notna().all() else rows.assign(
            **{OPS_PROBE_COLUMN: probe.fillna(reference)})

    def has(self, kind: str, target: str) -> bool:
        return (kind, target) in self.models

    def model_for(self, kind: str) -> str | None:
        """The kind whose models predict ``kind``: its own; else the kind it was split from
        (``STAND_INS``); else itself as the sum of its parts (``DECOMPOSED``), where every part
        has a model; else None (unmodeled)."""
        if self.has(kind, "runtime_ms"):
            return kind
        if self.has(STAND_INS.get(kind), "runtime_ms"):
            return STAND_INS[kind]
        if kind in DECOMPOSED and all(self.model_for(k) == k for k, _ in
                                      DECOMPOSED[kind](pd.DataFrame())):
            return kind
        return None

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, data: pd.DataFrame, log=print, seed: int = 0,
            calibrate: bool = False, without=()) -> "Predictor":
        """Fit every (kind, target) that has data; say which are skipped and why. With
        ``calibrate``, also calibrate on the whole times of the real networks in the data
        (``profile --zoo``; ``calibrate.observed_in_data``), as ``neuralpower calibrate`` does
        on networks it measures. ``without``: context features (features.CONTEXT_FEATURES) to
        fit as if the data had not measured them, so the models ignore them."""
        from .data import (DISTURBED, SPEED_EXPONENT_RUNS, SPEED_EXPONENT_SE,
                           at_reference_speed, base_rows, fitted_speed_exponent, trusted)
        from .regression import fit_regressor

        unknown = sorted(set(without) - set(CONTEXT_INPUTS))
        if unknown:
            raise NeuralPowerError(f"--without {', '.join(unknown)}: not a context feature "
                                   f"(choose from {', '.join(CONTEXT_INPUTS)})")
        data = data.drop(columns=[CONTEXT_INPUTS[f] for f in without], errors="ignore")
        base = base_rows(data)   # (not the rows of kinds added later: data.with_new_kinds)
        exponent, found = fitted_speed_exponent(base)
        if found is not None:
            log(f"speed: layers follow the probe to the power {found['exponent']:.2f} (standard "
                f"error {found['se']:.2f}, {found['shapes']} shapes in {found['runs']} runs): "
                + (f"{exponent:.2f} used" if trusted(found) else
                   f"1 used (trusted at a standard error of {SPEED_EXPONENT_SE:g} or less over "
                   f"{SPEED_EXPONENT_RUNS} runs or more)"))
        nominal = at_reference_speed(base)[1]
        raw, (data, reference_ms) = data, at_reference_speed(data, nominal, exponent=exponent)
        if len(data) < len(raw):
            log(f"left out {len(raw) - len(data)} rows measured while the device ran more than "
                f"{DISTURBED:g}x off its median speed (a disturbed machine)")
        # the small-ops probe (features.OPS_PROBE_COLUMN): rows measured without one are taken
        # as measured in the data's reference phase, the median of the probes it has
        probe, base_probe = ops_probe(data), ops_probe(base_rows(data))
        reference_ops_ms = float(base_probe.median()) if base_probe.notna().any() else None
        if reference_ops_ms is not None:
            data = data.assign(**{OPS_PROBE_COLUMN: probe.fillna(reference_ops_ms)})
        devices = sorted(set(data.get("device", pd.Series(dtype=str)).dropna().astype(str)))
        device = one_device(devices)
        if device is None:
            raise NeuralPowerError(f"data from several devices ({'; '.join(devices)}): fit one "
                                   "predictor per device")
        mode = _mode(data)
        unknown = sorted(set(data.kind) - set(MODELED_KINDS))
        if unknown:
            counts = data.kind.value_counts()
            log("skipping kinds with no model: "
                + ", ".join(f"{k} ({counts[k]} rows)" for k in unknown))
        models, kinds_card, unmeasured = {}, {}, {}

        def fit_kinds(kind_rows) -> None:
            """Fit every target of each ``(kind, rows)``, the (kind, target) pairs side by side
            on the machine's cores (each fit is one thread: regression.fit_regressor)."""
            jobs = []
            for kind, rows in kind_rows:
                X = features(rows, kind)
                # a context feature the rows do not vary (no context measured) is no feature
                kinds_card[kind] = {"rows": len(rows), "feature_ranges": {
                    c: [float(X[c].min()), float(X[c].max())] for c in X.columns
                    if c not in CONTEXT_FEATURES or X[c].nunique() > 1}, "targets": {}}
                for target in TARGETS + [t for t in CLOCK_TARGETS if t in rows]:
                    has = (pd.to_numeric(rows[target], errors="coerce") > 0).to_numpy()
                    if has.any():
                        jobs.append((kind, target, X[has],
                                     rows[target].to_numpy(dtype=float)[has]))
                    elif target in TARGETS:
                        unmeasured.setdefault(target, []).append(kind)
            fits = Parallel(n_jobs=min(len(jobs), os.cpu_count() or 1) or 1,
                            return_as="generator")(
                delayed(fit_regressor)(X, y, seed=seed) for _, _, X, y in jobs)
            for (kind, target, _, _), (model, info) in zip(jobs, fits):  # in order, as fitted
                models[(kind, target)] = model
                kinds_card[kind]["targets"][target] = info
                log(f"{kind:>11} {target:<10} n={info['n_rows']:<5} cv RMSPE "
                    f"{info['rmspe_pct']:6.1f} %  ({info['fit_seconds']:.1f} s)")

        # rows slowed by subnormal numbers or by tensors mapped fresh on every run: their
        # extra time is fitted apart (subnormal.py, fresh_memory.py), for kinds with enough
        slowed = subnormal.meets(data)
        fresh = fresh_memory.meets(data) & ~slowed
        counts = data.kind[fresh].value_counts()
        fresh &= data.kind.isin(counts.index[counts >= fresh_memory.MIN_ROWS])
        fit_kinds([(kind, rows) for kind in MODELED_KINDS
                   if not (rows := data[(data.kind == kind) & ~slowed & ~fresh]).empty])
        for target, kinds in unmeasured.items():
            log(f"no {target} measured for {', '.join(kinds)}: no {target} model for "
                f"{'them' if len(kinds) > 1 else 'it'}")
        if not models:
            raise NeuralPowerError("no rows of a modeled kind with a measured target: nothing "
                                   f"to fit (modeled kinds: {', '.join(MODELED_KINDS)})")
        card = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "device": device,
            "mode": mode,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "data": _provenance(raw),
            "kinds": kinds_card,
            # predictions hold at the device speed where the probe takes this long
            "reference_ms": reference_ms,
        }
        if found is not None:   # ... and another speed scales them by the ratio to this power
            card["speed_exponent"] = exponent
            card["speed_exponent_fit"] = found
        if reference_ops_ms is not None:  # ... and in the phase where the small-ops one does
            card["reference_ops_ms"] = reference_ops_ms
        power = pd.to_numeric(data.get("power_w", pd.Series(dtype=float)), errors="coerce")
        power = power[power > 0]
        if len(power):  # predicted power stays within what the device was measured drawing
            card["power_range_w"] = [float(power.min()), float(power.max())]
        if without:
            card["without"] = sorted(set(without))
        predictor = cls(models, card)
        # first, as it may refit a kind: the subnormal costs are fitted on the final models
        costs = fresh_memory.fit_costs(data[fresh], predictor._model_runtime)
        back = sorted(set(data.kind[fresh]) - set(costs))   # no cost helps: rows back in
        for kind in back:
            log(f"{kind:>11} fresh memory: no cost per MiB helps its rows; fitted with them")
        fit_kinds([(kind, data[(data.kind == kind) & ~slowed]) for kind in back])
        if costs:
            above = float(pd.to_numeric(data[fresh_memory.COLUMN], errors="coerce").median())
            card["fresh_memory"] = {"threshold_bytes": above, "kinds": costs}
            for kind, c in costs.items():
                log(f"{kind:>11} fresh memory: +{c['ms_per_mib']:.3f} ms per MiB over "
                    f"{above / fresh_memory.MIB:g} MiB ({c['rows']} rows: median error "
                    f"{c['median_abs_error_pct_without']:.0f} % -> {c['median_abs_error_pct']:.0f} %)")
        costs = subnormal.fit_costs(data[slowed], predictor._model_runtime, log)
        if costs:
            card["subnormal"] = costs
            for kind, c in costs.items():
                log(f"{kind:>11} subnormal: +{c['ms'] * 1e6:.3f} ns per {c['per'][:-1]} that meets "
                    f"one ({c['rows']} rows: median error {c['median_abs_error_pct_without']:.0f} "
                    f"% -> {c['median_abs_error_pct']:.0f} %)")
        glue = predictor._fit_clocks(data, log)
        if glue:
            card["clocks"] = glue
            idle = _idle_power(data)
            if idle is not None:  # network power in the network's rhythm (clocks.layer_energy)
                card["idle_power_w"] = idle
                log(f"idle power {idle:.1f} W (the campaigns' sidecars)")
        network = predictor._fit_network(data)
        if network:
            card["network"] = network
            log(f"network: runtime = {network['scale']:.3f} x sum of layers + "
                f"{network['per_op_ms'] * 1e3:.1f} us per op; whole-network RMSPE "
                f"{network['rmspe_layers_pct']:.1f} % -> {network['rmspe_pct']:.1f} % "
                f"({network['networks']} networks)")
        if calibrate:
            from .calibrate import fit_calibration, observed_in_data

            observed = observed_in_data(data, predictor)
            if len({o.network for o in observed}) < 3:
                raise NeuralPowerError(
                    f"--calibrate: the data has the whole times of {len(observed)} real "
                    "networks (profile --zoo writes them); calibrating needs at least 3 "
                    "different ones")
            # "data": fitted on the profiling data, part of the predictor as its models are
            card["calibration"] = {**fit_calibration(observed), "source": "data"}
            c = card["calibration"]
            log(f"calibrated on {c['measurements']} real networks of the data "
                f"({len(c['networks'])} architectures): median |error| "
                f"{c['uncalibrated_median_abs_error_pct']:.1f} % -> "
                f"{c['cross_validated_median_abs_error_pct']:.1f} % (leave one architecture out)")
        return predictor

    @property
    def idle_power_w(self) -> float | None:
        """The device's idle power, where this predictor replays networks on two clocks and its
        data recorded it: network power is then figured in the network's rhythm
        (clocks.layer_energy) and taken to another host speed by ``at_speed``."""
        idle = self.card.get("idle_power_w")
        return float(idle) if self.clocks and idle is not None else None  # (checked on load)

    @property
    def clocks(self) -> dict | None:
        """How the host's time between layers adds up (clocks.py), where this predictor models
        the host and the GPU apart; None otherwise."""
        return self.card.get("clocks")

    def _fit_clocks(self, data: pd.DataFrame, log) -> dict | None:
        """With host and GPU models, the host time between layers (clocks.fit_host_glue) fitted
        on the real networks the data measured whole (profile --zoo); None without such models."""
        from . import clocks, nets
        from .predict import predict_table
        from .profiling import zoo
        from .trace import trace

        if not any(t == "host_ms" for _, t in self.models):
            return None
        pairs = []
        if "network_host_ms" in data.columns:
            whole = data[pd.to_numeric(data.network_host_ms, errors="coerce") > 0]
            host = whole.groupby("network").network_host_ms.median()
            # the layers' host times as the models give them (no glue yet)
            plain = Predictor(self.models, {**self.card, "clocks": clocks.NO_GLUE})
            for net_id, shape in zoo.network_inputs(whole).items():
                table = trace(nets.build(zoo.net_of(net_id)), shape)
                pairs.append((predict_table(table, plain, extrapolation=False, in_order=False),
                              float(host[net_id])))
        if len(pairs) < 3:
            log("clocks: fewer than 3 real networks measured whole with their host time "
                "(profile --zoo on the GPU writes them): the host's time between layers is not "
                "modeled")
            return {**clocks.NO_GLUE, "networks": len(pairs)}
        glue = clocks.fit_host_glue(pairs)
        log(f"clocks: network host time = {glue['host_scale']:.3f} x layers' + "
            f"{glue['modeled_op_ms'] * 1e3:.1f} us per modeled op, "
            f"{glue['unmodeled_op_ms'] * 1e3:.1f} us per other op, "
            f"{glue['free_op_ms'] * 1e3:.1f} us per view ({glue['networks']} networks: median "
            f"|error| {glue['network_host_median_abs_error_pct']:.1f} %)")
        return glue

    def _fit_network(self, data: pd.DataFrame) -> dict | None:
        """A network takes more than the sum of its layers' models: each op pays a dispatch
        overhead outside its own kernel, and the layer models, fitted for relative error, sit
        below the mean of noisy timings. Fit ``whole = scale * sum(layers) + per_op * ops`` on
        the networks the data timed whole (a profiling campaign writes every op of each network
        and the whole network's time), for relative error. None when the data has no networks."""
        from scipy.optimize import nnls

        from .data import network_runs
        from .profiling import zoo

        need = {"network", "network_runtime_ms"}
        if not need <= set(data.columns):
            return None
        # every op of a synthetic network has its row; a zoo network's rows leave out ops
        rows = data[data.network_runtime_ms.notna() & data.kind.isin(
            [k for k, _ in self.models]) & data.network.map(zoo.net_of).isna()]
        rows = rows.assign(run=network_runs(rows))
        # networks with tensors mapped fresh on every run pay for them where no layer is
        # timed too (unmapping them between layers), and some layers did not fault at all:
        # left out, as their relative errors would set the scale (fresh_memory.py)
        if self.card.get("fresh_memory"):
            rows = rows[~rows.run.isin(rows.run[fresh_memory.meets(rows)])]
        if rows.run.nunique() < 20:
            return None
        pred = np.full(len(rows), np.nan)
        for kind, at in rows.groupby("kind").indices.items():
            pred[at] = self.predict_arrays(rows.iloc[at], kind)["runtime_ms"]
        g = (rows.assign(pred=pred).groupby("run")
             .agg(whole=("network_runtime_ms", "first"), layers=("pred", "sum"),
                  ops=("pred", "size")))
        g = g[np.isfinite(g.layers) & (g.whole > 0)]
        # relative least squares: each network's equation divided by its measured time
        (scale, per_op), _ = nnls(np.column_stack([g.layers, g.ops]) / g.whole.to_numpy()[:, None],
                                  np.ones(len(g)))
        if scale <= 0:
            return None
        from .regression import rmspe
        return {"scale": float(scale), "per_op_ms": float(per_op), "networks": int(len(g)),
                "rmspe_layers_pct": rmspe(g.whole, g.layers),
                "rmspe_pct": rmspe(g.whole, scale * g.layers + per_op * g.ops)}

    def runtime_of_layers(self, runtime_ms: np.ndarray, kinds=None,
                          clocks: bool = False) -> np.ndarray:
        """Layer runtimes as they add up in a running network: the models' figures with the
        network calibration of :meth:`_fit_network` applied (not to layers replayed from
        ``clocks``, which add up already), then the calibration on measured real networks
        (``neuralpower calibrate``; needs the layers' ``kinds``), where the card has them."""
        from .calibrate import apply

        net = None if clocks else self.card.get("network")
        runtime_ms = runtime_ms if not net else net["scale"] * runtime_ms + net["per_op_ms"]
        return runtime_ms if kinds is None else apply(self.card.get("calibration"), kinds,
                                                       runtime_ms)

    def with_calibration(self, calibration: dict | None) -> "Predictor":
        """The same models with ``calibration`` (from ``calibrate.fit_calibration``) in the card,
        or with none."""
        card = {k: v for k, v in self.card.items() if k != "calibration"}
        if calibration:
            card["calibration"] = calibration
        return Predictor(self.models, card)

    # ---------------------------------------------------------------- prediction
    def predict_rows(self, rows: pd.DataFrame, kind: str) -> pd.DataFrame:
        """``runtime_ms`` and ``power_w`` of rows of one kind (NaN for a target with no model)."""
        pred = self.predict_arrays(rows, kind)
        return pd.DataFrame({t: pred[t] for t in TARGETS}, index=rows.index)

    def predict_arrays(self, rows: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
        """:meth:`predict_rows` as ``{target: values}``: the models' figures, plus the time
        subnormal numbers add where a row meets them (subnormal.py), which is also given alone
        as ``subnormal_ms`` when the predictor has a cost for the kind, and the time of tensors
        mapped fresh on every run (fresh_memory.py). A kind with no model of
        its own but parts (``DECOMPOSED``) is the sum of its parts."""
        if kind in DECOMPOSED and not self.has(kind, "runtime_ms"):
            return self._sum_of_parts(rows, kind)
        out = self._model_arrays(rows, kind)
        extra = subnormal.extra_ms(self.card.get("subnormal"), rows, kind)
        if extra is not None:
            out["runtime_ms"] = out["runtime_ms"] + extra
            out["subnormal_ms"] = extra
        fresh = fresh_memory.extra_ms(self.card.get("fresh_memory"), rows, kind,
                                      train=self.card.get("mode") == "train")
        if fresh is not None:
            out["runtime_ms"] = out["runtime_ms"] + fresh
        return out

    def _sum_of_parts(self, rows: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
        """Times (and the energy) of the parts of ``kind``'s rows added up; power is the
        energy over the time, as for a network."""
        parts = [self.predict_arrays(part, k) for k, part in DECOMPOSED[kind](rows)]
        out = {t: sum(p[t] for p in parts) for t in parts[0]
               if t != "power_w" and all(t in p for p in parts)}
        out["power_w"] = sum(p["power_w"] * p["runtime_ms"] for p in parts) / out["runtime_ms"]
        return out

    def _model_runtime(self, rows: pd.DataFrame, kind: str) -> np.ndarray:
        return self._model_arrays(rows, kind)["runtime_ms"]

    def _model_arrays(self, rows: pd.DataFrame, kind: str) -> dict[str, np.ndarray]:
        """The models' figures, within the device's bounds."""
        X = features(self.in_phase(rows), kind)
        if X.empty:   # no rows: nothing to ask the models (scikit-learn refuses 0 samples)
            return {t: np.empty(0) for t in TARGETS + CLOCK_TARGETS
                    if t in TARGETS or (kind, t) in self.models}
        out = self._predict_features(X, kind)
        # The VM's phase moves no layer further than it moves the small ops of its probe: a
        # model sees the phase vary only on the layers of campaigns with the probe, and with a
        # layer unlike theirs (dilated convolutions are synthetic campaigns' alone) its
        # polynomial's terms in the phase are free: FCN-ResNet50's dilated 3x3 convolution
        # took 36 ms at the reference probe and 663 ms at a probe 20 % faster.
        reference = self.card.get("reference_ops_ms")
        if reference and "ops_ms" in X and (X["ops_ms"] != reference).any():
            ratio = X["ops_ms"].to_numpy(dtype=float) / reference
            times = ("runtime_ms", *CLOCK_TARGETS)
            at_reference = self._predict_features(X.assign(ops_ms=reference), kind, times)
            for t in times:
                if t in out:
                    base = at_reference[t]
                    out[t] = np.clip(out[t], base * np.minimum(ratio, 1.0),
                                     base * np.maximum(ratio, 1.0))
        # Power is bounded by the device, not by a model's reach: a kind fitted on a few rows
        # (an H100 demo's 3-minute campaign: 2 max-pool rows) continued a power law to 2,350 W
        # for ResNet-18's max pool, on a 700 W GPU. (Predictors fitted before this have no range.)
        if "power_range_w" in self.card:
            out["power_w"] = np.clip(out["power_w"], *self.card["power_range_w"])
        return out

    def _predict_features(self, X: pd.DataFrame, kind: str,
                          targets=(*TARGETS, *CLOCK_TARGETS)) -> dict[str, np.ndarray]:
        """Each model's figures for featured rows (NaN for one of ``targets`` in TARGETS with
        no model); rows with identical features (a network repeats its blocks) are predicted
        once."""
        unique, inverse = np.unique(X.to_numpy(), axis=0, return_inverse=True)
        unique = pd.DataFrame(unique, columns=X.columns)
        out = {}
        for target in targets:
            model = self.models.get((kind, target))
            if model is not None or target in TARGETS:
                out[target] = (np.full(len(X), np.nan) if model is None
                               else model.predict(unique)[inverse.reshape(-1)])
        return out

    def extrapolation(self, rows: pd.DataFrame, kind: str) -> list:
        """Per row, the features of ``kind``'s model that lie outside the ranges it was fitted
        on, the farthest first, each as ``{feature, value, seen: [min, max], factor}`` (factor:
        how many times beyond the range; None where the range ends at 0); None for a row
        inside every range. A row whose features are each inside their range but whose
        combination the data never had (a ratio every measured layer shared, ``regression``'s
        span) gets ``{feature: "combination", value: factor, seen: [1, 1], factor}``, when
        at least :data:`OFF_SPAN` times off."""
        ranges = self.card.get("kinds", {}).get(kind, {}).get("feature_ranges", {})
        X = features(self.in_phase(rows), kind)
        cols = [c for c in X.columns if c in ranges]
        if not cols:
            return [None] * len(rows)
        model = self.models.get((kind, "runtime_ms"))
        off = model.off_span(X) if hasattr(model, "off_span") and len(X) else np.ones(len(X))
        v = X[cols].to_numpy(dtype=float)
        lo, hi = (np.array([ranges[c][i] for c in cols], dtype=float) for i in (0, 1))
        above, below = v > hi * (1 + 1e-9), v < lo * (1 - 1e-9)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(above, v / hi, np.where(below, lo / v, 1.0))
        out = []
        for i in range(len(v)):
            at = np.flatnonzero(above[i] | below[i])
            found = [{"feature": cols[j], "value": float(v[i, j]),
                      "seen": [float(lo[j]), float(hi[j])],
                      "factor": float(factor[i, j]) if np.isfinite(factor[i, j]) else None}
                     for j in at]
            if off[i] >= OFF_SPAN:
                found.append({"feature": "combination", "value": float(off[i]),
                              "seen": [1.0, 1.0], "factor": float(off[i])})
            found.sort(key=lambda e: -(e["factor"] if e["factor"] is not None else np.inf))
            out.append(found or None)
        return out

    def score(self, data: pd.DataFrame) -> dict:
        """Errors on measured rows: {kind: {target: {n, rmspe_pct, mape_pct, median_ape_pct}}}."""
        from .regression import mape, median_ape, rmspe

        out = {}
        for kind, rows in data.groupby("kind"):
            if not self.has(kind, "runtime_ms"):
                continue
            pred = pd.DataFrame({t: v for t, v in self.predict_arrays(rows, kind).items()
                                 if t != "subnormal_ms"}, index=rows.index)
            if "reference_ms" in rows:  # each row at the speed it was measured at
                ref = pd.to_numeric(rows["reference_ms"], errors="coerce")
                speed = [self.speed(r if r > 0 else None) for r in ref]
                for target in ("runtime_ms", "host_ms"):  # (the GPU's time is not the host's)
                    if target in pred:
                        pred[target] *= speed
            for target in TARGETS + [t for t in CLOCK_TARGETS if t in rows and t in pred]:
                has = pd.to_numeric(rows[target], errors="coerce").notna() & pred[target].notna()
                if not has.any():
                    continue
                y, p = rows.loc[has, target].to_numpy(), pred.loc[has, target].to_numpy()
                out.setdefault(kind, {})[target] = {
                    "n": int(has.sum()), "rmspe_pct": rmspe(y, p), "mape_pct": mape(y, p),
                    "median_ape_pct": median_ape(y, p)}
        if not out:
            raise NeuralPowerError("no rows of a kind this predictor models "
                                   f"({', '.join(sorted({k for k, _ in self.models}))})")
        return out

    # ---------------------------------------------------------------- files
    def save(self, path) -> None:
        import skops.io as sio

        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        card = {**self.card, "format": FORMAT, "format_version": FORMAT_VERSION}
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("card.json", json.dumps(card, indent=2, sort_keys=True))
            for (kind, target), model in self.models.items():
                z.writestr(f"models/{kind}.{target}.skops", sio.dumps(model))
        tmp.replace(path)  # never leave a half-written predictor under the real name

    @classmethod
    def load(cls, path) -> "Predictor":
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        from .regression import TRUSTED_TYPES, LogLinkRegressor

        path = Path(path)
        if not path.is_file():
            raise NeuralPowerError(f"predictor file {str(path)!r} not found")
        try:
            with zipfile.ZipFile(path) as z:
                card = json.loads(z.read("card.json"))
                _check_format(card, path)
                _check_card(card, path)
                models = {}
                for name in z.namelist():
                    if not (name.startswith("models/") and name.endswith(".skops")):
                        continue
                    kind, target = name[len("models/"):-len(".skops")].split(".", 1)
                    # skops audits every type the file names against the trusted list before
                    # it builds anything (its loads: get_tree, audit_tree, construct)
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            model = sio.loads(z.read(name), trusted=list(TRUSTED_TYPES))
                        # its trees as Forests (a format-1 file holds sklearn's boosters),
                        # their indices checked
                        if isinstance(model, LogLinkRegressor):
                            model.flatten_trees()
                        models[(kind, target)] = model
                    except UntrustedTypesFoundException as e:
                        untrusted = re.findall(r"'([^']+)'", str(e).splitlines()[0])
                        raise NeuralPowerError(f"{path}: refusing to load {name}: it names "
                                               f"types outside the trusted list "
                                               f"({', '.join(untrusted)})") from None
        except NeuralPowerError:
            raise
        except Exception as e:  # an untrusted file can fail to parse in any way: say so, once
            raise NeuralPowerError(f"{path}: not a valid neuralpower predictor "
                                   f"({first_line(e)})") from None
        if not models:
            raise NeuralPowerError(f"{path}: predictor holds no models")
        return cls(models, card)


def _mode(data: pd.DataFrame) -> str:
    """The one mode the rows were measured in (rows without a ``mode`` are inference)."""
    modes = (sorted(set(data["mode"].fillna("inference").astype(str)))
             if "mode" in data.columns else ["inference"])
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise NeuralPowerError(f"unknown mode {unknown[0]!r} in the data (expected "
                               f"{' or '.join(MODES)})")
    if len(modes) > 1:
        raise NeuralPowerError("data of inference and training campaigns together: fit one "
                               "predictor per mode")
    return modes[0]


def _check_format(card: dict, path: Path) -> None:
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise NeuralPowerError(f"{path}: not a neuralpower predictor (no {FORMAT} card)")
    version = card.get("format_version")
    if version not in READS_VERSIONS:
        raise NeuralPowerError(f"{path}: predictor format version {version}, this neuralpower "
                               f"({__version__}) reads versions "
                               f"{', '.join(map(str, READS_VERSIONS))}: refit it with "
                               "`neuralpower fit`")


def _check_card(card: dict, path: Path) -> None:
    """The card's fields that predictions read: an edited card is refused here, on one line,
    not later in the middle of a prediction."""
    def numbers(values, n=None):
        return (isinstance(values, list) and (n is None or len(values) == n)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values))

    kinds = card.get("kinds")
    if not isinstance(kinds, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("feature_ranges"), dict)
            and all(numbers(r, 2) for r in e["feature_ranges"].values()) for e in kinds.values()):
        raise NeuralPowerError(f"{path}: card has no valid kinds and feature ranges (edited?)")
    net = card.get("network")
    if net is not None and not (isinstance(net, dict)
                                and numbers([net.get("scale"), net.get("per_op_ms")])):
        raise NeuralPowerError(f"{path}: card has no valid network calibration (edited?)")
    cal = card.get("calibration")
    if cal is not None and not (
            isinstance(cal, dict) and numbers([cal.get("ref_ms")]) and isinstance(cal.get("kinds"), dict)
            and all(isinstance(c, dict) and numbers([c.get("a"), c.get("b")])
                    and numbers(c.get("z_range"), 2) for c in cal["kinds"].values())):
        raise NeuralPowerError(f"{path}: card has no valid calibration (edited?)")
    sub = card.get("subnormal")
    if sub is not None and not (isinstance(sub, dict) and all(
            kind in subnormal.WORK and isinstance(c, dict) and c.get("per") == subnormal.WORK[kind]
            and numbers([c.get("ms")]) and c["ms"] >= 0 for kind, c in sub.items())):
        raise NeuralPowerError(f"{path}: card has no valid subnormal costs (edited?)")
    fresh = card.get("fresh_memory")
    if fresh is not None and not (
            isinstance(fresh, dict) and numbers([fresh.get("threshold_bytes")])
            and fresh["threshold_bytes"] > 0 and isinstance(fresh.get("kinds"), dict)
            and all(k in MODELED_KINDS and isinstance(c, dict) and numbers([c.get("ms_per_mib")])
                    and c["ms_per_mib"] >= 0 for k, c in fresh["kinds"].items())):
        raise NeuralPowerError(f"{path}: card has no valid fresh-memory costs (edited?)")
    glue = card.get("clocks")
    if glue is not None and not (isinstance(glue, dict) and numbers([glue.get(k) for k in GLUE_KEYS])
                                 and all(math.isfinite(glue[k]) and glue[k] >= 0
                                         for k in GLUE_KEYS)):
        raise NeuralPowerError(f"{path}: card has no valid clocks (edited?)")
    span = card.get("power_range_w")
    if span is not None and not (numbers(span, 2) and 0 < span[0] <= span[1] < math.inf):
        raise NeuralPowerError(f"{path}: card has no valid power_range_w (edited?)")
    idle = card.get("idle_power_w")
    if idle is not None and not (numbers([idle]) and math.isfinite(idle) and idle > 0):
        raise NeuralPowerError(f"{path}: card has no valid idle_power_w (edited?)")
    ref = card.get("reference_ms")
    if ref is not None and not numbers([ref]):
        raise NeuralPowerError(f"{path}: card has no valid reference_ms (edited?)")
    exponent = card.get("speed_exponent")
    if exponent is not None and not (numbers([exponent]) and 0 <= exponent <= 1):
        raise NeuralPowerError(f"{path}: card has no valid speed_exponent (edited?)")


def _versions() -> dict:
    import sklearn
    import torch

    return {"neuralpower": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "pandas": pd.__version__}


def _idle_power(data: pd.DataFrame) -> float | None:
    """The device's idle power the campaigns with power readings recorded (data.with_idle_power),
    their median; None where none did."""
    if "idle_power_w" not in data or "power_w" not in data:
        return None
    idle = pd.to_numeric(data.idle_power_w, errors="coerce")[
        pd.to_numeric(data.power_w, errors="coerce") > 0].dropna()
    return float(idle.median()) if len(idle) else None


def _provenance(data: pd.DataFrame) -> list[dict]:
    """Which files, how many rows of each kind, and a hash of their content."""
    out = []
    for name, rows in data.groupby("source_file", sort=False):
        digest = hashlib.sha256(pd.util.hash_pandas_object(rows, index=False).values.tobytes())
        out.append({"file": name, "rows": len(rows),
                    "kinds": {k: int(n) for k, n in rows.kind.value_counts().items()},
                    "content_sha256": digest.hexdigest()})
    return out


def card_markdown(card: dict) -> str:
    """A human-readable model card."""
    lines = [f"# Predictor: {card['device']}"
             + (" (training: forward + backward per layer)" if card.get("mode") == "train" else ""),
             "",
             f"Fitted {card['created']} with neuralpower {card['versions']['neuralpower']} "
             f"(torch {card['versions']['torch']}, scikit-learn {card['versions']['scikit-learn']}).",
             "", "## Data", "", "| file | rows | kinds |", "|---|---|---|"]
    for d in card["data"]:
        kinds = ", ".join(f"{k} {n}" for k, n in d["kinds"].items())
        lines.append(f"| {d['file']} | {d['rows']} | {kinds} |")
    if card.get("without"):
        lines += ["", f"Fitted without the context features {', '.join(card['without'])} "
                      "(`fit --without`): the models ignore them."]
    lines += ["", "## Cross-validated errors (on the fitting data, K-fold)", "",
              "| kind | target | rows | RMSPE % | MAPE % | median APE % | model |",
              "|---|---|---|---|---|---|---|"]
    for kind, entry in card["kinds"].items():
        for target, info in entry["targets"].items():
            lines.append(f"| {kind} | {target} | {info['n_rows']} | {info['rmspe_pct']:.1f} | "
                         f"{info['mape_pct']:.1f} | {info['median_ape_pct']:.1f} | "
                         f"{info['family']}, degree {info['degree']}, {info['n_terms']} terms |")
    sub = card.get("subnormal")
    if sub:
        lines += ["", "## Subnormal numbers", "",
                  "Extra time where a layer meets subnormal numbers (neuralpower/subnormal.py), "
                  "fitted on the rows that did; median |error| of those rows without and with it.",
                  "", "| kind | ns per unit | unit | rows | error without % | error with % |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {c['ms'] * 1e6:.3f} | {c['per'][:-1]} that meets one | {c['rows']} | "
                  f"{c['median_abs_error_pct_without']:.0f} | {c['median_abs_error_pct']:.0f} |"
                  for k, c in sub.items()]
    fresh = card.get("fresh_memory")
    if fresh:
        lines += ["", "## Tensors mapped fresh on every run", "",
                  f"Extra time per MiB of a layer's tensors over the allocator's "
                  f"{fresh['threshold_bytes'] / fresh_memory.MIB:g} MiB mapping threshold "
                  "(neuralpower/fresh_memory.py), fitted on the rows that had such tensors; "
                  "median |error| of those rows without and with it.", "",
                  "| kind | ms per MiB | rows | error without % | error with % |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {c['ms_per_mib']:.3f} | {c['rows']} | "
                  f"{c['median_abs_error_pct_without']:.0f} | {c['median_abs_error_pct']:.0f} |"
                  for k, c in fresh["kinds"].items()]
    glue = card.get("clocks")
    if glue:
        lines += ["", "## Two clocks (host and GPU)", "",
                  "Networks are replayed op by op from the host and GPU models "
                  "(neuralpower/clocks.py); the host time between layers: "
                  f"{glue['host_scale']:.3f} x the layers' host times + "
                  f"{glue['modeled_op_ms'] * 1e3:.1f} us per modeled op, "
                  f"{glue['unmodeled_op_ms'] * 1e3:.1f} us per other op, "
                  f"{glue['free_op_ms'] * 1e3:.1f} us per view, fitted on {glue['networks']} "
                  "real networks measured whole"
                  + (f" (median |error| of their host time "
                     f"{glue['network_host_median_abs_error_pct']:.1f} %)."
                     if "network_host_median_abs_error_pct" in glue else ".")]
        if card.get("idle_power_w"):
            lines += ["", f"Network power in the network's rhythm (clocks.layer_energy): idle "
                          f"power {card['idle_power_w']:.1f} W, from the campaigns' sidecars."]
    found = card.get("speed_exponent_fit")
    if found:
        lines += ["", f"Speed: predictions hold where the speed probe takes "
                      f"{card['reference_ms']:.3f} ms; at another probe time they scale by the "
                      f"ratio to the power {card['speed_exponent']:.2f} (the layers' exponent in "
                      f"the data: {found['exponent']:.2f}, standard error {found['se']:.2f}, "
                      f"{found['shapes']} shapes timed in {found['runs']} network runs)."]
    if card.get("power_range_w"):
        lo, hi = card["power_range_w"]
        lines += ["", f"Layer power is predicted within the power measured on the device, "
                      f"{lo:.1f}–{hi:.1f} W."]
    cal = card.get("calibration")
    if cal:
        lines += ["", "## Calibration on measured real networks", "",
                  f"{cal['measurements']} measurements of {len(cal['networks'])} networks "
                  f"({', '.join(cal['networks'])}); median |error| of the totals "
                  f"{cal['uncalibrated_median_abs_error_pct']:.1f} % before, "
                  f"{cal['cross_validated_median_abs_error_pct']:.1f} % after (leave one network "
                  f"out); lambda {cal['lambda']:g}.", "",
                  "| kind | a | b |", "|---|---|---|"]
        lines += [f"| {k} | {c['a']:+.3f} | {c['b']:+.3f} |" for k, c in cal["kinds"].items()]
    lines += ["", "## Feature ranges seen (predictions outside them extrapolate)", ""]
    for kind, entry in card["kinds"].items():
        ranges = ", ".join(f"{c} {lo:g}–{hi:g}" for c, (lo, hi) in entry["feature_ranges"].items())
        lines.append(f"- **{kind}** ({entry['rows']} rows): {ranges}")
    return "\n".join(lines) + "\n"
