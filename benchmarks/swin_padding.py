"""Why Swin-T at 160x160 runs slower than at 224x224 on a CPU, freshly initialised.

At 160x160 Swin-T's token maps (40, 20, 10, 5 per side) are padded with zeros to a multiple of
its 7x7 window. torchvision initialises every linear bias to zero, so a padded token's query,
key and value are exactly zero; in a shifted window a query whose own region is all padding
attends to the other regions' tokens only through the -100 mask, with softmax weights near
exp(-100), and its output row is subnormal. The attention's output projection then reads them
and takes the CPU's slow path. This prints, per input size, the products whose operands hold
subnormal numbers and the time of each linear shape (torch.profiler, self time per call).

    python benchmarks/swin_padding.py [--sizes 224 160] [--runs 5]
"""
import argparse

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

PRODUCTS = {torch.ops.aten.linear, torch.ops.aten.matmul, torch.ops.aten.addmm, torch.ops.aten.mm,
            torch.ops.aten.bmm}


class Subnormals(TorchDispatchMode):
    """Records each product's op, first operand's shape and share of subnormal entries."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in PRODUCTS:
            x = args[1] if func.overloadpacket is torch.ops.aten.addmm else args[0]
            tiny = torch.finfo(x.dtype).tiny
            share = float(((x != 0) & (x.abs() < tiny)).float().mean())
            self.seen.append((func.overloadpacket.__name__, tuple(x.shape), share))
        return func(*args, **(kwargs or {}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 160])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.swin_t().eval()
    for size in args.sizes:
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            with Subnormals() as mode:
                model(x)
            for _ in range(3):
                model(x)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for _ in range(args.runs):
                    model(x)
        hit = [s for s in mode.seen if s[2] > 0]
        print(f"\n{size}x{size}: {len(hit)} of {len(mode.seen)} products read subnormal "
              f"numbers")
        for op, shape, share in hit:
            print(f"  {op} {shape}: {100 * share:.1f} % of its first operand")
        calls = [e for e in prof.key_averages(group_by_input_shape=True)
                 if e.key == "aten::addmm"]
        total = sum(e.self_cpu_time_total for e in calls) / args.runs / 1e3
        print(f"  linear layers (addmm): {total:.1f} ms a run; slowest shapes per call:")
        for e in sorted(calls, key=lambda e: -e.self_cpu_time_total / e.count)[:4]:
            print(f"    {e.input_shapes[1]} x {e.input_shapes[2]}: "
                  f"{e.self_cpu_time_total / e.count / 1e3:.2f} ms ({e.count} calls)")


if __name__ == "__main__":
    main()
