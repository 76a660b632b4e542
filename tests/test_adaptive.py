"""Adaptive profiling: the kind errors, the sampling weights, and a short real campaign that
focuses its later networks on kinds, records its estimates and resumes."""
import json
import math
import re

import pandas as pd
import pytest

from neuralpower.cli import main

from neuralpower.profiling import Campaign, sidecar_path
from neuralpower.profiling import adaptive
from neuralpower.profiling import synthetic, zoo
from neuralpower.profiling.synthetic import PROFILED_KINDS, Limits

from .conftest import ROOT


def test_kind_errors_rank_a_noisy_kind_worse_and_unknown_kinds_first():
    rows = pd.read_csv(ROOT / "profiling" / "dev_cpu" / "intel_xeon_2t.csv", nrows=3000)
    lin = rows[rows.kind == "linear"].copy()
    noisy = lin.assign(runtime_ms=lin.runtime_ms * pd.Series(
        [3.0 if i % 2 else 1 / 3 for i in range(len(lin))], index=lin.index))
    errors = adaptive.kind_errors(lin, ["linear", "embedding"])
    assert 0 < errors["linear"] < math.inf and errors["embedding"] == math.inf
    both = adaptive.kind_errors(pd.concat([lin, noisy.assign(kind="linear")]), ["linear"])
    assert both["linear"] > errors["linear"]  # a kind made noisy is estimated worse


def test_weights_and_the_chosen_candidate():
    w = adaptive.weights({"a": 10.0, "b": 30.0, "c": math.inf})
    assert w == pytest.approx({"a": 10 / 70, "b": 30 / 70, "c": 30 / 70})
    weight = {k: 0.0 for k in PROFILED_KINDS} | {"layer_norm": 1.0}
    # (candidates of network 4: 0, 1, 0, 0, 0 and 3 layer norms with today's kinds; the
    # default kinds change the draws whenever a kind is added: network 10's were 0, 3, 0, 0, 0
    # and 1 before the experts' kinds)
    same = lambda table, batch: 1.0  # noqa: E731 - every network takes as long
    j, spec = adaptive.choose(0, 4, PROFILED_KINDS, Limits(), weight, same)
    assert (j, spec) == adaptive.choose(0, 4, PROFILED_KINDS, Limits(), weight, same)  # seeded
    tables = [synthetic.trace_spec(synthetic.draw(0, _candidate(4, i), stream=adaptive.STREAM)[0])
              for i in range(adaptive.CANDIDATES)]
    counts = [int((t.kind == "layer_norm").sum()) for t in tables]
    assert sorted(counts)[-2:] == [1, 3] and counts[j] == 3   # the most layer norms
    # per second: a network three times as rich that takes five times as long is worth less
    slower = lambda table, batch: 1.0 + (table.kind == "layer_norm").sum() ** 2  # noqa: E731
    k, _ = adaptive.choose(0, 4, PROFILED_KINDS, Limits(), weight, slower)
    assert counts[k] == 1


def _candidate(index: int, j: int) -> int:
    return adaptive.CANDIDATES * index + j


def test_a_short_adaptive_campaign_chooses_and_resumes(tmp_path):
    out = tmp_path / "adaptive.csv"
    Campaign(out, adaptive=True, log=lambda m: None).run(budget_s=25, progress=False)
    d = pd.read_csv(out)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["settings"]["adaptive"] is True
    estimates = meta["runs"][-1]["adaptive"]
    assert estimates and estimates[0]["at_s"] >= adaptive.FIRST_SHARE * 25 - 1
    chosen = d[d.network.str.startswith("a0-")]
    assert len(chosen) and d.network.str.startswith("s0-").any()  # uniform first, then chosen
    limits = Limits(**meta["settings"]["limits"])
    campaign = Campaign(tmp_path / "other.csv", log=lambda m: None)  # its estimate of time
    campaign.macs_per_s = meta["calibration"]["macs_per_s"]
    campaign.pool_macs_per_s = meta["calibration"]["pool_macs_per_s"]
    # a network is chosen when the campaign asks for the next one, after the estimate made
    # then (if due): each used the last estimate made before its rows were written (both
    # times in ms: the previous network's rows were written before the estimate)
    ended = chosen.groupby("network", sort=False).campaign_s.max()
    for net, end in ended.items():
        estimate = [e for e in estimates if e["at_s"] < end][-1]
        weight = adaptive.weights({k: v if v is not None else math.inf
                                   for k, v in estimate["rmspe_pct"].items()})
        index, j = (int(v) for v in net.split("-")[1:])
        gains = []
        for i in range(adaptive.CANDIDATES):
            spec, batch = synthetic.draw(0, _candidate(index, i), PROFILED_KINDS, limits,
                                         adaptive.STREAM)
            table = synthetic.trace_spec(spec)
            fitted = synthetic.fitted_batch(table, batch, limits)
            gains.append(table.kind.map(weight).fillna(0).sum()
                         / campaign._estimate(table, fitted))
        assert gains[j] == max(gains), net
    # resuming estimates at once from what is in the file, and adds to it
    Campaign(out, adaptive=True, log=lambda m: None).run(budget_s=8, progress=False)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["runs"][-1]["adaptive"][0]["rows"] == len(d)
    assert not pd.read_csv(out).duplicated(["network", "layer"]).any()


