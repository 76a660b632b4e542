"""Subnormal numbers: where the tracer finds them (Swin's -100 mask), the profiler's masked
attention, the cost a fit learns from real rows, and how a prediction uses it."""
import csv
import json

import pandas as pd
import pytest
import torch
import torchvision
from torch import nn

from neuralpower import NeuralPowerError, Predictor, fresh_memory, subnormal, trace
from neuralpower.data import load
from neuralpower.predict import predict
from neuralpower.profiling import synthetic
from neuralpower.profiling.campaign import _EARLIER_COLUMNS, Campaign

from .conftest import edit_card

ATTENTION_DATA = "profiling/dev_cpu/intel_xeon_2t_attention.csv"


def _swin_share(windows: int) -> tuple[float, float]:
    """By hand: Swin's shifted windows (7x7, shift 3) on an n x n grid of windows. A window on
    the last row or column holds two regions (4 and 3 rows or columns of 7), the corner four;
    tokens of different regions are masked. (share of masked scores, share of rows with one)"""
    edge = 2 * (4 * 7) * (3 * 7)                      # pairs across the cut of an edge window
    corner = 49**2 - (16**2 + 12**2 + 12**2 + 9**2)   # pairs across the corner's four regions
    n = windows
    pairs = (2 * (n - 1) * edge + corner) / (n * n * 49**2)
    rows = (2 * n - 1) / (n * n)  # every token of a mixed window has a masked partner
    return pairs, rows


def _assert_shifted_shares(t, attn: str, softmax: str, stages) -> None:
    """Swin-T's shares by hand: the shifted block of each stage whose map is larger than one
    window (the last is 7x7) meets subnormals in its softmax and its mixing product, and only
    those. ``attn`` names a block's attention module by stage and block (``{s}``, ``{b}``),
    ``softmax`` its softmax op; ``stages``, the three stages of 8x8, 4x4 and 2x2 windows."""
    hit = t[t.subnormal_share.notna()]
    shifted = [(stages[0], 1), (stages[1], 1), (stages[2], 1), (stages[2], 3), (stages[2], 5)]
    assert list(hit.name) == [f"{attn.format(s=s, b=b)}.{op}" for s, b in shifted
                              for op in (softmax, "bmm_1")]
    for stage, windows in zip(stages, (8, 4, 2)):
        pairs, rows = _swin_share(windows)
        mix = hit[hit.name == f"{attn.format(s=stage, b=1)}.bmm_1"].iloc[0]
        soft = hit[hit.name == f"{attn.format(s=stage, b=1)}.{softmax}"].iloc[0]
        assert mix.kind == "matmul" and mix.subnormal_share == pytest.approx(pairs, abs=1e-4)
        assert soft.kind == "softmax" and soft.subnormal_share == pytest.approx(rows, abs=1e-4)


def test_swins_shifted_windows_are_found_with_the_share_of_masked_scores():
    t = trace(torchvision.models.swin_t(), (1, 3, 224, 224))
    _assert_shifted_shares(t, "features.{s}.{b}.attn", "_softmax", (1, 3, 5))
    # the unshifted blocks, and the scores' product (q @ k, before the mask), meet none
    assert t[t.name == "features.1.0.attn.bmm_1"].subnormal_share.isna().all()
    assert t[t.name == "features.1.1.attn.bmm"].subnormal_share.isna().all()


def test_a_mask_its_constructor_builds_into_a_buffer_is_found_too():
    # timm's Swin computes its shifted windows' mask when it is built, and keeps it as a buffer:
    # built on meta (nets.build), the constructor's constants are computed beside it (it was
    # predicted 17-23 % under its measured time while nothing was found); built for real, the
    # tracer reads the buffer
    from neuralpower.nets import build

    meta = trace(build("timm:swin_tiny_patch4_window7_224"), (1, 3, 224, 224))
    _assert_shifted_shares(meta, "layers.{s}.blocks.{b}.attn", "softmax", (0, 1, 2))
    real = trace(build("timm:swin_tiny_patch4_window7_224", device="cpu"), (1, 3, 224, 224))
    assert real.subnormal_share.equals(meta.subnormal_share)


