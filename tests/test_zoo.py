"""Profiling real networks (``profile --zoo``): seeded draws of torchvision classifiers, which of
their modules are timed, and a real short campaign on this machine's CPU."""
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

from neuralpower import NeuralPowerError, nets
from neuralpower.data import load
from neuralpower.profiling import Campaign, sidecar_path, zoo
from neuralpower.profiling.synthetic import Limits, work
from neuralpower.profiling.timing import time_network
from neuralpower.trace import trace

LIMITS = Limits(max_macs=3 * 10**8, max_pool_macs=10**8, max_elements=2**24)


def test_zoo_specs_are_seeded_and_within_limits():
    assert zoo.sample(0, 5, LIMITS) == zoo.sample(0, 5, LIMITS)
    specs = [zoo.sample(0, i, LIMITS) for i in range(12)]
    assert len({s["zoo"] for s in specs}) > 6           # spread over the zoo, not one network
    assert zoo.sample(1, 5, LIMITS) != specs[5]
    for spec in specs:
        assert spec["zoo"].startswith("torchvision:")
        batch, channels, h, w = spec["input"]
        assert channels == 3 and h == w and h in zoo.SIZES and 1 <= batch <= zoo.MAX_BATCH
        compute, _ = work(zoo.trace_spec(spec))
        # the batch is cut to the limits; only a network whose layer exceeds them at batch 1
        # keeps batch 1
        assert compute.max() <= LIMITS.max_macs or batch == 1
        model = nets.build(spec["zoo"])
        assert sum(p.numel() for p in model.parameters()) <= zoo.MAX_PARAMS


def test_only_leaf_modules_running_one_op_once_are_timed():
    model = nets.build("torchvision:resnet18")
    table = trace(model, (1, 3, 64, 64))
    timed = {name: op.kind for _, name, op in zoo.timed_layers(model, table)}
    assert timed["conv1"] == "conv2d" and timed["bn1"] == "batch_norm"
    assert timed["maxpool"] == "max_pool2d" and timed["fc"] == "linear"
    assert timed["layer1.0.conv2"] == "conv2d" and timed["layer2.0.downsample.0"] == "conv2d"
    # a block's ReLU module runs twice per block (after bn1 and after the residual add), and
    # the add itself runs in the block's forward, not in a leaf: hooks could not time them alone
    assert "layer1.0.relu" not in timed and "layer1.0" not in timed
    assert timed["relu"] == "relu"   # the stem's ReLU runs once
    assert sum(k == "conv2d" for k in timed.values()) == 20


def test_time_network_times_the_named_modules_of_a_nested_network():
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), nn.Conv2d(8, 8, 1)).eval()
    named = [("0.0", model[0][0]), ("1", model[1])]
    t = time_network(model, torch.randn(1, 3, 32, 32), min_repeats=5, max_repeats=5,
                     target_s=0.01, modules=named)
    assert set(t.layers) == {"0.0", "1"}
    assert all(len(v) == 5 and min(v) > 0 for v in t.layers.values())
    assert len(t.network) == 5


@pytest.fixture(scope="module")
def zoo_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "zoo.csv"
    summary = Campaign(out, zoo=True).run(budget_s=20, progress=False)
    assert summary["networks"] >= 2 and summary["failed"] == 0
    return out


def test_a_short_zoo_campaign_writes_real_layers(zoo_csv):
    rows = pd.read_csv(zoo_csv)
    assert (rows.status == "ok").all() and (rows.runtime_ms > 0).all()
    assert rows.network.str.match(r"z0-\d{6}-\w+$").all()
    # the whole network's time, one per network (its rows do not cover all its ops)
    assert (rows.network_runtime_ms > 0).all()
    assert (rows.groupby("network").network_runtime_ms.nunique() == 1).all()
    for net_id, group in rows.groupby("network"):
        index = int(net_id.split("-")[1])
        spec = zoo.sample(0, index, Limits(**_limits(zoo_csv)))
        model = nets.build(spec["zoo"])
        expected = [name for _, name, _ in zoo.timed_layers(model, zoo.trace_spec(spec))]
        assert list(group.layer) == expected              # every timed module, in order
        convs = group[group.kind.isin(["conv2d", "depthwise_conv2d"])]  # (a linear's batch
        assert (convs.batch == spec["input"][0]).all()                     # is its rows)


def _limits(csv_path) -> dict:
    import json
    return json.loads(sidecar_path(csv_path).read_text())["settings"]["limits"]


def test_zoo_rows_load_and_resume_without_duplicates(zoo_csv):
    before = pd.read_csv(zoo_csv)
    Campaign(zoo_csv, zoo=True).run(budget_s=6, progress=False)
    after = pd.read_csv(zoo_csv)
    assert after.iloc[:len(before)].equals(before)
    assert not after.duplicated(["network", "layer"]).any()
    data = load(zoo_csv)
    assert len(data) == len(after)


