"""Convert the raw public files behind ``profiling/unseen/`` to the measurement CSV schema.

    python profiling/unseen/convert.py                      # the excerpts kept in raw/
    python profiling/unseen/convert.py --willowec DIR --neusight-linear FILE [-o OUTDIR]

``--willowec DIR`` is a run folder of willowec/characterizing-pytorch-power (``src/out/<host>-<date>/``
holding ``conv.csv``, ``linear.csv``, ``pool.csv``); ``--neusight-linear FILE`` is one GPU's file of
trsharm25/NeuSight ``scripts/asplos/data/dataset/train/collect/linear/p2.1.0/``. The full original
files and the excerpts in ``raw/`` both work: willowec rows are read by position (their pool
header names fewer columns than its rows hold), NeuSight columns by name. README.md says where each
file comes from and how each column is derived.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
COLUMNS = ["kind", "batch", "in_channels", "in_h", "in_w", "out_channels", "out_h", "out_w",
           "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h",
           "dilation_w", "groups", "in_features", "out_features", "runtime_ms", "power_w",
           "device", "source"]


def _rows(path: Path) -> list[list[float]]:
    """Data rows of a willowec file as floats (header skipped, read by position)."""
    with open(path, newline="") as f:
        return [[float(v) for v in r] for r in list(csv.reader(f))[1:] if r]


def _spatial(kind, batch, chan, side, k, stride, out_chan):
    out = (side - k) // stride + 1  # no padding, no dilation (gen_dataset.py)
    return {"kind": kind, "batch": batch, "in_channels": chan, "in_h": side, "in_w": side,
            "out_channels": out_chan, "out_h": out, "out_w": out, "kernel_h": k, "kernel_w": k,
            "stride_h": stride, "stride_w": stride, "pad_h": 0, "pad_w": 0,
            "dilation_h": 1, "dilation_w": 1, "groups": 1}


def willowec(run_dir: Path, device: str, prefix: str = "") -> pd.DataFrame:
    """conv2d, linear, max_pool2d forward rows of one willowec run.

    Each raw row is the mean over 10 repetitions of the per-batch mean of 5 batches of pyRAPL's
    ``pkg`` energy (uJ) and ``duration`` (us) of the forward pass. runtime_ms = for_time / 1000,
    power_w = for_energy / for_time. Rows whose energy is not positive (the RAPL counter wrapped
    during the measurement) are dropped.
    """
    run_dir = Path(run_dir)
    out = []

    def add(row, energy_uj, time_us):
        if energy_uj <= 0 or time_us <= 0:
            return
        row.update(runtime_ms=time_us / 1000.0, power_w=energy_uj / time_us)
        out.append(row)

    # conv.csv: batch_size, in_chan, out_chan, side_len, k_size, stride, for_energy, for_time, ...
    for b, cin, cout, side, k, s, e, t, *_ in _rows(run_dir / f"{prefix}conv.csv"):
        add(_spatial("conv2d", b, cin, side, k, s, cout), e, t)
    # linear.csv: batch_size, in_size, out_size, for_energy, for_time, ...
    for b, fin, fout, e, t, *_ in _rows(run_dir / f"{prefix}linear.csv"):
        add({"kind": "linear", "batch": b, "in_features": fin, "out_features": fout}, e, t)
    # pool.csv (nn.MaxPool2d(k, stride)): batch_size, k_size, stride, chan, side_len, for_energy,
    # for_time, back_energy, back_time (its header names only 7 columns)
    for b, k, s, chan, side, e, t, *_ in _rows(run_dir / f"{prefix}pool.csv"):
        add(_spatial("max_pool2d", b, chan, side, k, s, chan), e, t)
    df = pd.DataFrame(out)
    df["device"], df["source"] = device, "willowec"
    return _ints(df.reindex(columns=COLUMNS))


def _ints(df: pd.DataFrame) -> pd.DataFrame:
    """Shape columns as integers (empty where a kind has none)."""
    for c in COLUMNS[1:19]:
        df[c] = df[c].round().astype("Int64")
    return df


def neusight_linear(path: Path, device: str) -> pd.DataFrame:
    """NeuSight linear: ``[B, M, K] x [K, N]`` in fp32; Latency is in ms.
    batch = B*M, in_features = K, out_features = N, runtime_ms = Latency."""
    raw = pd.read_csv(path)
    df = pd.DataFrame({"kind": "linear", "batch": raw["B"] * raw["M"], "in_features": raw["K"],
                       "out_features": raw["N"], "runtime_ms": raw["Latency"]})
    df["device"], df["source"] = device, "NeuSight"
    return _ints(df.reindex(columns=COLUMNS))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--willowec", type=Path, help="willowec run folder (conv/linear/pool.csv)")
    ap.add_argument("--neusight-linear", type=Path, help="NeuSight linear file of the A100")
    ap.add_argument("-o", "--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    raw = HERE / "raw"
    jobs = []
    if args.willowec or not args.neusight_linear:
        src, prefix = ((args.willowec, "") if args.willowec
                       else (raw, "willowec_broadwell-ep-2025-05-05T11-01-26_"))
        jobs.append(("willowec_broadwell_cpu.csv",
                     willowec(src, "broadwell-ep CPU (RAPL package)", prefix)))
    if args.neusight_linear or not args.willowec:
        src = args.neusight_linear or raw / "neusight_NVIDIA A100-PCIE-40GB_linear_excerpt.csv"
        jobs.append(("neusight_a100_linear.csv", neusight_linear(src, "NVIDIA A100-PCIE-40GB")))
    for name, df in jobs:
        df.to_csv(args.out / name, index=False)
        print(f"{name}: {len(df)} rows ({', '.join(f'{k} {n}' for k, n in df.kind.value_counts().items())})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