class _Masked(nn.Module):
    def __init__(self, fill, from_input=False):
        super().__init__()
        self.fill, self.from_input = fill, from_input

    def forward(self, q, v):
        scores = q @ q.transpose(1, 2)
        if self.from_input:  # a mask that depends on the data: its values are unknown
            mask = scores > 0
        else:
            mask = scores.new_zeros(scores.shape[-2:], dtype=torch.bool)
            mask[:, : scores.shape[-1] // 4] = True
        return torch.softmax(scores.masked_fill(mask, self.fill), -1) @ v


@pytest.mark.parametrize("fill, share", [(-100.0, 0.25), (-90.0, 0.25), (float("-inf"), None),
                                         (-1e9, None), (-10.0, None)])
def test_only_offsets_whose_exponential_is_subnormal_count(fill, share):
    t = trace(_Masked(fill), [(2, 16, 8), (2, 16, 8)])
    mix = t[(t.kind == "matmul")].iloc[-1]
    if share is None:  # exact zeros (or normal numbers) after softmax: no slow path
        assert t.subnormal_share.isna().all()
    else:
        assert mix.subnormal_share == pytest.approx(share)
        assert t[t.kind == "softmax"].subnormal_share.iloc[0] == 1.0   # every row has one


def test_a_mask_made_from_the_data_is_not_guessed():
    t = trace(_Masked(-100.0, from_input=True), [(2, 16, 8), (2, 16, 8)])
    assert t.subnormal_share.isna().all()


def test_the_profilers_masked_attention_is_traced_with_its_share():
    found = 0
    for i in range(40):
        spec = synthetic.sample(0, i, kinds=("matmul", "softmax"))
        masks = [layer for layer in spec["layers"] if layer["kind"] == "mask"]
        if not masks:
            continue
        t = synthetic.trace_spec(spec)
        softmax = t[(t.kind == "softmax") & t.subnormal_share.notna()]
        assert len(softmax) == len(masks)
        for m, (_, row) in zip(masks, softmax.iterrows()):
            t_len = int(row.inner)
            assert row.subnormal_share == pytest.approx(m["rows"] / t_len, abs=1e-4)
        found += 1
    assert found >= 3


@pytest.fixture(scope="module")
def attention_predictor():
    return Predictor.fit(load([ATTENTION_DATA]), log=lambda m: None)


def test_fit_learns_the_devices_cost_per_subnormal_operand(attention_predictor):
    costs = attention_predictor.card["subnormal"]
    assert set(costs) == {"matmul", "softmax"}
    # this CPU: about a nanosecond per multiply-add with a subnormal operand (measured alone:
    # 1.1-1.3 ns), and the cost makes those rows' median error smaller
    assert 0.5e-6 < costs["matmul"]["ms"] < 3e-6
    for c in costs.values():
        assert c["median_abs_error_pct"] < c["median_abs_error_pct_without"]
    # the base models never saw the slowed rows (nor those with tensors mapped fresh on every
    # run, which have a cost of their own here: test_fresh_memory.py)
    data = load([ATTENTION_DATA])
    slowed = pd.to_numeric(data.subnormal_share, errors="coerce").fillna(0) > 0
    assert "matmul" in attention_predictor.card["fresh_memory"]["kinds"]
    assert attention_predictor.card["kinds"]["matmul"]["rows"] == int(
        ((data.kind == "matmul") & ~slowed & ~fresh_memory.meets(data)).sum())


def test_prediction_adds_the_cost_where_a_layer_meets_subnormals(attention_predictor):
    model = torchvision.models.swin_t()
    with_cost = predict(model, (1, 3, 224, 224), attention_predictor).layers.set_index("name")
    without = predict(model, (1, 3, 224, 224),
                      Predictor(attention_predictor.models,
                                {k: v for k, v in attention_predictor.card.items()
                                 if k != "subnormal"})).layers.set_index("name")
    diff = (with_cost.runtime_ms - without.runtime_ms).fillna(0.0)  # (unmodeled: NaN both)
    hit = with_cost.subnormal_share.fillna(0) > 0
    assert (diff[~hit].abs() < 1e-12).all() and (diff[hit] > 0).all()
    name = "features.5.1.attn.bmm_1"
    expected = attention_predictor.card["subnormal"]["matmul"]["ms"] * (
        with_cost.subnormal_share[name] * with_cost.macs[name])
    scale = attention_predictor.card.get("network", {}).get("scale", 1.0)
    assert diff[name] == pytest.approx(scale * expected, rel=1e-6)


def test_an_edited_subnormal_cost_is_refused_in_one_line(attention_predictor, tmp_path):
    good = tmp_path / "p.predictor"
    attention_predictor.save(good)
    bad = edit_card(good, tmp_path / "bad.predictor",
                    lambda card: card["subnormal"]["matmul"].update(ms="fast"))
    with pytest.raises(NeuralPowerError, match="subnormal") as e:
        Predictor.load(bad)
    assert "\n" not in str(e.value)


def test_a_campaign_begun_before_the_column_resumes_in_its_own_columns(tmp_path):
    spec = next(s for s in (synthetic.sample(0, i, kinds=("matmul", "softmax")) for i in range(40))
                if any(layer["kind"] == "mask" for layer in s["layers"]))
    timed = synthetic.one_op_modules(synthetic.trace_spec(spec))
    meeting = sum(pd.notna(op.get("subnormal_share")) for _, _, op in timed)
    assert 0 < meeting < len(timed)
    out, said = tmp_path / "old.csv", []
    out.write_text(",".join(_EARLIER_COLUMNS) + "\n")
    summary = Campaign(out, kinds=("matmul", "softmax"), fresh_process=False,
                       log=said.append).run(budget_s=60, progress=False, specs=[("n0", spec)])
    lines = list(csv.reader(out.read_text().splitlines()))
    assert lines[0] == _EARLIER_COLUMNS
    assert all(len(line) == len(_EARLIER_COLUMNS) for line in lines[1:])
    # the rows that met subnormal numbers cannot be told apart there: left out, and said so
    assert len(lines) - 1 == summary["rows"] == len(timed) - meeting
    assert summary["subnormal_left_out"] == meeting
    assert any("subnormal_share column" in m for m in said)


def test_a_search_space_carries_the_share_and_scores_as_predict_does(attention_predictor,
                                                                       tmp_path):
    from neuralpower.archs import layers_of, predict_many, read_jsonl, to_jsonl

    table = trace(torchvision.models.swin_t(), (1, 3, 224, 224))
    layers = layers_of(table)
    assert sum("subnormal_share" in layer for layer in layers) == 10
    path = tmp_path / "space.jsonl"
    to_jsonl([{"name": "swin", "layers": layers}], path)
    total = predict_many(read_jsonl(path), attention_predictor).runtime_ms.iloc[0]
    direct = predict(table, (1, 3, 224, 224), attention_predictor).totals["runtime_ms"]
    assert total == pytest.approx(direct, rel=1e-9)


def test_a_search_space_share_outside_0_to_1_is_refused(tmp_path):
    from neuralpower.archs import read_jsonl

    path = tmp_path / "space.jsonl"
    path.write_text(json.dumps({"name": "a", "layers": [
        {"kind": "softmax", "batch": 1, "elements": 100, "in_elements": 100, "inner": 10,
         "subnormal_share": 2}]}) + "\n")
    with pytest.raises(NeuralPowerError, match="subnormal_share 2") as e:
        read_jsonl(path)
    assert "\n" not in str(e.value)



def test_predict_says_which_layers_meet_subnormals_and_what_they_add(attention_predictor):
    from neuralpower.report import prediction_json, prediction_text

    p = predict(torchvision.models.swin_t(), (1, 3, 224, 224), attention_predictor)
    text = prediction_text(p)
    assert "10 layers meet subnormal numbers (features.1.1.attn._softmax" in text
    assert f"adds about {p.subnormal_ms:.3f} ms" in text and p.subnormal_ms > 1.0
    shares = {r["name"]: r["subnormal_share"] for r in prediction_json(p)["layers"]}
    assert shares["features.5.1.attn.bmm_1"] == pytest.approx(0.4298, abs=1e-4)
    assert shares["features.5.0.attn.bmm_1"] is None
    # a predictor without the cost says so instead of adding anything
    plain = Predictor(attention_predictor.models,
                      {k: v for k, v in attention_predictor.card.items() if k != "subnormal"})
    q = predict(torchvision.models.swin_t(), (1, 3, 224, 224), plain)
    assert q.subnormal_ms == 0.0 and "has no cost for them" in prediction_text(q)
    # and a network without such layers gets no line
    r = predict(torchvision.models.resnet18(), (1, 3, 224, 224), attention_predictor)
    assert "subnormal" not in prediction_text(r)


def test_a_cost_that_does_not_lower_the_error_is_not_kept():
    """Where the models already account for the rows' time, no cost is learned: a cost is
    kept only where it lowers the median error of the rows that meet subnormal numbers."""
    data = load([ATTENTION_DATA])
    slowed = data[subnormal.meets(data)]
    assert set(subnormal.fit_costs(slowed, lambda r, kind: r.runtime_ms)) == set()
    # the same rows with a base that misses their extra time: a cost is learned, and helps
    half = subnormal.fit_costs(slowed, lambda r, kind: r.runtime_ms / 2)
    assert set(half) == {"matmul", "softmax"}
    assert all(c["median_abs_error_pct"] < c["median_abs_error_pct_without"] for c in half.values())
