"""How far the network benchmark's own ground truth repeats: the floor under its goals.

``network_accuracy.py`` measures each network once per run. Given two or more of its ``--json``
files (runs of the same networks at different times on the same machine), this takes each run's
measurement as a "prediction" of another run's, exactly as a predictor's is scored: taken to the
speed of the measured run (``reference_ms`` of the two runs: the fixed speed probe timed between
the repeats) and scored by the same median |error|, share within +-10 % and Kendall tau, per
setting and group. No predictor can be expected to beat an earlier measurement of the very
network on the very machine; where that scores worse than the goals, the goals cannot be judged
on that machine. The same without the speed correction shows what the probe removes.

    python benchmarks/network_repeatability.py RUN1.json RUN2.json [RUN3.json ...] [--json OUT]

Only networks measured in each run (not ``--reuse``d) and present in both runs of a pair count.
Runs of the benchmark kept for this are in ``benchmarks/results/network_runs/``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from network_accuracy import markdown, runtime_scores, score_cells  # noqa: E402


def load(path: Path) -> dict:
    """``{"label", "networks": {(setting, network): (group, runtime_ms, reference_ms)}}``."""
    try:
        run = json.loads(path.read_text())
        nets = {(r["setting"], r["network"]): (r["group"], r["measured"]["runtime_ms"],
                                               r["measured"].get("reference_ms"))
                for r in run["networks"] if not r.get("reused")}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise SystemExit(f"network_repeatability: error: {path}: not a network_accuracy.py "
                         f"--json file ({type(e).__name__}: {e})")
    when = run.get("measured_utc")
    label = f"{path.stem} ({when[0]} to {when[1][-5:]} UTC)" if when else path.stem
    return {"label": label, "networks": nets}


def scores(a: dict, b: dict, speed: bool) -> list[dict]:
    """Run ``a``'s measurements scored as predictions of run ``b``'s, per setting x group."""
    rows = {}
    for key in a["networks"].keys() & b["networks"].keys():
        group, ms_a, ref_a = a["networks"][key]
        _, ms_b, ref_b = b["networks"][key]
        pred = ms_a * (ref_b / ref_a) if speed and ref_a and ref_b else ms_a
        rows.setdefault((key[0], group), []).append((pred, ms_b, (pred / ms_b - 1) * 100))
    return [{"setting": setting, "group": group, **runtime_scores(triples)}
            for (setting, group), triples in sorted(rows.items())]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="network_accuracy.py --json files")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        print("network_repeatability: error: give at least two runs", file=sys.stderr)
        return 1
    runs = [load(p) for p in args.runs]
    result, table = [], []
    for a, b in itertools.combinations(runs, 2):  # each pair once, the earlier predicting
        for speed in (True, False):
            for s in scores(a, b, speed):
                result.append({"predicting": a["label"], "measured": b["label"],
                               "speed_corrected": speed, **s})
                table.append([f"{a['label']} → {b['label']}", "yes" if speed else "no",
                              s["setting"], s["group"], s["n"], *score_cells(s)])
    print("One run's measurement as the prediction of another's (goals: median |error| ≤ 5 %, "
          "≥ 90 % within ±10 %, Kendall tau ≥ 0.9)\n")
    print(markdown(["runs", "speed probe", "setting", "group", "networks", "median abs error %",
                    "within ±10 %", "Kendall tau"], table))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
