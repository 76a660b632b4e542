"""Speed: trace + predict of ResNet-50 (warm), loading each shipped predictor and a whole
`neuralpower predict` command (cold, fresh processes), and fitting a 5,000-row file.

    python benchmarks/speed.py
"""
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuralpower import Predictor, predict  # noqa: E402
from neuralpower.data import load  # noqa: E402
from neuralpower.nets import build  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402


def median_ms(fn, repeats=15):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    predictor = Predictor.load(ROOT / "models" / "raptorlake_cpu.predictor")
    model = build("torchvision:resnet50")
    predict(model, (1, 3, 224, 224), predictor)  # warm-up
    med, best = median_ms(lambda: predict(model, (1, 3, 224, 224), predictor))
    print(f"trace + predict resnet50 (warm): median {med:.1f} ms, best {best:.1f} ms "
          "(goal < 100 ms)")
    med, best = median_ms(lambda: predict(build("torchvision:resnet50"), (1, 3, 224, 224),
                                          predictor), repeats=5)
    print(f"build + trace + predict resnet50: median {med:.1f} ms, best {best:.1f} ms")

    # cold: what a user waits for. Loading alone is timed after the imports, in a fresh process
    load_code = ("import sys, time; import skops.io; from neuralpower import Predictor; "
                 "t = time.perf_counter(); Predictor.load(sys.argv[1]); "
                 "print(time.perf_counter() - t)")
    for path in sorted((ROOT / "models").glob("*.predictor")):
        times = [float(subprocess.run([sys.executable, "-c", load_code, str(path)], check=True,
                                      capture_output=True, text=True).stdout)
                 for _ in range(3)]
        print(f"load {path.name} (fresh process, after imports): median "
              f"{statistics.median(times):.2f} s")
    command = [sys.executable, "-m", "neuralpower", "predict",
               str(ROOT / "models" / "amd_epyc_2t_cpu.predictor"), "torchvision:resnet50",
               "--json"]
    med, best = median_ms(lambda: subprocess.run(command, check=True, capture_output=True),
                          repeats=3)
    print(f"neuralpower predict models/amd_epyc_2t_cpu.predictor torchvision:resnet50 --json "
          f"(whole command): median {med / 1e3:.1f} s, best {best / 1e3:.1f} s")

    rows = load(ROOT / "profiling" / "public" / "sysidentif_tx2_gpu_conv.csv")
    start = time.perf_counter()
    Predictor.fit(rows, log=lambda m: None)
    print(f"fit {len(rows)} rows (conv2d runtime + power): {time.perf_counter() - start:.1f} s "
          "(goal < 60 s)")


if __name__ == "__main__":
    script_exit(main)
