"""Power meters: one interface over NVML (NVIDIA GPUs), RAPL (CPUs) and nothing at all.

    meter = open_meter("cuda:0")          # or "cpu"; a NoneMeter where no sensor is readable
    meter.start(); run_for_a_while(); watts = meter.stop()
    meter.describe()                      # what was measured and how, for the sidecar JSON
    meter.close()

Every figure is in watts. A meter that cannot read its sensor says why in ``describe()`` and its
``stop()`` returns nan, so a campaign measures runtime anyway and never writes an assumed power as a
measured one (DESIGN.md, "Measuring").
"""
from __future__ import annotations

import math
import re
import threading
import time
from pathlib import Path

from ..errors import NeuralPowerError

_PACKAGE = re.compile(r"intel-rapl:\d+")
_SUBDOMAIN = re.compile(r"intel-rapl:\d+:\d+")


class MeterError(Exception):
    """A sensor read failed during a window: the campaign marks that row and goes on."""


class Meter:
    """The interface, and the "none" meter: it measures nothing and ``stop()`` returns nan."""

    source = "none"
    measures_power = False
    min_window_s = 0.0  # shortest window worth measuring, in seconds

    def start(self) -> None:
        """Begin a measurement window."""

    def stop(self) -> float:
        """End the window; the mean power over it, in watts (nan when nothing is measured).
        Raises MeterError when the sensor could not be read."""
        return math.nan

    def describe(self) -> dict:
        return {"source": self.source}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class NoneMeter(Meter):
    """No readable sensor; ``reason`` tells the user why and, where there is one, what to do."""

    def __init__(self, reason: str):
        self.reason = reason

    def describe(self) -> dict:
        return {"source": "none", "reason": self.reason}


def idle_power(meter: Meter, seconds: float = 2.0) -> float:
    """Mean power in watts of the device doing nothing for `seconds`; nan for a meter without sensor."""
    if not meter.measures_power:
        return math.nan
    meter.start()
    time.sleep(seconds)
    return meter.stop()


class RaplMeter(Meter):
    """CPU power from Linux powercap RAPL energy counters (microjoules).

    Sums every package domain and its ``dram`` subdomain; ``core`` and ``uncore`` are parts of the
    package and would be counted twice. A counter that reads lower at stop than at start wrapped
    once, so ``max_energy_range_uj`` is added back. Windows are assumed short (under 60 s): a counter
    wraps after some hundreds of kJ, several minutes even at a few hundred watts, so a second wrap
    within one window cannot happen.
    """

    source = "rapl"
    measures_power = True
    min_window_s = 0.2  # counters update about every millisecond; 0.2 s keeps that error small

    def __init__(self, domains: list[Path]):
        """`domains`: readable powercap directories (see ``_rapl_domains``)."""
        self.domains = domains
        self._names = [f"{d.name} ({_read(d / 'name')})" for d in domains]
        self._range_uj = [int(_read(d / "max_energy_range_uj")) for d in domains]
        self._start = None

    def _energies_uj(self) -> list[int]:
        try:
            return [int(_read(d / "energy_uj")) for d in self.domains]
        except (OSError, ValueError) as e:
            raise MeterError(f"RAPL read failed: {e}") from e

    def start(self) -> None:
        self._start = (self._energies_uj(), time.perf_counter())

    def stop(self) -> float:
        if self._start is None:
            raise RuntimeError("stop() without start()")
        end_uj, end_s = self._energies_uj(), time.perf_counter()
        start_uj, start_s = self._start
        self._start = None
        uj = sum(e1 - e0 + (wrap if e1 < e0 else 0)
                 for e0, e1, wrap in zip(start_uj, end_uj, self._range_uj))
        return uj / 1e6 / (end_s - start_s)

    def describe(self) -> dict:
        return {
            "source": self.source,
            "method": "energy counter",
            "domains": self._names,
            "min_window_s": self.min_window_s,
        }


def _read(path: Path) -> str:
    return path.read_text().strip()


def _rapl_domains(root: Path) -> tuple[list[Path], str]:
    """The readable package and dram domains under `root`, and, when there are none, why."""
    domains, denied = [], []
    # Not intel-rapl-mmio:N, which some Intel CPUs have as a second view of package 0.
    for path in sorted(root.glob("intel-rapl:*")):
        package, sub = _PACKAGE.fullmatch(path.name), _SUBDOMAIN.fullmatch(path.name)
        try:
            name = _read(path / "name")
            # Top level: package-N only; "psys" (platform) already contains the packages.
            if not ((package and name.startswith("package")) or (sub and name == "dram")):
                continue
            int(_read(path / "energy_uj")), int(_read(path / "max_energy_range_uj"))
        except PermissionError:
            denied.append(path.name)
            continue
        except (OSError, ValueError):
            continue
        domains.append(path)
    if any(_PACKAGE.fullmatch(d.name) for d in domains):
        return domains, ""
    if denied:
        return [], (f"RAPL energy_uj under {root} is readable by root only (Linux 5.10 and newer); "
                    f"run as root or `sudo chmod a+r {root}/intel-rapl:*/energy_uj`")
    return [], f"no readable RAPL package domain under {root}"


