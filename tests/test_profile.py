"""Profiling campaigns, for real on this machine's CPU: synthetic networks, in-network timing,
the CSV they write, the lock, failed configurations (faults: tests/test_faults.py)."""
import fcntl
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from neuralpower import NeuralPowerError, Predictor
from neuralpower.data import load
from neuralpower.profiling import CSV_COLUMNS, Campaign, sidecar_path
from neuralpower.profiling.synthetic import (PROFILED_KINDS, Limits, build, elements,
                                             example_input, realise, sample, trace_spec,
                                             work)
from neuralpower.profiling.timing import time_network


def test_synthetic_specs_are_seeded_valid_and_within_limits():
    limits = Limits(max_macs=5 * 10**8, max_pool_macs=10**8, max_elements=2**24)
    assert sample(3, 17, limits=limits) == sample(3, 17, limits=limits)
    assert sample(3, 17, limits=limits) != sample(4, 17, limits=limits)
    rows = []
    for i in range(160):
        spec = sample(0, i, limits=limits)
        t = trace_spec(spec)
        compute, streamed = work(t)
        assert compute.max() <= limits.max_macs
        # A pool is not narrowed: at batch 1 it may exceed (committed campaigns have such
        # pools, and their networks must regenerate as they were); every other layer may not.
        pools = t.kind.isin(["max_pool2d", "avg_pool2d"]).to_numpy()
        assert (streamed[~pools] <= limits.max_pool_macs).all()
        assert spec["input"][0] == 1 or streamed.max() <= limits.max_pool_macs
        acts = t[t.kind != "free"].output_shape   # (views of weights are free rows)
        assert max(elements(s) for s in acts) <= max(limits.max_elements, elements(acts.iloc[0]))
        # every child of the network runs one op, so the profiler times every op (but a
        # mask's: building and adding it, before the softmax it is for; subnormal.py)
        ops = t[(t.kind != "free") & (t.module_type != "_Mask")]
        assert (ops.groupby("module").size() == 1).all()
        rows.append(t)
    t = pd.concat(rows)
    conv = t[t.kind.isin(["conv2d", "depthwise_conv2d"])]
    # The design spreads over what real networks use, not a small grid.
    assert conv.kernel_h.min() == 1 and conv.kernel_h.max() >= 7
    assert set(conv.stride_h) >= {1, 2} and conv.stride_h.max() >= 3
    assert (conv.groups == conv.in_channels).any() and (conv.groups == 1).any()
    assert (conv.groups > 1).any() and ((conv.groups > 1) & (conv.groups < conv.in_channels)).any()
    assert conv.in_channels.min() <= 8 and conv.out_channels.max() >= 512
    assert conv.in_h.max() >= 100 and (conv.pad_h > 0).any()
    assert set(PROFILED_KINDS) <= set(t.kind)   # every profiled kind appears
    assert t[t.kind == "linear"].in_features.max() >= 1024
    # attention over long sequences, heads (drawn among the token kinds alone: each block
    # added to the default design thins its first draws of any one)
    mm = pd.concat([trace_spec(sample(0, i, kinds=("linear", "matmul", "softmax"), limits=limits))
                    for i in range(40)])
    mm = mm[mm.kind == "matmul"]
    assert mm.rows.max() >= 256 and mm.batch.max() >= 8


def test_synthetic_networks_run_for_real():
    limits = Limits(max_macs=10**7, max_pool_macs=10**6, max_elements=2**18)
    for i in range(12):
        spec = sample(1, i, limits=limits)
        model = realise(spec, "cpu")
        with torch.inference_mode():
            y = model(example_input(spec, "cpu"))
        assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("seed, kinds, run_every", [
    # UNet-like networks: transposed convs, group norms and upsampling among convs
    (2, ("conv2d", "conv_transpose2d", "group_norm", "upsample_nearest2d", "upsample_bilinear2d",
         "silu", "cat"), 1),
    # later vision blocks: response norms, shifts, stacks, statistics, gathers, elementwise math
    (1, ("conv2d", "linear", "gelu", "add", "mul", "div", "sub", "mean", "roll", "stack", "sum",
         "amax", "linalg_vector_norm", "addcmul", "exp", "cos", "sin", "clamp", "clamp_min",
         "index"), 3),
    # masks, constants, positions, casts and tiles
    (0, ("conv2d", "linear", "gelu", "add", "mul", "layer_norm", "compare", "masked_fill",
         "where", "fill", "arange", "cast", "repeat"), 3),
    # mixtures of experts: a router, the routing ops, two grouped matmuls
    (0, ("linear", "softmax", "topk", "sort", "floor_divide", "histc", "cumsum", "index_put",
         "index", "cast", "grouped_mm", "mul", "arange", "sum", "add", "silu"), 2),
    # gathers and scatters by index, masks combined, softplus
    (0, ("conv2d", "linear", "gelu", "add", "mul", "layer_norm", "compare", "arange",
         "masked_fill", "where", "cast", "logical", "gather", "scatter", "softplus"), 3)],
    ids=["decoders", "later_vision", "masks", "experts", "picks"])
