"""Does the speed probe follow a shared host's drift for every kind of network?

The probe (``profiling.timing.Reference``: a small conv) is compute-bound. On a VM whose memory
bandwidth drifts apart from its compute speed, memory-bound networks would swing more than the
probe says. This alternates, for ``--seconds``, the conv probe, a memory-bound probe (an add of
two 8M-float tensors: 96 MB moved), a cache-sized one (eight adds of 1M floats: 12 MB each), one of many small ops (16 1x1 convs
with ReLUs on a 64x14x14 map: 32 parallel regions) and whole runs of a compute-bound and a memory-bound network,
and prints how steady each network's time is on its own and divided by either probe
(coefficient of variation over the cycles; lower is steadier: a probe that tracks the drift
takes it out).

    python benchmarks/probe_drift.py --seconds 300 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neuralpower import nets  # noqa: E402
from neuralpower.profiling.timing import Reference, small_ops_probe  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def best_ms(fn, n=3) -> float:
    """The fastest of ``n`` runs (a preempted run says nothing about speed), as the probe does."""
    return best(fn, n)[0]


def best(fn, n) -> tuple[float, float]:
    """Wall and process CPU milliseconds of the fastest of ``n`` runs."""
    out = []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        out.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
    return min(out)


def steal() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs since boot (/proc/stat; (0, 0) where unreadable):
    time the hypervisor gave this VM's CPUs to others."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    return (v[7] if len(v) > 7 else 0), sum(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--nets", nargs="+", default=["resnet50", "mobilenet_v2"],
                    help="torchvision networks (default: a compute-bound and a memory-bound one)")
    ap.add_argument("--json", help="write every cycle's times here")
    ap.add_argument("--reuse", help="measure nothing: summarise the cycles of an earlier --json")
    ap.add_argument("--predictor", help="also print this predictor's error on each network in "
                    "each conv probe quarter, taken to the probe's speed as validate does")
    args = ap.parse_args(argv)
    if args.reuse:
        cycles = json.loads(Path(args.reuse).read_text())
        args.nets = [k for k in cycles[0] if k.replace("_cpu", "") == k and not k.endswith("probe")
                     and k not in ("t", "steal_pct")]
        args.seconds = cycles[-1]["t"] - cycles[0]["t"]
        summarise(cycles, args.nets, args.seconds, args.predictor)
        return 0
    torch.manual_seed(0)
    conv = Reference("cpu")
    xy = (torch.randn(8 << 20), torch.randn(8 << 20))
    small = (torch.randn(1 << 20), torch.randn(1 << 20))  # 12 MB moved: within a large L3
    ops, ops_x = small_ops_probe()
    models = {n: nets.build(f"torchvision:{n}", device="cpu").eval() for n in args.nets}
    x = torch.randn(1, 3, 224, 224)
    cycles = []
    with torch.inference_mode():
        for m in models.values():   # warm-up
            m(x)
        end = time.perf_counter() + args.seconds
        while time.perf_counter() < end:
            for _ in range(8):   # as a measurement takes it: the median of about eight
                conv.sample()
            row = {"t": time.time(), "conv_probe": conv.take(), "mem_probe": best_ms(lambda: torch.add(*xy)),
                   "cache_probe": best_ms(lambda: [torch.add(*small) for _ in range(8)]),
                   "ops_probe": best_ms(lambda: ops(ops_x))}
            s0 = steal()
            for name, m in models.items():
                row[name], row[name + "_cpu"] = best(lambda: m(x), n=2)
            s1 = steal()
            row["steal_pct"] = 100 * (s1[0] - s0[0]) / max(s1[1] - s0[1], 1)
            cycles.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(cycles))
    summarise(cycles, args.nets, args.seconds, args.predictor)
    return 0


def summarise(cycles: list[dict], networks: list[str], seconds: float,
              predictor: str | None = None) -> None:
    t = {k: np.array([c[k] for c in cycles]) for k in cycles[0] if k != "t"}
    probes = [k for k in ("conv_probe", "mem_probe", "cache_probe", "ops_probe") if k in t]

    def cv(v):
        return 100 * float(np.std(v) / np.mean(v))

    print(f"{len(cycles)} cycles in {seconds:.0f} s; coefficient of variation %:\n")
    print("| time | alone | " + " | ".join(f"/ {p}" for p in probes) + " |")
    print("|---" * (len(probes) + 2) + "|")
    for k in probes:
        print(f"| {k} | {cv(t[k]):.1f} |" + " |" * len(probes))
    for n in networks:
        print(f"| {n} | {cv(t[n]):.1f} | " + " | ".join(f"{cv(t[n] / t[p]):.1f}" for p in probes)
              + " |")
    if "ops_probe" in t:
        # a network as a mix of compute (the conv probe's speed) and per-op overhead (the ops
        # probe's): the share ``a`` that leaves it steadiest, fitted here on the network itself
        conv, ops = (t[p] / np.median(t[p]) for p in ("conv_probe", "ops_probe"))
        print("\n| network | compute share a (fitted) | CV % of time / (a conv + (1 - a) ops) |")
        print("|---|---|---|")
        for n in networks:
            a = min(np.linspace(0, 1, 101), key=lambda a: cv(t[n] / (a * conv + (1 - a) * ops)))
            print(f"| {n} | {a:.2f} | {cv(t[n] / (a * conv + (1 - a) * ops)):.1f} |")
    # the slow and fast phases: each quarter of the cycles by the conv probe, medians relative
    # to the fastest quarter (does a network slow down as much as the probes, and is it
    # descheduled (steal, wall over CPU time) or slower on the CPU?)
    q = np.digitize(t["conv_probe"], np.quantile(t["conv_probe"], [0.25, 0.5, 0.75]))
    cols = [*probes, *networks, *(n + "_cpu" for n in networks if n + "_cpu" in t)]
    print("\n| conv probe quarter | " + " | ".join(cols) + " | steal % |")
    print("|---" * (len(cols) + 2) + "|")
    base = {k: np.median(t[k][q == 0]) for k in cols}
    for i in range(4):
        steal_pct = np.median(t["steal_pct"][q == i]) if "steal_pct" in t else float("nan")
        print(f"| {i + 1} | " + " | ".join(f"{np.median(t[k][q == i]) / base[k]:.2f}" for k in cols)
              + f" | {steal_pct:.1f} |")
    if predictor:
        quarter_errors(t, q, networks, predictor)


def quarter_errors(t: dict, q: np.ndarray, networks: list[str], path: str) -> None:
    """The predictor's error (%) on each network's median time in each conv probe quarter, its
    prediction taken to the probe's speed then (``Predictor.speed``, as ``validate`` does). The
    runs here are the fastest of two, not a measurement's median: a few percent fast."""
    from neuralpower import Predictor, predict

    p = Predictor.load(path)
    total = {n: predict(nets.build(f"torchvision:{n}"), (1, 3, 224, 224), p).totals["runtime_ms"]
             for n in networks}
    print(f"\n{p.device}: error % of the prediction at the conv probe's speed\n")
    print("| conv probe quarter | speed | ops probe ms | " + " | ".join(networks) + " |")
    print("|---" * (len(networks) + 3) + "|")
    for i in range(4):
        speed = p.speed(float(np.median(t["conv_probe"][q == i])))
        ops = f"{np.median(t['ops_probe'][q == i]):.3f}" if "ops_probe" in t else "-"
        print(f"| {i + 1} | {speed:.3f} | {ops} | " + " | ".join(
            f"{100 * (total[n] * speed / np.median(t[n][q == i]) - 1):+.1f}" for n in networks)
              + " |")


if __name__ == "__main__":
    script_exit(main)
