"""Power meters against a fake powercap tree and a fake NVML that raises pynvml's own errors."""
import math
import time
from types import SimpleNamespace

import pynvml
import pytest

from neuralpower.errors import NeuralPowerError
from neuralpower.profiling import meters
from neuralpower.profiling.meters import (MeterError, NoneMeter, NvmlMeter, RaplMeter, idle_power,
                                          open_meter)


def fake_clock(monkeypatch, *seconds, on_sleep=None):
    """Make the meters module read `seconds` from perf_counter in turn; sleep calls `on_sleep`."""
    ticks = iter(seconds)
    monkeypatch.setattr(meters, "time", SimpleNamespace(
        perf_counter=lambda: next(ticks), sleep=lambda s: on_sleep and on_sleep()))


# --- RAPL -----------------------------------------------------------------------------------------

RANGE_UJ = 1_000_000_000  # 1 kJ, small enough to wrap in a test


def write_domain(root, name, label, energy_uj, range_uj=RANGE_UJ):
    d = root / name
    d.mkdir(exist_ok=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{range_uj}\n")


def write_tree(root, pkg0, dram0, core0, pkg1, psys=0):
    """Two packages (package 0 with dram and core subdomains), plus domains never to be summed."""
    write_domain(root, "intel-rapl:0", "package-0", pkg0)
    write_domain(root, "intel-rapl:0:0", "core", core0)
    write_domain(root, "intel-rapl:0:1", "dram", dram0)
    write_domain(root, "intel-rapl:1", "package-1", pkg1)
    write_domain(root, "intel-rapl:2", "psys", psys)  # the platform: contains the packages
    write_domain(root, "intel-rapl-mmio:0", "package-0", psys)  # a second view of package 0


def test_rapl_sums_packages_and_dram_not_core(tmp_path, monkeypatch):
    write_tree(tmp_path, pkg0=5_000_000, dram0=1_000_000, core0=0, pkg1=7_000_000)
    meter = open_meter("cpu", rapl_root=tmp_path)
    assert isinstance(meter, RaplMeter) and meter.source == "rapl" and meter.measures_power
    fake_clock(monkeypatch, 10.0, 12.0)
    meter.start()
    write_tree(tmp_path, pkg0=25_000_000, dram0=3_000_000, core0=15_000_000, pkg1=13_000_000,
               psys=500_000_000)
    # package-0 20 J + dram 2 J + package-1 6 J over 2 s; core, psys and mmio add nothing
    assert meter.stop() == 14.0
    assert meter.describe() == {
        "source": "rapl", "method": "energy counter", "min_window_s": 0.2,
        "domains": ["intel-rapl:0 (package-0)", "intel-rapl:0:1 (dram)", "intel-rapl:1 (package-1)"]}


def test_rapl_counter_wrap_around(tmp_path, monkeypatch):
    write_tree(tmp_path, pkg0=990_000_000, dram0=0, core0=0, pkg1=0)
    meter = open_meter("cpu", rapl_root=tmp_path)
    fake_clock(monkeypatch, 0.0, 0.5)
    meter.start()
    write_tree(tmp_path, pkg0=8_000_000, dram0=0, core0=0, pkg1=0)
    assert meter.stop() == 36.0  # 10 J to the wrap + 8 J after it, over 0.5 s


def test_idle_power_measures_a_window(tmp_path, monkeypatch):
    write_tree(tmp_path, pkg0=0, dram0=0, core0=0, pkg1=0)
    meter = open_meter("cpu", rapl_root=tmp_path)
    fake_clock(monkeypatch, 1.0, 3.0, on_sleep=lambda: write_tree(
        tmp_path, pkg0=10_000_000, dram0=0, core0=0, pkg1=10_000_000))
    assert idle_power(meter) == 10.0


def test_rapl_read_failing_mid_window_raises(tmp_path):
    write_tree(tmp_path, pkg0=0, dram0=0, core0=0, pkg1=0)
    meter = open_meter("cpu", rapl_root=tmp_path)
    meter.start()
    (tmp_path / "intel-rapl:1" / "energy_uj").unlink()
    with pytest.raises(MeterError, match="RAPL read failed"):
        meter.stop()


def test_missing_rapl_tree_gives_none_meter(tmp_path):
    meter = open_meter("cpu", rapl_root=tmp_path / "absent")
    assert isinstance(meter, NoneMeter) and meter.source == "none" and not meter.measures_power
    assert "no readable RAPL package domain" in meter.describe()["reason"]
    meter.start()
    assert math.isnan(meter.stop())
    assert math.isnan(idle_power(meter, seconds=60))  # no sensor: returns at once
    meter.close()


def test_rapl_root_only_gives_none_meter_that_says_what_to_do(tmp_path, monkeypatch):
    write_tree(tmp_path, pkg0=0, dram0=0, core0=0, pkg1=0)
    real_read = meters._read

    def read(path):  # tests run as root, which chmod cannot stop: deny the read instead
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(meters, "_read", read)
    meter = open_meter("cpu", rapl_root=tmp_path)
    assert isinstance(meter, NoneMeter)
    assert "root only" in meter.describe()["reason"] and "chmod" in meter.describe()["reason"]


def test_open_meter_cpu_on_this_machine():
    with open_meter("cpu") as meter:
        assert meter.source in ("rapl", "nvml", "none")
        if meter.source == "none":
            assert meter.describe()["reason"]


def test_unknown_device_is_a_user_error():
    for device in ("tpu", "cuda:x", "cpu:0"):
        with pytest.raises(NeuralPowerError, match="unknown device"):
            open_meter(device)


# --- NVML -----------------------------------------------------------------------------------------

def nvml_error(code):
    return pynvml.NVMLError(code)  # pynvml maps the code to its subclass, e.g. NVMLError_NotSupported


class FakeNvml:
    """The pynvml functions the meter calls, by their real names, raising pynvml's real errors.

    `energy_mj`: the energy counter's successive readings, or None for a GPU without one.
    `power_mw`: power readings, cycled. `fail_power_after`: reads that succeed before one fails.
    """

    NVMLError = pynvml.NVMLError

    def __init__(self, energy_mj=None, power_mw=(100_000,), fail_power_after=None,
                 power_limit=True, init_error=None):
        self.energy_mj, self.power_mw = energy_mj, list(power_mw)
        self.fail_power_after, self.power_limit, self.init_error = fail_power_after, power_limit, init_error
        self.power_returned = []
        self.calls = []

    def nvmlInit(self):
        self.calls.append("init")
        if self.init_error is not None:
            raise nvml_error(self.init_error)

    def nvmlShutdown(self):
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByIndex(self, index):
        if index > 1:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return ("index", index)

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        return ("pci", bus_id)

    def nvmlDeviceGetName(self, handle):
        return "Fake GPU"

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        if not self.power_limit:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 250_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy_mj is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        reading = self.energy_mj.pop(0)
        if reading is None:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return reading

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.fail_power_after is not None and len(self.power_returned) >= self.fail_power_after:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        self.power_returned.append(self.power_mw[len(self.power_returned) % len(self.power_mw)])
        return self.power_returned[-1]


@pytest.fixture(autouse=True)
def cuda_index_is_nvml_index(monkeypatch):
    """Keep the tests independent of whatever GPUs torch sees on the machine running them."""
    monkeypatch.setattr(meters, "_cuda_pci_bus_id", lambda index: None)


def test_fake_nvml_uses_real_pynvml_names():
    names = [n for n in vars(FakeNvml) if n.startswith("nvml")]
    assert names and all(callable(getattr(pynvml, n, None)) for n in names)


def test_nvml_energy_counter(monkeypatch):
    fake = FakeNvml(energy_mj=[1_000, 50_000, 125_000])  # probe at open, start, stop
    meter = open_meter("cuda", nvml=fake)
    assert isinstance(meter, NvmlMeter) and meter.uses_energy_counter and meter.min_window_s == 0.5
    fake_clock(monkeypatch, 4.0, 5.5)
    meter.start()
    assert meter.stop() == 50.0  # 75 J over 1.5 s
    assert meter.describe() == {
        "source": "nvml", "method": "energy counter", "device": "cuda:0", "pci_bus_id": None,
        "gpu": "Fake GPU", "driver": "999.1", "power_limit_w": 250.0, "min_window_s": 0.5}
    meter.close()
    assert fake.calls == ["init", "shutdown"]


def test_nvml_energy_counter_read_failing_raises():
    meter = open_meter("cuda:0", nvml=FakeNvml(energy_mj=[0, 10, None]))
    meter.start()
    with pytest.raises(MeterError, match="GPU is lost"):
        meter.stop()


def test_nvml_samples_power_without_energy_counter():
    fake = FakeNvml(energy_mj=None, power_mw=[100_000, 200_000], power_limit=False)
    with open_meter("cuda:1", nvml=fake) as meter:
        assert not meter.uses_energy_counter and meter.min_window_s == 1.0
        meter.start()
        time.sleep(0.1)
        watts = meter.stop()
        assert len(fake.power_returned) >= 3
        assert watts == pytest.approx(sum(fake.power_returned) / len(fake.power_returned) / 1000)
        assert watts == pytest.approx(150, abs=50 / len(fake.power_returned) + 1e-9)
        assert meter.describe()["method"] == "sampling at 10 ms"
        assert meter.describe()["device"] == "cuda:1" and "power_limit_w" not in meter.describe()
        # A window shorter than one period still averages at least two readings.
        before = len(fake.power_returned)
        meter.start()
        assert meter.stop() > 0 and len(fake.power_returned) - before >= 2
    assert fake.calls == ["init", "shutdown"]


def test_nvml_sample_failing_mid_window_raises():
    meter = open_meter("cuda", nvml=FakeNvml(energy_mj=None, fail_power_after=3))
    meter.start()
    time.sleep(0.1)
    with pytest.raises(MeterError, match="GPU is lost"):
        meter.stop()
    meter.close()


def test_nvml_maps_cuda_index_through_pci_bus_id(monkeypatch):
    monkeypatch.setattr(meters, "_cuda_pci_bus_id", lambda index: "00000000:65:00.0")
    meter = open_meter("cuda:0", nvml=FakeNvml(energy_mj=[0]))
    assert meter._handle == ("pci", "00000000:65:00.0")
    assert meter.describe()["pci_bus_id"] == "00000000:65:00.0"


def test_nvml_unavailable_gives_none_meter():
    meter = open_meter("cuda", nvml=FakeNvml(init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
    assert isinstance(meter, NoneMeter)
    assert "NVML cannot read cuda:0" in meter.describe()["reason"]
    assert math.isnan(meter.stop())


def test_nvml_missing_gpu_gives_none_meter_and_shuts_nvml_down():
    fake = FakeNvml(energy_mj=[0])
    meter = open_meter("cuda:7", nvml=fake)
    assert isinstance(meter, NoneMeter) and "cuda:7" in meter.describe()["reason"]
    assert fake.calls == ["init", "shutdown"]