def test_block_networks_run_for_real_one_op_a_module(seed, kinds, run_every):
    limits = Limits(max_macs=10**7, max_pool_macs=10**6, max_elements=2**18)
    seen = set()
    for i in range(30):
        spec = sample(seed, i, kinds=kinds, limits=limits)
        t = trace_spec(spec)
        seen |= set(t.kind)
        assert set(t.kind) - {"free"} <= set(kinds)
        assert (t[t.kind != "free"].groupby("module").size() == 1).all()
        if i % run_every:
            continue
        model = realise(spec, "cpu")   # as a campaign does (a gather's indices must be in range)
        last = t[t.kind != "free"].output_shape.iloc[-1]
        with torch.inference_mode():
            y = model(example_input(spec, "cpu"))
        assert y.numel() == elements(last)   # ran as traced (a roll's view back is free)
        assert y.dtype == torch.float32      # no mask or positions left as the output
    assert set(kinds) <= seen


def test_a_block_named_as_a_kind_needs_that_kind_alone():
    # the draws take a kind's name as that kind allowed: a block named "gather" (a table's rows
    # by index, added to tokens) was drawn in CNNs once gather became a kind, and failed there
    from neuralpower.profiling.synthetic import _LATER_BLOCKS, _later_block, _Net

    for name in {name for name, _ in _LATER_BLOCKS} & set(PROFILED_KINDS):   # stack
        assert _later_block(_Net([1, 8, 16, 16], {name}, Limits()), name), name


def test_the_experts_block_computes_a_mixture_of_experts():
    # the block's ops, run for real, against a loop over tokens: each token's k most probable
    # experts, each expert's down(silu(up(x))) weighted by its probability, summed, added back
    from neuralpower.profiling.synthetic import _Experts

    kinds = ("linear", "softmax", "topk", "sort", "floor_divide", "histc", "cumsum", "index_put",
             "index", "cast", "grouped_mm", "mul", "arange", "sum", "add", "silu")
    limits = Limits(max_macs=10**7, max_pool_macs=10**6, max_elements=2**18)
    spec = next(s for s in (sample(0, i, kinds=kinds, limits=limits) for i in range(40))
                if [layer["kind"] for layer in s["layers"][:3]] == ["linear", "softmax", "topk"])
    model = realise(spec, "cpu")
    block = list(model.children())
    end = next(i for i, layer in enumerate(spec["layers"]) if layer["kind"] == "add")
    x = example_input(spec, "cpu")
    with torch.inference_mode():
        outs = [x]
        for m, reads in zip(block[:end + 1], model.inputs[:end + 1]):
            outs.append(m(*(outs[j] for j in reads)))
        router, (up, down) = block[0], [m for m in block[:end] if isinstance(m, _Experts)]
        assert spec["layers"][end - 7]["kind"] == "silu"
        k = spec["layers"][2]["k"]
        tokens = x.reshape(-1, x.shape[-1])
        probs = torch.softmax(router(tokens), -1)
        weights = lambda m, e: m.weight[e] if m.transposed else m.weight[e].T  # noqa: E731
        expected = tokens.clone()
        for i, row in enumerate(tokens):
            p, chosen = probs[i].topk(k)
            for w, e in zip(p, chosen):
                expected[i] += w * (F.silu(row @ weights(up, e)) @ weights(down, e))
    assert torch.allclose(outs[end + 1].reshape(-1, x.shape[-1]), expected, atol=1e-4)
    counts = outs[spec["layers"].index(next(la for la in spec["layers"] if la["kind"] == "cumsum")) + 1]
    assert int(counts[-1]) == tokens.shape[0] * k   # every pair in some expert's group


