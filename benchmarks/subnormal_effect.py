"""What subnormal numbers cost on this CPU, and where Swin-T meets them.

    python benchmarks/subnormal_effect.py [--threads 2] [--json OUT]

1. A batched product (48 x 49x49 @ 49x32, Swin's last-but-one stage) with a share of its
   first operand subnormal (3.7e-44, what exp(-100) gives), placed at random or in blocks:
   the extra time per multiply-add with a subnormal operand.
2. A softmax over 49 keys whose rows hold -100 offsets, against the same without.
3. torchvision's Swin-T at 1x3x224x224, run for real: each attention product timed as it runs
   (a dispatch mode around every ``matmul``), the shifted blocks' (whose softmax output the
   tracer marks with ``subnormal_share``) against the unshifted ones of the same stage; and the
   tracer's share for each.

Prints one table per part; medians of repeated runs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network_accuracy import markdown  # noqa: E402

from neuralpower import trace  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

SUBNORMAL = 3.7e-44  # float32 exp(-100)


def _median_us(f, n=60) -> float:
    for _ in range(5):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def product_costs() -> list[dict]:
    torch.manual_seed(0)
    b, t, d = 48, 49, 32
    v = torch.randn(b, t, d)
    base = torch.softmax(torch.randn(b, t, t) * 0.1, -1)
    i = torch.arange(t)
    patterns = {f"random {s:.0%}": torch.rand(t, t) < s for s in (0.05, 0.2, 0.4)}
    patterns["block: 34 rows x 21 keys"] = (i[:, None] < 34) & (i[None, :] < 21)
    patterns["Swin's edge window (4|3 columns)"] = (i[:, None] % 7 < 4) != (i[None, :] % 7 < 4)
    normal = _median_us(lambda: torch.bmm(base, v))
    out = []
    for name, mask in patterns.items():
        a = torch.where(mask, torch.full_like(base, SUBNORMAL), base)
        us = _median_us(lambda: torch.bmm(a, v))
        share = float(mask.float().mean())
        out.append({"pattern": name, "share": share, "normal_us": normal, "us": us,
                    "ns_per_subnormal_mac": (us - normal) * 1e3 / (share * b * t * t * d)})
    return out


def softmax_costs() -> list[dict]:
    torch.manual_seed(0)
    out = []
    for b, t in ((48, 49), (192, 49), (16, 196)):
        x = torch.randn(b, t, t) * 0.1
        masked = x + torch.where(torch.arange(t)[None, :] % 7 < 3, -100.0, 0.0)
        normal, slow = (_median_us(lambda: torch.softmax(x, -1)),
                        _median_us(lambda: torch.softmax(masked, -1)))
        out.append({"shape": f"{b}x{t}x{t}", "normal_us": normal, "masked_us": slow,
                    "ns_per_element": (slow - normal) * 1e3 / (b * t * t)})
    return out


class _TimeMatmuls(TorchDispatchMode):
    """The wall time of every aten.matmul as the network runs (inference mode: matmul is seen
    whole, before it is split into views and a bmm)."""

    def __init__(self):
        super().__init__()
        self.times: list[float] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket is torch.ops.aten.matmul:
            self.times.append((time.perf_counter() - t) * 1e3)
        return out


def swin_products(runs: int = 7) -> list[dict]:
    model = torchvision.models.swin_t().eval()
    table = trace(model, (1, 3, 224, 224))
    products = table[table.op == "bmm"].reset_index(drop=True)  # in call order, as timed below
    x = torch.randn(1, 3, 224, 224)
    timed = []
    with torch.inference_mode():
        model(x)
        for _ in range(runs):
            mode = _TimeMatmuls()
            with mode:
                model(x)
            timed.append(mode.times)
    per_call = [statistics.median(col) for col in zip(*timed)]
    assert len(per_call) == len(products), "one timed matmul per traced product"
    out = []
    for (_, row), ms in zip(products.iterrows(), per_call):
        if row["name"].endswith("bmm_1"):  # attention @ values: the product after softmax
            out.append({"name": row["name"], "batch": int(row["batch"]),
                        "subnormal_share": (None if row.isna()["subnormal_share"]
                                            else float(row["subnormal_share"])),
                        "ms": ms})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    products = product_costs()
    print(markdown(["first operand subnormal", "share", "normal us", "us", "ns per subnormal MAC"],
                   [[r["pattern"], f"{r['share']:.3f}", f"{r['normal_us']:.0f}", f"{r['us']:.0f}",
                     f"{r['ns_per_subnormal_mac']:.2f}"] for r in products]))
    soft = softmax_costs()
    print("\n" + markdown(["softmax (3 of every 7 keys -100)", "normal us", "masked us",
                           "extra ns per element"],
                          [[r["shape"], f"{r['normal_us']:.0f}", f"{r['masked_us']:.0f}",
                            f"{r['ns_per_element']:.2f}"] for r in soft]))
    swin = swin_products()
    print("\n" + markdown(["Swin-T product (attention @ values)", "batch",
                           "tracer's subnormal_share", "ms in the running network"],
                          [[r["name"], r["batch"], "-" if r["subnormal_share"] is None
                            else f"{r['subnormal_share']:.4f}", f"{r['ms']:.3f}"] for r in swin]))
    shifted = sum(r["ms"] for r in swin if r["subnormal_share"])
    print(f"\nSwin-T's shifted products: {shifted:.1f} ms per run")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "torch": torch.__version__, "products": products,
                       "softmax": soft, "swin_t": swin}, f, indent=1)


if __name__ == "__main__":
    script_exit(main)
