"""Architectures described by their layers (JSON lines), predicted in one vectorised pass and
ranked: the same totals as predicting each traced network, refusals with the line number."""
import json

import numpy as np
import pandas as pd
import pytest

from neuralpower import NeuralPowerError, nets, predict
from neuralpower.archs import layers_of, predict_many, read_jsonl, to_jsonl
from neuralpower.cli import main
from neuralpower.trace import trace

NETS = ["resnet18", "mobilenet_v2", "squeezenet1_0"]


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """The traced layers of three real torchvision networks, as a JSON-lines search space."""
    path = tmp_path_factory.mktemp("space") / "space.jsonl"
    models = {n: nets.build(f"torchvision:{n}") for n in NETS}
    to_jsonl([{"name": n, "top1_error": 0.3 - 0.01 * i,
               "layers": layers_of(trace(m, (1, 3, 224, 224)))}
              for i, (n, m) in enumerate(models.items())], path)
    return path, models


def test_one_pass_gives_each_networks_own_totals(space, cpu_predictor):
    path, models = space
    archs = read_jsonl(path)
    assert list(archs.networks.network) == NETS
    many = predict_many(archs, cpu_predictor).set_index("network")
    for name, model in models.items():
        alone = predict(model, (1, 3, 224, 224), cpu_predictor).totals
        got = many.loc[name]
        assert got.runtime_ms == pytest.approx(alone["runtime_ms"], rel=1e-9)
        assert got.energy_mj == pytest.approx(alone["energy_mj"], rel=1e-9)
        assert got.power_w == pytest.approx(alone["power_w"], rel=1e-9)
        assert got.macs == pytest.approx(alone["macs"], rel=1e-9)
        assert (got.layers_modeled, got.layers_unmodeled) == (alone["layers_modeled"],
                                                              alone["layers_unmodeled"])


def test_modules_at_once(space, cpu_predictor):
    _, models = space
    many = predict_many(models, cpu_predictor).set_index("network")
    for name, model in models.items():
        alone = predict(model, (1, 3, 224, 224), cpu_predictor).totals
        assert many.loc[name, "runtime_ms"] == pytest.approx(alone["runtime_ms"], rel=1e-9)


NAMED = ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:squeezenet1_0",
         "torchvision:shufflenet_v2_x0_5", "torchvision:alexnet"]


def test_names_traced_in_worker_processes_as_in_this_one(cpu_predictor, tmp_path):
    from neuralpower.archs import trace_many

    f = tmp_path / "mine.py"
    f.write_text("from torch import nn\n\ndef make():\n"
                 "    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(),"
                 " nn.LazyLinear(10))\n")
    names = NAMED + [f"{f}:make"]
    shape = (1, 3, 64, 64)
    forked = trace_many(names, shape, workers=2)
    pd.testing.assert_frame_equal(forked, trace_many(names, shape, workers=1))
    assert list(forked.network.unique()) == names
    many = predict_many(names, cpu_predictor, shape).set_index("network")
    for name in names:
        alone = predict(nets.build(name), shape, cpu_predictor).totals
        assert many.loc[name, "runtime_ms"] == pytest.approx(alone["runtime_ms"], rel=1e-9)


def test_worker_processes_trace_after_this_process_computed_in_threads():
    # Swin's window mask is computed for real (subnormal.py); once this process has run such a
    # computation in its OpenMP pool, a forked worker entering that pool waited for ever
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(2); "
            "from neuralpower.archs import trace_many; from neuralpower.nets import build; "
            "from neuralpower.trace import trace; trace(build('torchvision:swin_t'), (1, 3, 224, 224)); "
            "torch.randn(256, 256) @ torch.randn(256, 256); "
            "print(len(trace_many(['torchvision:swin_t'] * 4)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and int(r.stdout.split()[-1]) > 0, r.stderr[-500:]


def test_a_bad_name_in_a_worker_is_a_one_line_error(tmp_path):
    from neuralpower.archs import trace_many

    f = tmp_path / "raises.py"
    f.write_text("def make():\n    raise ValueError('no such width')\n")
    with pytest.raises(NeuralPowerError, match="no such width"):
        trace_many(NAMED[:3] + [f"{f}:make"], (1, 3, 32, 32), workers=2)


def test_count_repeats_a_layer(cpu_predictor):
    import pandas as pd

    conv = {"kind": "conv2d", "batch": 1, "in_channels": 16, "in_h": 28, "in_w": 28,
            "out_channels": 32, "out_h": 28, "out_w": 28, "kernel_h": 3, "kernel_w": 3,
            "stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1}
    layers = pd.DataFrame([{**conv, "network": "x3", "count": 3}]
                          + [{**conv, "network": "three", "count": 1}] * 3)
    t = predict_many(layers, cpu_predictor).set_index("network")
    assert np.allclose(t.loc["x3"].to_numpy(dtype=float), t.loc["three"].to_numpy(dtype=float))
    assert t.loc["x3", "layers_modeled"] == 3


def test_rank_a_jsonl_file_beside_a_named_network(space, cpu_predictor_file, tmp_path):
    path, _ = space
    out = tmp_path / "rank.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["rank", str(cpu_predictor_file), str(path), "torchvision:alexnet",
                     "--json", "--plot", str(tmp_path / "r.png")])
    assert code == 0
    result = json.loads(buf.getvalue())
    out.write_text(buf.getvalue())
    assert [r["network"] for r in result["networks"]] == ["torchvision:alexnet", *NETS]
    by_name = {r["network"]: r for r in result["networks"]}
    assert by_name["resnet18"]["top1_error"] == 0.3
    assert by_name["resnet18"]["error_source"] == "given in the file"
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["rank", str(cpu_predictor_file), str(path), "--show", "1", "--plot", ""]) == 0
    text = buf.getvalue()
    assert "of 3 networks shown" in text


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 1: not JSON"),
    ('{"name": "a"}', 'line 1: expected an object with a list of "layers"'),
    ('{"name": "a", "layers": []}', "line 1: a has no layers"),
    ('{"name": "a", "top1_error": 30, "layers": [{"kind": "relu"}]}', "top1_error must be"),
    ('{"name": "a", "layers": [{"kind": "linear", "batch": 1, "in_features": 8}]}',
     "line 1, layer 0: linear out_features missing"),
    ('{"name": "a", "layers": [{"kind": "linear", "batch": 1.5, "in_features": 8, '
     '"out_features": 8}]}', "linear batch 1.5 (a whole number from 1 is needed)"),
    ('{"name": "a", "layers": [{"kind": "linear", "batch": "one", "in_features": 8, '
     '"out_features": 8}]}', "line 1, layer 0: batch = 'one' is not a number"),
    ('{"name": "a", "layers": [{"size": 3}]}', 'layer 0: not an object with a "kind"'),
    ('{"name": "a", "layers": [3]}', 'layer 0: not an object of numbers and a "kind"'),
    ('{"name": "a", "layers": [{"kind": "relu"}]}\n{"name": "a", "layers": [{"kind": "relu"}]}',
     "line 2: name 'a' is used by line 1 too"),
    ("", "no architectures in it"),
])
def test_bad_jsonl_is_refused_with_its_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(NeuralPowerError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_jsonl(path)