def test_every_synthetic_module_with_weights_can_reset_them():
    # a campaign builds networks on the meta device, moves them to uninitialised memory and
    # calls reset_parameters: a module without it kept whatever the memory held (subnormal
    # numbers: the first campaign of addcmul measured it 0.2 to 75 ns an element, and threw away)
    limits = Limits(max_macs=10**7, max_pool_macs=10**6, max_elements=2**18)
    weighted = set()
    for i in range(120):
        for m in build(sample(4, i, limits=limits)).modules():
            if any(True for _ in m.parameters(recurse=False)) or any(
                    True for _ in m.buffers(recurse=False)):
                weighted.add(type(m).__name__)
                assert hasattr(m, "reset_parameters"), type(m).__name__
    assert {"Conv2d", "Linear", "_Addcmul", "_Gather", "_Select"} <= weighted


@pytest.mark.parametrize("kinds", [("conv2d", "sum"), ("conv2d", "max_pool2d", "amax"),
                                   ("conv2d", "linalg_vector_norm", "addcmul"), ("linear", "index"),
                                   ("linear", "compare", "cast"), ("conv2d", "fill", "repeat")])
def test_a_block_is_drawn_only_with_the_op_that_joins_it_back(kinds):
    # a statistic without its div (a map of one column: the next conv could not run) or a
    # gather without its add (two dimensions: the next token layer could not read it) made
    # specs that fail at networks 66 to 86 of these designs; such blocks are not drawn now (nor
    # a mask without what uses it, nor a constant or a tile without the add that joins it)
    limits = Limits(max_macs=10**7, max_pool_macs=10**6, max_elements=2**18)
    for i in range(100):
        traced = set(trace_spec(sample(0, i, kinds=kinds, limits=limits)).kind)
        assert traced - {"free", "copy"} <= set(kinds)   # (copy: where nothing else fitted)


def test_kinds_restrict_the_networks():
    for kinds in (["linear"], ["conv2d", "batch_norm", "relu"], ["gelu"], ["embedding"]):
        for i in range(15):
            traced = set(trace_spec(sample(0, i, kinds=kinds)).kind)
            assert traced - {"free"} <= set(kinds), (kinds, traced)


