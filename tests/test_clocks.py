"""Two clocks on a GPU (clocks.py): the replay against its recurrence, and a predictor fitted on
part of the H100 campaign that measured host and GPU time apart (profiling/dev_gpu/)."""
import numpy as np
import pandas as pd
import pytest
import torchvision
from hypothesis import given
from hypothesis import strategies as st

from neuralpower import clocks
from neuralpower.archs import predict_many
from neuralpower.data import load
from neuralpower.predict import predict
from neuralpower.predictor import Predictor

from .conftest import ROOT

GPU = ROOT / "profiling" / "dev_gpu"


def _replayed(host, gpu):
    host_end = gpu_end = 0.0
    out = []
    for h, g in zip(host, gpu):
        host_end += h
        gpu_end = max(gpu_end, host_end) + g
        out.append(gpu_end)
    return out


times = st.lists(st.tuples(st.floats(0, 5), st.floats(0, 5), st.integers(0, 2)), min_size=1,
                 max_size=40)


@given(times)
def test_the_vectorised_replay_is_the_recurrence_network_by_network(ops):
    ops.sort(key=lambda op: op[2])  # each network's ops together, in order
    host, gpu, seg = (np.array(c) for c in zip(*ops))
    ends = clocks.gpu_ends(host, gpu, seg)
    for s in np.unique(seg):
        np.testing.assert_allclose(ends[seg == s], _replayed(host[seg == s], gpu[seg == s]),
                                   atol=1e-9)
    modeled = np.arange(len(host)) % 3 != 1
    runtime = clocks.layer_runtimes(ends, modeled, seg)
    assert np.isnan(runtime[~modeled]).all() and (runtime[modeled] >= -1e-9).all()
    for s in np.unique(seg[modeled]):  # the modeled ops add up to their network
        assert runtime[modeled & (seg == s)].sum() == pytest.approx(ends[seg == s][-1])


def test_host_bound_and_gpu_bound_networks():
    # short kernels: the GPU waits on the host; long ones: the host runs ahead
    assert clocks.gpu_ends([1, 1, 1], [0.1, 0.1, 0.1])[-1] == pytest.approx(3.1)
    assert clocks.gpu_ends([1, 1, 1], [5, 5, 5])[-1] == pytest.approx(16)
    # one long kernel hides the host time of the short ops issued while it runs
    assert clocks.gpu_ends([1, 1, 1, 1], [5, 0.1, 0.1, 0.1])[-1] == pytest.approx(6.3)


def test_host_glue_is_fitted_for_relative_error():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(12):
        n = rng.integers(20, 200)
        kinds = rng.choice(["conv2d", "free", "flip"], n)
        t = pd.DataFrame({"kind": kinds, "modeled": kinds == "conv2d",
                          "host_ms": np.where(kinds == "conv2d", rng.uniform(0.01, 0.05, n),
                                              np.nan)})
        truth = (0.9 * t.host_ms.sum() + 0.002 * (kinds == "conv2d").sum()
                 + 0.004 * (kinds == "flip").sum())
        pairs.append((t, truth))
    glue = clocks.fit_host_glue(pairs)
    assert glue["host_scale"] == pytest.approx(0.9, rel=1e-6)
    assert glue["modeled_op_ms"] == pytest.approx(0.002, rel=1e-5)
    assert glue["unmodeled_op_ms"] == pytest.approx(0.004, rel=1e-5)
    assert glue["free_op_ms"] == pytest.approx(0, abs=1e-9)
    assert glue["networks"] == 12 and glue["network_host_median_abs_error_pct"] < 1e-6


@pytest.fixture(scope="module")
def h100(tmp_path_factory):
    """Fitted on the synthetic rows of a few kinds and five zoo networks of the H100 campaign."""
    kinds = ["conv2d", "batch_norm", "relu", "add", "linear", "max_pool2d", "avg_pool2d"]
    d = load([GPU / "nvidia_h100_clocks.csv", GPU / "nvidia_h100_clocks_zoo.csv"])
    nets = ["z0-000054-resnet18", "z0-000046-resnet18", "z0-000003-squeezenet1_1",
            "z0-000047-squeezenet1_0", "z0-000005-resnet34"]
    keep = d.kind.isin(kinds) & (d.network.str.startswith("s") | d.network.isin(nets))
    return Predictor.fit(d[keep], log=lambda m: None)