class NvmlMeter(Meter):
    """NVIDIA GPU power through NVML.

    Uses the total-energy counter (millijoules, Volta and newer) where the GPU has one; otherwise a
    background thread samples the power reading (milliwatts) every 10 ms and the window's power is
    the mean of the samples.
    """

    source = "nvml"
    measures_power = True
    sample_period_s = 0.01

    def __init__(self, index: int = 0, nvml=None):
        """`index`: the CUDA device index; `nvml`: the pynvml module (tests pass a fake)."""
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        nvml.nvmlInit()
        try:
            bus_id = _cuda_pci_bus_id(index)
            self._handle = (nvml.nvmlDeviceGetHandleByPciBusId(bus_id) if bus_id
                            else nvml.nvmlDeviceGetHandleByIndex(index))
            self._info = {"device": f"cuda:{index}", "pci_bus_id": bus_id,
                          "gpu": nvml.nvmlDeviceGetName(self._handle),
                          "driver": nvml.nvmlSystemGetDriverVersion()}
            try:
                self._info["power_limit_w"] = nvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000
            except nvml.NVMLError:
                pass
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
                self.uses_energy_counter = True
            except nvml.NVMLError:  # NotSupported before Volta
                self.uses_energy_counter = False
        except BaseException:
            nvml.nvmlShutdown()
            raise
        # The counter needs a few hundred ms to beat its update granularity; the power reading is
        # itself an average over up to a second on recent GPUs, so sampled windows must be longer.
        self.min_window_s = 0.5 if self.uses_energy_counter else 1.0
        self._start = None
        self._samples: list[int] = []
        self._error = None
        self._done = threading.Event()
        self._thread = None

    def _call(self, fn):
        try:
            return fn(self._handle)
        except self._nvml.NVMLError as e:
            raise MeterError(f"NVML read failed on {self._info['device']}: {e}") from e

    def _sample(self) -> None:
        while True:
            try:
                self._samples.append(self._nvml.nvmlDeviceGetPowerUsage(self._handle))
            except self._nvml.NVMLError as e:
                self._error = e
                return
            if self._done.wait(self.sample_period_s):
                return

    def start(self) -> None:
        if self.uses_energy_counter:
            self._start = (self._call(self._nvml.nvmlDeviceGetTotalEnergyConsumption),
                           time.perf_counter())
            return
        self._samples, self._error = [], None
        self._done.clear()
        self._thread = threading.Thread(target=self._sample, name="nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> float:
        if self.uses_energy_counter:
            if self._start is None:
                raise RuntimeError("stop() without start()")
            end_mj, end_s = self._call(self._nvml.nvmlDeviceGetTotalEnergyConsumption), time.perf_counter()
            (start_mj, start_s), self._start = self._start, None
            return (end_mj - start_mj) / 1000 / (end_s - start_s)
        if self._thread is None:
            raise RuntimeError("stop() without start()")
        self._done.set()
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise MeterError(f"NVML read failed on {self._info['device']}: {self._error}") from self._error
        if len(self._samples) < 2:  # a window shorter than the sampling period: read once more
            self._samples.append(self._call(self._nvml.nvmlDeviceGetPowerUsage))
        return sum(self._samples) / len(self._samples) / 1000

    def describe(self) -> dict:
        method = ("energy counter" if self.uses_energy_counter
                  else f"sampling at {self.sample_period_s * 1000:g} ms")
        return {"source": self.source, "method": method, **self._info, "min_window_s": self.min_window_s}

    def close(self) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()
            self._thread = None
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


def _cuda_pci_bus_id(index: int) -> str | None:
    """NVML's bus id ("00000000:65:00.0") of CUDA device `index`, or None when torch cannot tell.

    CUDA and NVML may number GPUs differently (CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER); the PCI
    address is the same for both. Without it, the NVML index is taken to be the CUDA index.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        p = torch.cuda.get_device_properties(index)
        if not all(hasattr(p, a) for a in ("pci_domain_id", "pci_bus_id", "pci_device_id")):
            return None
        return f"{p.pci_domain_id:08x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
    except Exception:  # no torch, no CUDA, an old torch: fall back to the index
        return None


def open_meter(device: str, *, rapl_root: str | Path = "/sys/class/powercap", nvml=None) -> Meter:
    """The power meter for `device` ("cpu", "cuda" or "cuda:N"): a RaplMeter or NvmlMeter where the
    sensor is readable, else a NoneMeter whose ``describe()`` says why. Never raises for a missing
    sensor; raises NeuralPowerError for a device string it does not understand."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        domains, reason = _rapl_domains(Path(rapl_root))
        return RaplMeter(domains) if domains else NoneMeter(reason)
    if kind != "cuda" or not (index == "" or index.isdigit()):
        raise NeuralPowerError(f"unknown device {device!r}: expected cpu, cuda or cuda:N")
    index = int(index or 0)
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return NoneMeter("NVML is not installed: pip install nvidia-ml-py")
    try:
        return NvmlMeter(index, nvml)
    except nvml.NVMLError as e:
        return NoneMeter(f"NVML cannot read cuda:{index}: {e}")