def test_layers_are_timed_inside_the_running_network():
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 16 * 16, 10))
    t = time_network(model, torch.randn(2, 8, 32, 32), min_repeats=5, target_s=0.05,
                     capture_inputs=True)
    assert set(t.layers) == {"0", "1", "2", "3", "4"}
    assert all(len(v) == len(t.network) >= 5 for v in t.layers.values())
    assert all(x > 0 for v in t.layers.values() for x in v)
    # The layers run within the network: their sum cannot exceed the hooked whole by much,
    # and the conv is the slowest layer.
    layer_sum = sum(sorted(v)[len(v) // 2] for v in t.layers.values())
    assert layer_sum < 3 * sorted(t.network)[len(t.network) // 2]
    assert [x.shape for x in t.inputs["4"]] == [(2, 16 * 16 * 16)]


def test_two_clocks_keep_host_and_gpu_runs_apart(monkeypatch):
    """The bookkeeping of TwoClocks on this CPU (no GPU to sleep: the sleep is recorded
    instead); tests/test_gpu.py times the two clocks for real."""
    from neuralpower.profiling.timing import TwoClocks

    slept = []
    monkeypatch.setattr(TwoClocks, "sleep", classmethod(lambda cls, ms: slept.append(ms)))
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU())
    t = time_network(model, torch.randn(2, 8, 32, 32), min_repeats=5, max_repeats=5,
                     target_s=0.01, clocks=True)
    assert set(t.host) == set(t.gpu) == set(t.layers) == {"0", "1"}
    assert all(len(t.host[n]) == len(t.gpu[n]) == len(t.layers[n]) == 5 for n in t.layers)
    assert len(t.network_host) == len(t.network) == 5  # warm-up runs left out
    # one sleep before the runs (it measures the GPU's clock), then each primed layer sleeps
    # twice the host time of its latest plain runs, plus 20 us
    assert len(slept) == 11 and slept[0] == 0.0
    assert slept[1] == pytest.approx(2 * max(t.host["0"][:1]) + 0.02)
    assert t.clocks("0").keys() == {"host_ms", "gpu_ms", "network_host_ms"}
    # off by default on a CPU: no extra runs, no clock columns
    plain = time_network(model, torch.randn(2, 8, 32, 32), min_repeats=5, target_s=0.01)
    assert not plain.host and not plain.network_host and plain.clocks("0") == {}


@pytest.mark.parametrize("before", ["_BEFORE_CLOCKS", "_BEFORE_OPS", "_BEFORE_MEMORY"])
def test_a_campaign_begun_before_newer_columns_resumes_in_its_own(tmp_path, before):
    from neuralpower.profiling import campaign

    columns = getattr(campaign, before)
    out = tmp_path / "old.csv"
    out.write_text(",".join(columns) + "\n")
    summary = Campaign(out, device="cpu", fresh_process=False, log=lambda m: None).run(
        budget_s=3, progress=False)
    lines = out.read_text().splitlines()
    assert summary["rows"] == len(lines) - 1 > 0 and lines[0] == ",".join(columns)
    assert pd.read_csv(out).runtime_ms.notna().any()


@pytest.fixture(scope="module")
def campaign_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("campaign") / "cpu.csv"
    # (seed 0's second network in today's default design, a response norm over a 672x172x172
    # map, would take longer than this budget: the campaign skips it and goes on)
    summary = Campaign(out, device="cpu", log=lambda m: None).run(budget_s=20, progress=False)
    return out, summary


def test_a_short_cpu_campaign_fits_and_scores(campaign_csv):
    out, summary = campaign_csv
    d = pd.read_csv(out)
    assert list(d.columns) == CSV_COLUMNS
    assert summary["rows"] == len(d) > 30 and summary["networks"] >= 5
    ok = d[d.status == "ok"]
    assert (ok.runtime_ms > 0).all() and (ok.network_runtime_ms > 0).all()
    assert (ok.reference_ms > 0).all()   # the speed probe, timed during every network
    assert (ok.reference_ops_ms > 0).all()  # and the small-ops one (a shared host's phase)
    assert (ok.fresh_mib >= 0).all()   # what the tracer's allocation count gave each layer
    assert ok.power_w.isna().all() and set(ok.power_source) == {"none"}  # no sensor here
    assert not d.duplicated(["network", "layer"]).any()
    assert {"conv2d", "linear"} <= set(ok.kind)
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["settings"]["seed"] == 0 and meta["settings"]["threads"] >= 1
    # a network skipped as too long for the budget left (timing decides which) is not measured
    assert not set(meta["runs"][0].get("skipped", [])) & set(d.network)
    assert meta["software"]["torch"] == torch.__version__
    assert meta["power"]["source"] == "none" and meta["power"]["reason"]
    assert meta["runs"][0]["rows"] == len(d) and meta["runs"][0]["ended"] == "budget"
    # The budget is kept (loosely here: a benchmark reports how closely).
    assert summary["seconds"] <= 20 * 1.5
    rows = load(out)
    predictor = Predictor.fit(rows, log=lambda m: None)
    assert predictor.card["reference_ms"] == pytest.approx(ok.reference_ms.median())
    scores = predictor.score(rows)
    assert scores["conv2d"]["runtime_ms"]["n"] == (rows.kind == "conv2d").sum()
    assert scores["conv2d"]["runtime_ms"]["rmspe_pct"] < 100


def test_load_fills_kind_gap_in_a_campaign_without_it_as_the_tracer_wrote_it(campaign_csv,
                                                                           tmp_path):
    # each network rebuilt from its seed, index and the sidecar's settings, and traced again
    d = pd.read_csv(campaign_csv[0])
    assert d[d.status == "ok"].kind_gap.ge(1).all()
    before = tmp_path / "before.csv"
    d.drop(columns="kind_gap").to_csv(before, index=False)
    sidecar_path(before).write_text(sidecar_path(campaign_csv[0]).read_text())
    filled, written = load(before), load(campaign_csv[0])
    assert filled.kind_gap.tolist() == written.kind_gap.tolist()


def test_the_gap_between_layers_and_the_whole_network_is_in_the_data(campaign_csv):
    d = pd.read_csv(campaign_csv[0])
    per_net = d.groupby("network").agg(layers=("runtime_ms", "sum"),
                                       whole=("network_runtime_ms", "first"))
    assert (per_net.whole > 0).all()
    ratio = per_net.layers / per_net.whole
    assert ratio.between(0.2, 5).all()


# Resuming after SIGKILL (several kills at random points, a torn line): tests/test_faults.py.


def _run_cli(out, budget, **kw):
    return subprocess.Popen([sys.executable, "-m", "neuralpower", "profile", "-o", str(out),
                             "--budget", str(budget), "--quiet"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_a_second_campaign_on_the_same_file_refuses(tmp_path):
    out = tmp_path / "busy.csv"
    with open(out, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(NeuralPowerError, match="another campaign is writing"):
            Campaign(out, log=lambda m: None).run(budget_s=5, progress=False)
        proc = _run_cli(out, 5)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0 and "another campaign is writing" in err


def test_a_failing_configuration_is_recorded_and_skipped(tmp_path):
    out = tmp_path / "failing.csv"
    # 2**20 x 2**20 float32 weights (4 TiB) traces on the meta device but cannot be allocated.
    too_big = {"input": [1, 2**20], "layers": [{"kind": "linear", "out_features": 2**20}]}
    fine = {"input": [4, 64], "layers": [{"kind": "linear", "out_features": 32},
                                          {"kind": "relu"}]}
    specs = [("big", too_big), ("fine", fine)]
    summary = Campaign(out, log=lambda m: None).run(budget_s=1e6, progress=False, specs=specs)
    d = pd.read_csv(out)
    assert summary["failed"] == 1 and summary["ended"] == "all networks measured"
    big = d[d.network == "big"]
    assert list(big.status) == ["failed"] and big.runtime_ms.isna().all()
    assert "memory" in big.error.iloc[0].lower()
    assert set(d[d.network == "fine"].status) == {"ok"}
    # Run again: both are already in the file, so nothing is measured or written twice.
    again = Campaign(out, log=lambda m: None).run(budget_s=1e6, progress=False, specs=specs)
    assert again["rows"] == 0 and len(pd.read_csv(out)) == len(d)
    # And fit ignores the failed rows.
    assert (load(out).network != "big").all()


def test_cpu_campaigns_measure_each_network_in_a_fresh_process(tmp_path):
    from neuralpower.profiling import isolated
    from neuralpower.profiling.meters import NoneMeter

    assert Campaign(tmp_path / "a.csv").fresh_process is isolated.available()
    # a meter passed in (a test's stand-in) keeps its state in this process: measured here
    assert not Campaign(tmp_path / "b.csv", meter=NoneMeter("test")).fresh_process
    assert not Campaign(tmp_path / "c.csv", fresh_process=False).fresh_process


def test_a_network_whose_measuring_process_dies_is_recorded_failed(tmp_path, monkeypatch):
    from neuralpower.profiling import isolated

    if not isolated.available():
        pytest.skip("no fork on this platform")
    real_call = isolated.call
    seen = []

    def dies_once(fn, *args):  # the kernel's OOM killer, once: what the campaign is told then
        seen.append(fn)
        if len(seen) == 1:
            raise isolated.ChildDied("the measuring process died (killed by signal 9, out of "
                                     "memory?)")
        return real_call(fn, *args)

    monkeypatch.setattr(isolated, "call", dies_once)
    out = tmp_path / "oom.csv"
    fine = {"input": [4, 64], "layers": [{"kind": "linear", "out_features": 32},
                                          {"kind": "relu"}]}
    summary = Campaign(out, log=lambda m: None).run(budget_s=1e6, progress=False,
                                                    specs=[("killed", fine), ("next", fine)])
    d = pd.read_csv(out)
    assert summary["failed"] == 1 and summary["ended"] == "all networks measured"
    killed = d[d.network == "killed"]
    assert len(killed) == 2 and set(killed.status) == {"failed"}
    assert killed.error.str.contains("killed by signal 9").all()
    assert set(d[d.network == "next"].status) == {"ok"} and len(seen) == 2


def test_resuming_with_other_settings_refuses(tmp_path):
    out = tmp_path / "c.csv"
    fine = [("n", {"input": [2, 16], "layers": [{"kind": "linear", "out_features": 8}]})]
    Campaign(out, seed=0, log=lambda m: None).run(budget_s=10, progress=False, specs=fine)
    with pytest.raises(NeuralPowerError, match="started with seed = 0"):
        Campaign(out, seed=1, log=lambda m: None).run(budget_s=10, progress=False)


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "--budget must be a positive"),
    (["--kinds", "conv3d"], "--kinds: conv3d"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--device", "cuda:7"], "--device cuda:7"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--output-is-a-directory"], "cannot write here"),
])
def test_bad_profile_arguments_give_one_line(tmp_path, args, message):
    out = tmp_path / "x.csv"
    if args == ["--output-is-a-directory"]:
        out, args = tmp_path, []
    r = subprocess.run([sys.executable, "-m", "neuralpower", "profile", "-o", str(out), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_short_cuda_campaign(tmp_path):
    out = tmp_path / "gpu.csv"
    summary = Campaign(out, device="cuda", log=lambda m: None).run(budget_s=20, progress=False)
    d = pd.read_csv(out)
    assert summary["rows"] == len(d) > 0 and (d[d.status == "ok"].runtime_ms > 0).all()
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["device"]["gpu"] and meta["power"]["source"] in ("nvml", "none")
    if meta["power"]["source"] == "nvml":
        assert (d[d.status == "ok"].power_w > 0).all()


def test_graph_frees_each_tensor_after_its_last_reader():
    """As in a real network's forward: a kept tensor would make every later op write to fresh
    memory (on the development VM that made layers 2 to 5 times slower than in real networks)."""
    from neuralpower.profiling.synthetic import Graph, _Add

    g = Graph([torch.nn.ReLU(), torch.nn.Tanh(), _Add()], [[0], [1], [0, 2]])
    assert [sorted(f) for f in g.free_after] == [[], [1], [0, 2]]
    x = torch.randn(4, 5)
    assert torch.equal(g(x), x + torch.tanh(torch.relu(x)))


_FAULTS = """
import resource, torch
from neuralpower.profiling.timing import steady_allocator
setting = steady_allocator()
def forward():                     # a chain of 12 MiB outputs, two or three alive at a time
    a, b = torch.empty(3 << 20).fill_(1.0), torch.empty(3 << 20).fill_(2.0)
    c = a + b
    del a, b
    d = c * 2
    del c
    return d.sum()
for _ in range(3):
    forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    forward()
print(setting, "|", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_steady_allocator_serves_recurring_tensors_without_page_faults():
    import platform
    import subprocess
    import sys

    if platform.libc_ver()[0] != "glibc":
        from neuralpower.profiling.timing import steady_allocator
        assert steady_allocator() is None
        pytest.skip("no glibc here")
    # A fresh process: the heap a long test session leaves behind must not decide the result.
    out = subprocess.run([sys.executable, "-c", _FAULTS], check=True, capture_output=True,
                         text=True).stdout
    setting, faults = out.rsplit("|", 1)
    assert "32 MiB" in setting                # both mallopt calls took
    # 20 runs x 3 fresh 12 MiB mappings would fault 184,320 pages; glibc's default trims and
    # remaps most of them (18k-122k measured on the dev VM), the steady heap at most two
    # mappings' worth (0-6,144 in 16 runs)
    assert int(faults) < 20 * 3 * 3072 // 10


def test_no_power_measures_runtime_only_and_says_so(tmp_path):
    out = tmp_path / "np.csv"
    r = subprocess.run([sys.executable, "-m", "neuralpower", "profile", "-o", str(out),
                        "--budget", "6", "--no-power", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = pd.read_csv(out)
    assert len(d) > 0 and (d.power_source == "none").all() and d.power_w.isna().all()
    assert "--no-power" in json.loads(sidecar_path(out).read_text())["power"]["reason"]


def test_a_campaign_refuses_a_compressed_output(tmp_path):
    with pytest.raises(NeuralPowerError, match="plain CSV"):
        Campaign(tmp_path / "x.csv.gz")
    assert not list(tmp_path.iterdir())


def test_a_budget_too_small_for_one_network_says_so(tmp_path):
    """On an H100 the demo's minute of real networks, each layer with a 0.5 s power window,
    measured nothing and said nothing (2026-12-06): the campaign now says why."""
    said = []
    summary = Campaign(tmp_path / "z.csv", zoo=True, power=False, log=said.append).run(
        budget_s=0.2, progress=False)
    assert summary["networks"] == 0
    assert any("nothing measured in this run" in m and "--budget" in m for m in said), said

