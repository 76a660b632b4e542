"""`measure`: a whole network's runtime (and power, where a sensor is readable), for real."""
import json
import math
import subprocess
import sys

import pytest

from neuralpower import NeuralPowerError
from neuralpower.measure import measure
from neuralpower.nets import build
from neuralpower.profiling.meters import Meter


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralpower", "measure", *args],
                          capture_output=True, text=True, timeout=300)


def test_measure_json_of_a_real_torchvision_network():
    r = _cli("torchvision:resnet18", "--input", "1x3x64x64", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["network"] == "torchvision:resnet18" and out["device"]
    assert set(out["totals"]) == {"runtime_ms", "power_w", "energy_mj"}
    t = out["totals"]
    assert t["runtime_ms"] > 0 and out["runtime_min_ms"] <= t["runtime_ms"]
    assert out["repeats"] >= 10 and out["reference_ms"] > 0   # the device's speed meanwhile
    assert out["reference_ops_ms"] > 0   # and its small-ops probe (the phase of a shared host)
    # No sensor on this machine: nothing is invented, and the source says why.
    assert t["power_w"] is None and t["energy_mj"] is None
    assert out["power_source"].startswith("none (")


def test_larger_inputs_take_longer():
    model = build("torchvision:resnet18", device="cpu")
    # the small input measured before and after the large one: another process that slows one
    # measurement on this shared 2-core VM (a CI run once saw 22.5 ms for what takes 3) cannot
    # make a small input look as slow as a large one
    small = [measure(model, (1, 3, 64, 64), target_s=0.3)["runtime_ms"]]
    large = measure(model, (1, 3, 192, 192), target_s=0.3)
    small.append(measure(model, (1, 3, 64, 64), target_s=0.3)["runtime_ms"])
    # 9x the pixels: 2-3x the time on the development VM (about 2x in its slow phase, when the
    # cost of each op rises: benchmarks/results/probe_drift.md)
    assert large["runtime_ms"] > 1.5 * min(small), (small, large["runtime_ms"])


class _SteadyMeter(Meter):
    """A sensor this machine lacks, reading a steady 42 W: tests the power path's arithmetic."""
    source, measures_power, min_window_s = "fake", True, 0.05

    def stop(self):
        return 42.0


def test_power_and_energy_come_from_the_meter(tmp_path):
    f = tmp_path / "tiny.py"
    f.write_text("import torch\n"
                 "def net():\n"
                 "    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU())\n")
    model = build(f"{f}:net", device="cpu")
    m = measure(model, (8, 64), meter=_SteadyMeter(), target_s=0.1, power_window_s=0.05)
    assert m["power_w"] == 42.0 and m["power_source"] == "fake"
    assert math.isclose(m["energy_mj"], 42.0 * m["runtime_ms"])


def test_a_wrong_input_shape_is_one_line():
    r = _cli("torchvision:resnet18", "--input", "1x3")
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "cannot run ResNet with input 1x3" in r.stderr and "Traceback" not in r.stderr


def test_an_unknown_network_is_one_line():
    with pytest.raises(NeuralPowerError, match="no model"):
        build("torchvision:no_such_net", device="cpu")