def test_a_predictor_fitted_on_both_clocks_replays_networks(h100):
    assert {t for _, t in h100.models} == {"runtime_ms", "power_w", "host_ms", "gpu_ms"}
    glue = h100.clocks
    assert glue["networks"] == 5 and glue["host_scale"] > 0
    p = predict(torchvision.models.resnet18(), (1, 3, 224, 224), h100)
    layers = p.layers[p.layers.modeled]
    # the layers add up to the replayed network, which is at least either clock's sum
    assert p.totals["runtime_ms"] == pytest.approx(layers.runtime_ms.sum())
    ops = p.layers  # (views not listed: their host time, if any, is in the replay)
    assert p.totals["runtime_ms"] >= max(ops.gpu_ms.sum(), layers.host_ms.sum()) * (1 - 1e-9)
    assert (layers.runtime_ms > 0).all() and (layers.gpu_ms > 0).all()
    # at batch 1 an H100 waits on the host; at batch 256 it does not
    big = predict(torchvision.models.resnet18(), (256, 3, 224, 224), h100)
    assert layers.gpu_ms.sum() < 0.5 * p.totals["runtime_ms"]
    assert big.layers.gpu_ms.sum() > 0.8 * big.totals["runtime_ms"]


def test_a_layers_power_is_taken_to_the_networks_rhythm():
    """A layer read at 300 W running back to back once every 2 ms (its host time; 1 ms of
    kernels) on a device idling at 100 W, taking 4 ms in a network: the idle power over the 4 ms
    and the same 200 W extra over the 2 ms of each run. Without an idle power or a clock, P x T."""
    power, runtime = [300.0, 300.0, 80.0, 300.0], [4.0, 4.0, 4.0, 1.0]
    host, gpu = [2.0, np.nan, 1.0, 0.5], [1.0, 1.0, 0.5, 3.0]
    e = clocks.layer_energy(power, runtime, host, gpu, 100.0)
    # (below idle: no negative extra; GPU-bound loop: its kernels' 3 ms)
    assert e == pytest.approx([100 * 4 + 200 * 2, 300 * 4, 100 * 4, 100 * 1 + 200 * 3])
    assert clocks.layer_energy(power, runtime, host, gpu, None) == pytest.approx(
        np.multiply(power, runtime))


def test_network_power_uses_the_campaigns_idle_power(h100):
    """The fit keeps the idle power the campaigns' sidecar recorded; a prediction's layers add
    up to its totals (DESIGN.md aggregation), and on a host twice as slow the wait draws idle
    power while the kernels' energy stays."""
    assert h100.idle_power_w == pytest.approx(121.764)
    p = predict(torchvision.models.resnet18(), (8, 3, 224, 224), h100)
    layers, t = p.layers[p.layers.modeled], p.totals
    assert t["energy_mj"] == pytest.approx((layers.power_w * layers.runtime_ms).sum())
    assert t["power_w"] == pytest.approx(t["energy_mj"] / t["runtime_ms"])
    assert p.at_speed(1.0) == pytest.approx({k: t[k] for k in ("runtime_ms", "energy_mj", "power_w")})
    slow = p.at_speed(2.0)
    assert slow["runtime_ms"] == pytest.approx(2 * t["runtime_ms"])
    assert slow["energy_mj"] == pytest.approx(t["energy_mj"] + 121.764 * t["runtime_ms"])
    assert 121.764 < slow["power_w"] < t["power_w"]
    # a predictor without clocks: energy scales with the runtime, power stays
    cpu = predict(torchvision.models.resnet18(), (1, 3, 224, 224),
                  Predictor.load(ROOT / "models" / "raptorlake_cpu.predictor"))
    assert cpu.idle_power_w is None
    assert cpu.at_speed(2.0)["energy_mj"] == pytest.approx(2 * cpu.totals["energy_mj"])
    assert cpu.at_speed(2.0)["power_w"] == pytest.approx(cpu.totals["power_w"])