def test_a_campaign_stops_at_its_target_error(tmp_path):
    out = tmp_path / "target.csv"
    argv = ["profile", "-o", str(out), "--kinds", "linear", "relu", "--budget", "40",
            "--target-error", "1000", "--quiet"]
    assert main(argv) == 0
    meta = json.loads(sidecar_path(out).read_text())
    run = meta["runs"][-1]
    assert run["ended"].startswith("target error reached")
    estimate = run["adaptive"][-1]
    assert all(e is not None and e <= 1000 for e in estimate["rmspe_pct"].values())
    assert run["seconds"] < 0.6 * 40   # stopped at the first estimate (30 % of the budget)
    assert not meta["settings"]["adaptive"]  # estimated only, the design unchanged
    assert pd.read_csv(out).network.str.startswith("s0-").all()
    # a target no kind can reach yet runs to the budget
    out2 = tmp_path / "strict.csv"
    assert main(["profile", "-o", str(out2), "--kinds", "linear", "--budget", "12",
                 "--target-error", "0.01", "--quiet"]) == 0
    assert json.loads(sidecar_path(out2).read_text())["runs"][-1]["ended"] == "budget"


def test_a_zoo_candidate_is_chosen_by_the_rows_a_campaign_writes_of_it():
    limits = Limits(max_macs=3 * 10**8, max_pool_macs=10**8, max_elements=2**24)
    weight = {k: 0.0 for k in PROFILED_KINDS} | {"avg_pool2d": 1.0}
    same = lambda table, batch: 1.0  # noqa: E731
    j, spec = adaptive.choose(0, 2, PROFILED_KINDS, limits, weight, same, real=True)
    assert (j, spec) == adaptive.choose(0, 2, PROFILED_KINDS, limits, weight, same, real=True)
    pools = []
    for i in range(adaptive.CANDIDATES):
        candidate, model, table = zoo.draw(0, _candidate(2, i), limits, adaptive.STREAM)
        assert candidate == zoo.sample(0, _candidate(2, i), limits, adaptive.STREAM)
        timed = [op.kind for _, _, op in zoo.timed_layers(model, table)]
        assert list(zoo.timed_kinds(*zoo.batch_one(candidate))) == timed
        pools.append(timed.count("avg_pool2d"))
    assert pools[j] == max(pools) > min(pools)  # the most average pools (squeeze-excitation)
    assert spec == zoo.draw(0, _candidate(2, j), limits, adaptive.STREAM)[0]
    # the design's own draws are not the candidates' (another stream)
    assert [zoo.sample(0, _candidate(2, i), limits) for i in range(adaptive.CANDIDATES)] != [
        zoo.sample(0, _candidate(2, i), limits, adaptive.STREAM)
        for i in range(adaptive.CANDIDATES)]


def test_a_kind_with_many_rows_already_is_worth_less_and_the_chosen_rows_are_counted():
    limits = Limits(max_macs=3 * 10**8, max_pool_macs=10**8, max_elements=2**24)
    weight = {k: 0.0 for k in PROFILED_KINDS} | {"avg_pool2d": 0.5, "conv2d": 0.5}
    same = lambda table, batch: 1.0  # noqa: E731
    kinds = []
    for i in range(adaptive.CANDIDATES):
        spec = zoo.draw(0, _candidate(2, i), limits, adaptive.STREAM)[0]
        kinds.append(pd.Series(zoo.timed_kinds(*zoo.batch_one(spec))).value_counts())
    pools, convs = ([k.get(kind, 0) for k in kinds] for kind in ("avg_pool2d", "conv2d"))
    # convolutions measured a million times over: only the pools a candidate adds count
    counts = {"conv2d": 10**6, "avg_pool2d": 10}
    j, _ = adaptive.choose(0, 2, PROFILED_KINDS, limits, weight, same, real=True, counts=counts)
    assert pools[j] == max(pools)
    assert (counts["conv2d"], counts["avg_pool2d"]) == (10**6 + convs[j], 10 + pools[j])
    assert counts.keys() == set(kinds[j].index) | {"conv2d", "avg_pool2d"}  # every kind counted
    # the other way round, the most convolutions
    counts = {"conv2d": 10, "avg_pool2d": 10**6}
    j, _ = adaptive.choose(0, 2, PROFILED_KINDS, limits, weight, same, real=True, counts=counts)
    assert convs[j] == max(convs) and max(pools) != min(pools)


def test_a_short_adaptive_zoo_campaign_names_its_chosen_networks(tmp_path):
    out = tmp_path / "zoo.csv"
    # (40 s: a zoo network takes seconds, the first one with the process's start more)
    Campaign(out, adaptive=True, zoo=True, log=lambda m: None).run(budget_s=40, progress=False)
    d = pd.read_csv(out)
    first = d.groupby("network", sort=False).campaign_s.max().sort_values().index
    uniform = [n for n in first if re.fullmatch(r"z0-\d{6}-\w+", n)]
    chosen = [n for n in first if re.fullmatch(r"z0-\d{6}a\d-\w+", n)]
    assert uniform and chosen and len(uniform) + len(chosen) == len(first)
    assert list(first[:len(uniform)]) == uniform       # uniform first, then chosen
    assert all(zoo.net_of(n) == "torchvision:" + n.rpartition("-")[2] for n in chosen)
    assert json.loads(sidecar_path(out).read_text())["runs"][-1]["adaptive"]
