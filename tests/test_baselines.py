"""Baselines (neuralpower.baselines) on real measurements, and the network benchmark's scoring."""
import json
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuralpower import nets
from neuralpower.baselines import MacLinear, fit_baselines, network_runtime
from neuralpower.data import load
from neuralpower.trace import trace

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "profiling" / "dev_cpu" / "amd_epyc_2t.csv"


@pytest.fixture(scope="module")
def split():
    rows = load(CSV).sample(n=3000, random_state=0)
    return rows.iloc[:2400], rows.iloc[2400:]


@pytest.fixture(scope="module")
def baselines(split):
    return fit_baselines(split[0])


def test_held_out_predictions_finite_and_non_negative(baselines, split):
    test = split[1]
    for name, b in baselines.items():
        assert {"conv2d", "linear", "max_pool2d", "avg_pool2d"} <= set(b.kinds), name
        rows = test[test.kind.isin(b.kinds)]
        p = b.predict_table(rows)
        assert len(rows) > 400 and np.isfinite(p).all() and (p >= 0).all(), name
    # The per-kind models should beat the single MAC line on relative error.
    rows = test[test.kind.isin(baselines["paleo"].kinds)]
    ape = {n: np.median(np.abs(b.predict_table(rows) / rows.runtime_ms - 1))
           for n, b in baselines.items()}
    assert ape["nn_meter_rf"] < ape["mac_linear"] and ape["paleo"] < ape["mac_linear"], ape


def test_paleo_coefficients_are_non_negative(baselines):
    paleo = baselines["paleo"]
    for kind, coef in paleo.coef_.items():
        assert coef.shape == (3,) and (coef >= 0).all(), kind
    for kind, rates in paleo.describe()["per_kind"].items():
        assert rates["overhead_ms"] >= 0
        assert all(r is None or r > 0 for r in (rates["gmacs_per_s"], rates["gbytes_per_s"]))


def test_mac_linear_is_monotone_in_macs(split):
    b = MacLinear().fit(split[0])
    assert (b.coef_ >= 0).all() and b.coef_[1] > 0
    conv = dict(kind="conv2d", batch=1, in_channels=64, in_h=56, in_w=56, out_h=56, out_w=56,
                kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1)
    table = pd.DataFrame([{**conv, "out_channels": c} for c in (8, 16, 64, 256, 1024)])
    p = b.predict_table(table)
    assert np.all(np.diff(p) > 0)
    # a kind with no MACs feature of its own counts as 0 MACs: the intercept
    pool = dict(conv, kind="avg_pool2d", out_channels=64)
    assert b.predict_table(pd.DataFrame([pool]))[0] >= b.coef_[0]


def test_predict_table_on_traced_resnet18(baselines):
    table = trace(nets.build("torchvision:resnet18"), (1, 3, 64, 64))
    for name, b in baselines.items():
        p = b.predict_table(table)
        modeled = table.kind.isin(b.kinds).to_numpy()
        assert np.isfinite(p[modeled]).all() and (p[modeled] >= 0).all(), name
        assert np.isnan(p[~modeled]).all(), name  # NaN exactly for the kinds without a model
        assert "free" in set(table.kind[~modeled])
        assert network_runtime(b, table) == pytest.approx(p[modeled].sum())
        assert network_runtime(b, table) > 0


def test_baselines_without_attention_rows_predict_it_as_its_math(baselines):
    # the AMD campaign predates fused attention: its baselines add the ops of its math up
    from neuralpower.features import DECOMPOSED

    table = trace(nets.build("timm:deit_tiny_patch16_224"), (1, 3, 224, 224))
    att = table[table.kind == "attention"]
    parts = DECOMPOSED["attention"](att)
    for name, b in baselines.items():
        assert "attention" not in b.kinds
        p = b.predict_table(table)[(table.kind == "attention").to_numpy()]
        want = sum(b.predict_table(rows.assign(kind=k)) for k, rows in parts)
        assert len(p) == 12 and np.isfinite(p).all() and (p > 0).all(), name
        np.testing.assert_allclose(p, want, rtol=1e-12)


