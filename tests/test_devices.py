"""Device names (devices.py): a CPU's family and model numbers beside a generic brand string,
names recorded before them, and what fit and validate make of both."""
import sys
from pathlib import Path

import pytest
import torch

from neuralpower import NeuralPowerError, Predictor
from neuralpower.devices import device_name, one_device, same_device

XEON = "Intel(R) Xeon(R) Processor"
BLOCK = f"processor\t: {{i}}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: {{model}}\n" \
        f"model name\t: {XEON}\nstepping\t: 2\n\n"


def cpuinfo(tmp_path, *models) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text("".join(BLOCK.format(i=i, model=m) for i, m in enumerate(models)))
    return str(path)


def test_a_cpu_is_named_by_its_brand_string_and_its_family_and_model(tmp_path):
    cpu = torch.device("cpu")
    assert device_name(cpu, 2, cpuinfo(tmp_path, 207, 207)) == \
        f"{XEON} (family 6 model 207), 2 threads"
    assert device_name(cpu, 1, cpuinfo(tmp_path, 143)) == f"{XEON} (family 6 model 143), 1 thread"
    # no numbers to read (another architecture's cpuinfo): the brand string alone
    (tmp_path / "arm").write_text("processor\t: 0\nmodel name\t: Neoverse-V2\n\n")
    assert device_name(cpu, 2, str(tmp_path / "arm")) == "Neoverse-V2, 2 threads"
    assert device_name(cpu, 2, str(tmp_path / "missing")).endswith(", 2 threads")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_this_machines_name_has_its_numbers():
    info = Path("/proc/cpuinfo").read_text()
    name = device_name(torch.device("cpu"), 2)
    assert name.endswith(", 2 threads")
    if "cpu family" in info:   # x86
        family = next(line.split(":")[1].strip() for line in info.splitlines()
                      if line.startswith("cpu family"))
        assert f"(family {family} model " in name


def test_names_without_the_numbers_are_any_cpu_of_that_brand():
    old, new = f"{XEON}, 2 threads", f"{XEON} (family 6 model 207), 2 threads"
    other = f"{XEON} (family 6 model 143), 2 threads"
    assert same_device(old, new) and same_device(new, old) and same_device(new, new)
    assert not same_device(new, other)
    assert not same_device(old, f"{XEON}, 1 thread") and not same_device(old, "AMD EPYC, 2 threads")
    assert one_device([old, new, old]) == new
    assert one_device([old, new, other]) is None
    assert one_device([old]) == old and one_device([]) == "unknown device"


def test_fit_takes_old_and_new_names_of_one_cpu_and_refuses_two_cpus(cpu_rows):
    rows = cpu_rows[cpu_rows.kind == "max_pool2d"].head(60).copy()
    rows["device"] = f"{XEON}, 2 threads"
    rows.loc[rows.index[:30], "device"] = f"{XEON} (family 6 model 207), 2 threads"
    p = Predictor.fit(rows, log=lambda m: None)
    assert p.card["device"] == f"{XEON} (family 6 model 207), 2 threads"
    rows.loc[rows.index[30:40], "device"] = f"{XEON} (family 6 model 143), 2 threads"
    with pytest.raises(NeuralPowerError, match="several devices"):
        Predictor.fit(rows, log=lambda m: None)
