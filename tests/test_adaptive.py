"""Adaptive profiling: the kind errors, the sampling weights, and a short real campaign that
focuses its later networks on kinds, records its estimates and resumes."""
import json
import math

import pandas as pd
import pytest

from neuralpower.profiling import Campaign, sidecar_path
from neuralpower.profiling import adaptive
from neuralpower.profiling.synthetic import PROFILED_KINDS

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


def test_weights_and_pick():
    w = adaptive.weights({"a": 10.0, "b": 30.0, "c": math.inf})
    assert w == pytest.approx({"a": 10 / 70, "b": 30 / 70, "c": 30 / 70})
    picks = [adaptive.pick(w, 0, i) for i in range(400)]
    assert picks == [adaptive.pick(w, 0, i) for i in range(400)]   # seeded
    assert picks.count("a") < picks.count("b")
    assert adaptive.needs("batch_norm", PROFILED_KINDS) == ("conv2d", "batch_norm")
    assert set(adaptive.needs("softmax", PROFILED_KINDS)) == {"linear", "softmax"}


def test_a_short_adaptive_campaign_focuses_and_resumes(tmp_path):
    out = tmp_path / "adaptive.csv"
    Campaign(out, adaptive=True, log=lambda m: None).run(budget_s=25, progress=False)
    d = pd.read_csv(out)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["settings"]["adaptive"] is True
    estimates = meta["runs"][-1]["adaptive"]
    assert estimates and estimates[0]["at_s"] >= adaptive.FIRST_SHARE * 25 - 1
    focused = d[d.network.str.startswith("a0-")]
    assert len(focused) and d.network.str.startswith("s0-").any()  # uniform first, then focused
    for net, rows in focused.groupby("network"):
        kind = net.split("-", 2)[2]
        # a focused network holds only its kind and what a network of it needs
        assert set(rows.kind) <= set(adaptive.needs(kind, PROFILED_KINDS)) | {"copy"}, net
    # resuming estimates at once from what is in the file, and adds to it
    Campaign(out, adaptive=True, log=lambda m: None).run(budget_s=8, progress=False)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["runs"][-1]["adaptive"][0]["rows"] == len(d)
    assert not pd.read_csv(out).duplicated(["network", "layer"]).any()
