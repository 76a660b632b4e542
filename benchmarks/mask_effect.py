"""What a mask's pattern costs masked_fill and where on this CPU.

    python benchmarks/mask_effect.py [--threads 2] [--shape 192 49 49]

A tensor the size of Swin-T's first-stage attention scores (3 heads x 64 windows of 49 x 49
at batch 1) filled where a mask is true, for masks of the same size: random (``x > 0`` of
random values, half true), one block (the first half of every window's rows), triangular (a
causal mask), none true, and a causal mask of one window broadcast over the rest (as models
pass it). Beside them, an add of the same tensors and the comparison that makes a mask.
Prints median milliseconds of repeated runs. The synthetic networks' masks compare positions
with a bound (synthetic.py, ``_mask_block``) because of what this shows: the random mask's
branches cannot be predicted and cost several times the others.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network_accuracy import markdown  # noqa: E402
from subnormal_effect import _median_us  # noqa: E402

from neuralpower.errors import script_exit  # noqa: E402


def _median_ms(f) -> float:
    return _median_us(f, n=200) / 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shape", type=int, nargs=3, default=[192, 49, 49])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(*args.shape)
    zero = torch.zeros(())
    rows = x.shape[1]
    block = torch.zeros_like(x, dtype=torch.bool)
    block[:, : rows // 2] = True
    causal = torch.ones(x.shape[1:], dtype=torch.bool).triu(1)
    masks = {"random (x > 0)": x > 0, "one block": block,
             "triangular": causal.expand_as(x).contiguous(),
             "none true": torch.zeros_like(x, dtype=torch.bool),
             "triangular, broadcast": causal}
    table = [[name, f"{m.float().mean().item():.2f}",
              f"{_median_ms(lambda: x.masked_fill(m, 0.0)):.3f}",
              f"{_median_ms(lambda: torch.where(m, x, zero)):.3f}"] for name, m in masks.items()]
    print(f"tensor {'x'.join(map(str, x.shape))} float32, {args.threads} threads")
    print(markdown(["mask", "true share", "masked_fill ms", "where ms"], table))
    print(f"\nbeside them: add {_median_ms(lambda: x + x):.3f} ms, "
          f"comparison (x > 0) {_median_ms(lambda: x > 0):.3f} ms")


if __name__ == "__main__":
    script_exit(main)
