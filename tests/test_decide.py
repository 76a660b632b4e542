"""The deciding commands end to end: `rank`, `report` and `demo`, as a user runs them."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
POWER = ROOT / "models" / "raptorlake_cpu.predictor"       # runtime and power
RUNTIME = ROOT / "models" / "amd_epyc_2t_cpu.predictor"    # runtime only
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "neuralpower", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_rank_json_and_plot(tmp_path):
    png = tmp_path / "rank.png"
    r = run("rank", POWER, "torchvision:resnet18", "torchvision:squeezenet1_1=40%",
            "--input", "1x3x64x64", "--alpha", "0", "--alpha", "3", "--json", "--plot", png)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    nets = {n["network"]: n for n in out["networks"]}
    assert abs(nets["torchvision:resnet18"]["top1_error"] - (1 - 0.69758)) < 1e-12
    assert nets["torchvision:squeezenet1_1"]["top1_error"] == 0.4
    for n in nets.values():
        assert n["energy_mj"] > 0 and n["energy_source"].startswith("predicted")
        for a in ("0.0", "3.0"):
            assert abs(n["epr"][a] - n["top1_error"] ** float(a) * n["energy_mj"]) < 1e-9
    assert out["alphas"] == [0.0, 3.0] and set(out["winners"]) == {"0.0", "3.0"}
    assert png.read_bytes()[:8] == PNG


def test_rank_text_marks_winners_and_needs_a_power_source(tmp_path):
    r = run("rank", RUNTIME, "torchvision:resnet18", "torchvision:squeezenet1_1",
            "--input", "1x3x64x64", "--plot", tmp_path / "r.png")
    assert r.returncode == 1 and "--power" in r.stderr and r.stderr.count("\n") == 1
    r = run("rank", RUNTIME, "torchvision:resnet18", "torchvision:squeezenet1_1",
            "--input", "1x3x64x64", "--power", "30", "--plot", "")
    assert r.returncode == 0, r.stderr
    assert "assumed 30 W (stated by the user)" in r.stdout and "winner" in r.stdout
    assert "*" in r.stdout and not (ROOT / "ranking.png").exists()


@pytest.mark.parametrize("args, message", [
    (["torchvision:resnet18=30.2"], "30.2%"),
    (["timm:resnet26d"], "=TOP1_ERROR"),
    (["torchvision:resnet18", "--alpha", "-1"], "alpha"),
    (["torchvision:nope"], "nope"),
])
def test_rank_bad_input_is_one_line(args, message):
    r = run("rank", POWER, *args, "--plot", "")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr


def test_report_writes_png_and_html(tmp_path):
    r = run("report", POWER, "torchvision:resnet18", "--input", "1x3x64x64", "--top", "3",
            "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "By block" in r.stdout and "layer4" in r.stdout
    png, page = tmp_path / "resnet18_hotspots.png", tmp_path / "resnet18.html"
    assert png.read_bytes()[:8] == PNG
    html = page.read_text()
    assert html.count("<table") >= 4 and "data:image/png;base64," in html
    r = run("report", POWER, "torchvision:resnet18", "--depth", "0", "-o", tmp_path)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0


def test_demo_end_to_end_under_a_small_budget(tmp_path):
    out = tmp_path / "reports"
    r = run("demo", "-o", out, "--budget", "15", "--input", "1x3x64x64", "--quiet", "--nets",
            "torchvision:resnet18", "torchvision:squeezenet1_1", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for step in ("[1/5] profiling", "[2/5] fitting", "[3/5] predicting and measuring",
                 "[4/5] hotspots", "[5/5] Energy-Precision ranking"):
        assert step in r.stdout
    assert "median |error|" in r.stdout and "By block" in r.stdout
    # no sensor here: the energy is another device's, and the report says whose
    assert "no readable power sensor" in r.stdout and "raptorlake" in r.stdout
    for name in ("profile_cpu.csv", "profile_cpu.json", "profile_cpu_zoo.csv", "cpu.predictor",
                 "cpu.md", "validation.png", "hotspots_resnet18.png", "ranking.png"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and html.count("<table") >= 4
    # power windows on at most half the synthetic networks' time, none on the real networks
    # (an H100 spent the demo's budget on them: 239 rows, no real network; 2026-12-06)
    synthetic = json.loads((out / "profile_cpu.json").read_text())
    real = json.loads((out / "profile_cpu_zoo.json").read_text())
    assert synthetic["runs"][-1]["power_share"] == 0.5
    assert "runtime only" in real["power"]["reason"] and real["runs"][-1]["rows"] > 0
    # a stated power ranks with this device's own runtimes, and says so
    r = run("demo", "-o", out, "--budget", "5", "--input", "1x3x64x64", "--quiet", "--power",
            "40", "--nets", "torchvision:resnet18", "torchvision:squeezenet1_1", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stated by the user" in r.stdout


def test_demo_bad_network_fails_before_profiling(tmp_path):
    r = run("demo", "-o", tmp_path / "r", "--nets", "torchvision:nope", "--budget", "5")
    assert r.returncode == 1 and "nope" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "r").exists()
