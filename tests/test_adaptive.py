"""Adaptive profiling: the kind errors, the sampling weights, and a short real campaign that
focuses its later networks on kinds, records its estimates and resumes."""
import json
import math

import pandas as pd
import pytest

from neuralpower.profiling import Campaign, sidecar_path
from neuralpower.profiling import adaptive
from neuralpower.profiling import synthetic
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
    j, spec = adaptive.choose(0, 5, PROFILED_KINDS, Limits(), weight)
    assert (j, spec) == adaptive.choose(0, 5, PROFILED_KINDS, Limits(), weight)  # seeded
    drawn = [synthetic.draw(0, adaptive.CANDIDATE_BASE + adaptive.CANDIDATES * 5 + i)[0]
             for i in range(adaptive.CANDIDATES)]
    counts = [sum(layer["kind"] == "layer_norm" for layer in d["layers"]) for d in drawn]
    shares = [c / len(d["layers"]) for c, d in zip(counts, drawn)]
    assert max(shares) > 0 and shares[j] == max(shares)   # the most layer norms per layer
    assert spec["layers"] == drawn[j]["layers"]
    # the tracer's kind of a spec layer: a conv with a group per channel is depthwise
    assert adaptive.layer_kind({"kind": "conv2d", "groups": 32, "out_channels": 32}) \
        == "depthwise_conv2d"
    assert adaptive.layer_kind({"kind": "conv2d", "groups": 4, "out_channels": 32}) == "conv2d"


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
    weight = adaptive.weights({k: v if v is not None else math.inf
                               for k, v in estimates[-1]["rmspe_pct"].items()})
    limits = Limits(**meta["settings"]["limits"])
    started = chosen.groupby("network", sort=False).campaign_s.min()
    after_last = started[started > estimates[-1]["at_s"] + 0.5].index
    assert len(after_last)
    for net in after_last:  # chosen with the last estimate: the best of its candidates
        index, j = (int(v) for v in net.split("-")[1:])
        drawn = [synthetic.draw(0, adaptive.CANDIDATE_BASE + adaptive.CANDIDATES * index + i,
                                PROFILED_KINDS, limits)[0] for i in range(adaptive.CANDIDATES)]
        values = [adaptive.value(d_, weight) for d_ in drawn]
        assert values[j] == max(values), net
    # resuming estimates at once from what is in the file, and adds to it
    Campaign(out, adaptive=True, log=lambda m: None).run(budget_s=8, progress=False)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["runs"][-1]["adaptive"][0]["rows"] == len(d)
    assert not pd.read_csv(out).duplicated(["network", "layer"]).any()
