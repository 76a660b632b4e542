"""What ``kind_gap`` (ops since the last op of the same kind) is for, in two measurements.

1. A kernel not run for a while runs slower. Each network's head global pool is timed inside
   the running network (hooks, as ``profile`` times layers), run on its own in a loop on the
   same input, and inside the network right after the same pool ran (in its pre-hook, untimed).
   In networks without squeeze-and-excitation blocks the head pool is the only pool of a run.
2. What the feature buys: on each zoo campaign given, profile_accuracy.py's held-out 20 % of
   the rows (seed 0), fitted with the context column and with it removed (neutral: the fit
   drops a constant), held-out runtime RMSPE per kind.

    python benchmarks/kind_gap_effect.py [CSV ...]   (default: timing only)
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor, nets  # noqa: E402
from neuralpower.data import at_reference_speed, load  # noqa: E402
from neuralpower.trace import trace  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from profile_accuracy import KINDS, held_out, rmspe_by_kind  # noqa: E402  (beside this file)

NETS = [("torchvision:resnet50", (1, 3, 224, 224)), ("torchvision:regnet_x_400mf", (4, 3, 128, 128)),
        ("torchvision:mobilenet_v3_large", (2, 3, 256, 256)),
        ("torchvision:efficientnet_b0", (3, 3, 224, 224))]


def _in_network_us(model, x, module, before=None, runs=40) -> float:
    """Median time of ``module`` inside the running network; ``before(input)`` runs untimed
    just before it."""
    times, start = [], {}

    def pre(mod, args):
        if before is not None:
            before(args[0])
        start["t"] = time.perf_counter_ns()

    def post(mod, args, out):
        times.append((time.perf_counter_ns() - start["t"]) / 1e3)

    handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad():
            for _ in range(runs):
                model(x)
    finally:
        for h in handles:
            h.remove()
    return statistics.median(times[5:])


def timing() -> None:
    print("| network | input | pool input | pools per run | kind_gap | in the network us | "
          "after the same pool us | on its own us |")
    print("|---|---|---|---|---|---|---|---|")
    for name, shape in NETS:
        torch.manual_seed(0)
        model, x = nets.build(name, device="cpu"), torch.randn(*shape)
        table = trace(model, shape)
        pools = table[table.kind == "avg_pool2d"]
        seen = {}
        h = model.avgpool.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        with torch.no_grad():
            model(x)
        h.remove()
        y = seen["x"]
        alone = []
        with torch.no_grad():
            for _ in range(200):
                t = time.perf_counter_ns()
                model.avgpool(y)
                alone.append((time.perf_counter_ns() - t) / 1e3)
        plain = _in_network_us(model, x, model.avgpool)
        warm = _in_network_us(model, x, model.avgpool, model.avgpool.forward)  # (forward: no hooks)
        print(f"| {name} | {'x'.join(map(str, shape))} | {'x'.join(map(str, y.shape))} | "
              f"{len(pools)} | {int(pools.kind_gap.iloc[-1])} | {plain:.1f} | {warm:.1f} | "
              f"{statistics.median(alone[20:]):.1f} |", flush=True)


def held_out_errors(path) -> None:
    rows, _ = at_reference_speed(load(path))
    rows = rows[rows.kind.isin(KINDS)].reset_index(drop=True)
    test = held_out(rows, "rows")
    line = []
    for data in (rows.assign(kind_gap=np.nan), rows):   # without kind_gap, then with it
        errors = rmspe_by_kind(Predictor.fit(data[~test], log=lambda m: None), data[test])
        line.append(" / ".join(f"{errors[k]:.1f}" for k in ("conv2d", "linear", "pooling")))
    print(f"| {Path(path).name} | {line[0]} | {line[1]} |", flush=True)


def main(argv) -> int:
    timing()
    if argv:
        print("\nHeld-out runtime RMSPE % (conv2d / linear / pooling), rows held out (seed 0):\n")
        print("| campaign | without kind_gap | with kind_gap |")
        print("|---|---|---|")
        for path in argv:
            held_out_errors(path)
    return 0


if __name__ == "__main__":
    script_exit(main, sys.argv[1:])
