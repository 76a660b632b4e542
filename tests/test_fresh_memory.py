"""Tensors over the allocator's mapping threshold (fresh_memory.py): which campaigns and rows
have them, what a fit learns from real rows, how a prediction adds it, and an edited card."""
import numpy as np
import pandas as pd
import pytest

from neuralpower import NeuralPowerError, Predictor, fresh_memory
from neuralpower.data import load

from .conftest import edit_card

DATA = "profiling/dev_cpu/intel_xeon_2t_attention.csv"   # matmuls and softmaxes, some > 32 MiB
MIB = 1 << 20


@pytest.fixture(scope="module")
def predictor():
    return Predictor.fit(load([DATA]), log=lambda m: None)


def test_the_threshold_comes_from_a_cpu_campaigns_sidecar():
    glibc = {"software": {"allocator": "glibc malloc: mmap threshold 32 MiB, trim threshold 1 GiB"}}
    assert fresh_memory.threshold({**glibc, "settings": {"device": "cpu"}}) == 32 * MIB
    assert fresh_memory.threshold({**glibc, "settings": {"device": "cuda:0"}}) is None
    assert fresh_memory.threshold({"settings": {"device": "cpu"}}) is None   # not recorded
    cpu = load([DATA])
    assert (cpu[fresh_memory.COLUMN] == 32 * MIB).all()
    assert fresh_memory.COLUMN not in load(["profiling/dev_gpu/nvidia_h100.csv"])
    assert fresh_memory.COLUMN not in load(["profiling/public/neusight_t4_linear.csv"])


def test_units_count_the_tensors_over_the_threshold_by_hand():
    conv = pd.DataFrame({"kind": "conv2d", "batch": [8, 8, 1], "in_channels": [16, 96, 16],
                         "in_h": [120, 120, 120], "in_w": [120, 120, 120],
                         "out_channels": [96, 96, 96], "out_h": [120, 60, 120],
                         "out_w": [120, 60, 120], "kernel_h": 1, "kernel_w": 1, "stride_h": 1,
                         "stride_w": 1, "pad_h": 0, "pad_w": 0, "dilation_h": 1, "groups": 1,
                         fresh_memory.COLUMN: 32 * MIB})
    out = 8 * 96 * 120 * 120 * 4 / MIB    # 42.2 MiB written (the first row) or read (second)
    assert fresh_memory.units(conv, "conv2d") == pytest.approx([out, out, 0.0])
    # a batch norm writes its output fresh; it reads its input where it lies
    bn = pd.DataFrame({"kind": "batch_norm", "elements": [8 * 96 * 120 * 120] * 2,
                       "in_elements": [8 * 96 * 120 * 120] * 2, "inner": 14400,
                       "in_channels": 96, "op": ["native_batch_norm", "native_batch_norm_"]})
    assert fresh_memory.units(bn, "batch_norm", above=32 * MIB) == pytest.approx([out, 0.0])
    assert (fresh_memory.units(bn, "relu", above=32 * MIB) == 0).all()   # often in place
    assert (fresh_memory.units(bn.drop(columns="op"), "batch_norm") == 0).all()  # no threshold


def test_fit_learns_a_cost_per_mib_and_leaves_those_rows_out_of_the_models(predictor):
    fresh = predictor.card["fresh_memory"]
    assert fresh["threshold_bytes"] == 32 * MIB
    assert {"matmul", "softmax"} <= set(fresh["kinds"])
    for c in fresh["kinds"].values():
        assert c["ms_per_mib"] > 0 and c["rows"] >= fresh_memory.MIN_ROWS
        assert c["median_abs_error_pct"] < c["median_abs_error_pct_without"]
    data = load([DATA])
    hit = fresh_memory.meets(data)
    slowed = pd.to_numeric(data.subnormal_share, errors="coerce").fillna(0) > 0
    assert predictor.card["kinds"]["softmax"]["rows"] == int(
        ((data.kind == "softmax") & ~hit & ~slowed).sum())


