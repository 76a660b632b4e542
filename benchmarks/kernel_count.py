"""How many ops does a network really run, against how many the tracer lists? On a GPU that
waits on the host each op costs host time, so a network the tracer sees as more ops than it
runs is predicted too slow (the H100's ViTs, when the tracer listed attention as its math:
seven ops where the device runs one fused kernel; now one ``attention`` op). For each network,
one inference run under ``torch.profiler``: the ATen ops the host dispatched at the top level
(not those inside another op) and, on CUDA, the kernels launched, beside the tracer's working
ops (views left out) and its attention ops (fused, or products and softmaxes under an
attention module).

    python benchmarks/kernel_count.py [--device cuda] [--nets vit_b_16 timm:deit_tiny_patch16_224 ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralpower import nets  # noqa: E402
from neuralpower.measure import dispatched_ops  # noqa: E402
from neuralpower.profiling.campaign import parse_device  # noqa: E402
from neuralpower.trace import trace  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def counts(name: str, shape, device) -> dict:
    name = name if ":" in name else f"torchvision:{name}"
    top, kernels = dispatched_ops(nets.build(name, device=device).eval(),
                                  torch.randn(*shape, device=device))
    table = trace(nets.build(name), shape)
    working = table[table.kind != "free"]
    attention = working[working.module.fillna("").str.contains("attn|attention")
                        & working.kind.isin(["attention", "matmul", "softmax", "mul", "copy"])]
    return {"network": name, "aten_top_level": len(top), "cuda_kernels": kernels,
            "traced_working_ops": len(working), "traced_attention_ops": len(attention)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--nets", nargs="+", default=["vit_b_16", "timm:deit_small_patch16_224",
                                                  "swin_t", "resnet18", "convnext_tiny",
                                                  "mobilenet_v2"])
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args(argv)
    device = parse_device(args.device)
    print(f"{'network':28s} {'aten ops':>9s} {'kernels':>8s} {'traced':>7s} {'attention':>9s}")
    for name in args.nets:
        c = counts(name, (args.batch, 3, 224, 224), device)
        print(f"{name:28s} {c['aten_top_level']:9d} {c['cuda_kernels']:8d} "
              f"{c['traced_working_ops']:7d} {c['traced_attention_ops']:9d}", flush=True)
    return 0


if __name__ == "__main__":
    script_exit(main)
