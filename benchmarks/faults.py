"""Faults for profiling campaigns: kills at random points, Ctrl-C, a full disk, a failing power
sensor.

Shared by tests/test_faults.py (which asserts) and a reliability benchmark (which counts). Every
injector runs a real campaign on this machine's CPU; only the power sensor is a stand-in, for
machines that have none.

    from faults import FlakyMeter, audit, complete_rows, fill_disk, kill_and_resume, resume
    report = kill_and_resume("k.csv", kills=4, seed=0)  # (from benchmarks/, or with it on sys.path)
    report["lost"], report["duplicated"], report["incomplete"], report["gaps"]

    p = fill_disk("d.csv", free_bytes=20_000)          # one-line error, exit code 1
    before = complete_rows("d.csv")
    resume("d.csv", budget_s=FULL_DISK_BUDGET_S)        # the same command, as the error says
    audit("d.csv", before)                              # nothing lost, nothing twice

    Campaign("p.csv", meter=FlakyMeter(fail_stop=lambda i: i % 3 == 2), power_window_s=0.01)

Rows are compared as the CSV lines the campaign wrote: a campaign only appends, so a row that was
on disk, whole, before a fault must be in the final file, byte for byte, exactly once.
"""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from neuralpower.profiling import sidecar_path  # noqa: E402
from neuralpower.profiling.meters import Meter, MeterError  # noqa: E402
from neuralpower.profiling.synthetic import campaign_spec, trace_spec  # noqa: E402


# --- reading a campaign file ----------------------------------------------------------------------

def complete_rows(path) -> list[str]:
    """The data lines of a campaign CSV that are whole (end in a newline): finished rows. A torn
    last line is no finished row: the kill came before its write ended."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return text[: text.rfind("\n") + 1].splitlines(keepends=True)[1:]


def audit(path, finished=()) -> dict:
    """Check a campaign file against ``finished``, rows seen whole before some fault.

    Returns ``lost`` (finished rows no longer in the file), ``duplicated`` (rows whose
    network and layer appear more than once), ``incomplete`` (networks, but the last, missing
    some of their layers or with layers they do not have), ``unfinished`` (the last network when
    it misses layers: a torn write's, which the next resume measures, unless its budget ran out
    first), ``gaps`` (network indices missing that no run skipped for its budget) and
    ``rows``."""
    rows = complete_rows(path)
    present = set(rows)
    lost = sum(1 for r in set(finished) if r not in present)
    header = Path(path).read_text(encoding="utf-8").split("\n", 1)[0].split(",")
    records = [dict(zip(header, r)) for r in csv.reader(rows)]
    keys = [(r["network"], r["layer"]) for r in records]
    duplicated = len(keys) - len(set(keys))
    layers: dict[str, set] = {}
    for net, layer in keys:
        layers.setdefault(net, set()).add(layer)
    meta = json.loads(sidecar_path(path).read_text()) if layers else {}
    settings = meta.get("settings", {})
    incomplete = [net for net, have in layers.items() if have != _expected_layers(net, settings)]
    unfinished = incomplete.pop() if incomplete and incomplete[-1] == keys[-1][0] else None
    # networks a run skipped as too long for the budget it had left (its run record says so)
    skipped = {int(net.rsplit("-", 1)[1]) for run in meta.get("runs", [])
               for net in run.get("skipped", [])}
    indices = sorted(int(net.rsplit("-", 1)[1]) for net in layers)
    gaps = sorted(set(range(max(indices, default=-1) + 1)) - set(indices) - skipped)
    return {"rows": len(rows), "lost": lost, "duplicated": duplicated,
            "incomplete": incomplete, "unfinished": unfinished, "gaps": gaps}


def _expected_layers(net: str, settings: dict) -> set:
    """The layers of campaign network ``net`` (``s{seed}-{index}``), from its sidecar settings."""
    return network_layers(campaign_spec(net, settings))


def network_layers(spec: dict) -> set:
    """The rows a network spec gives: its children that run exactly one op."""
    t = trace_spec(spec)
    real = t[t.kind != "free"]
    return {m for m, ops in real.groupby("module") if len(ops) == 1}


# --- processes ------------------------------------------------------------------------------------

def profile_command(out, budget_s: float, *extra: str) -> list[str]:
    return [sys.executable, "-m", "neuralpower", "profile", "-o", str(out),
            "--budget", str(budget_s), "--quiet", *extra]


def resume(out, budget_s: float = 2.0, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run the same campaign command again (with enough disk) for ``budget_s`` seconds."""
    return subprocess.run(profile_command(out, budget_s), capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT)