def test_prediction_adds_the_cost_per_mib_and_none_in_place(predictor):
    data = load([DATA])
    rows = data[(data.kind == "softmax") & fresh_memory.meets(data)].head(3)
    without = Predictor(predictor.models, {k: v for k, v in predictor.card.items()
                                           if k != "fresh_memory"})
    diff = (predictor.predict_rows(rows, "softmax").runtime_ms
            - without.predict_rows(rows, "softmax").runtime_ms).to_numpy()
    cost = predictor.card["fresh_memory"]["kinds"]["softmax"]["ms_per_mib"]
    assert diff == pytest.approx(cost * fresh_memory.units(rows, "softmax"), rel=1e-9)
    assert (diff > 0).all()
    in_place = rows.assign(op="_softmax_")   # (no such op: an in-place one, as the tracer names it)
    assert np.allclose(predictor.predict_rows(in_place, "softmax").runtime_ms,
                       without.predict_rows(in_place, "softmax").runtime_ms)


def test_an_edited_fresh_memory_cost_is_refused_in_one_line(predictor, tmp_path):
    good = tmp_path / "p.predictor"
    predictor.save(good)
    assert Predictor.load(good).card["fresh_memory"] == predictor.card["fresh_memory"]
    for edit in (lambda card: card["fresh_memory"]["kinds"]["softmax"].update(ms_per_mib=-1),
                 lambda card: card["fresh_memory"].update(threshold_bytes="32 MiB"),
                 lambda card: card["fresh_memory"]["kinds"].update(nosuchkind={"ms_per_mib": 1})):
        bad = edit_card(good, tmp_path / "bad.predictor", edit)
        with pytest.raises(NeuralPowerError, match="fresh-memory") as e:
            Predictor.load(bad)
        assert "\n" not in str(e.value)


def test_a_traced_network_pays_for_a_fresh_output_and_not_for_one_in_place():
    """Through predict(): the shipped AMD EPYC predictor's sigmoid cost, on a 42 MiB tensor."""
    from torch import nn

    from neuralpower.predict import predict

    class Gate(nn.Module):
        def __init__(self, in_place):
            super().__init__()
            self.in_place = in_place

        def forward(self, x):
            return x.sigmoid_() if self.in_place else x.sigmoid()

    p = Predictor.load("models/amd_epyc_2t_cpu.predictor")
    cost = p.card["fresh_memory"]["kinds"]["sigmoid"]["ms_per_mib"]
    shape = (8, 96, 120, 120)   # 42.2 MiB of float32
    fresh, in_place = (predict(Gate(i), shape, p).layers.query("kind == 'sigmoid'")
                       for i in (False, True))
    assert list(in_place.op) == ["sigmoid_"] and list(fresh.op) == ["sigmoid"]
    scale = p.card.get("network", {}).get("scale", 1.0)
    extra = float(fresh.runtime_ms.sum() - in_place.runtime_ms.sum())
    assert extra == pytest.approx(scale * cost * np.prod(shape) * 4 / MIB, rel=1e-6)
    small = predict(Gate(False), (1, 96, 120, 120), p).layers.query("kind == 'sigmoid'")
    assert fresh_memory.units(small.assign(**{fresh_memory.COLUMN: 32 * MIB}), "sigmoid") == 0


def test_a_kind_whose_cost_does_not_help_is_fitted_with_all_its_rows(monkeypatch):
    """As batch norm on the AMD VM, where some large rows fault and some do not: no cost, and
    the kind's models see its rows with such tensors again."""
    monkeypatch.setattr(fresh_memory, "fit_costs", lambda rows, base_ms: {})
    data = load([DATA])
    logged = []
    p = Predictor.fit(data, log=logged.append)
    slowed = pd.to_numeric(data.subnormal_share, errors="coerce").fillna(0) > 0
    assert "fresh_memory" not in p.card
    assert p.card["kinds"]["softmax"]["rows"] == int(((data.kind == "softmax") & ~slowed).sum())
    assert any("softmax fresh memory: no cost" in m for m in logged)
