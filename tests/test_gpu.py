"""The GPU paths on a real GPU: CUDA-event timing, the NVML meter, measure, profile --no-power,
training on the GPU. Each test skips where torch sees no CUDA device (CI, the development VM);
the fake-NVML tests of test_meters.py cover the meter's logic everywhere."""
import json
import math
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from torch import nn

from neuralpower.measure import measure
from neuralpower.nets import build
from neuralpower.profiling import Campaign, sidecar_path
from neuralpower.profiling.meters import NvmlMeter, open_meter
from neuralpower.profiling.timing import time_network

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device on this machine")


def _busy(seconds: float) -> None:
    a = torch.randn(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    end = torch.cuda.Event(enable_timing=True)
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        end.record()
        end.synchronize()


def test_nvml_reads_more_power_under_load_than_idle():
    meter = open_meter("cuda")
    assert isinstance(meter, NvmlMeter), meter.describe()
    try:
        desc = meter.describe()
        assert desc["gpu"] and desc["driver"]
        meter.start()
        time.sleep(1.0)
        idle = meter.stop()
        meter.start()
        _busy(1.0)
        busy = meter.stop()
    finally:
        meter.close()
    limit = desc.get("power_limit_w") or 2000
    assert 0 < idle < busy <= 1.3 * limit, (idle, busy, desc)


def test_layer_times_inside_the_network_add_up_to_about_the_whole():
    net = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(128, 128, 3, padding=1), nn.AdaptiveAvgPool2d(1)).cuda().eval()
    x = torch.randn(32, 64, 56, 56, device="cuda")
    t = time_network(net, x, target_s=0.3)
    layers = sum(float(pd.Series(v).median()) for v in t.layers.values())
    whole = float(pd.Series(t.network).median())
    assert all(min(v) > 0 for v in t.layers.values())
    # the hooks' own events add a little; the sum stays within a third of the whole
    assert 0.67 < layers / whole < 1.5, (layers, whole)


def test_two_clocks_on_the_gpu():
    """A large convolution keeps the GPU busy: its GPU time is its in-network time. Tiny ReLUs
    leave the GPU waiting on the host: their GPU time is below their in-network time, which is
    the host's."""
    big = time_network(nn.Sequential(nn.Conv2d(256, 256, 3, padding=1)).cuda().eval(),
                       torch.randn(32, 256, 56, 56, device="cuda"), target_s=0.3)
    c = big.clocks("0")
    assert 0.8 < c["gpu_ms"] / big.summary("0")["runtime_ms"] < 1.25, (c, big.summary("0"))
    assert c["host_ms"] < c["gpu_ms"] and c["network_host_ms"] < c["gpu_ms"]
    small = time_network(nn.Sequential(*[nn.ReLU() for _ in range(20)]).cuda().eval(),
                         torch.randn(1, 16, device="cuda"), target_s=0.3)
    gpu = sum(small.clocks(n)["gpu_ms"] for n in small.layers)
    timed = sum(small.summary(n)["runtime_ms"] for n in small.layers)
    assert 0 < gpu < timed, (gpu, timed)


def test_measure_a_real_network_on_the_gpu():
    m = measure(build("torchvision:resnet18", device="cuda"), (8, 3, 224, 224), "cuda",
                target_s=0.3)
    assert m["runtime_ms"] > 0 and m["device"] == torch.cuda.get_device_name()
    if m["power_source"] == "nvml":
        assert m["power_w"] > 0 and math.isclose(m["energy_mj"], m["power_w"] * m["runtime_ms"])


def test_measure_cli_json_on_the_gpu():
    r = subprocess.run([sys.executable, "-m", "neuralpower", "measure", "torchvision:resnet18",
                        "--device", "cuda", "--json"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["totals"]["runtime_ms"] > 0 and out["power_source"].split()[0] in ("nvml", "none")
    assert out["reference_ms"] > 0 and out["reference_ops_ms"] > 0   # both speed probes on CUDA


def test_training_step_on_the_gpu():
    m = measure(build("torchvision:resnet18", device="cuda"), (8, 3, 224, 224), "cuda",
                target_s=0.3, train=True)
    inference = measure(build("torchvision:resnet18", device="cuda"), (8, 3, 224, 224), "cuda",
                        target_s=0.3)
    assert m["mode"] == "train" and m["runtime_ms"] > inference["runtime_ms"]


def test_a_gpu_campaign_without_power_is_runtime_only(tmp_path):
    out = tmp_path / "gpu.csv"
    s = Campaign(out, device="cuda", power=False, log=lambda m: None).run(budget_s=5,
                                                                        progress=False)
    d = pd.read_csv(out)
    assert s["rows"] == len(d) > 0 and (d.power_source == "none").all()
    assert d.power_w.isna().all() and (d[d.status == "ok"].runtime_ms > 0).all()
    ok = d[d.status == "ok"]  # the host's and the GPU's clocks apart (TwoClocks)
    assert (ok.host_ms > 0).all() and (ok.gpu_ms > 0).all() and (ok.network_host_ms > 0).all()
    assert (ok.reference_ms > 0).all() and (ok.reference_ops_ms > 0).all()   # both probes
    meta = json.loads(sidecar_path(out).read_text())
    assert "--no-power" in meta["power"]["reason"]


def test_fused_attention_is_profiled_and_traced_as_the_gpu_runs_it(tmp_path):
    out = tmp_path / "attention.csv"
    Campaign(out, device="cuda", kinds=["attention", "linear"], power=False,
             log=lambda m: None).run(budget_s=5, progress=False)
    d = pd.read_csv(out)
    att = d[(d.status == "ok") & (d.kind == "attention")]
    assert len(att) > 0 and (att.runtime_ms > 0).all()
    assert (att.host_ms > 0).all() and (att.gpu_ms > 0).all()
    # the tracer lists about the ops the GPU's host dispatches (ViT-B/16: 142 and 137 on an
    # H100; 197 traced when attention was listed as its math)
    from neuralpower.measure import dispatched_ops
    from neuralpower.trace import trace

    top, kernels = dispatched_ops(build("torchvision:vit_b_16", device="cuda").eval(),
                                  torch.randn(1, 3, 224, 224, device="cuda"))
    assert kernels > 0
    t = trace(build("torchvision:vit_b_16"), (1, 3, 224, 224))
    traced = (t.kind != "free").sum()
    assert abs(traced - len(top)) <= 0.1 * len(top), (traced, len(top))
