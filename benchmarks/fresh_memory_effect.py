"""What tensors over the C allocator's mapping threshold cost on this CPU (fresh_memory.py).

MobileNetV2's first expanding block (1x1 convolution 16 -> 96, batch norm, ReLU6 in place,
3x3 depthwise convolution with stride 2, batch norm) at batch 8, timed layer by layer inside
the running block as campaigns time it, once with glibc's malloc as ``timing.steady_allocator``
leaves it (blocks over 32 MiB mapped fresh on every run) and once with mappings turned off
(``M_MMAP_MAX`` 0: every block from the heap, kept when freed). Each in a process of its own;
each spatial size gives tensors below and above the threshold. Prints the layers' medians, the
page faults per run and the extra time per MiB over the threshold.

``--networks`` instead compares the tracer's count of the MiB mapped fresh per run
(``fresh_mib``, ``fresh_memory.Events``) with the page faults of real runs of whole networks,
each in two fresh processes (glibc's malloc as the profiler sets it).

``--weights`` times single 3x3 convolutions at batch 1 whose weights lie under and over the
threshold (oneDNN reorders the weight into a buffer of its size on every call), mapped and
from the heap, each in a process of its own.

    python benchmarks/fresh_memory_effect.py [--sizes 56 80 120] [--threads 2]
    python benchmarks/fresh_memory_effect.py --networks
    python benchmarks/fresh_memory_effect.py --weights
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = ["conv 1x1 16->96", "batch norm", "relu6 (in place)", "depthwise 3x3 /2", "batch norm"]
M_MMAP_MAX = -4  # <malloc.h>
MIB = float(1 << 20)


def _process(threads: int, mapped: bool = True) -> None:
    """This child process as the profiler sets one up: ``threads`` threads, glibc's malloc
    by ``timing.steady_allocator``; with ``mapped`` false, no block mapped at all (every one
    from the heap)."""
    import torch

    from neuralpower.profiling.timing import steady_allocator

    torch.set_num_threads(threads)
    steady_allocator()
    if not mapped:
        ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_MAX, 0)


def _one(size: int, mapped: bool, threads: int) -> dict:
    import numpy as np
    import torch
    from torch import nn

    from neuralpower.profiling.timing import time_network

    _process(threads, mapped)
    net = nn.Sequential(nn.Conv2d(16, 96, 1, bias=False), nn.BatchNorm2d(96),
                        nn.ReLU6(inplace=True), nn.Conv2d(96, 96, 3, 2, 1, groups=96, bias=False),
                        nn.BatchNorm2d(96)).eval()
    x = torch.randn(8, 16, size, size)
    faults = _faults_per_run(net, x, runs=10)
    t = time_network(net, x, target_s=1.0)
    return {"faults_per_run": faults,
            "layers_ms": [float(np.median(t.layers[n])) for n in t.layers]}


# Networks and batches (224x224) whose tensors reach the threshold, or nearly
NETWORKS = [("timm:efficientnet_b0", 8), ("torchvision:efficientnet_b0", 8),
            ("torchvision:mobilenet_v2", 8), ("timm:mobilenetv3_large_100", 8),
            ("timm:rexnet_100", 8), ("timm:mixnet_s", 8), ("timm:ghostnet_100", 8),
            ("torchvision:mobilenet_v3_large", 16), ("torchvision:resnet50", 12),
            ("torchvision:densenet121", 16), ("torchvision:regnet_y_400mf", 16),
            ("timm:resnet50", 12), ("torchvision:mnasnet1_0", 16),
            ("torchvision:shufflenet_v2_x1_0", 24), ("torchvision:efficientnet_b0", 16),
            ("torchvision:convnext_tiny", 12), ("torchvision:vgg11", 4), ("torchvision:vgg11", 8),
            ("torchvision:squeezenet1_0", 8), ("torchvision:wide_resnet50_2", 1),
            ("torchvision:wide_resnet50_2", 4)]


def _faults(net: str, batch: int, threads: int) -> float:
    """MiB of page faults per run of ``net`` (its own random weights), in this process."""
    import torch

    from neuralpower import nets

    _process(threads)
    model, x = nets.build(net, device=torch.device("cpu")).eval(), torch.randn(batch, 3, 224, 224)
    return _faults_per_run(model, x, runs=3) * 4096 / MIB


def _faults_per_run(model, x, runs: int) -> float:
    """Page faults per run of ``model`` on ``x`` after three runs of warm-up."""
    import torch

    with torch.no_grad():
        for _ in range(3):
            model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(runs):
            model(x)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / runs


# (in channels, out channels, feature map): 3x3 convolutions at batch 1, weights of 31.5 MiB
# (under the threshold) to 72 MiB; Wide-ResNet-50-2's layer4 has the 1024 -> 1024 one
CONVS = [(896, 1024, 9), (1024, 1024, 7), (1024, 1024, 9), (2048, 1024, 7)]


def _conv(cin: int, cout: int, size: int, mapped: bool, threads: int) -> dict:
    import numpy as np
    import torch
    from torch import nn

    from neuralpower.profiling.timing import time_network

    _process(threads, mapped)
    net = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False)).eval()
    x = torch.randn(1, cin, size, size)
    faults = _faults_per_run(net, x, runs=10)
    return {"faults_per_run": faults,
            "ms": float(np.median(time_network(net, x, target_s=1.0).network))}


def _mapped_and_heap(child: list[str], threads: int) -> dict:
    """The JSON result of this script run as ``child`` (a hidden option and its values), once
    with blocks over the threshold mapped and once from the heap, each in a process of its
    own: ``{"mapped": ..., "heap": ...}``."""
    runs = {}
    for mode in ("mapped", "heap"):
        out = subprocess.run([sys.executable, __file__, *child, mode, "--threads", str(threads)],
                             capture_output=True, text=True, check=True).stdout
        runs[mode] = json.loads(out.strip().splitlines()[-1])
    return runs


def weights(threads: int) -> None:
    print(f"{'3x3 conv, batch 1':<24} {'weight MiB':>10} {'faults, mapped':>15} "
          f"{'mapped ms':>10} {'heap ms':>8} {'extra ms/MiB':>13}")
    for cin, cout, size in CONVS:
        runs = _mapped_and_heap(["--conv", str(cin), str(cout), str(size)], threads)
        mib = cout * cin * 9 * 4 / MIB
        a, b = runs["mapped"]["ms"], runs["heap"]["ms"]
        print(f"{f'{cin}->{cout} on {size}x{size}':<24} {mib:>10.1f} "
              f"{runs['mapped']['faults_per_run']:>15.0f} {a:>10.2f} {b:>8.2f} "
              f"{(a - b) / mib:>13.3f}", flush=True)


def networks(threads: int) -> None:
    from neuralpower import nets, trace

    print(f"{'network':<34} {'batch':>5} {'traced MiB':>11} {'faulted MiB, two processes':>27}")
    for net, batch in NETWORKS:
        traced = trace(nets.build(net), (batch, 3, 224, 224)).fresh_mib.sum()
        runs = [float(subprocess.run([sys.executable, __file__, "--faults", net, str(batch),
                                      "--threads", str(threads)], capture_output=True, text=True,
                                     check=True).stdout.split()[-1]) for _ in range(2)]
        print(f"{net:<34} {batch:>5} {traced:>11.1f} {runs[0]:>13.1f} {runs[1]:>13.1f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[56, 80, 120])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--networks", action="store_true",
                    help="compare the tracer's count with real networks' page faults")
    ap.add_argument("--weights", action="store_true",
                    help="time convolutions whose weights lie under and over the threshold")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)   # SIZE mapped|heap: a child
    ap.add_argument("--conv", nargs=4, help=argparse.SUPPRESS)  # IN OUT SIZE mapped|heap
    ap.add_argument("--faults", nargs=2, help=argparse.SUPPRESS)   # NET BATCH: a child
    args = ap.parse_args()
    if args.faults:
        print(_faults(args.faults[0], int(args.faults[1]), args.threads))
        return
    if args.conv:
        cin, cout, size = map(int, args.conv[:3])
        print(json.dumps(_conv(cin, cout, size, args.conv[3] == "mapped", args.threads)))
        return
    if args.networks:
        networks(args.threads)
        return
    if args.weights:
        weights(args.threads)
        return
    if args.one:
        print(json.dumps(_one(int(args.one[0]), args.one[1] == "mapped", args.threads)))
        return
    for size in args.sizes:
        tensor = 8 * 96 * size * size * 4 / MIB
        runs = _mapped_and_heap(["--one", str(size)], args.threads)
        print(f"\nbatch 8, {size}x{size}: the expanded tensor is {tensor:.1f} MiB "
              f"({'over' if tensor > 32 else 'under'} the 32 MiB threshold); page faults per "
              f"run {runs['mapped']['faults_per_run']:.0f} mapped, "
              f"{runs['heap']['faults_per_run']:.0f} from the heap")
        print(f"  {'layer':<18} {'mapped ms':>10} {'heap ms':>9} {'extra ms/MiB':>13}")
        for name, a, b in zip(LAYERS, runs["mapped"]["layers_ms"], runs["heap"]["layers_ms"]):
            print(f"  {name:<18} {a:>10.3f} {b:>9.3f} {(a - b) / tensor:>13.3f}")


if __name__ == "__main__":
    main()
