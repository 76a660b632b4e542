"""Calibration on measured real networks: the fit, its cross-validation, its safe storage in the
predictor's card, and `neuralpower calibrate` on real networks of this machine."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from neuralpower import NeuralPowerError, Predictor, predict
from neuralpower.calibrate import Observed, apply, fit_calibration
from neuralpower.nets import build
from neuralpower.predictor import card_markdown

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "intel_xeon_2t_cpu.predictor"


def _networks(n=10, seed=0):
    """Networks whose true totals are their predicted conv layers as predicted and their relu
    layers at half the predicted time: what the calibration must find."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kinds = rng.choice(["conv2d", "relu"], 30)
        runtime = rng.lognormal(-2, 1.0, 30)
        true = np.where(kinds == "relu", 0.5, 1.0) * runtime
        out.append(Observed(f"net{i}", kinds, runtime, float(true.sum()), speed=1.0,
                            setting="1x3x224x224"))
    return out


def test_calibration_finds_a_known_correction_and_reports_cross_validated_error():
    observed = _networks()
    cal = fit_calibration(observed)
    assert cal["uncalibrated_median_abs_error_pct"] > 10
    assert cal["cross_validated_median_abs_error_pct"] < 3  # each network left out of its fit
    assert cal["lambda"] in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    # the relu layers come down, by far more than the convs (totals alone cannot pin the split
    # exactly, and the penalty pulls towards no change)
    relu = apply(cal, np.array(["relu"]), np.array([0.1]))[0]
    conv = apply(cal, np.array(["conv2d"]), np.array([0.1]))[0]
    assert relu < 0.08 and 0.08 < conv < 0.115 and relu < 0.8 * conv
    json.dumps(cal)  # plain JSON: it lives in the predictor's card
    assert len(cal["per_measurement"]) == len(observed)


def test_apply_leaves_unknown_kinds_alone_and_does_not_extrapolate_in_size():
    cal = {"ref_ms": 0.1, "kinds": {"relu": {"a": 0.0, "b": -0.5, "z_range": [-1.0, 1.0]}}}
    kinds = np.array(["relu", "relu", "conv2d"])
    t = np.array([0.1 * np.e ** 3, 0.1, 5.0])
    out = apply(cal, kinds, t)
    assert out[0] == pytest.approx(t[0] * np.exp(-0.5 * 1.0))   # z clipped at 1
    assert out[1] == pytest.approx(0.1) and out[2] == 5.0
    assert apply(None, kinds, t) is t


def test_calibration_needs_three_networks():
    with pytest.raises(NeuralPowerError, match="3 different"):
        fit_calibration(_networks(2))


def test_a_calibrated_predictor_round_trips_and_predicts_with_it(tmp_path):
    p = Predictor.load(MODEL)
    cal = {"ref_ms": 0.1, "lambda": 1.0, "networks": ["a", "b", "c"], "measurements": 3,
           "uncalibrated_median_abs_error_pct": 20.0,
           "cross_validated_median_abs_error_pct": 5.0,
           "cross_validated_within_10_pct_share": 1.0, "per_measurement": [],
           "kinds": {"conv2d": {"a": np.log(0.5), "b": 0.0, "z_range": [-20.0, 20.0]}}}
    path = tmp_path / "cal.predictor"
    p.with_calibration(cal).save(path)
    with zipfile.ZipFile(path) as z:   # numbers in the card, nothing else added
        assert json.loads(z.read("card.json"))["calibration"]["kinds"]["conv2d"]["b"] == 0.0
    q = Predictor.load(path)
    net = build("torchvision:resnet18")
    before = predict(net, (1, 3, 64, 64), p).layers
    after = predict(net, (1, 3, 64, 64), q).layers
    conv = before.kind == "conv2d"
    assert np.allclose(after.runtime_ms[conv], 0.5 * before.runtime_ms[conv])
    assert np.allclose(after.runtime_ms[~conv], before.runtime_ms[~conv], equal_nan=True)
    assert "Calibration on measured real networks" in card_markdown(q.card)
    assert "calibration" not in q.with_calibration(None).card


def test_calibrate_command_on_real_networks(tmp_path):
    out = tmp_path / "cal.predictor"
    r = subprocess.run([sys.executable, "-m", "neuralpower", "calibrate", str(MODEL),
                        "torchvision:resnet18", "torchvision:squeezenet1_1",
                        "torchvision:mobilenet_v3_small", "--inputs", "1x3x64x64", "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cross-validated" in r.stdout and "median |error|" in r.stdout
    cal = Predictor.load(out).card["calibration"]
    assert cal["networks"] == sorted(["torchvision:resnet18", "torchvision:squeezenet1_1",
                                      "torchvision:mobilenet_v3_small"])
    assert all(np.isfinite([c["a"], c["b"]]).all() for c in cal["kinds"].values())
    r = subprocess.run([sys.executable, "-m", "neuralpower", "calibrate", str(MODEL),
                        "torchvision:resnet18", "torchvision:resnet18", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "3" in r.stderr


def test_fit_calibrates_on_the_real_networks_a_zoo_campaign_measured_whole():
    """``fit --calibrate``: each zoo network is traced again at its input, predicted op by op,
    and the calibration is fitted on its measured whole time."""
    from neuralpower.calibrate import observed_in_data
    from neuralpower.data import at_reference_speed, load
    from neuralpower.profiling import zoo

    rows, _ = at_reference_speed(load(ROOT / "profiling" / "dev_cpu" /
                                      "intel_xeon_2t_zoo_s6.csv.gz"))
    first = list(dict.fromkeys(rows.network))[:6]
    rows = rows[rows.network.isin(first)]
    predictor = Predictor.fit(rows, log=lambda m: None)
    observed = observed_in_data(rows, predictor)
    assert [o.network for o in observed] == [zoo.net_of(n) for n in first]
    for o, net_id in zip(observed, first):
        g = rows[rows.network == net_id].sort_values("position")
        assert o.measured_ms == g.network_runtime_ms.iloc[0] > g.runtime_ms.sum() * 0.5
        assert o.setting == "x".join(str(int(g[c].iloc[0])) for c in
                                     ("batch", "in_channels", "in_h", "in_w"))
        assert (o.runtime_ms > 0).all() and len(o.kinds) >= len(g)
    calibrated = Predictor.fit(rows, log=lambda m: None, calibrate=True)
    cal = calibrated.card["calibration"]
    assert cal["measurements"] == len(observed) and set(cal["networks"]) == {
        o.network for o in observed}
    assert "calibration" not in predictor.card
    # fewer than three networks: a clear error
    two = rows[rows.network.isin(first[:2])]
    with pytest.raises(NeuralPowerError, match="at least 3"):
        Predictor.fit(two, log=lambda m: None, calibrate=True)
