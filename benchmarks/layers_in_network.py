"""Each layer of one real network, timed inside the running network, against its prediction:
where a network's error comes from, kind by kind.

The network's one-op modules (a conv, a norm, an activation; not ``F.max_pool2d`` or
``torch.cat`` written in ``forward``) are timed by hooks as ``profile --zoo`` times them
(``timing.time_network``), in this process; the speed probes are timed after, and each
prediction is taken to that speed (the predictor's ``speed``) and its small-ops probe.

    python benchmarks/layers_in_network.py --predictor MODEL --net NET [--input 1x3x224x224] [--top 12]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from neuralpower import Predictor, predict  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402
from neuralpower.inputs import as_shapes  # noqa: E402
from neuralpower.nets import build  # noqa: E402
from neuralpower.profiling.timing import Reference, time_network  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True)
    ap.add_argument("--net", required=True, help="NET as the CLI takes it")
    ap.add_argument("--input", default="1x3x224x224")
    ap.add_argument("--top", type=int, default=12, help="layers listed, by measured time")
    args = ap.parse_args()
    predictor = Predictor.load(args.predictor)
    shape = tuple(as_shapes(args.input)[0])
    model = build(args.net, device="cpu")   # its own random initialisation
    modules = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    with torch.inference_mode():
        timed = time_network(model, torch.randn(shape), modules=modules, min_repeats=20,
                             target_s=2.0)
    reference = Reference("cpu", ops=True)
    for _ in range(20):
        reference.sample()
    probe, ops = reference.take(), reference.take_ops()
    speed = predictor.speed(probe)
    layers = predict(build(args.net), shape, predictor, ops_probe_ms=ops).modeled
    measured = {n: float(np.median(v)) for n, v in timed.layers.items() if v}
    one = layers[layers.module.isin(measured)].groupby("module").filter(lambda g: len(g) == 1)
    one = one.assign(measured_ms=one.module.map(measured), predicted_ms=one.runtime_ms * speed)
    one = one.assign(ratio=one.predicted_ms / one.measured_ms)
    print(f"{args.net} at {args.input}: speed probe {probe} ms, small-ops probe {ops} ms, "
          f"speed {speed:.3f}; whole network {np.median(timed.network):.2f} ms (hooked), "
          f"{len(one)} one-op modules timed")
    by_kind = one.groupby("kind").agg(layers=("kind", "size"), measured_ms=("measured_ms", "sum"),
                                      predicted_ms=("predicted_ms", "sum"))
    by_kind["predicted / measured"] = by_kind.predicted_ms / by_kind.measured_ms
    print(by_kind.round(3).to_string())
    if args.top > 0:
        print(one.sort_values("measured_ms", ascending=False)[
            ["module", "kind", "input_shape", "measured_ms", "predicted_ms", "ratio"]]
            .head(args.top).round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    script_exit(main)
