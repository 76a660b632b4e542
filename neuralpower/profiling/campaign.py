"""A profiling campaign: measure synthetic networks on one device into a measurement CSV.

Crash-safe by construction:

- The CSV is locked (``flock``) for the whole campaign: a second campaign on the same file
  refuses at once. The kernel drops the lock when the process dies, even by SIGKILL.
- A network's rows are written in one ``write``, flushed and fsynced before the next network
  starts. A line torn by a kill is cut off when the campaign resumes.
- Network ``i`` is a pure function of the seed and the device limits (both kept in the sidecar
  JSON), so running the same command again skips every network already in the file, re-measures
  only the layers a torn write lost, and goes on: nothing measured twice, nothing lost.
- A network that fails (out of memory, an error of the backend) is written as ``failed`` rows,
  so it is skipped on resume and never retried in a loop. On a CPU each network is measured in
  a fresh process (``isolated.py``), so one the kernel kills costs that network only.
- A power read that fails (``MeterError``) leaves that row's ``power_w`` empty and says why in
  ``power_error``; the row keeps its runtime (status ``ok``) and the campaign goes on.
- A write that fails (a full disk) is cut back to the last complete network and ends the
  campaign with one line: the file stays valid, and the same command resumes it.
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import __version__
from ..devices import device_name
from ..errors import NeuralPowerError
from ..features import (CLOCK_COLUMNS, CONTEXT_COLUMNS, MEMORY_COLUMNS, MODES, SHAPE_COLUMNS,
                        VALUE_COLUMNS)
from ..inputs import Shape, example
from . import adaptive, isolated, synthetic, zoo
from .zoo import FAMILIES as ZOO_FAMILIES
from .meters import MeterError, NoneMeter, idle_power, open_meter
from .timing import Reference, layer_power, spread, steady_allocator, time_network

FORMAT_VERSION = 1
CSV_COLUMNS = [
    "kind", *SHAPE_COLUMNS, "macs", *CONTEXT_COLUMNS, *VALUE_COLUMNS, *MEMORY_COLUMNS,
    "runtime_ms", "runtime_iqr_ms", "runtime_min_ms", "repeats", "mode", "forward_ms",
    "backward_ms", "power_w", "power_source", "power_window_s", "power_error", "device",
    "network", "layer", "position", "network_runtime_ms", "network_runtime_iqr_ms",
    "reference_ms", "threads", "dtype", "status", "error", "campaign_s", *CLOCK_COLUMNS,
    "reference_ops_ms",
]
_HEADER = ",".join(CSV_COLUMNS) + "\n"
# Files begun before ``fresh_mib``, before the small-ops probe (``reference_ops_ms``), before
# ``kind_gap``, before the host and GPU clocks were columns, or before ``subnormal_share`` was,
# resume in their own columns (a file before subnormal_share leaves out rows that meet them;
# ``data.load`` fills in ``kind_gap`` and ``fresh_mib`` for a file without them).
_BEFORE_MEMORY = [c for c in CSV_COLUMNS if c not in MEMORY_COLUMNS]
_BEFORE_OPS = [c for c in _BEFORE_MEMORY if c != "reference_ops_ms"]
_BEFORE_GAP = [c for c in _BEFORE_OPS if c != "kind_gap"]
_BEFORE_CLOCKS = [c for c in _BEFORE_GAP if c not in CLOCK_COLUMNS]
_EARLIER_COLUMNS = [c for c in _BEFORE_CLOCKS if c not in VALUE_COLUMNS]
# Seconds of repeated runs per network and mode (at least 5 runs). Two measurements of one
# network built twice differ more than the runs of one build do, so a campaign learns more from
# more networks than from more repeats.
REPEAT_S = 0.1
# Networks in a row skipped because each would overrun the budget left, before a campaign ends:
# a later one of the design may be small enough (a 20 s campaign ended at its second network)
MAX_SKIPPED = 10


def sidecar_path(csv_path) -> Path:
    p = Path(csv_path)
    return p.with_suffix(".json") if p.suffix.lower() == ".csv" else p.with_name(p.name + ".json")


def parse_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise NeuralPowerError(f"--device {text!r}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise NeuralPowerError(f"--device {text!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuralPowerError(f"--device {text}: CUDA is not available on this machine")
        if (device.index or 0) >= torch.cuda.device_count():
            raise NeuralPowerError(f"--device {text}: this machine has "
                                   f"{torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", device.index or 0)
    return device


class Campaign:
    """Measure synthetic networks on ``device`` and append their layers to ``output``.

    >>> Campaign("cpu.csv", device="cpu").run(budget_s=60)   # doctest: +SKIP
    """

    def __init__(self, output, device="cpu", kinds=synthetic.PROFILED_KINDS, seed: int = 0,
                 threads: int | None = None, power_window_s: float | None = None, meter=None,
                 command: str | None = None, log=None, mode: str = "inference",
                 adaptive: bool = False, target_error_pct: float | None = None,
                 zoo: bool | str = False, fresh_process: bool | None = None,
                 power: bool | str = True, power_share: float | None = None):
        self.path = Path(output)
        if self.path.suffix in (".gz", ".bz2", ".xz", ".zip", ".zst"):
            raise NeuralPowerError(f"{self.path}: a campaign writes plain CSV (it appends and "
                                   "resumes); compress the file when the campaign is done")
        self.device = parse_device(device) if isinstance(device, str) else device
        unknown = sorted(set(kinds) - set(synthetic.PROFILED_KINDS))
        if unknown or not kinds:
            raise NeuralPowerError(f"--kinds: {', '.join(unknown) or 'none given'}: choose from "
                                   f"{', '.join(synthetic.PROFILED_KINDS)}")
        self.kinds = tuple(k for k in synthetic.PROFILED_KINDS if k in kinds)
        self.seed = int(seed)
        if mode not in MODES:
            raise NeuralPowerError(f"--mode {mode!r}: choose from {', '.join(MODES)}")
        self.mode = mode
        self.train = mode == "train"
        if self.train and self.device.type == "cpu" and "grouped_mm" in self.kinds:
            # torch 2.14's CPU grouped matmul fails in its backward (invalid strides)
            if tuple(kinds) != synthetic.PROFILED_KINDS:
                raise NeuralPowerError("--kinds grouped_mm: not with --mode train on a CPU "
                                       "(torch's CPU grouped matmul has no working backward)")
            self.kinds = tuple(k for k in self.kinds if k != "grouped_mm")
        self.adaptive = bool(adaptive)  # see profiling/adaptive.py
        # real networks instead of synthetic ones (profiling/zoo.py): False, "vision" or "text"
        self.zoo = "vision" if zoo is True else zoo or False
        if self.zoo and self.zoo not in ZOO_FAMILIES:
            raise NeuralPowerError(f"--zoo {self.zoo!r}: choose from "
                                   f"{', '.join(ZOO_FAMILIES)}")
        if self.zoo and self.train:
            raise NeuralPowerError("--zoo measures inference of real networks: not with "
                                   "--mode train")
        # stop once every kind's estimated error is at most this (estimated as adaptive does)
        if target_error_pct is not None and not 0 < target_error_pct < math.inf:
            raise NeuralPowerError(f"--target-error must be a positive percentage, got "
                                   f"{target_error_pct:g}")
        self.target_error_pct = target_error_pct
        if threads is not None and threads < 1:
            raise NeuralPowerError("--threads must be at least 1")
        self.threads = int(threads or torch.get_num_threads())
        # power=False: runtime only, when the sensor's window per layer costs more than the
        # rows are worth (a real network's hundreds of layers on a fast GPU: --no-power); a
        # string instead of False says why
        self.meter = (meter if meter is not None else open_meter(str(self.device))
                      if power is True else NoneMeter(power or "not asked for (--no-power)"))
        # Each network in a fresh process (isolated.py) on a CPU, where a long-lived process
        # slows down; not on a GPU (a CUDA context per network costs seconds), nor with a meter
        # passed in (a test's stand-in keeps its counts in this process).
        if fresh_process is None:
            fresh_process = self.device.type == "cpu" and meter is None and isolated.available()
        self.fresh_process = bool(fresh_process)
        self.power_window_s = float(power_window_s or max(0.3, self.meter.min_window_s))
        # At most this share of the campaign's time on power windows: a network is measured
        # with power while the windows so far took at most this share, else runtime only (on
        # an H100 a window is 0.5 s a layer, and power windows took 91 % of a 142 s campaign)
        if power_share is not None and not 0 < power_share <= 1:
            raise NeuralPowerError(f"--power-share must be in (0, 1], got {power_share:g}")
        self.power_share = power_share
        self._power_s = 0.0
        self.command = command or " ".join(sys.argv)
        self.log = log or (lambda m: print(m, file=sys.stderr))

    # -- the run ---------------------------------------------------------------------------

    def run(self, budget_s: float = 600.0, progress: bool = True, specs=None) -> dict:
        """Measure until ``budget_s`` seconds have passed (or ``specs``, an iterable of
        ``(network_id, spec)`` pairs, is exhausted). Returns a summary of this run."""
        if not budget_s > 0:
            raise NeuralPowerError("--budget must be a positive number of seconds")
        started = time.perf_counter()
        self.allocator = steady_allocator()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", newline="", encoding="utf-8")
        except OSError as e:
            raise NeuralPowerError(f"{self.path}: cannot write here ({e.strerror})") from None
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise NeuralPowerError(f"{self.path}: another campaign is writing this file; "
                                       "wait for it to end or write to another file") from None
            done, partial, offset, columns = self._resume(f)
            meta = self._sidecar(budget_s, resumed=bool(done))
            if not self.meter.measures_power:
                self.log(f"power: not measured on {self.device} "
                         f"({self.meter.describe().get('reason', 'no sensor')}); runtime only")
            summary = {"networks": 0, "rows": 0, "failed": 0, "power_errors": 0,
                       "power_networks": 0, "ended": "budget"}
            bar = _bar(budget_s, progress)
            failing = True  # until the loop ends normally: then a sidecar error is the news
            too_long = 0    # networks in a row estimated to take longer than the budget left
            try:
                for net_id, spec in (specs if specs is not None else
                                     self._specs(started, budget_s, resumed=bool(done), meta=meta)):
                    if net_id in done and net_id not in partial:
                        continue
                    elapsed = time.perf_counter() - started
                    table = (zoo.trace_spec if zoo.is_zoo(spec) else synthetic.trace_spec)(spec)
                    power = self._power_due(elapsed)
                    estimate_s = self._estimate(table, power=power)
                    if elapsed + estimate_s * self._scale > budget_s:
                        # a later network of the design may fit what is left: a few are tried
                        # (the run record lists those skipped; a resume considers them again)
                        too_long += 1
                        if too_long < MAX_SKIPPED and budget_s - elapsed > 0.05 * budget_s:
                            summary.setdefault("skipped", []).append(net_id)
                            continue
                        if not summary["networks"]:  # else the run ends with nothing said
                            left = max(0.0, budget_s - elapsed)
                            self.log(f"{net_id}: about {estimate_s * self._scale:.0f} s to "
                                     f"measure{' with power' if power else ''}, more than the "
                                     f"{left:.0f} s of budget left: nothing measured in this "
                                     "run (a larger --budget"
                                     + (", --power-share or --no-power" if power else "")
                                     + " makes room)")
                        break
                    too_long = 0
                    t0 = time.perf_counter()
                    rows = self._measure(net_id, spec, table, skip=done.get(net_id, set()),
                                         power=power)
                    self._power_s += sum(r.get("power_window_s") or 0.0 for r in rows
                                         if r.get("power_w") is not None)
                    summary["power_networks"] += power
                    for r in rows:
                        r["campaign_s"] = round(offset + time.perf_counter() - started, 3)
                    if columns is _EARLIER_COLUMNS:
                        rows = self._without_subnormal(rows, summary)
                    _append(f, rows, columns)
                    self._learn(estimate_s, time.perf_counter() - t0)
                    summary["networks"] += 1
                    summary["rows"] += len(rows)
                    summary["failed"] += any(r["status"] != "ok" for r in rows)
                    self._note_power_errors(rows, summary)
                    bar.update(min(budget_s, time.perf_counter() - started) - bar.n)
                    bar.set_postfix(networks=summary["networks"], rows=summary["rows"],
                                    failed=summary["failed"], refresh=False)
                else:
                    summary["ended"] = self._reached or "all networks measured"
                failing = False
            except KeyboardInterrupt:
                summary["ended"] = "interrupted"
                raise
            except NeuralPowerError as e:
                summary["ended"] = f"error: {e}"
                raise
            finally:
                bar.close()
                summary["seconds"] = round(time.perf_counter() - started, 1)
                meta["runs"][-1].update(summary)
                try:
                    _write_json(sidecar_path(self.path), meta)
                except NeuralPowerError:
                    # On a full disk the run record cannot be saved either; the old sidecar is
                    # intact and still resumes, and the error in flight is the one to tell.
                    if not failing:
                        raise
                finally:
                    self.meter.close()
        return summary

    def _without_subnormal(self, rows: list[dict], summary: dict) -> list[dict]:
        """A file begun before ``subnormal_share`` was a column cannot say which rows met
        subnormal numbers, and such a row would pass for a plain one: it is left out (said
        once; its network still counts as measured)."""
        kept = [r for r in rows if not r.get("subnormal_share")]
        if len(kept) < len(rows) and not summary.get("subnormal_left_out"):
            self.log(f"{self.path}: begun before the subnormal_share column; rows that meet "
                     "subnormal numbers are left out (write to a new file to keep them)")
        summary["subnormal_left_out"] = summary.get("subnormal_left_out", 0) + len(rows) - len(kept)
        return kept

    def _note_power_errors(self, rows: list[dict], summary: dict) -> None:
        """Count rows whose power read failed; tell the user at the first one."""
        errors = [r["power_error"] for r in rows if r.get("power_error")]
        if errors and not summary["power_errors"]:
            self.log(f"power: a sensor read failed ({errors[0]}); such rows keep their runtime, "
                     "with power_w empty and the reason in power_error")
        summary["power_errors"] += len(errors)

    def _specs(self, started: float, budget_s: float, resumed: bool, meta: dict):
        """``(network id, spec)`` of the campaign's networks in order: the seeded design, or,
        adaptive, the design's points richest in the kinds least well predicted so far
        (estimated after ``adaptive.FIRST_SHARE`` of the budget, at once when resuming, then
        every ``adaptive.REFIT_SHARE``; each estimate is kept in the sidecar's run record)."""
        weight = None
        refit_at = 0.0 if resumed else adaptive.FIRST_SHARE * budget_s
        estimating = self.adaptive or self.target_error_pct is not None
        for index in count():
            elapsed = time.perf_counter() - started
            if estimating and elapsed >= refit_at:
                rows = pd.read_csv(self.path, low_memory=False)
                errors = adaptive.kind_errors(rows, self.kinds)
                weight = adaptive.weights(errors)
                counts = adaptive.measured(rows).kind.value_counts().to_dict()  # rows so far
                meta["runs"][-1].setdefault("adaptive", []).append(
                    {"at_s": round(elapsed, 3), "rows": len(rows),
                     "rmspe_pct": {k: round(e, 1) if np.isfinite(e) else None
                                   for k, e in errors.items()}})
                refit_at = elapsed + adaptive.REFIT_SHARE * budget_s
                worst = max(errors.values())
                if self.target_error_pct is not None and worst <= self.target_error_pct:
                    self._reached = (f"target error reached (every kind's estimated error at "
                                     f"most {self.target_error_pct:g} %, the worst "
                                     f"{worst:.1f} %)")
                    return
            if self.zoo and (weight is None or not self.adaptive):
                spec = zoo.sample(self.seed, index, self.limits, family=self.zoo)
                yield zoo.network_id(self.seed, index, spec), spec
            elif self.zoo:
                j, spec = adaptive.choose(self.seed, index, self.kinds, self.limits, weight,
                                          seconds=self._estimate, real=self.zoo, counts=counts)
                yield zoo.network_id(self.seed, index, spec, candidate=j), spec
            elif weight is None or not self.adaptive:
                yield f"s{self.seed}-{index:06d}", synthetic.sample(self.seed, index, self.kinds,
                                                                     self.limits)
            else:
                j, spec = adaptive.choose(self.seed, index, self.kinds, self.limits, weight,
                                          seconds=self._estimate)
                yield f"a{self.seed}-{index:06d}-{j}", spec

    # -- resuming ----------------------------------------------------------------------------

    def _resume(self, f) -> tuple[dict, set, float, list]:
        """Networks already in the file (id -> layers written), the ones a torn write left
        incomplete, the campaign time measured so far and the file's columns. Cuts off a torn
        last line."""
        f.seek(0)
        text = f.read()
        if not text:
            _write_whole(f, _HEADER)
            return {}, set(), 0.0, CSV_COLUMNS
        known = [c for c in (CSV_COLUMNS, _BEFORE_MEMORY, _BEFORE_OPS, _BEFORE_GAP,
                             _BEFORE_CLOCKS, _EARLIER_COLUMNS)
                 if text.startswith(",".join(c) + "\n")]
        if known:
            columns = known[0]
        else:
            raise NeuralPowerError(f"{self.path}: not a campaign file of this version (its header "
                                   "differs); write to a new file")
        if not text.endswith("\n"):  # a write torn by a kill: drop the partial line
            keep = text.rfind("\n") + 1
            f.truncate(len(text[:keep].encode()))
            text = text[:keep]
            self.log(f"{self.path}: dropped a partial last line left by an interrupted run")
        rows = pd.read_csv(io.StringIO(text), dtype={"network": str, "layer": str})
        done: dict = {}
        for net, layer in zip(rows["network"], rows["layer"]):
            done.setdefault(net, set()).add(layer)
        # Each network is written whole before the next starts: only the last can be torn.
        partial = {rows["network"].iloc[-1]} if len(rows) else set()
        offset = float(rows["campaign_s"].max()) if len(rows) else 0.0
        return done, partial, offset, columns

    def _sidecar(self, budget_s: float, resumed: bool) -> dict:
        path = sidecar_path(self.path)
        settings = {"device": str(self.device), "kinds": list(self.kinds), "seed": self.seed,
                    "threads": self.threads, "dtype": "float32",
                    "power_window_s": self.power_window_s, "mode": self.mode,
                    "adaptive": self.adaptive,
                    # True for the vision zoo, as campaigns before the text zoo wrote it
                    "zoo": True if self.zoo == "vision" else self.zoo}
        if path.exists():
            try:
                meta = json.loads(path.read_text())
                old = meta["settings"]
                limits = synthetic.Limits(**old["limits"])
                rates = [float(meta["calibration"][k]) for k in ("macs_per_s", "pool_macs_per_s")]
            except (OSError, ValueError, KeyError, TypeError):
                raise NeuralPowerError(f"{path}: unreadable campaign metadata; remove it and the "
                                       "CSV to start again, or write to another file") from None
            old.setdefault("mode", "inference")  # campaigns before training mode
            old.setdefault("adaptive", False)    # campaigns before adaptive profiling
            old.setdefault("zoo", False)         # campaigns before zoo profiling
            changed = [k for k in settings if old.get(k) != settings[k]]
            if changed:
                k = changed[0]
                raise NeuralPowerError(f"{self.path} was started with {k} = {old.get(k)!r}, not "
                                       f"{settings[k]!r}: run the same command to resume it, or "
                                       "write to another file")
            self.limits, (self.macs_per_s, self.pool_macs_per_s) = limits, rates
        elif resumed:
            raise NeuralPowerError(f"{self.path} has rows but no {path.name} beside it: it is not "
                                   "a campaign this version can resume; write to another file")
        else:
            self.limits = self._calibrate(budget_s)
            settings["limits"] = asdict(self.limits)
            meta = {"format": "neuralpower-profile", "format_version": FORMAT_VERSION,
                    "settings": settings, "calibration": {"macs_per_s": self.macs_per_s,
                                                   "pool_macs_per_s": self.pool_macs_per_s}, "device": self._describe_device(),
                    "software": {**_software(self.zoo), "allocator": self.allocator},
                    "power": self.meter.describe(), "runs": []}
            if self.meter.measures_power:
                self.log("measuring idle power (3 s)")
                try:
                    meta["power"]["idle_power_w"] = round(idle_power(self.meter, 3.0), 3)
                except MeterError as e:  # a missing idle figure costs nothing measured
                    meta["power"]["idle_power_error"] = _one_line(e)
                    self.log(f"power: idle power not measured ({_one_line(e)})")
        meta["runs"].append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "command": self.command, "budget_s": budget_s, "ended": "running",
                             "power_share": self.power_share})
        _write_json(path, meta)
        return meta

    # -- the device's limits and the time a network will take ---------------------------------

    def _calibrate(self, budget_s: float) -> synthetic.Limits:
        """What one layer may cost: the MACs (compute-bound layers) and tensor elements
        (memory-bound ones, like pooling) the device gets through in ``max_layer_s``, a small
        share of the budget so that a short campaign still sees many networks."""
        x = torch.randn(4, 64, 56, 56, device=self.device)
        probe = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1),
                                    torch.nn.MaxPool2d(3, 1, 1)).to(self.device)
        t = time_network(probe, x, min_repeats=3, max_repeats=10, target_s=0.2)
        self.macs_per_s = x.numel() * 64 * 9 / (spread(t.layers["0"])["runtime_ms"] / 1e3)
        self.pool_macs_per_s = x.numel() * 9 / (spread(t.layers["1"])["runtime_ms"] / 1e3)
        max_layer_s = min(0.05, budget_s / 2000)
        memory = (torch.cuda.get_device_properties(self.device).total_memory
                  if self.device.type == "cuda" else _available_memory())
        return synthetic.Limits(max_macs=int(self.macs_per_s * max_layer_s),
                                max_pool_macs=int(self.pool_macs_per_s * max_layer_s),
                                max_elements=int(memory // 4 // 32))

    _scale = 1.0  # measured seconds / estimated seconds, learned as networks are measured
    _reached = None  # why the campaign stopped early, when a target error was reached
    _reference = None  # the speed probe (timing.Reference), built on first use

    def _power_due(self, elapsed: float) -> bool:
        """Whether the next network's layers get power readings (``power_share``)."""
        return self.meter.measures_power and (self.power_share is None
                                              or self._power_s <= self.power_share * elapsed)

    def _estimate(self, t, batch: int = 1, power: bool | None = None) -> float:
        """Seconds the network traced as ``t`` will take to measure (at ``batch`` times the
        batch it was traced at: its work grows with it; with power readings unless ``power``
        is False)."""
        compute, streamed = synthetic.work(t)
        net_s = (batch * (compute.sum() / self.macs_per_s + streamed.sum() / self.pool_macs_per_s)
                 + 5e-5 * len(t))
        net_s *= 3 if self.train else 1  # a backward pass costs about two forward passes
        repeats = min(50, max(5, math.ceil(REPEAT_S / max(net_s, 1e-6))))
        power_s = (self.power_window_s * (t.kind != "free").sum()
                   if self.meter.measures_power and power is not False else 0.0)
        return (2 + 2 * repeats) * net_s + power_s + 0.02

    def _learn(self, estimate_s: float, seconds: float):
        ratio = seconds / max(estimate_s, 1e-3)
        self._scale = 0.8 * self._scale + 0.2 * min(max(ratio, 0.1), 10.0)

    # -- one network ---------------------------------------------------------------------------

    def _measure(self, net_id: str, spec: dict, table, skip: set,
                 power: bool = True) -> list[dict]:
        real_net = zoo.is_zoo(spec)
        if real_net:  # its leaf modules running one op (found on the meta twin), of the kinds
            layers = [layer for layer in zoo.timed_layers(zoo.meta(spec["zoo"])[0], table)
                      if layer[2].kind in self.kinds]
        else:  # every child runs one op
            layers = synthetic.one_op_modules(table)
        layers = [(position, name, _layer_columns(op)) for position, name, op in layers
                  if name not in skip]
        if not layers:
            return []
        meter = self.meter if power or not self.meter.measures_power else NoneMeter(
            f"skipped: power windows had their share ({self.power_share:g}) of the time")
        base = {"device": device_name(self.device, self.threads), "network": net_id,
                "threads": self.threads, "dtype": "float32", "mode": self.mode,
                "power_source": meter.source}
        setup = _Setup(self.device, self.threads, self.train, self.power_window_s)
        if self.fresh_process:
            try:
                return isolated.call(_measure_fresh, setup, meter, spec, layers, base)
            except isolated.ChildDied as e:
                return _failed(layers, base, e)
        if self._reference is None:
            self._reference = Reference(self.device, ops=True)
        return _measure_network(setup, meter, spec, layers, base, self._reference)

    def _describe_device(self) -> dict:
        d = {"name": device_name(self.device, self.threads), "type": self.device.type,
             "threads": self.threads, "cpu": device_name(torch.device("cpu"), os.cpu_count() or 1),
             "cpu_count": os.cpu_count()}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            d.update(gpu=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                     compute_capability=f"{props.major}.{props.minor}")
        return d


@dataclass(frozen=True)
class _Setup:
    """What measuring a network needs besides the network: sent to the process measuring it."""
    device: torch.device
    threads: int
    train: bool
    power_window_s: float


def _measure_fresh(setup: _Setup, meter, spec: dict, layers: list, base: dict) -> list[dict]:
    """:func:`_measure_network` in a fresh process (``isolated.call``): its allocator and threads
    set as the campaign's, its own speed probe."""
    steady_allocator()
    torch.set_num_threads(setup.threads)
    return _measure_network(setup, meter, spec, layers, base, Reference(setup.device, ops=True))


def _measure_network(setup: _Setup, meter, spec: dict, layers: list, base: dict,
                     reference: Reference) -> list[dict]:
    """Build the spec's network for real and time ``layers`` (``(position, module name,
    layer columns)``) inside it: the network's rows, or its failed rows when it cannot run."""
    real_net = zoo.is_zoo(spec)
    rows = []
    try:
        if real_net:
            model = zoo.build(spec, setup.device)
        else:
            model = synthetic.realise(spec, setup.device)
        model.train(setup.train)  # batch norm uses the batch's statistics when training
        x = (example(Shape(spec["input"], spec.get("dtype", "float32")), model, setup.device)
             if real_net else synthetic.example_input(spec, setup.device))
        timings = time_network(model, x, target_s=REPEAT_S, capture_inputs=meter.measures_power,
                               reference=reference, train=setup.train,
                               modules=[(name, model.get_submodule(name))
                                        for _, name, _ in layers] if real_net else None)
        whole = spread(timings.network)
        for position, name, columns in layers:
            row = {**base, **columns, **timings.summary(name), **timings.clocks(name),
                   "layer": name,
                   "position": position, "reference_ms": timings.reference_ms,
                   "reference_ops_ms": timings.reference_ops_ms, "status": "ok"}
            # the whole network's time (of a zoo network too, whose rows do not cover all its
            # ops: its whole time is what `fit --calibrate` calibrates on; zoo.py)
            row.update(network_runtime_ms=whole["runtime_ms"],
                       network_runtime_iqr_ms=whole["runtime_iqr_ms"])
            if meter.measures_power:
                try:
                    watts, seconds = layer_power(model.get_submodule(name),
                                                 timings.inputs[name], meter, row["runtime_ms"],
                                                 setup.power_window_s, train=setup.train)
                    row.update(power_w=watts, power_window_s=round(seconds, 3))
                except MeterError as e:
                    row["power_error"] = _one_line(e)
            rows.append(row)
    except (RuntimeError, MemoryError, ValueError) as e:  # out of memory, backend errors
        if setup.device.type == "cuda":
            torch.cuda.empty_cache()
        rows = _failed(layers, base, e)
    return rows


def _failed(layers: list, base: dict, e: BaseException) -> list[dict]:
    return [{**base, **columns, "layer": name, "position": position, "status": "failed",
             "error": _one_line(e)} for position, name, columns in layers]


def _layer_columns(op) -> dict:
    out = {"kind": op["kind"], "macs": int(op["macs"])}
    for c in SHAPE_COLUMNS + CONTEXT_COLUMNS:
        v = op[c]
        if pd.notna(v):
            out[c] = int(v)
    for c in VALUE_COLUMNS + MEMORY_COLUMNS:
        if pd.notna(op.get(c)):
            out[c] = float(op[c])
    return out


def _append(f, rows: list[dict], columns=CSV_COLUMNS) -> None:
    """All rows of a network in one write, on disk before the next network starts."""
    buf = io.StringIO()
    table = pd.DataFrame(rows, dtype=object).reindex(columns=columns)  # ints stay ints
    table.to_csv(buf, header=False, index=False, lineterminator="\n")
    _write_whole(f, buf.getvalue())


def _write_whole(f, text: str) -> None:
    """Append ``text`` to the campaign file ``f`` (opened for append) and fsync it, or leave the
    file as it was: a failed write (a full disk) may have written part of a line, so the file is
    cut back to its size before, and stays valid without waiting for a resume."""
    fd = f.fileno()
    size = os.fstat(fd).st_size  # the lock keeps every other writer out
    try:
        _write_all(fd, text)
    except OSError as e:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass  # the partial line is cut when the campaign resumes
        raise NeuralPowerError(f"{f.name}: {_write_problem(e)}; every network written before is "
                               "kept: free some space and run the same command to resume") from None


def _write_all(fd: int, text: str) -> None:
    """Write ``text`` to ``fd`` and fsync it, or raise ``OSError``. A write may be short (a
    disk filling up): the rest is written or fails; a delayed allocation can fail only at fsync."""
    data = memoryview(text.encode("utf-8"))
    while data:
        data = data[os.write(fd, data):]
    os.fsync(fd)


def _write_problem(e: OSError) -> str:
    """A full disk, in the words of its cause."""
    return {errno.ENOSPC: "disk full",
            errno.EDQUOT: "disk full (quota exceeded)",
            errno.EFBIG: "file too large (the file size limit, ulimit -f, is reached)",
            }.get(e.errno, f"cannot write ({e.strerror or e})")


def _write_json(path: Path, data: dict) -> None:
    """Atomically: the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:  # the new content on disk before the name points at it
            _write_all(fd, json.dumps(data, indent=2, default=str) + "\n")
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise NeuralPowerError(f"{path}: {_write_problem(e)}") from None


def _software(zoo_family=False) -> dict:
    out = {"neuralpower": __version__, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": (torch.backends.cudnn.version()
                                                 if torch.backends.cudnn.is_available() else None),
           "python": platform.python_version(), "platform": platform.platform()}
    if zoo_family == "text":   # the text zoo's models are its default configurations
        import transformers
        out["transformers"] = transformers.__version__
    return out


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _bar(budget_s: float, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=round(budget_s), unit="s", desc="profiling", disable=not enabled,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} s "
                           "[{elapsed}<{remaining}{postfix}]")
