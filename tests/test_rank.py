"""`rank`: Energy-Precision Ratio rankings, by hand and on shipped predictors."""
import math
import socket
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuralpower import Predictor, nets, predict
from neuralpower.errors import NeuralPowerError
from neuralpower.rank import (DEFAULT_ALPHAS, pareto_front, parse_entry, plot_rank, rank_networks, rank_table,
                              rank_text, top1_error)

ROOT = Path(__file__).resolve().parents[1]
SMALL = (1, 3, 64, 64)  # small inputs keep the predictions fast on two cores


@pytest.fixture(scope="module")
def raptorlake():
    return Predictor.load(ROOT / "models" / "raptorlake_cpu.predictor")  # has a power model


@pytest.fixture(scope="module")
def epyc():
    return Predictor.load(ROOT / "models" / "amd_epyc_2t_cpu.predictor")  # runtime only


# Four networks where each alpha of 0, 1, 2 has its own winner. EPR = error**alpha * energy:
#   net  error  energy | a=0          a=1                a=2
#   A    0.50   10     | 10           0.5*10  = 5        0.25*10   = 2.5
#   B    0.25   16     | 16           0.25*16 = 4        0.0625*16 = 1.0
#   C    0.10   60     | 60           0.1*60  = 6        0.01*60   = 0.6
#   D    0.50   20     | 20           0.5*20  = 10       0.25*20   = 5
# a=0: A 10 < B 16 < D 20 < C 60  -> ranks A1 B2 D3 C4, winner A
# a=1: B 4 < A 5 < C 6 < D 10     -> ranks B1 A2 C3 D4, winner B
# a=2: C 0.6 < B 1.0 < A 2.5 < D 5 -> ranks C1 B2 A3 D4, winner C
# D has A's error at twice its energy: dominated; A, B, C trade energy for error: the front.
HAND = [{"network": "A", "top1_error": 0.50, "energy_mj": 10.0},
        {"network": "B", "top1_error": 0.25, "energy_mj": 16.0},
        {"network": "C", "top1_error": 0.10, "energy_mj": 60.0},
        {"network": "D", "top1_error": 0.50, "energy_mj": 20.0}]


def test_epr_ranks_and_winner_changes_by_hand():
    r = rank_table(HAND, alphas=(2, 0, 1))  # given out of order: reported sorted
    assert r["alphas"] == [0.0, 1.0, 2.0]
    by = {n["network"]: n for n in r["networks"]}
    expected = {"A": (10, 5, 2.5), "B": (16, 4, 1.0), "C": (60, 6, 0.6), "D": (20, 10, 5)}
    for name, eprs in expected.items():
        assert [by[name]["epr"][k] for k in ("0.0", "1.0", "2.0")] == pytest.approx(eprs)
    assert {n: by[n]["rank"]["0.0"] for n in by} == {"A": 1, "B": 2, "D": 3, "C": 4}
    assert {n: by[n]["rank"]["1.0"] for n in by} == {"B": 1, "A": 2, "C": 3, "D": 4}
    assert {n: by[n]["rank"]["2.0"] for n in by} == {"C": 1, "B": 2, "A": 3, "D": 4}
    assert r["winners"] == {"0.0": "A", "1.0": "B", "2.0": "C"}
    assert r["winner_changes"] == [{"alpha_from": 0.0, "alpha_to": 1.0, "from": "A", "to": "B"},
                                   {"alpha_from": 1.0, "alpha_to": 2.0, "from": "B", "to": "C"}]
    assert [n["pareto"] for n in r["networks"]] == [True, True, True, False]

    text = rank_text(r)
    assert "winner changes between alpha=0 and alpha=1: A -> B" in text
    assert "winner changes between alpha=1 and alpha=2: B -> C" in text
    assert "EPR_mJ(a=2)" in text and "energy_mj" in text and "top-1 err %" in text
    lines = text.splitlines()
    row_c = next(line for line in lines if line.split()[:1] == ["C"])
    assert row_c.split()[1] == "10.00" and "1*" in row_c.split()  # 10 % error; wins at a=2
    row_d = next(line for line in lines if line.split()[:1] == ["D"])
    assert "*" not in row_d and "yes" not in row_d                 # never wins, dominated


