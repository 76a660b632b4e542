"""Do a network's in-network layer times add up to the network? On a GPU, CUDA events time the
GPU's clock; when the GPU waits on the host (small layers, small batches), the time between a
layer's two events is host time and includes some of its hooks' own cost. For synthetic
networks (every op timed) and real torchvision networks (their one-op leaf modules timed, as
``profile --zoo`` does), prints the whole network's time (no hooks), the timed layers' sum, and
their ratio. A synthetic network's ratio above 1 is what the hooks add inside the layers; a
real network's sum leaves out its untimed ops (residual adds, reused activations), so its ratio
above 1 is a lower bound of that.

    python benchmarks/gpu_hook_check.py [--device cuda] [--nets resnet18 ...] [--batches 1 8]

Run on an H100 on 2026-11-26 (with an extra column, since removed: a correction that took the
hooked runs' extra time off the layers, which proved wrong, as most of that time falls between
the layers): ``benchmarks/results/gpu/hook_check_h100.txt``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralpower import nets  # noqa: E402
from neuralpower.profiling import synthetic, zoo  # noqa: E402
from neuralpower.profiling.campaign import parse_device  # noqa: E402
from neuralpower.profiling.timing import time_network  # noqa: E402
from neuralpower.trace import trace  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def check(label, model, x, modules=None) -> dict:
    t = time_network(model, x, target_s=0.3, modules=modules)
    layers = sum(float(np.median(v)) for v in t.layers.values())
    whole = float(np.median(t.network))
    print(f"{label:32s} {len(t.layers):5d} {whole:9.3f} {layers:9.3f} {layers / whole:6.2f}",
          flush=True)
    return {"network": label, "timed": len(t.layers), "whole_ms": whole, "layers_ms": layers}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nets", nargs="+", default=["resnet18", "mobilenet_v2", "efficientnet_b0",
                                                  "densenet121", "vit_b_16", "convnext_tiny"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--synthetic", type=int, default=6, help="synthetic networks (seed 0)")
    args = ap.parse_args(argv)
    device = parse_device(args.device)
    print(f"{'network':32s} {'timed':>5s} {'whole ms':>9s} {'layers ms':>9s} {'ratio':>6s}")
    for i in range(args.synthetic):
        spec = synthetic.sample(0, i)
        model = synthetic.realise(spec, device)   # real values, as the campaign does
        check(f"synthetic {i}", model, synthetic.example_input(spec, device))
    for name in args.nets:
        for b in args.batches:
            net = f"torchvision:{name}"
            model = nets.build(net, device=device).eval()
            table = trace(nets.build(net), (b, 3, 224, 224))
            layers = zoo.timed_layers(model, table)
            check(f"{name} b{b}", model, torch.randn(b, 3, 224, 224, device=device),
                  modules=[(n, model.get_submodule(n)) for _, n, _ in layers])
    return 0


if __name__ == "__main__":
    script_exit(main)
