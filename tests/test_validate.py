"""`validate`: predicted against measured on this machine, for real networks."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from neuralpower.validate import summary

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "amd_epyc_2t_cpu.predictor"


def test_validate_two_real_networks_json_and_plot(tmp_path):
    png = tmp_path / "v.png"
    r = subprocess.run([sys.executable, "-m", "neuralpower", "validate", str(MODEL),
                        "torchvision:resnet18", "torchvision:squeezenet1_1", "--input",
                        "1x3x96x96", "--json", "--plot", str(png)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [n["network"] for n in out["networks"]] == ["torchvision:resnet18",
                                                       "torchvision:squeezenet1_1"]
    for n in out["networks"]:
        p, m, e = n["predicted"], n["measured"], n["error_pct"]
        assert p["runtime_ms"] > 0 and m["runtime_ms"] > 0
        assert abs(e["runtime_ms"] - 100 * (p["runtime_ms"] / m["runtime_ms"] - 1)) < 1e-9
        assert m["power_w"] is None and e["power_w"] is None  # no sensor here
        # the prediction is taken to the speed the device ran at during the measurement
        assert n["reference_ms"] > 0 and n["speed"] > 0 and n["reference_ops_ms"] > 0
    s = out["summary"]["runtime_ms"]
    assert s["n"] == 2 and s["kendall_tau"] in (-1.0, 1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_speed_scaling_by_hand():
    import pandas as pd

    from neuralpower import Predictor
    from neuralpower.data import at_reference_speed

    d = pd.DataFrame({"kind": ["relu"] * 4, "runtime_ms": [1.0, 2.0, 3.0, 4.0],
                      "network_runtime_ms": [10.0, 10.0, 30.0, 40.0],
                      "reference_ms": [0.5, 0.5, 1.0, None]})
    scaled, nominal = at_reference_speed(d)
    assert nominal == 0.5  # the median probe time over the rows that have one
    # a row measured while the probe took twice as long ran at half speed: halved
    assert list(scaled.runtime_ms) == [1.0, 2.0, 1.5, 4.0]
    assert list(scaled.network_runtime_ms) == [10.0, 10.0, 15.0, 40.0]
    assert list(d.runtime_ms) == [1.0, 2.0, 3.0, 4.0]  # the caller's frame is left alone
    assert at_reference_speed(scaled)[0].runtime_ms.equals(scaled.runtime_ms)  # idempotent
    assert at_reference_speed(d.drop(columns="reference_ms"))[1] is None
    # brought to another probe time (profile_accuracy --test: another campaign's speed)
    other, nominal = at_reference_speed(d, 0.25)
    assert nominal == 0.25 and list(other.runtime_ms) == [0.5, 1.0, 4.0]  # 1.0: 4x off, out
    # (a row whose probe ran more than DISTURBED = 2 times off that time is left out)
    assert at_reference_speed(d, 0.3)[0].runtime_ms.tolist() == pytest.approx([0.6, 1.2, 4.0])

    p = Predictor(card={"reference_ms": 0.5})
    assert p.speed(0.75) == 1.5 and p.speed(None) == 1.0
    assert Predictor(card={}).speed(0.75) == 1.0


def test_summary_by_hand():
    rows = [{"predicted": {"runtime_ms": p, "power_w": None, "energy_mj": None},
             "measured": {"runtime_ms": m, "power_w": None, "energy_mj": None},
             "error_pct": {"runtime_ms": 100 * (p / m - 1), "power_w": None, "energy_mj": None}}
            for p, m in [(10.5, 10), (17, 20), (31.5, 30), (42, 40)]]
    s = summary(rows)["runtime_ms"]
    assert abs(s["median_abs_error_pct"] - 5.0) < 1e-9  # errors +5, -15, +5, +5
    assert s["within_10_pct_share"] == 0.75
    assert abs(s["kendall_tau"] - 1.0) < 1e-12          # same order
    assert "power_w" not in summary(rows)


def test_validate_bad_network_is_one_line():
    r = subprocess.run([sys.executable, "-m", "neuralpower", "validate", str(MODEL),
                        "torchvision:resnet18", "torchvision:nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "nope" in r.stderr

def test_validation_text_flags_measurements_far_off_the_reference_speed():
    from neuralpower.report import validation_text

    def net(name, speed):
        totals = {"runtime_ms": 10.0, "power_w": None, "energy_mj": None}
        return {"network": name, "predicted": totals, "measured": totals, "speed": speed,
                "error_pct": {"runtime_ms": 0.0, "power_w": None, "energy_mj": None},
                "layers_unmodeled": 0, "power_source": "none"}

    result = {"device": "d", "measured_on": "d",
              "networks": [net("a", 1.0), net("b", 1.7), net("c", 0.8), net("d", 0.84)]}
    result["summary"] = summary(result["networks"])
    notes = [line for line in validation_text(result).splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: b, c measured at a speed")
    result["networks"] = [net("a", 1.1)]
    assert "note:" not in validation_text(result)