def test_epr_default_alphas_and_ties():
    # error 0.5, energy 8 and error 0.25, energy 16: equal at a=1 (4 = 4), tie shares rank 1
    r = rank_table([{"network": "x", "top1_error": 0.5, "energy_mj": 8},
                    {"network": "y", "top1_error": 0.25, "energy_mj": 16}])
    assert tuple(r["alphas"]) == DEFAULT_ALPHAS
    assert [n["rank"]["1.0"] for n in r["networks"]] == [1, 1]
    assert r["winners"]["1.0"] == "x"  # the first listed among equals
    # a=0: x 8 < y 16; a=2: x 0.25*8 = 2 > y 0.0625*16 = 1; a=5: x 0.5**5*8 = 0.25 >
    # y 0.25**5*16 = 0.015625: x wins up to the tie at a=1, y from a=2 on
    assert r["networks"][1]["epr"]["5.0"] == pytest.approx(0.015625)
    assert r["winners"] == {"0.0": "x", "1.0": "x", "2.0": "y", "5.0": "y"}
    assert r["winner_changes"] == [{"alpha_from": 1.0, "alpha_to": 2.0, "from": "x", "to": "y"}]


def test_pareto_by_hand():
    # (energy, error): p (1, .5); q (2, .3); r (2, .4) loses to q on error at equal energy;
    # s (3, .3) loses to q on energy at equal error; t = p exactly (neither beats the other);
    # u (0.5, .9) has the lowest energy of all.
    pts = {"p": (1, .5), "q": (2, .3), "r": (2, .4), "s": (3, .3), "t": (1, .5), "u": (0.5, .9)}
    res = rank_table([{"network": n, "energy_mj": e, "top1_error": err}
                      for n, (e, err) in pts.items()], alphas=[1])
    assert {n["network"]: n["pareto"] for n in res["networks"]} == {
        "p": True, "q": True, "r": False, "s": False, "t": True, "u": True}


def test_rank_table_rejects_bad_input():
    with pytest.raises(NeuralPowerError, match="energy"):
        rank_table([{"network": "A", "top1_error": 0.3, "energy_mj": None}])
    with pytest.raises(NeuralPowerError, match="alpha"):
        rank_table(HAND, alphas=[1, -0.5])
    with pytest.raises(NeuralPowerError, match="alpha"):
        rank_table(HAND, alphas=[math.nan])
    with pytest.raises(NeuralPowerError, match="twice"):
        rank_table(HAND + HAND[:1])
    with pytest.raises(NeuralPowerError, match="fraction"):
        rank_table([{"network": "A", "top1_error": 30.2, "energy_mj": 1.0}])


def test_parse_entry():
    assert parse_entry("torchvision:resnet18") == ("torchvision:resnet18", None)
    assert parse_entry("torchvision:resnet18=0.302") == ("torchvision:resnet18", 0.302)
    net, err = parse_entry("torchvision:resnet18=30.2%")
    assert net == "torchvision:resnet18" and err == pytest.approx(0.302)
    assert parse_entry("timm:vit_small_patch16_224=1") == ("timm:vit_small_patch16_224", 1.0)
    assert parse_entry("nets/a=b.py:make=0.25") == ("nets/a=b.py:make", 0.25)  # last '='


@pytest.mark.parametrize("text, says", [
    ("torchvision:resnet18=30.2", "30.2%"),          # a bare number > 1: write it as a percent
    ("torchvision:resnet18=abc", "not a number"),
    ("torchvision:resnet18=", "not a number"),
    ("torchvision:resnet18=0", "fraction"),
    ("torchvision:resnet18=-0.1", "fraction"),
    ("torchvision:resnet18=nan", "fraction"),
    ("torchvision:resnet18=150%", "fraction"),
    ("=0.3", "no network"),
])
def test_parse_entry_errors_are_one_line_and_name_the_entry(text, says):
    with pytest.raises(NeuralPowerError) as e:
        parse_entry(text)
    msg = str(e.value)
    assert says in msg and "\n" not in msg
    assert text in msg


