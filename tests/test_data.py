"""The measurement CSV loader: real files load, bad ones are refused with a line that says why."""
from pathlib import Path

import pandas as pd
import pytest

from neuralpower import NeuralPowerError
from neuralpower.data import load
from neuralpower.features import features

PUBLIC = Path(__file__).resolve().parents[1] / "profiling" / "public"
GOOD = ("kind,batch,in_features,out_features,runtime_ms,power_w,device\n"
        "linear,8,16,32,0.05,,cpu\n")


@pytest.mark.parametrize("path", sorted(PUBLIC.glob("*.csv")), ids=lambda p: p.stem)
def test_public_files_load_and_feature(path):
    d = load(path)
    assert len(d) > 900 and (d.runtime_ms > 0).all()
    for kind, rows in d.groupby("kind"):
        f = features(rows, kind)
        assert f.notna().all().all() and (f >= 0).all().all()
        assert (f.macs > 0).all()


def write(tmp_path, text, name="d.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_minimal_file_and_defaults(tmp_path):
    d = load(write(tmp_path, GOOD))
    assert d.runtime_ms.iloc[0] == 0.05 and pd.isna(d.power_w.iloc[0])
    conv = load(write(tmp_path, "kind,batch,in_channels,in_h,in_w,out_channels,out_h,out_w,"
                      "kernel_h,kernel_w,stride_h,stride_w,runtime_ms\n"
                      "conv2d,1,3,8,8,4,6,6,3,3,1,1,0.1\n"))
    f = features(conv, "conv2d")
    assert (f.groups.iloc[0], f.pad_h.iloc[0], f.macs.iloc[0]) == (1, 0, 1 * 4 * 6 * 6 * 3 * 9)


@pytest.mark.parametrize("text, message", [
    ("", "file is empty"),
    ("kind,batch,in_features,out_features,runtime_ms\n", "no data rows"),
    ("kind,batch,in_features,out_features\nlinear,1,2,3\n", "missing column(s) runtime_ms"),
    ("kind,batch,in_features,runtime_ms\nlinear,1,2,0.1\n", "linear rows need column(s) out_features"),
    (GOOD.replace("0.05", "fast"), "line 2: runtime_ms = 'fast' is not a number"),
    (GOOD.replace("0.05", "-1"), "line 2: runtime_ms = -1 is not a plausible measurement"),
    (GOOD.replace("0.05", "0"), "runtime_ms = 0 is not a plausible"),
    (GOOD.replace("0.05", "1e300"), "is not a plausible measurement"),
    (GOOD.replace("0.05,,", "0.05,inf,"), "power_w = inf is not a plausible"),
    (GOOD.replace("linear,8,", "linear,-8,"), "line 2: batch = -8 is out of range"),
    (GOOD.replace("linear,8,16", "linear,8,"), "line 2: linear row has no in_features"),
    (GOOD.replace("linear,8,16", "linear,8,sixteen"), "in_features = 'sixteen' is not a number"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(NeuralPowerError) as e:
        load(write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(NeuralPowerError, match="not found"):
        load(tmp_path / "nope.csv")


def test_failed_rows_of_the_profiler_are_skipped(tmp_path):
    d = load(write(tmp_path, "kind,batch,in_features,out_features,runtime_ms,status\n"
                   "linear,8,16,32,0.05,ok\nlinear,9999,16,32,,failed: out of memory\n"))
    assert len(d) == 1


def test_gzipped_campaigns_load_and_damaged_ones_are_one_line(tmp_path):
    import gzip

    src = PUBLIC.parent / "dev_cpu" / "intel_xeon_2t_zoo_s6.csv.gz"
    rows = load(src)
    assert len(rows) > 1000 and rows.network_runtime_ms.notna().all()
    # measured before kind_gap was a column: each zoo network traced again at its input
    assert rows.kind_gap.notna().all()
    heads = rows[(rows.layer == "avgpool") & rows.network.str.contains("-resnet")]
    assert len(heads) and (heads.kind_gap > 50).all()   # a ResNet's one pool: a whole run
    # shape_seen derived from the rows of each network, as the tracer counts it on all its ops
    from neuralpower.profiling import zoo
    inputs = zoo.network_inputs(rows)
    for net in rows.network.unique()[:3]:
        part = rows[rows.network == net]
        table = zoo.trace_spec({"zoo": zoo.net_of(net), "input": list(inputs[net])})
        traced = table[table.kind != "free"].groupby("module").first()
        assert part.layer.map(traced.shape_seen).tolist() == part.shape_seen.tolist()
        assert part.shape_seen.isin([0, 1]).all() and part.shape_seen.sum() > 0
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(src.read_bytes()[:5000])          # a download cut short
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all\n")
    for path in (cut, bad):
        with pytest.raises(NeuralPowerError, match="not a readable CSV"):
            load(path)
    plain = tmp_path / "ok.csv.gz"
    plain.write_bytes(gzip.compress(GOOD.encode()))
    assert len(load(plain)) == 1


def test_a_campaigns_idle_power_comes_from_its_sidecar(tmp_path):
    """``idle_power_w``: from the sidecar beside the file; no column where there is no sidecar
    or it measured none (a campaign run with --no-power)."""
    gpu = PUBLIC.parent / "dev_gpu"
    assert (load(gpu / "nvidia_h100_clocks.csv").idle_power_w == 121.764).all()
    assert "idle_power_w" not in load(gpu / "nvidia_h100_s1_zoo.csv.gz")
    assert "idle_power_w" not in load(write(tmp_path, GOOD))
    (tmp_path / "d.json").write_text('{"power": {"source": "none", "idle_power_w": null}}')
    assert "idle_power_w" not in load(tmp_path / "d.csv")


def test_a_cpu_campaign_measured_before_fresh_mib_gets_it_traced_again(tmp_path):
    """The rows of one zoo network (MobileNetV2 at batch 8 and 240x240, whose expanded tensors
    are 42 MiB) without the column, beside their campaign's sidecar: ``load`` traces the
    network again and gives each row the count the file was given (fresh_memory.Events)."""
    import shutil

    src = PUBLIC.parent / "dev_cpu" / "amd_epyc_2t_zoo_s4.csv.gz"
    rows = pd.read_csv(src, low_memory=False)
    net = rows[rows.network == "z4-000064-mobilenet_v2"]
    assert (net.fresh_mib > 0).sum() >= 2
    old = tmp_path / "old.csv"
    net.drop(columns="fresh_mib").to_csv(old, index=False)
    shutil.copy(src.with_name("amd_epyc_2t_zoo_s4.json"), tmp_path / "old.json")
    filled = load(old)
    assert filled.fresh_mib.tolist() == pytest.approx(
        net[net.status == "ok"].fresh_mib.tolist())
    # without the sidecar no allocator is known: nothing to fill
    (tmp_path / "old.json").unlink()
    assert "fresh_mib" not in load(old)


def test_load_traces_a_text_zoo_network_again_with_token_ids():
    # a language model's rows without kind_gap: its network rebuilt at its input of int64 ids
    # (once traced with float ids, which its embedding refuses: every row was left empty)
    from neuralpower.data import with_traced

    src = PUBLIC.parent / "dev_cpu" / "amd_epyc_2t_text_s0.csv.gz"
    d = pd.read_csv(src, low_memory=False)
    d = d[d.network == d.network.iloc[0]]
    assert d.network.iloc[0].startswith("t0-") and d.kind_gap.notna().all()
    filled = with_traced(d.drop(columns="kind_gap"), src)
    agree = filled.kind_gap.eq(d.kind_gap)
    assert filled.kind_gap.notna().all() and agree.mean() > 0.9