def test_a_search_space_is_replayed_as_predict_does(h100):
    nets = {"resnet18": torchvision.models.resnet18(), "squeezenet": torchvision.models.squeezenet1_1()}
    many = predict_many(nets, h100).set_index("network")
    for name, model in nets.items():
        one = predict(model, (1, 3, 224, 224), h100).totals
        assert many.loc[name, "runtime_ms"] == pytest.approx(one["runtime_ms"], rel=1e-9)
        assert many.loc[name, "energy_mj"] == pytest.approx(one["energy_mj"], rel=1e-9)


def test_a_predictor_without_clocks_is_unchanged(h100):
    cpu = Predictor.load(ROOT / "models" / "intel_xeon_2t_cpu.predictor")
    assert cpu.clocks is None and not any(t == "host_ms" for _, t in cpu.models)
    p = predict(torchvision.models.resnet18(), (1, 3, 224, 224), cpu)
    assert "host_ms" not in p.layers


def test_score_reports_both_clocks(h100):
    d = load(GPU / "nvidia_h100_clocks.csv")
    scores = h100.score(d[d.kind == "conv2d"].head(200))
    assert {"runtime_ms", "host_ms", "gpu_ms"} <= set(scores["conv2d"])
    assert scores["conv2d"]["gpu_ms"]["median_ape_pct"] < 20


def test_an_edited_clocks_card_is_refused_in_one_line(tmp_path):
    from neuralpower import NeuralPowerError

    from .conftest import edit_card

    bad = edit_card(ROOT / "models" / "nvidia_h100.predictor", tmp_path / "bad.predictor",
                    lambda card: card["clocks"].update(host_scale=-1.0))
    with pytest.raises(NeuralPowerError, match="clocks") as e:
        Predictor.load(bad)
    assert "\n" not in str(e.value)
    for idle in (-5.0, float("inf"), "120", True):
        bad = edit_card(ROOT / "models" / "nvidia_h100.predictor", tmp_path / "idle.predictor",
                        lambda card: card.update(idle_power_w=idle))
        with pytest.raises(NeuralPowerError, match="idle_power_w") as e:
            Predictor.load(bad)
        assert "\n" not in str(e.value)


def test_predict_shows_both_clocks_in_text_and_json():
    import json
    import subprocess
    import sys

    run = [sys.executable, "-m", "neuralpower", "predict", str(ROOT / "models" / "nvidia_h100.predictor"),
           "torchvision:resnet18"]
    text = subprocess.run(run, capture_output=True, text=True, timeout=300)
    assert text.returncode == 0, text.stderr
    assert "host_ms" in text.stdout and "replayed on two clocks" in text.stdout
    out = json.loads(subprocess.run(run + ["--json"], capture_output=True, text=True,
                                    timeout=300).stdout)
    layers = out["layers"]
    assert all(r["host_ms"] > 0 and r["gpu_ms"] > 0 for r in layers if r["modeled"])
    assert out["totals"]["runtime_ms"] == pytest.approx(sum(r["runtime_ms"] for r in layers
                                                             if r["modeled"]))


def test_hotspots_say_when_the_gpu_waits_on_the_host():
    from neuralpower.hotspots import hotspot_text

    h100 = Predictor.load(ROOT / "models" / "nvidia_h100.predictor")
    small = predict(torchvision.models.resnet18(), (1, 3, 224, 224), h100)
    assert small.gpu_busy_share < 0.5 and "a larger batch" in hotspot_text(small)
    big = predict(torchvision.models.resnet18(), (256, 3, 224, 224), h100)
    assert big.gpu_busy_share > 0.9 and "the host keeping ahead" in hotspot_text(big)
    cpu = predict(torchvision.models.resnet18(), (1, 3, 224, 224),
                  Predictor.load(ROOT / "models" / "intel_xeon_2t_cpu.predictor"))
    assert cpu.gpu_busy_share is None and "two clocks" not in hotspot_text(cpu)
