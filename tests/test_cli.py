"""The command line as a user runs it: real subprocesses, JSON keys of DESIGN.md, clean errors."""
import json
import subprocess
import sys

import pytest

from .conftest import PUBLIC, ROOT


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "neuralpower", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def assert_clean_error(r, fragment):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr


def test_predict_json_keys(cpu_predictor_file):
    r = run("predict", cpu_predictor_file, "torchvision:resnet18", "--json", "--top", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"network", "device", "totals", "layers"} <= set(out)
    assert {"runtime_ms", "power_w", "energy_mj"} <= set(out["totals"])
    assert out["network"] == "torchvision:resnet18"
    layer_keys = {"name", "kind", "runtime_ms", "power_w", "energy_mj"}
    assert all(layer_keys <= set(layer) for layer in out["layers"])
    modeled = [layer for layer in out["layers"] if layer["modeled"]]
    assert sum(layer["runtime_ms"] for layer in modeled) == pytest.approx(out["totals"]["runtime_ms"])
    assert sum(layer["energy_mj"] for layer in modeled) == pytest.approx(out["totals"]["energy_mj"])
    assert len(out["top"]) == 3
    assert {u["kind"] for u in out["unmodeled"]} >= {"batch_norm", "relu", "add"}


def test_predict_table(cpu_predictor_file):
    r = run("predict", cpu_predictor_file, "torchvision:resnet18", "--input", "2x3x128x128")
    assert r.returncode == 0, r.stderr
    assert "layer1.0.conv1" in r.stdout and "Total: runtime" in r.stdout
    assert "Top 5 layers by energy" in r.stdout and "Unmodeled ops" in r.stdout
    assert "input 2x3x128x128" in r.stdout


def test_predict_a_network_from_a_file(cpu_predictor_file, tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "def tiny():\n"
        "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))\n")
    r = run("predict", cpu_predictor_file, f"{tmp_path / 'mynet.py'}:tiny", "--input", "1x3x32x32",
            "--json")
    assert r.returncode == 0, r.stderr
    kinds = [layer["kind"] for layer in json.loads(r.stdout)["layers"]]
    assert kinds == ["conv2d", "relu", "linear"]


def test_fit_then_score(tmp_path):
    sample = tmp_path / "sample.csv"
    lines = (PUBLIC / "willowec_raptorlake_cpu.csv").read_text().splitlines()
    sample.write_text("\n".join(lines[:1] + [ln for ln in lines[1::4] if ",max_pool2d," not in ln][:400]))
    model = tmp_path / "m.predictor"
    r = run("fit", sample, "-o", model, "--card", tmp_path / "card.md")
    assert r.returncode == 0, r.stderr
    assert model.exists() and "Cross-validated errors" in (tmp_path / "card.md").read_text()
    r = run("score", model, PUBLIC / "willowec_raptorlake_cpu.csv", "--json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert set(scores) == {"conv2d", "linear"}  # no max_pool2d model: its rows are not scored
    for per_target in scores.values():
        for s in per_target.values():
            assert set(s) == {"n", "rmspe_pct", "mape_pct", "median_ape_pct"}


def test_fit_skips_kinds_and_targets_without_data(tmp_path):
    d = tmp_path / "d.csv"
    d.write_text("kind,batch,in_features,out_features,runtime_ms,power_w,device\n"
                 + "".join(f"linear,{b},{i},{o},{0.001 * b * i * o / 1000 + 0.01},,cpu\n"
                           for b in (1, 4, 16) for i in (32, 64, 128, 256) for o in (16, 64, 256))
                 + "conv3d,1,,,0.01,,cpu\n")
    r = run("fit", d, "-o", tmp_path / "m.predictor")
    assert r.returncode == 0, r.stderr
    assert "skipping kinds with no model: conv3d (1 rows)" in r.stderr
    assert "no power_w measured for linear" in r.stderr


@pytest.mark.parametrize("args, fragment", [
    (["predict", "{model}", "torchvision:no_such_net"], "torchvision has no model 'no_such_net'"),
    (["predict", "{model}", "resnet18"], "expected torchvision:NAME"),
    (["predict", "{model}", "nowhere.py:f"], "network file 'nowhere.py' not found"),
    (["predict", "{model}", "torchvision:resnet18", "--input", "1x3x224"], "cannot trace ResNet"),
    (["predict", "{model}", "torchvision:resnet18", "--input", "axb"], "input shape 'axb'"),
    (["predict", "{model}", "torchvision:resnet18", "--input", "1x0x2x2"], "sizes must be positive"),
    (["predict", "missing.predictor", "torchvision:resnet18"], "predictor file 'missing.predictor' not found"),
    (["predict", "{csv}", "torchvision:resnet18"], "not a valid neuralpower predictor"),
    (["score", "{model}", "missing.csv"], "measurement file 'missing.csv' not found"),
    (["fit", "missing.csv", "-o", "x.predictor"], "not found"),
    (["fit", "{empty}", "-o", "x.predictor"], "file is empty"),
])
def test_bad_input_is_one_line_and_non_zero(cpu_predictor_file, tmp_path, args, fragment):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fill = {"model": cpu_predictor_file, "csv": PUBLIC / "neusight_t4_linear.csv", "empty": empty}
    r = run(*[a.format(**fill) for a in args], cwd=tmp_path)
    assert_clean_error(r, fragment)
    assert not (tmp_path / "x.predictor").exists()


def test_network_with_no_modeled_layer(cpu_predictor_file, tmp_path):
    (tmp_path / "act.py").write_text("import torch.nn as nn\ndef net():\n    return nn.ReLU()\n")
    r = run("predict", cpu_predictor_file, "act.py:net", "--input", "1x8", cwd=tmp_path)
    assert_clean_error(r, "no layer of a kind this predictor models")