def kill_and_resume(out, kills: int = 4, seed: int = 0, tears: int = 1, max_new_rows: int = 12,
                    max_delay_s: float = 0.4, run_budget_s: float = 30.0,
                    final_budget_s: float = 5.0, timeout_s: float = 90) -> dict:
    """SIGKILL a campaign ``kills`` times at seeded-random points, resuming it each time, then let
    a last run end by itself; ``audit`` the result against every row seen whole before a kill.

    A kill point: once the file has 0 to ``max_new_rows`` more rows than at the start of the run
    (0: during start-up or the resume itself), 0 to ``max_delay_s`` seconds later. After ``tears``
    of the kills, picked at random, a random part of the last line is cut off too, as a kill
    inside a write would leave it (a real kill seldom lands inside one short write); only a row
    of the run just killed is torn (a row finished in an earlier run can no longer be), so a
    run that wrote nothing passes its tear on to the next. Each killed run has ``run_budget_s``
    (the first run's budget sizes the networks: a short one, small networks, many rows soon).

    Returns the audit, plus ``kills``, ``killed_at_rows`` (the rows on disk at each kill),
    ``tears`` (lines torn), ``torn_cut`` (runs that said they dropped a partial line),
    ``final_rc``, ``final_stderr`` and ``seconds``."""
    rng = random.Random(seed)
    torn_after = set(rng.sample(range(kills), min(tears, kills)))
    finished, killed_at, stderr, tears_done = [], [], [], 0
    started = time.perf_counter()
    for k in range(kills):
        start_rows = len(complete_rows(out))
        target, delay = start_rows + rng.randint(0, max_new_rows), rng.uniform(0, max_delay_s)
        proc = subprocess.Popen(profile_command(out, run_budget_s), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT)
        deadline = time.time() + timeout_s
        while len(complete_rows(out)) < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        stderr.append(err)
        if proc.returncode != -signal.SIGKILL:
            raise RuntimeError(f"campaign ended before kill {k + 1} (exit {proc.returncode}): "
                               f"{err.strip()[-500:]}")
        if k in torn_after:
            if len(complete_rows(out)) > start_rows:
                _tear_last_line(out, rng)
                tears_done += 1
            else:
                torn_after.add(k + 1)
        finished += complete_rows(out)  # after a tear: the torn row never finished
        killed_at.append(len(complete_rows(out)))
    last = resume(out, final_budget_s, timeout_s)
    stderr.append(last.stderr)
    report = audit(out, finished)
    report.update(kills=kills, killed_at_rows=killed_at, tears=tears_done,
                  final_rc=last.returncode, final_stderr=last.stderr.strip(),
                  torn_cut=sum("partial last line" in e for e in stderr),
                  seconds=round(time.perf_counter() - started, 1))
    return report


def interrupt_and_resume(out, interrupts: int = 2, seed: int = 0, max_new_rows: int = 12,
                         run_budget_s: float = 150.0, final_budget_s: float = 5.0,
                         timeout_s: float = 90) -> dict:
    """Ctrl-C a campaign ``interrupts`` times, as a terminal does: SIGINT to its whole process
    group (the measuring server too), once the file has 1 to ``max_new_rows`` more rows; resume
    after each, then let a last run end by itself, and ``audit`` the result. Each interrupted
    run must end with exit 130, one line and no traceback. Its budget outlasts the wait for
    rows (``timeout_s``), so that the run is still going when interrupted: a slow start must not
    end it by its budget first.

    Returns the audit, plus ``interrupts``, ``clean_interrupts`` (runs that ended so),
    ``tracebacks``, ``unclean`` (the exit and stderr of the others), ``final_rc`` and
    ``final_stderr``."""
    rng = random.Random(seed)
    finished, clean, tracebacks, unclean = [], 0, 0, []
    for _ in range(interrupts):
        target = len(complete_rows(out)) + rng.randint(1, max_new_rows)
        proc = subprocess.Popen(profile_command(out, run_budget_s), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                start_new_session=True, preexec_fn=_foreground_job)
        deadline = time.time() + timeout_s
        while len(complete_rows(out)) < target and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=timeout_s)   # (ended first: unclean, exit and all)
        lines = err.strip().splitlines()
        tracebacks += "Traceback" in err
        ok = (proc.returncode == 130 and "Traceback" not in err
              and lines[-1:] == ["neuralpower profile: interrupted"])
        clean += ok
        if not ok:
            unclean.append({"exit": proc.returncode, "stderr": err[-2000:]})
        finished += complete_rows(out)
    last = resume(out, final_budget_s, timeout_s)
    report = audit(out, finished)
    report.update(interrupts=interrupts, clean_interrupts=clean, tracebacks=tracebacks,
                  unclean=unclean, final_rc=last.returncode, final_stderr=last.stderr.strip())
    return report