def test_zoo_refuses_what_it_does_not_do(tmp_path):
    r = subprocess.run([sys.executable, "-m", "neuralpower", "profile", "-o",
                        str(tmp_path / "z.csv"), "--zoo", "--budget", "5", "--mode", "train"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--zoo" in r.stderr


# --- the text zoo: language models of transformers (profile --zoo text)

def test_text_zoo_specs_are_seeded_language_models_within_limits():
    specs = [zoo.sample(0, i, LIMITS, family="text") for i in range(10)]
    assert specs == [zoo.sample(0, i, LIMITS, family="text") for i in range(10)]
    assert specs != [zoo.sample(1, i, LIMITS, family="text") for i in range(10)]
    assert len({s["zoo"] for s in specs}) > 4
    for i, spec in enumerate(specs):
        assert spec["zoo"] in zoo.text_names() and spec["dtype"] == "int64"
        batch, seq = spec["input"]
        assert zoo.SEQ[0] <= seq <= zoo.SEQ[1] and 1 <= batch <= zoo.MAX_TEXT_BATCH
        net_id = zoo.network_id(0, i, spec)
        assert zoo.net_of(net_id) == spec["zoo"]                 # the id says the network
        shape = zoo.network_inputs(pd.DataFrame({"network": [net_id], "position": [0]}))[net_id]
        assert list(shape) == spec["input"] and shape.dtype == torch.int64   # and its input
    assert zoo.net_of("t3-000012a4-xlm-roberta+lm-2x64") == "transformers:xlm-roberta/lm"
    assert zoo.net_of("z0-000001-resnet18") == "torchvision:resnet18"   # vision ids as before


def test_transformers_models_build_from_their_default_configuration_alone():
    model = nets.build("transformers:gpt2/lm")   # GPT-2 small: 124M (its head shares the
    assert sum(p.numel() for p in model.parameters()) == 124439808   # embedding's weights)
    table = trace(model, "1x16:int64")
    assert table[table.kind == "linear"].out_features.max() == 50257   # the vocabulary head
    assert "lm_head" in set(table.module)     # module paths are the model's own
    real = nets.build("transformers:bert", device="cpu")
    assert real(torch.randint(0, 100, (2, 8))).shape == (2, 8, 768)    # its first tensor
    for bad, fragment in [("transformers:no_such_type", "has no model type 'no_such_type'"),
                          ("transformers:bert/head", "only /lm"),
                          ("transformers:t5/lm", "t5 has no language-model head")]:
        with pytest.raises(NeuralPowerError, match=fragment):
            nets.build(bad)


def test_bart_reads_values_in_eager_mode_and_traces_as_torch_compile_runs_it():
    table = trace(nets.build("transformers:bart/lm"), "1x16:int64")
    assert "torch.compile" in table.attrs["traced"]
    assert (table.kind == "linear").sum() == 73 and (table.kind == "attention").sum() == 12


def test_torchvision_segmentation_models_build_without_downloading_their_backbone(monkeypatch):
    # their builders default to the backbone's ImageNet weights: a download at run time
    def download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    table = trace(nets.build("torchvision:fcn_resnet50"), (1, 3, 64, 64))
    assert (table.kind == "conv2d").sum() == 55 and "upsample_bilinear2d" in set(table.kind)


def test_a_library_that_cannot_build_its_own_model_is_one_line(monkeypatch):
    # benchmarks/coverage.py found 13 of transformers 5.25's language models that fail at their
    # default configuration (AttributeError, TypeError, KeyError, AssertionError in the
    # library): the CLI called them internal errors of neuralpower's
    import timm
    import transformers

    def fails(*args, **kwargs):
        raise AttributeError("'BltConfig' object has no attribute 'num_hidden_layers'")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", fails)
    monkeypatch.setattr(timm, "create_model", fails)
    with pytest.raises(NeuralPowerError, match="transformers cannot build gpt2 at its default "
                       "configuration: AttributeError: 'BltConfig'"):
        nets.build("transformers:gpt2/lm")
    with pytest.raises(NeuralPowerError, match="timm cannot build 'resnet18': AttributeError"):
        nets.build("timm:resnet18")


def test_a_short_text_zoo_campaign_writes_language_model_layers(tmp_path):
    out = tmp_path / "text.csv"
    summary = Campaign(out, zoo="text", seed=2).run(budget_s=25, progress=False)  # (small
    # models first: MobileBERT at 2x8, ELECTRA-small at 3x16)
    assert summary["networks"] >= 2 and summary["failed"] == 0
    rows = pd.read_csv(out)
    assert (rows.status == "ok").all() and (rows.runtime_ms > 0).all()
    assert rows.network.str.match(r"t2-\d{6}-[\w-]+(\+lm)?-\d+x\d+$").all()
    assert {"linear", "layer_norm", "embedding"} <= set(rows.kind)
    first = rows.groupby("network").first()
    net_id = first.index[0]
    spec = zoo.sample(2, int(net_id.split("-")[1]), Limits(**_limits(out)), family="text")
    model = nets.build(spec["zoo"])
    expected = [name for _, name, _ in zoo.timed_layers(model, zoo.trace_spec(spec))]
    assert list(rows[rows.network == net_id].layer) == expected
    import json
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["settings"]["zoo"] == "text" and meta["software"]["transformers"]
    r = subprocess.run([sys.executable, "-m", "neuralpower", "profile", "-o", str(out),
                        "--zoo", "--seed", "2", "--budget", "5"], capture_output=True, text=True)
    assert r.returncode != 0 and "zoo = 'text', not True" in r.stderr   # not resumed as vision
