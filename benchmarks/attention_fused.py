"""Why attention is a kind of its own: ``F.scaled_dot_product_attention`` runs one fused kernel
on CPUs and GPUs, faster than its math (two scalings, a product, a softmax, a product), which is
what the meta device runs and what the tracer saw before ``attention`` was a kind. For the
attention of ViT-sized heads, the median time of each (inference mode, this process's threads):

    python benchmarks/attention_fused.py [--device cuda] [--threads 2]
"""
import argparse
import statistics
import sys
import time

import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (batch, heads, tokens, head size): ViT-B/16 at batch 1 and 8, DeiT-S, ViT-Ti
SHAPES = [(1, 12, 197, 64), (8, 12, 197, 64), (1, 6, 197, 64), (1, 3, 197, 64)]


def median_ms(fn, device, repeats=50) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{'batch x heads x tokens x size':30s} {'fused ms':>9s} {'math ms':>9s} {'math/fused':>10s}")
    for b, h, t, d in SHAPES:
        # heads split from tokens by a transpose, as a real network's are
        x = torch.randn(b, t, h * d, device=device).view(b, t, h, d).transpose(1, 2)
        with torch.inference_mode():
            fused = median_ms(lambda: F.scaled_dot_product_attention(x, x, x), device)
            with sdpa_kernel(SDPBackend.MATH):
                math = median_ms(lambda: F.scaled_dot_product_attention(x, x, x), device)
        print(f"{f'{b} x {h} x {t} x {d}':30s} {fused:9.3f} {math:9.3f} {math / fused:10.2f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
