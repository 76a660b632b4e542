"""Reliability: bad inputs tried, faults injected, rows lost, tracebacks, hostile files executed.

    python benchmarks/reliability.py [--kills 4] [--seed 0] [--out benchmarks/results]

Runs, on this machine, what the tests assert cell by cell, and counts it:

- every cell of the bad-input matrix (benchmarks/bad_inputs.py: each command against bad CSVs,
  predictor files, NETs, input shapes, options) and the usage errors, in-process as the console
  script runs them, against the shipped Raptor Lake predictor;
- every hostile predictor file (benchmarks/hostile.py), each first proven live;
- faults in real CPU profiling campaigns (benchmarks/faults.py): SIGKILL at seeded-random points
  with a resume after each, Ctrl-C (SIGINT to the process group) twice with a resume after each, a full disk (ENOSPC, and a real file-size limit) then a resume, and a
  power sensor failing on some reads.

Writes ``reliability.json`` and ``reliability.md`` under ``--out``. Exits non-zero if any count
that must be zero is not.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bad_inputs  # noqa: E402
import faults  # noqa: E402
import hostile  # noqa: E402
import pandas as pd  # noqa: E402

from neuralpower import NeuralPowerError, Predictor  # noqa: E402
from neuralpower.cli import main as cli  # noqa: E402
from neuralpower.profiling import Campaign  # noqa: E402
from neuralpower.profiling.synthetic import Limits, sample  # noqa: E402
from neuralpower.errors import script_exit  # noqa: E402

USAGE_ERRORS = [["profile", "-o", "x.csv", "--budget", "soon"], ["predict", "good.predictor"],
                ["fly"], ["predict"], ["rank", "good.predictor", "--alpha", "a", "x:y"]]


def bad_input_counts(folder: Path) -> dict:
    folder.mkdir()
    bad_inputs.make_bad_files(folder, (ROOT / "models" / "raptorlake_cpu.predictor").read_bytes())
    problems, tracebacks, partial, internal = [], 0, 0, 0
    for cell_id, argv, fragment in bad_inputs.ALL_CELLS:
        result = bad_inputs.run_argv(folder, argv)
        problem = bad_inputs.refusal_problem(result, fragment)
        tracebacks += "Traceback" in result[1] + result[2]
        internal += result[0] == 3
        partial += bool(result[3])
        if problem:
            problems.append(f"{cell_id}: {problem}")
    for argv in USAGE_ERRORS:  # argparse's own errors: exit 2, still one line
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            cli(argv)
        lines = err.getvalue().strip().splitlines()
        tracebacks += "Traceback" in err.getvalue()
        if len(lines) != 1:
            problems.append(f"usage {' '.join(argv)}: {len(lines)} lines")
    return {"bad_inputs_tried": len(bad_inputs.ALL_CELLS) + len(USAGE_ERRORS),
            "refused_cleanly": len(bad_inputs.ALL_CELLS) + len(USAGE_ERRORS) - len(problems),
            "tracebacks": tracebacks, "internal_errors": internal,
            "partial_outputs_left": partial, "problems": problems}


def hostile_counts(folder: Path) -> dict:
    good = (ROOT / "models" / "raptorlake_cpu.predictor").read_bytes()
    executed, refused, live = 0, 0, 0
    for kind in hostile.KINDS:
        marker = folder / f"marker_{kind}"
        live += hostile.prove_live(kind, folder, marker)
        path = folder / f"{kind}.predictor"
        path.write_bytes(hostile.hostile_predictor(kind, marker, good))
        try:
            Predictor.load(path)
        except NeuralPowerError:
            refused += 1
        with contextlib.redirect_stderr(io.StringIO()):
            cli(["predict", str(path), "torchvision:resnet18"])
        executed += marker.exists()
    return {"hostile_files": len(hostile.KINDS), "payloads_proven_live": live,
            "hostile_refused": refused, "hostile_executed": executed}


def kill_counts(folder: Path, kills: int, seed: int) -> dict:
    r = faults.kill_and_resume(folder / "killed.csv", kills=kills, seed=seed, tears=1)
    return {"kills": r["kills"], "torn_writes": r["tears"], "rows_after_kills": r["rows"],
            "rows_lost_to_kills": r["lost"], "rows_duplicated_by_kills": r["duplicated"],
            "networks_left_incomplete": len(r["incomplete"]), "kill_resume_exit": r["final_rc"]}


def interrupt_counts(folder: Path, seed: int) -> dict:
    r = faults.interrupt_and_resume(folder / "interrupted.csv", interrupts=2, seed=seed)
    return {"interrupts": r["interrupts"], "interrupts_in_one_line": r["clean_interrupts"],
            "interrupt_tracebacks": r["tracebacks"], "rows_lost_to_interrupts": r["lost"],
            "rows_duplicated_by_interrupts": r["duplicated"],
            "interrupt_resume_exit": r["final_rc"]}


def disk_counts(folder: Path) -> dict:
    out = {"full_disks": 0, "full_disk_one_line_errors": 0, "rows_lost_to_full_disk": 0,
           "rows_duplicated_after_full_disk": 0, "invalid_files_after_full_disk": 0}
    for how in ("enospc", "rlimit"):
        path = folder / f"full_{how}.csv"
        p = faults.fill_disk(path, free_bytes=6_000, how=how)
        out["full_disks"] += 1
        lines = p.stderr.strip().splitlines()
        out["full_disk_one_line_errors"] += (p.returncode == 1 and "Traceback" not in p.stderr
                                             and lines[-1].startswith("neuralpower profile: error:"))
        before = faults.complete_rows(path)
        text = path.read_text()
        out["invalid_files_after_full_disk"] += not text.endswith("\n") or bool(
            faults.audit(path)["incomplete"])
        faults.resume(path, budget_s=faults.FULL_DISK_BUDGET_S)
        after = faults.audit(path, before)
        out["rows_lost_to_full_disk"] += after["lost"]
        out["rows_duplicated_after_full_disk"] += after["duplicated"]
    return out


def sensor_counts(folder: Path) -> dict:
    small = Limits(max_macs=10**6, max_pool_macs=10**5, max_elements=2**16)
    specs = [(f"n{i}", sample(0, i, limits=small)) for i in range(4)]
    meter = faults.FlakyMeter(fail_stop=lambda i: i % 3 == 2, fail_start=lambda i: i % 7 == 4)
    path = folder / "flaky.csv"
    s = Campaign(path, meter=meter, power_window_s=0.01, log=lambda m: None).run(
        budget_s=1e6, progress=False, specs=specs)
    d = pd.read_csv(path)
    marked = int(d.power_error.notna().sum())
    return {"sensor_reads_failed": len(meter.failures), "rows_marked_for_sensor": marked,
            "rows_lost_to_sensor": sum(len(faults.network_layers(spec)) for _, spec in specs)
            - len(d), "campaign_went_on": s["ended"] == "all networks measured"}


MUST_BE_ZERO = ("tracebacks", "internal_errors", "partial_outputs_left", "hostile_executed",
                "rows_lost_to_kills", "rows_duplicated_by_kills", "networks_left_incomplete",
                "interrupt_tracebacks", "rows_lost_to_interrupts", "rows_duplicated_by_interrupts",
                "rows_lost_to_full_disk", "rows_duplicated_after_full_disk",
                "invalid_files_after_full_disk", "rows_lost_to_sensor")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    started = time.time()
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, step in [("bad inputs", lambda: bad_input_counts(tmp / "bad")),
                           ("hostile files", lambda: hostile_counts(tmp)),
                           ("kills", lambda: kill_counts(tmp, args.kills, args.seed)),
                           ("Ctrl-C", lambda: interrupt_counts(tmp, args.seed)),
                           ("full disk", lambda: disk_counts(tmp)),
                           ("failing sensor", lambda: sensor_counts(tmp))]:
            t0 = time.time()
            print(f"{name} ...", file=sys.stderr, flush=True)
            counts.update(step())
            print(f"  {time.time() - t0:.0f} s", file=sys.stderr)
    counts["faults_injected"] = (counts["kills"] + counts["torn_writes"] + counts["interrupts"]
                                 + counts["full_disks"] + counts["sensor_reads_failed"])
    counts["seconds"] = round(time.time() - started)
    problems = counts.pop("problems")
    rows = list(counts.items())
    width = max(len(k) for k, _ in rows)
    table = "\n".join(f"{k:<{width}}  {v}" + ("   (must be 0)" if k in MUST_BE_ZERO else "")
                      for k, v in rows)
    print(table)
    for p in problems:
        print("problem:", p)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps({**counts, "problems": problems},
                                                     indent=2) + "\n")
    (out / "reliability.md").write_text(
        "`python benchmarks/reliability.py`\n\n| count | value |\n|---|---|\n"
        + "".join(f"| {k} | {v} |\n" for k, v in rows))
    failed = [k for k in MUST_BE_ZERO if counts[k]] + (["problems"] if problems else [])
    if failed:
        print("FAILED:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    script_exit(main)