def _foreground_job() -> None:
    """In the child before exec: SIGINT as a terminal's foreground job has it. A shell's
    background job inherits it ignored (``sh -c '... &'``: this benchmark's CI run, launched so,
    saw its campaigns ignore every Ctrl-C), and an ignored signal stays ignored across exec."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _tear_last_line(out, rng: random.Random) -> None:
    """Cut a random part (not all) off the last row, as a kill inside its write would."""
    data = Path(out).read_bytes()
    last = len(data) - data.rfind(b"\n", 0, len(data) - 1) - 1  # its length, newline included
    Path(out).write_bytes(data[: len(data) - rng.randint(1, last - 1)])


# --- a full disk ----------------------------------------------------------------------------------

# Run the CLI with writes into the output's folder failing once `free` more bytes are used, the
# way a filling disk fails: a short write, then the error. Space is what the folder's files take
# (a replaced sidecar frees its old copy); once full, the disk stays full (space freed by a
# truncation is taken by others). Campaign rows go through os.write, the sidecar through
# Path.write_text: both are patched.
_FULL_DISK = r"""
import os, pathlib, sys
out, budget, free, err = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
folder = os.path.dirname(os.path.abspath(out))
def used():
    return sum(e.stat().st_size for e in os.scandir(folder) if e.is_file())
capacity, full = used() + free, []
def no_space():
    full.append(True)
    return OSError(err, os.strerror(err))
def inside(fd):
    try:
        return os.path.dirname(os.readlink(f"/proc/self/fd/{fd}")) == folder
    except OSError:
        return False
real_write, real_write_text = os.write, pathlib.Path.write_text
def write(fd, data):
    if not inside(fd):
        return real_write(fd, data)
    room = 0 if full else max(0, capacity - used())
    if room == 0:
        raise no_space()
    return real_write(fd, bytes(data[:room]))
def write_text(self, data, *args, **kwargs):
    if os.path.dirname(os.path.abspath(self)) == folder:
        old = self.stat().st_size if self.exists() else 0
        room = 0 if full else max(0, capacity - used() + old)
        if len(data.encode()) > room:
            real_write_text(self, data.encode()[:room].decode(errors="ignore"))
            raise no_space()
    return real_write_text(self, data, *args, **kwargs)
os.write, pathlib.Path.write_text = write, write_text
from neuralpower.cli import main
sys.argv = ["neuralpower", "profile", "-o", out, "--budget", budget, "--quiet"]
sys.exit(main(sys.argv[1:]))
"""


# A full-disk campaign's budget, which sizes its networks (the campaign's limits): short, small
# networks. Its resume must be the same command: the network the disk cut off is sized for this
# budget, and a shorter resume may rightly measure nothing (at 5 s it now and then did).
FULL_DISK_BUDGET_S = 20.0


def fill_disk(out, free_bytes: int, budget_s: float = FULL_DISK_BUDGET_S, how: str = "enospc",
              timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run a campaign until its disk is full. ``how``: ``enospc`` (writes into the output's
    folder fail with ENOSPC once ``free_bytes`` more are used: patched writes, Linux), or
    ``rlimit`` (the kernel refuses to grow any file past ``free_bytes``, with EFBIG:
    RLIMIT_FSIZE, unprivileged, Unix). ``budget_s`` sizes the networks (the campaign's limits);
    resume with the same. Returns the finished process."""
    if how == "rlimit":
        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (free_bytes, free_bytes))
        return subprocess.run(profile_command(out, budget_s), capture_output=True, text=True,
                              timeout=timeout_s, cwd=ROOT, preexec_fn=limit)
    if how != "enospc":
        raise ValueError(f"how={how!r}: enospc or rlimit")
    return subprocess.run([sys.executable, "-c", _FULL_DISK, str(out), str(budget_s),
                           str(free_bytes), str(errno.ENOSPC)], capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT)


# --- a failing power sensor -----------------------------------------------------------------------

class FlakyMeter(Meter):
    """A stand-in power sensor, for machines without one, whose reads fail where told.

    Window ``i`` (counted from 0, one per ``start()``) raises MeterError in ``start()`` when
    ``fail_start(i)`` and in ``stop()`` when ``fail_stop(i)``, as a RAPL or NVML read failing
    mid-campaign does; other windows read a made-up, plausible power (10 to 14 W). ``failures``
    lists the windows that failed."""

    source = "fake"
    measures_power = True
    min_window_s = 0.0

    def __init__(self, fail_stop=lambda i: False, fail_start=lambda i: False):
        self.fail_stop, self.fail_start = fail_stop, fail_start
        self.windows, self.failures = 0, []

    def start(self) -> None:
        i, self.windows = self.windows, self.windows + 1
        if self.fail_start(i):
            self.failures.append(i)
            raise MeterError(f"fake sensor: read {i} failed at start")

    def stop(self) -> float:
        i = self.windows - 1
        if self.fail_stop(i):
            self.failures.append(i)
            raise MeterError(f"fake sensor: read {i} failed at stop")
        return 12.0 + 2.0 * math.sin(i)

    def describe(self) -> dict:
        return {"source": self.source, "method": "made up, for fault tests"}