def test_top1_error_reads_torchvision_metadata_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("top1_error tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    err, source = top1_error("torchvision:resnet18")
    assert err == pytest.approx(1 - 0.69758)
    assert "ResNet18_Weights.IMAGENET1K_V1" in source and "69.758" in source
    err, source = top1_error("torchvision:resnet50")  # DEFAULT is V2 there, not V1
    assert err == pytest.approx(1 - 0.80858) and "IMAGENET1K_V2" in source


def test_top1_error_unknown_asks_for_net_equals_error():
    for net in ("timm:resnet18", "mynets.py:make", "torchvision:fasterrcnn_resnet50_fpn",
                "torchvision:nope"):
        with pytest.raises(NeuralPowerError, match="=TOP1_ERROR") as e:
            top1_error(net)
        assert net in str(e.value) and "\n" not in str(e.value)


def test_rank_networks_with_predicted_energy(raptorlake, tmp_path):
    names = ["torchvision:squeezenet1_1", "torchvision:resnet18"]
    r = rank_networks(raptorlake, [(names[0], None), (names[1], 0.25)], alphas=(0, 1, 3),
                      input_shape=SMALL)
    assert r["device"] == raptorlake.device and r["input"] == ["1x3x64x64"]
    assert [n["network"] for n in r["networks"]] == names
    sq, rn = r["networks"]
    assert sq["top1_error"] == pytest.approx(1 - 0.58178)  # from torchvision's metadata
    assert "SqueezeNet1_1_Weights" in sq["error_source"]
    assert rn["top1_error"] == 0.25 and rn["error_source"] == "given by the user"
    for n in r["networks"]:
        t = predict(nets.build(n["network"]), SMALL, raptorlake, network=n["network"]).totals
        assert n["energy_mj"] == pytest.approx(t["energy_mj"])
        assert n["runtime_ms"] == pytest.approx(t["runtime_ms"])
        assert n["energy_source"] == f"predicted ({raptorlake.device})"
        for a in ("0.0", "1.0", "3.0"):
            assert n["epr"][a] == pytest.approx(n["top1_error"] ** float(a) * t["energy_mj"])
    for a in ("0.0", "1.0", "3.0"):  # ranks follow EPR, and the winner has rank 1
        order = sorted(r["networks"], key=lambda n: n["epr"][a])
        assert [n["rank"][a] for n in order] == [1, 2]
        assert r["winners"][a] == order[0]["network"]
    text = rank_text(r)
    assert raptorlake.device in text and "predicted (" in text and "1x3x64x64" in text
    png = tmp_path / "rank.png"
    plot_rank(r, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_rank_networks_without_power_model(epyc, raptorlake):
    entries = [("torchvision:squeezenet1_1", 0.42), ("torchvision:resnet18", 0.30)]
    with pytest.raises(NeuralPowerError, match="no power model") as e:
        rank_networks(epyc, entries, input_shape=SMALL)
    assert "--power" in str(e.value)
    r = rank_networks(epyc, entries, input_shape=SMALL, power_w=15)
    for n in r["networks"]:
        t = predict(nets.build(n["network"]), SMALL, epyc).totals
        assert t["energy_mj"] is None                      # the predictor gives no energy...
        assert n["energy_mj"] == pytest.approx(15 * t["runtime_ms"])  # ...the stated power does
        assert n["power_w"] == 15 and "assumed 15 W" in n["energy_source"]
    assert "assumed 15 W (stated by the user)" in rank_text(r)
    with pytest.raises(NeuralPowerError, match="has a power model"):  # no mixing of sources
        rank_networks(raptorlake, entries, input_shape=SMALL, power_w=15)


def test_rank_networks_checks_every_entry_before_predicting(raptorlake, monkeypatch):
    import neuralpower.rank as rank

    calls = []
    real = rank.predict_many

    def counting(*args, **kwargs):  # the real predict_many, counted
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(rank, "predict_many", counting)
    for bad, says in [(("timm:resnet18", None), "=TOP1_ERROR"),
                      (("torchvision:nope", 0.3), "nope"),
                      (("torchvision:alexnet", 3.0), "fraction"),
                      (("torchvision:resnet18", 0.3), "twice")]:
        with pytest.raises(NeuralPowerError, match=says):
            rank_networks(raptorlake, [("torchvision:resnet18", 0.3), bad], input_shape=SMALL)
    assert calls == []


def test_rank_networks_no_modeled_layer(raptorlake, tmp_path):
    # Raptor Lake models conv2d, linear and max_pool2d only: a ReLU alone has nothing modeled
    f = tmp_path / "tiny.py"
    f.write_text("from torch import nn\n\ndef make():\n    return nn.Sequential(nn.ReLU())\n")
    with pytest.raises(NeuralPowerError, match="models none"):
        rank_networks(raptorlake, [(f"{f}:make", 0.5)], input_shape=SMALL)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=30))
def test_pareto_front_matches_the_definition(points):
    """The O(n log n) front equals the pairwise definition, ties included."""
    energy = np.array([p[0] for p in points], dtype=float)
    error = np.array([p[1] for p in points], dtype=float) / 10

    def dominated(i):
        return any(energy[j] <= energy[i] and error[j] <= error[i]
                   and (energy[j] < energy[i] or error[j] < error[i]) for j in range(len(points)))

    assert pareto_front(energy, error).tolist() == [not dominated(i) for i in range(len(points))]