def _benchmark(name="network_accuracy"):
    """A script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_scores_by_hand():
    bench = _benchmark()
    records = []
    for net, measured, ours in [("a", 10.0, 10.5), ("b", 20.0, 17.0), ("c", 40.0, 43.0)]:
        predicted = {m: measured for m in bench.METHODS} | {"neuralpower": ours}
        records.append({"setting": "1x3x8x8", "group": "torchvision", "network": net,
                        "measured": {"runtime_ms": measured}, "predicted_ms": predicted,
                        "error_pct": {m: bench.error_pct(v, measured)
                                      for m, v in predicted.items()}})
    s = {r["method"]: r for r in bench.scores(records)}
    ours = s["neuralpower"]  # errors +5, -15, +7.5 %; same order as measured
    assert ours["n"] == 3 and math.isclose(ours["median_abs_error_pct"], 7.5)
    assert math.isclose(ours["within_10_pct_share"], 2 / 3)
    assert math.isclose(ours["kendall_tau"], 1.0)
    assert ours["goals_met"] == {"median_abs_error_pct": False, "within_10_pct_share": False,
                                 "kendall_tau": True}
    assert all(s["paleo"]["goals_met"].values()) and s["paleo"]["median_abs_error_pct"] == 0
    # a measurement taken while the machine was busy is flagged (and re-measured under --reuse)
    quiet = {"runtime_ms": 10.0, "runtime_iqr_ms": 0.5, "other_cpu_pct": 1.0}
    assert not bench.noisy(quiet)
    assert bench.noisy(quiet | {"runtime_iqr_ms": 2.0})
    assert bench.noisy(quiet | {"other_cpu_pct": 40})


def test_benchmark_bad_setting_is_one_line_error(capsys):
    bench = _benchmark()
    rc = bench.main(["--predictor", "models/amd_epyc_2t_cpu.predictor", "--data", str(CSV),
                     "--settings", "1x3xbad"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "1x3xbad" in err


def test_benchmark_power_and_energy_scores_by_hand():
    bench = _benchmark()
    records = []
    # measured W, mJ; predicted W, mJ; calibrated mJ
    for net, mw, mmj, pw, pmj, cmj in [("a", 100.0, 50.0, 110.0, 80.0, 52.0),
                                       ("b", 200.0, 300.0, 190.0, 450.0, 280.0),
                                       ("c", 150.0, 600.0, 150.0, 900.0, 640.0)]:
        records.append({
            "setting": "1x3x8x8", "group": "torchvision", "network": net,
            "measured": {"runtime_ms": 1.0, "power_w": mw, "energy_mj": mmj},
            "power": {"predicted_w": pw, "predicted_mj": pmj, "calibrated_mj": cmj,
                      "error_pct": {"power_w": bench.error_pct(pw, mw),
                                    "energy_mj": bench.error_pct(pmj, mmj),
                                    "calibrated_mj": bench.error_pct(cmj, mmj)}}})
    s = {r["target"]: r for r in bench.power_scores(records)}
    assert set(s) == {"power_w", "energy_mj", "energy_mj (np_calibrated)"}
    assert math.isclose(s["power_w"]["median_abs_error_pct"], 5.0)       # +10, -5, 0 %
    assert math.isclose(s["energy_mj"]["median_abs_error_pct"], 50.0)    # +60, +50, +50 %
    assert math.isclose(s["energy_mj (np_calibrated)"]["median_abs_error_pct"], 20 / 3)
    assert math.isclose(s["energy_mj (np_calibrated)"]["within_10_pct_share"], 1.0)
    # no sensor: nothing to score
    for r in records:
        r["measured"].update(power_w=None, energy_mj=None)
        r["power"]["error_pct"] = dict.fromkeys(r["power"]["error_pct"])
    assert bench.power_scores(records) == []


def test_benchmark_rescore_needs_a_file_and_measures_nothing(tmp_path, capsys):
    bench = _benchmark()
    rc = bench.main(["--predictor", "models/amd_epyc_2t_cpu.predictor", "--data", str(CSV),
                     "--rescore"])
    assert rc == 1 and "--rescore needs --reuse" in capsys.readouterr().err
    # the H100 run's measurements, scored here without a GPU: nothing is measured
    run = ROOT / "benchmarks" / "results" / "gpu" / "network_accuracy_h100_device_run.json"
    out = tmp_path / "r.json"
    rc = bench.main(["--predictor", "models/nvidia_h100.predictor", "--data",
                     str(ROOT / "profiling" / "dev_gpu" / "nvidia_h100.csv"), "--reuse",
                     str(run), "--rescore", "--nets", "resnet18", "mobilenet_v2", "--timm",
                     "--settings", "8x3x224x224", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["measured_in_run"] == 0 and r["reused"] == 2
    assert r["device"] == "NVIDIA H100 80GB HBM3"
    assert {s["target"] for s in r["summary_power"]} == {"power_w", "energy_mj"}


def test_benchmark_saves_the_predictor_calibrated_on_its_torchvision_networks(tmp_path):
    bench = _benchmark()
    run = ROOT / "benchmarks" / "results" / "gpu" / "network_accuracy_h100_device_run.json"
    out = tmp_path / "cal.predictor"
    args = ["--predictor", "models/nvidia_h100.predictor", "--data",
            str(ROOT / "profiling" / "dev_gpu" / "nvidia_h100.csv"), "--reuse", str(run),
            "--rescore", "--nets", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "--timm",
            "lcnet_050", "--settings", "1x3x224x224", "--save-calibrated", str(out)]
    assert bench.main(args) == 1 and not out.exists()      # needs --calibrate
    assert bench.main(args + ["--calibrate"]) == 0
    from neuralpower import Predictor

    cal = Predictor.load(out).card["calibration"]
    assert sorted(cal["networks"]) == [  # the timm network stays out
        "torchvision:efficientnet_b0", "torchvision:mobilenet_v2", "torchvision:resnet18",
        "torchvision:resnet50"]


def test_probe_drift_summarises_stored_cycles(capsys):
    """benchmarks/probe_drift.py --reuse: the stored cycles of this VM's slow phase, summarised
    without measuring (the conv probe's slowest quarter slowed MobileNetV2 more than ResNet-50)."""
    cycles = ROOT / "benchmarks" / "results" / "probe_drift_cycles.json"
    assert _benchmark("probe_drift").main(["--reuse", str(cycles)]) == 0
    out = capsys.readouterr().out
    assert "2548 cycles" in out and "| mobilenet_v2 | 0.48 | 8.0 |" in out
    slowest = [line for line in out.splitlines() if line.startswith("| 4 |")][0].split(" | ")
    assert float(slowest[6]) > float(slowest[5]) > float(slowest[1])  # mobilenet > resnet > probe


def test_probe_drift_prints_a_predictors_error_per_phase(capsys):
    """--predictor on the eight-network cycles: one row per conv probe quarter, an error per
    network; in the fast first quarter the shipped AMD predictor is within 15 % of all eight,
    in the slow ones it predicts DenseNet-121 too fast (the conv probe misses the phase)."""
    cycles = ROOT / "benchmarks" / "results" / "probe_drift_cycles_8nets.json"
    predictor = ROOT / "models" / "amd_epyc_2t_cpu.predictor"
    assert _benchmark("probe_drift").main(["--reuse", str(cycles), "--predictor", str(predictor)]) == 0
    out = capsys.readouterr().out.split("error % of the prediction")[1]
    rows = [line.split(" | ") for line in out.splitlines() if line[:4] in ("| 1 ", "| 2 ", "| 3 ", "| 4 ")]
    assert len(rows) == 4 and all(len(r) == 11 for r in rows)
    errors = [[float(v.strip(" |")) for v in r[3:]] for r in rows]
    assert all(abs(e) < 15 for e in errors[0])
    densenet = 5  # column of densenet121 in --nets order
    assert all(e[densenet] < -10 for e in errors[1:])


def test_network_benchmark_splits_its_errors_by_the_hosts_phase():
    """phases(): a measurement whose small-ops probe ran more than PHASE_SLOW times the run's
    fastest on its device is in the slow phase; one without the probe (older runs) in neither;
    phase_scores() scores neuralpower in each."""
    bench = _benchmark()

    def rec(net, ops, device="a", err=0.0):
        measured = {"runtime_ms": 10.0, "device": device, "reference_ops_ms": ops}
        return {"setting": "1x3x224x224", "group": "torchvision", "network": net,
                "measured": measured, "predicted_ms": {"neuralpower": 10.0 * (1 + err / 100)},
                "error_pct": {"neuralpower": err}}

    records = [rec("r18", 0.5, err=2.0), rec("r50", 0.69, err=-4.0), rec("mnv2", 1.0, err=-20.0),
               rec("d121", 0.95, err=-15.0), rec("old", None), rec("other", 2.0, device="b")]
    assert bench.phases(records) == {0: "fast", 1: "fast", 2: "slow", 3: "slow", 5: "fast"}
    by = {s["phase"]: s for s in bench.phase_scores(records)}
    assert by["fast"]["n"] == 3 and by["slow"]["n"] == 2
    assert by["fast"]["median_abs_error_pct"] == pytest.approx(2.0)
    assert by["slow"]["median_abs_error_pct"] == pytest.approx(17.5)
