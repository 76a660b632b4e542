"""Scale: score and rank a search space of 10,000 architectures from JSON lines, predict the whole
torchvision zoo, trace a 600M-parameter model in little memory.

    python benchmarks/search_space.py [--archs 10000] [--predictor models/raptorlake_cpu.predictor]

The search space is MobileNetV2-like (per stage: depth, kernel 3/5/7, expansion 3/6; a width
multiplier and an input resolution per architecture), seeded. Each distinct block is traced once
with real torch modules (``trace`` on meta), so every layer row is what the tracer writes; the
architectures are assembled from those rows and written as JSON lines, then read, predicted
(``archs.predict_many``, one model call per kind for all architectures) and ranked
(``rank.rank_table``), timed. Goals (issue 7): 10,000 architectures in under 10 s; the zoo
(every torchvision classifier) under 5 s; vit_h_14 traced with peak memory under 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch import nn  # noqa: E402

from neuralpower import Predictor, predict  # noqa: E402
from neuralpower.archs import (layers_of, predict_many, read_jsonl, to_jsonl,  # noqa: E402
                               trace_many)
from neuralpower.rank import rank_table  # noqa: E402
from neuralpower.trace import trace  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

# (channels, stride) of MobileNetV2's stages after the stem
STAGES = [(24, 2), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1)]


class _Block(nn.Module):
    """An inverted residual: expand 1x1, depthwise kxk, project 1x1; residual when shapes allow."""

    def __init__(self, cin, cout, k, stride, e):
        super().__init__()
        mid = cin * e
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6(),
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU6(), nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


def _stem(cout):
    return nn.Sequential(nn.Conv2d(3, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6())


def _head(cin, classes=1000):
    return nn.Sequential(nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes))


class _Parts:
    """Traced layer rows of each distinct part, traced once."""

    def __init__(self):
        self.cache = {}

    def rows(self, key, build, shape):
        if key not in self.cache:
            self.cache[key] = layers_of(trace(build(), shape))
        return self.cache[key]


def architecture(rng: random.Random, parts: _Parts, index: int) -> dict:
    res = rng.choice([160, 192, 224])
    width = rng.choice([0.75, 1.0, 1.25])
    c = max(8, int(32 * width) // 8 * 8)
    layers = list(parts.rows(("stem", c, res), lambda: _stem(c), (1, 3, res, res)))
    size = (res + 1) // 2
    for cout, stride in STAGES:
        cout = max(8, int(cout * width) // 8 * 8)
        for i in range(rng.choice([1, 2, 3, 4])):
            k, e, s = rng.choice([3, 5, 7]), rng.choice([3, 6]), stride if i == 0 else 1
            cin = c
            layers += parts.rows(("block", cin, cout, k, s, e, size),
                                 lambda: _Block(cin, cout, k, s, e), (1, cin, size, size))
            size = (size + s - 1) // s if s > 1 else size
            c = cout
    layers += parts.rows(("head", c, size), lambda: _head(c), (1, c, size, size))
    # a made-up but monotone accuracy model, for the ranking's error column only
    macs = sum(layer.get("macs", 0) for layer in layers)
    error = min(0.95, max(0.15, 0.45 - 0.04 * (macs / 1e8) ** 0.5 + rng.gauss(0, 0.01)))
    return {"name": f"arch{index:05d}", "top1_error": round(error, 4), "layers": layers}


def zoo_seconds(predictor) -> tuple[dict, int]:
    """Every torchvision classifier built (meta) and traced at 1x3x224x224 by ``trace_many``
    (processes, one per CPU), then predicted in one ``predict_many`` pass; seconds of each
    stage, and the same build and trace in this one process for comparison. One network's
    total is checked against ``predict`` of that network alone."""
    import torchvision

    from neuralpower.nets import build

    nets = [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    t0 = time.perf_counter()
    tables = trace_many(nets)
    t1 = time.perf_counter()
    totals = predict_many(tables, predictor)
    t2 = time.perf_counter()
    trace_many(nets, workers=1)
    t3 = time.perf_counter()
    alone = predict(build("torchvision:resnet50"), (1, 3, 224, 224), predictor).totals["runtime_ms"]
    together = totals.set_index("network").loc["torchvision:resnet50", "runtime_ms"]
    assert abs(alone - together) < 1e-9 * alone, (alone, together)
    return {"build and trace": t1 - t0, "predict": t2 - t1, "one process": t3 - t2}, len(nets)


_PEAK = """
import sys
sys.path.insert(0, sys.argv[1])
import torch, torchvision
from neuralpower.nets import build
from neuralpower.trace import trace

