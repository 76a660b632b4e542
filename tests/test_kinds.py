"""The modern layer kinds end to end: profiled on this CPU (the committed campaign), featured,
fitted, and predicted in real networks, with the network calibration."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuralpower import Predictor, fresh_memory, predict
from neuralpower.data import load
from neuralpower.features import MODELED_KINDS, features
from neuralpower.nets import build

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "profiling" / "dev_cpu" / "intel_xeon_2t.csv"
# fused attention became a kind after that campaign: profiled on its own (a later machine)
ATTENTION = ROOT / "profiling" / "dev_cpu" / "amd_epyc_2t_fused_attention.csv"
# and normalisations and rotary embeddings written op by op (pow, mean, rsqrt, sqrt, neg, sub, div)
NORMS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_norms.csv.gz"
# and the decoders' ops: transposed convs, group norms, upsampling
DECODERS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_decoders.csv.gz"
# and TensorFlow-style padding and leaky ReLU
PADS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_pads.csv.gz"
# and the ops of later vision networks: roll, stack, reductions, addcmul, elementwise math
LATER = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_later_ops.csv.gz"
# and tables gathered by index (relative position biases)
GATHERS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_gathers.csv.gz"
# and masks, constants, positions, casts and tiles
MASKS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_masks.csv.gz"
# and mixtures of experts: grouped matmuls and the routing ops
EXPERTS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_experts.csv.gz"
# and gathers and scatters by index, masks combined, softplus
PICKS = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_picks.csv.gz"
SHIPPED = ROOT / "models" / "intel_xeon_2t_cpu.predictor"


@pytest.fixture(scope="module")
def campaign():
    return load(CAMPAIGN)


def test_the_campaigns_measured_every_kind(campaign):
    rows = pd.concat([campaign, load(ATTENTION), load(NORMS), load(DECODERS), load(PADS),
                      load(LATER), load(GATHERS), load(MASKS), load(EXPERTS),
                      load(PICKS)])
    assert set(MODELED_KINDS) <= set(rows.kind)
    for kind in MODELED_KINDS:
        f = features(rows[rows.kind == kind], kind)
        assert np.isfinite(f.to_numpy()).all() and (f.to_numpy() >= 0).all(), kind


def test_every_kind_is_fitted_with_a_network_calibration(campaign):
    # a few networks' worth of every kind, to keep the fit quick on two cores
    nets = campaign.network.drop_duplicates().sample(150, random_state=0)
    rows = campaign[campaign.network.isin(nets)]
    p = Predictor.fit(rows, log=lambda m: None)
    assert {k for k, t in p.models if t == "runtime_ms"} == set(rows.kind) & set(MODELED_KINDS)
    net = p.card["network"]
    # (networks with tensors mapped fresh on every run are left out of it: fresh_memory.py)
    fresh = rows.network[fresh_memory.meets(rows)] if "fresh_memory" in p.card else []
    assert net["networks"] == rows.network[~rows.network.isin(fresh)].nunique() > 100
    assert net["scale"] > 0
    assert net["per_op_ms"] >= 0
    assert net["rmspe_pct"] <= net["rmspe_layers_pct"] + 1e-9  # least squares cannot do worse
    # applied to every modeled layer, so the totals stay the sum of the layers
    pr = predict(build("torchvision:resnet18"), (1, 3, 224, 224), p)
    assert pr.totals["runtime_ms"] == pytest.approx(pr.modeled.runtime_ms.sum())
    raw = p.predict_rows(pr.modeled, "conv2d").runtime_ms
    conv = pr.modeled[pr.modeled.kind == "conv2d"].runtime_ms
    assert np.allclose(conv, net["scale"] * raw[conv.index] + net["per_op_ms"])


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "mobilenet_v3_large",
                                  "efficientnet_b0", "densenet121", "convnext_tiny", "vit_b_16"])
def test_shipped_predictor_covers_modern_networks(name):
    p = predict(build(f"torchvision:{name}"), (1, 3, 224, 224), Predictor.load(SHIPPED))
    assert p.totals["unmodeled_macs"] <= 0.001 * p.totals["macs"]
    assert p.totals["layers_unmodeled"] == 0
    assert (p.modeled.runtime_ms > 0).all()


@pytest.mark.parametrize("name", ["benchmarks/decoder_nets.py:unet", "benchmarks/decoder_nets.py:fpn",
                                  "torchvision:lraspp_mobilenet_v3_large"])
def test_the_third_xeons_predictor_covers_decoders_op_for_op(name):
    p = predict(build(str(ROOT / name) if name.startswith("benchmarks") else name),
                (1, 3, 224, 224), Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor"))
    assert p.totals["layers_unmodeled"] == 0
    decoder = p.modeled[p.modeled.kind.isin(["conv_transpose2d", "group_norm",
                                             "upsample_nearest2d", "upsample_bilinear2d"])]
    assert len(decoder) > 0
    assert (decoder.runtime_ms > 0).all() and decoder.runtime_ms.sum() < p.totals["runtime_ms"]


@pytest.mark.parametrize("name, kinds", [
    ("torchvision:swin_t", {"roll", "index"}),             # shifted windows, position biases
    ("torchvision:swin_v2_t", {"fill", "compare", "masked_fill"}),   # the windows' mask
    ("timm:convnextv2_atto", {"linalg_vector_norm", "addcmul"}),        # response norm
    ("timm:edgenext_xx_small", {"linalg_vector_norm", "clamp_min"})])   # F.normalize
def test_the_third_xeons_predictor_predicts_later_vision_ops(name, kinds):
    p = predict(build(name), (1, 3, 224, 224),
                Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor"))
    got = p.modeled[p.modeled.kind.isin(kinds)]
    assert set(got.kind) == kinds and (got.runtime_ms > 0).all()
    assert not kinds & set(p.unmodeled.kind)


@pytest.mark.parametrize("name, kinds, experts", [
    ("mixtral", set(), 16),                                   # 8 layers: up and down each
    ("deepseek_v3", {"gather", "scatter", "logical"}, 14)])   # its groups' routing; 1 dense
def test_the_third_xeons_predictor_predicts_mixtures_of_experts_op_for_op(name, kinds, experts):
    pytest.importorskip("transformers")
    p = predict(build(f"{ROOT}/benchmarks/moe_family.py:{name}"), "1x64:int64",
                Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor"))
    assert p.totals["layers_unmodeled"] == 0
    kinds |= {"grouped_mm", "topk", "sort", "floor_divide", "histc", "cumsum", "index_put"}
    got = p.modeled[p.modeled.kind.isin(kinds)]
    assert set(got.kind) == kinds and (got.runtime_ms > 0).all()
    assert len(got[got.kind == "grouped_mm"]) == experts


def test_what_stays_unmodeled_is_reported_with_its_share_of_macs():
    p = predict(build("torchvision:swin_t"), (1, 3, 224, 224), Predictor.load(SHIPPED))
    un = p.unmodeled
    assert {"roll", "constant_pad_nd"} <= set(un.kind)   # swin's window shifting
    assert (un.macs_share_pct >= 0).all() and un["count"].sum() == p.totals["layers_unmodeled"]


def test_a_predictor_fitted_before_the_depthwise_split_still_predicts_depthwise_convs():
    # the shipped T4 predictor has a conv2d model and none for depthwise_conv2d
    p = predict(build("torchvision:mobilenet_v2"), (1, 3, 224, 224),
                Predictor.load(ROOT / "models" / "t4.predictor"))
    dw = p.layers[p.layers.kind == "depthwise_conv2d"]
    assert len(dw) == 17 and dw.modeled.all() and (dw.runtime_ms > 0).all()


def test_a_predictor_fitted_before_stack_was_a_kind_predicts_it_as_a_cat():
    class Heads(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x, x * 2, x + 1], dim=1)

    p = predict(Heads(), (4, 64, 14, 14), Predictor.load(SHIPPED))   # no stack model of its own
    row = p.layers[p.layers.kind == "stack"].iloc[0]
    assert row.modeled and row.runtime_ms > 0 and "stack" not in set(p.unmodeled.kind)


def test_the_network_scale_tells_apart_networks_of_one_id_in_two_campaigns():
    # Both campaigns are seed 0: s0-000007 is a network of every kind in one and of the norms'
    # kinds in the other. Grouped by id alone, each such pair's layers were summed against one
    # whole time, and the scale fitted on them fell to 0.45.
    from neuralpower.data import at_reference_speed

    p = Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor")
    fresh = ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_fresh.csv"
    rows, _ = at_reference_speed(load([fresh, NORMS]), p.card["reference_ms"])
    rows = rows[rows.network.isin([f"s0-{i:06d}" for i in range(300)])]
    ids = rows.groupby("network").source_file.nunique()
    assert (ids == 2).sum() > 100
    net = p._fit_network(rows)
    assert net["networks"] > rows.network.nunique()       # each campaign's network counted
    assert 0.8 < net["scale"] < 1.25 and net["rmspe_layers_pct"] < 40


def test_a_campaign_of_new_kinds_adds_its_kinds_and_leaves_the_others_to_the_data():
    # fit --new-kinds-from: the norms campaign's linear, add, mul, cat and silu rows ran in
    # token networks on another day of the VM; only its pow, mean, ... rows are taken
    from neuralpower.data import ADDED, with_new_kinds

    base = load(ROOT / "profiling" / "dev_cpu" / "intel_xeon_emr_2t_fresh.csv")
    extra = load(NORMS)
    rows, new = with_new_kinds(base, extra)
    assert new == ["div", "mean", "neg", "pow", "rsqrt", "sqrt", "sub"]
    added = rows.iloc[len(base):]
    assert len(added) == extra.kind.isin(new).sum() > 1500 and set(added.kind) == set(new)
    assert rows.iloc[:len(base)].drop(columns=ADDED).equals(base) and added[ADDED].all()
    # their networks' other layers are not in the data: no whole time to add them up to
    assert added.network_runtime_ms.isna().all() and extra.network_runtime_ms.notna().all()
    # and the shipped predictor of that VM was fitted so: its linear model on the base's rows
    p = Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor")
    files = {d["file"]: d["kinds"] for d in p.card["data"]}
    assert set(files["intel_xeon_emr_2t_norms.csv.gz"]) == set(new)
    assert all(p.has(k, "runtime_ms") for k in new)


def test_kinds_added_from_a_later_campaign_move_no_other_model():
    # the later campaign ran in another phase of the VM (its speed probe at a median of 0.33 ms
    # against 0.48): the device's speed, phase and probe power stay the base data's, so the
    # base kinds' models are fitted exactly as without it
    from neuralpower.data import with_new_kinds

    base = load(GATHERS)
    base = base[base.kind.isin(["linear", "layer_norm"])]
    rows, new = with_new_kinds(base, load(MASKS))
    assert {"compare", "masked_fill", "fill"} <= set(new)
    quiet = lambda m: None  # noqa: E731
    alone, both = Predictor.fit(base, log=quiet), Predictor.fit(rows, log=quiet)
    for key in ("reference_ms", "reference_ops_ms", "speed_exponent"):
        assert both.card[key] == alone.card[key], key
    for kind in ("linear", "layer_norm"):
        some = base[base.kind == kind].head(50)
        assert np.array_equal(both.predict_rows(some, kind).runtime_ms,
                              alone.predict_rows(some, kind).runtime_ms)
    assert all(both.has(k, "runtime_ms") for k in new)


def test_a_llama_family_model_is_predicted_with_its_norms_and_rotary_embeddings():
    from neuralpower.inputs import parse

    p = predict(build(f"{ROOT / 'benchmarks' / 'llama_family.py'}:qwen3"), parse("1x64:int64")[0],
                Predictor.load(ROOT / "models" / "intel_xeon_emr_2t_cpu.predictor"))
    counts = p.layers.kind.value_counts()
    # 12 layers: two RMSNorms each, one on the queries' and one on the keys' heads (Qwen3), and
    # the final one: 49; the queries' and keys' rotate_half: 24 negations
    assert counts["pow"] == counts["mean"] == counts["rsqrt"] == 49 and counts["neg"] == 24
    unmodeled = set(p.unmodeled.kind) if len(p.unmodeled) else set()
    assert not unmodeled & {"pow", "mean", "rsqrt", "neg", "sub", "div"}
    norms = p.modeled[p.modeled.kind.isin(["pow", "mean", "rsqrt", "neg"])]
    assert len(norms) == 3 * 49 + 24 and (norms.runtime_ms > 0).all()
