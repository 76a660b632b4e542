"""Training-step accuracy on this machine: a training predictor's step time against a measured
training step (forward + backward, training mode), network by network, in the same run.

    python benchmarks/training_accuracy.py --predictor models/intel_xeon_2t_cpu_train.predictor \\
        [--nets resnet18 ...] [--input 8x3x224x224]

Prints each network's predicted and measured step (median of about a second of steps; the
prediction taken to the device's speed during the measurement, as in ``validate``) and the
summary: median |error|, share within +-10 %, Kendall tau. The optimizer step is in neither.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import nets  # noqa: E402
from neuralpower.measure import measure  # noqa: E402
from neuralpower.predict import predict  # noqa: E402
from neuralpower.predictor import Predictor  # noqa: E402
from neuralpower.validate import summary  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

NETS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0",
        "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf", "vgg11",
        "convnext_tiny", "vit_b_16"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor", required=True, type=Path)
    ap.add_argument("--nets", nargs="+", default=NETS)
    ap.add_argument("--input", default="8x3x224x224")
    ap.add_argument("--target-s", type=float, default=1.0)
    args = ap.parse_args()
    predictor = Predictor.load(args.predictor)
    if predictor.mode != "train":
        sys.exit(f"{args.predictor} is not a training predictor (mode {predictor.mode})")
    shape = nets.parse_input(args.input)[0]
    rows = []
    print(f"{predictor.device}, training steps at input {args.input}\n")
    print(f"{'network':28s} {'predicted ms':>12s} {'measured ms':>12s} {'error':>8s}  unmodeled")
    for name in args.nets:
        net = name if ":" in name else f"torchvision:{name}"
        p = predict(nets.build(net), shape, predictor, network=net)
        m = measure(nets.build(net, device="cpu"), shape, train=True, target_s=args.target_s)
        predicted = p.totals["runtime_ms"] * predictor.speed(m["reference_ms"])
        err = 100 * (predicted / m["runtime_ms"] - 1)
        print(f"{net:28s} {predicted:12.1f} {m['runtime_ms']:12.1f} {err:+7.1f} %  "
              f"{p.totals['layers_unmodeled']}", flush=True)
        rows.append({"predicted": {"runtime_ms": predicted, "power_w": None, "energy_mj": None},
                     "measured": {"runtime_ms": m["runtime_ms"], "power_w": None,
                                  "energy_mj": None},
                     "error_pct": {"runtime_ms": err, "power_w": None, "energy_mj": None}})
    s = summary(rows)["runtime_ms"]
    print(f"\nmedian |error| {s['median_abs_error_pct']:.1f} %, within ±10 %: "
          f"{100 * s['within_10_pct_share']:.0f} % of {s['n']}, Kendall tau "
          f"{s['kendall_tau'] if s['kendall_tau'] is None else round(s['kendall_tau'], 2)}")


if __name__ == "__main__":
    script_exit(main)
