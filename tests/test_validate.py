"""`validate`: predicted against measured on this machine, for real networks."""
import json
import subprocess
import sys
from pathlib import Path

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
    s = out["summary"]["runtime_ms"]
    assert s["n"] == 2 and s["kendall_tau"] in (-1.0, 1.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


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