def hwm_mb():  # this process's peak resident memory (reset at exec, unlike ru_maxrss)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

before = hwm_mb()
t = trace(build("torchvision:vit_h_14"), (1, 3, 224, 224))
print(before, hwm_mb(), len(t))
"""


def vit_h_peak_mb() -> tuple[float, float]:
    """(peak resident memory of a fresh process that built and traced vit_h_14, MB; the part
    of it above the process with torch and torchvision imported)."""
    out = subprocess.run([sys.executable, "-c", _PEAK, str(ROOT)], capture_output=True,
                         text=True, check=True).stdout.split()
    before, after = float(out[0]), float(out[1])
    return after, after - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictor", default=str(ROOT / "models" / "raptorlake_cpu.predictor"))
    ap.add_argument("--skip-zoo", action="store_true")
    args = ap.parse_args()
    predictor = Predictor.load(args.predictor)

    rng, parts = random.Random(args.seed), _Parts()
    t0 = time.perf_counter()
    archs = [architecture(rng, parts, i) for i in range(args.archs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.jsonl"
        to_jsonl(archs, path)
        generated_s = time.perf_counter() - t0
        size_mb = path.stat().st_size / 1e6
        t1 = time.perf_counter()
        space = read_jsonl(path)
        t2 = time.perf_counter()
        totals = predict_many(space, predictor)
        t3 = time.perf_counter()
        rows = totals.merge(space.networks, on="network").rename(columns={})
        result = rank_table(rows.to_dict("records"), alphas=[0, 1, 2, 5])
        t4 = time.perf_counter()
    print(f"search space: {args.archs} architectures, {len(space.uses)} layers "
          f"({len(space.layers)} distinct) "
          f"({len(parts.cache)} distinct parts traced), {size_mb:.0f} MB of JSON lines "
          f"(generated in {generated_s:.1f} s)")
    print(f"  read {t2 - t1:.2f} s + predict {t3 - t2:.2f} s + rank {t4 - t3:.2f} s = "
          f"{t4 - t1:.2f} s (goal < 10 s)")
    print(f"  winners: {json.dumps(result['winners'])}")

    # Spot check: one architecture predicted alone, through the same rows, agrees.
    first = space.uses[space.uses.network == 0]
    one = space.layers.iloc[first.layer].assign(network=archs[0]["name"])
    alone = predict_many(one, predictor).iloc[0]
    ranked = totals.set_index("network").loc[archs[0]["name"]]
    assert abs(alone.runtime_ms - ranked.runtime_ms) < 1e-9 * ranked.runtime_ms

    if not args.skip_zoo:
        stages, n = zoo_seconds(predictor)
        print(f"zoo: every torchvision classifier ({n}) built, traced and predicted in "
              f"{stages['build and trace'] + stages['predict']:.1f} s (goal < 5 s): build and "
              f"trace {stages['build and trace']:.1f} s ({len(os.sched_getaffinity(0))} processes; one process: "
              f"{stages['one process']:.1f} s) + predict {stages['predict']:.1f} s")
    peak, growth = vit_h_peak_mb()
    print(f"vit_h_14 (632M parameters) built and traced in a fresh process: peak resident "
          f"memory {peak:.0f} MB, {growth:.0f} MB above torch and torchvision imported "
          "(goal < 1 GB)")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    script_exit(main)
