"""How finely an NVIDIA GPU's NVML sensors resolve power: the window a layer's power reading
needs (``NvmlMeter.min_window_s``).

For about ``--seconds`` idle and as long under a matrix-product load, polls the total-energy
counter and the power reading as fast as it can and reports how often each changes (median
interval between changes), idle and busy power from the counter and from the reading, and the
spread of the counter's power over windows of 50 ms to 1 s under the steady load: the shortest
window whose spread is small is the one to measure layers with.

    python benchmarks/nvml_probe.py [--device 0] [--seconds 2] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def poll(nvml, handle, seconds: float, work=None) -> dict:
    """Every reading for ``seconds`` (calling ``work()`` between readings when given)."""
    t, energy, power = [], [], []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        if work is not None:
            work()
        t.append(now)
        energy.append(nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        power.append(nvml.nvmlDeviceGetPowerUsage(handle))
    return {"t": np.array(t), "energy_mj": np.array(energy, dtype=float),
            "power_mw": np.array(power, dtype=float)}


def change_interval_ms(t, values) -> float | None:
    changed = np.flatnonzero(np.diff(values) != 0) + 1
    return float(np.median(np.diff(t[changed])) * 1e3) if len(changed) > 2 else None


def window_spread(t, energy_mj, window_s: float) -> dict:
    """Power from the counter over consecutive windows of ``window_s``: mean and spread."""
    edges = np.arange(t[0], t[-1], window_s)
    idx = np.searchsorted(t, edges)
    watts = [(energy_mj[b] - energy_mj[a]) / 1e3 / (t[b] - t[a])
             for a, b in zip(idx[:-1], idx[1:]) if b > a]
    if len(watts) < 2:
        return {"window_s": window_s, "n": len(watts)}
    w = np.array(watts)
    return {"window_s": window_s, "n": len(w), "mean_w": round(float(w.mean()), 1),
            "cv_pct": round(float(w.std() / w.mean() * 100), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", type=int, default=0, help="CUDA / NVML index (default 0)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per phase (default 2)")
    ap.add_argument("--json", help="write the result here too")
    args = ap.parse_args(argv)
    import pynvml as nvml
    import torch

    nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByIndex(args.device)
    a = torch.randn(4096, 4096, device=f"cuda:{args.device}")
    torch.cuda.synchronize()
    pending = []

    def work():  # keep a few products queued: the GPU stays busy while we poll
        pending.append((a @ a).sum())
        if len(pending) > 4:
            pending.pop(0).item()

    idle = poll(nvml, handle, args.seconds)
    for _ in range(20):  # reach a steady clock before the busy phase is read
        work()
    busy = poll(nvml, handle, args.seconds, work)
    out = {"gpu": nvml.nvmlDeviceGetName(handle), "driver": nvml.nvmlSystemGetDriverVersion()}
    for name, d in (("idle", idle), ("busy", busy)):
        span = d["t"][-1] - d["t"][0]
        out[name] = {
            "reads": len(d["t"]),
            "energy_change_ms": change_interval_ms(d["t"], d["energy_mj"]),
            "power_change_ms": change_interval_ms(d["t"], d["power_mw"]),
            "counter_w": round(float((d["energy_mj"][-1] - d["energy_mj"][0]) / 1e3 / span), 1),
            "reading_w": round(float(d["power_mw"].mean() / 1e3), 1)}
    out["busy"]["windows"] = [window_spread(busy["t"], busy["energy_mj"], w)
                              for w in (0.05, 0.1, 0.2, 0.5, 1.0)]
    nvml.nvmlShutdown()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
