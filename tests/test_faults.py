"""Faults during profiling, on real CPU campaigns: a power read failing mid-campaign, SIGKILL at
random points, a full disk. The injectors live in benchmarks/faults.py, for a reliability
benchmark to count what these tests assert."""
import csv
import json

import pandas as pd
import pytest

from neuralpower import NeuralPowerError, Predictor
from neuralpower.data import load
from neuralpower.profiling import CSV_COLUMNS, Campaign, sidecar_path
from neuralpower.profiling.synthetic import Limits, sample

from .conftest import benchmark_module

faults = benchmark_module("faults")


def test_a_failing_power_read_marks_its_row_and_the_campaign_goes_on(tmp_path):
    out = tmp_path / "flaky.csv"
    small = Limits(max_macs=10**6, max_pool_macs=10**5, max_elements=2**16)
    specs = [(f"n{i}", sample(0, i, limits=small)) for i in range(4)]  # real networks, small
    # Window 0 is the idle measurement; then every third read fails at stop, some at start.
    meter = faults.FlakyMeter(fail_stop=lambda i: i == 0 or i % 3 == 2,
                              fail_start=lambda i: i % 7 == 4)
    logs = []
    summary = Campaign(out, meter=meter, power_window_s=0.01, log=logs.append).run(
        budget_s=1e6, progress=False, specs=specs)
    assert summary["ended"] == "all networks measured"
    d = pd.read_csv(out, dtype={"layer": str})
    assert (d.status == "ok").all() and (d.runtime_ms > 0).all()
    # every layer of every network has its row, once
    assert {net: set(rows.layer) for net, rows in d.groupby("network")} == {
        net: faults.network_layers(spec) for net, spec in specs}
    assert len(d) == summary["rows"] >= 10
    marked = d[d.power_error.notna()]
    # every failed layer read, and only those, marks its row
    assert len(marked) == len(meter.failures) - 1 == summary["power_errors"] >= 3
    assert marked.power_error.str.match(r"MeterError: fake sensor: read \d+ failed at "
                                        r"(start|stop)$").all()
    assert {"start", "stop"} <= set(marked.power_error.str.rsplit(" ", n=1).str[-1])
    assert marked.power_w.isna().all()
    measured = d[d.power_error.isna()]
    assert len(measured) >= 3 and measured.power_w.between(10, 14).all()
    assert set(d.power_source) == {"fake"}
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["power"]["idle_power_error"] == "MeterError: fake sensor: read 0 failed at stop"
    assert meta["runs"][-1]["power_errors"] == len(marked)
    assert sum("power: a sensor read failed" in m for m in logs) == 1
    # Loading keeps the marked rows (their runtime counts) with no power; fit uses both.
    rows = load(out)
    assert len(rows) == len(d)
    assert rows.power_w.isna().sum() == len(marked)
    predictor = Predictor.fit(rows, log=lambda m: None)
    scores = predictor.score(rows)
    for kind, s in scores.items():
        if "power_w" in s:
            kind_rows = rows[rows.kind == kind]
            assert s["runtime_ms"]["n"] == len(kind_rows)
            assert s["power_w"]["n"] == kind_rows.power_w.notna().sum()
    assert any("power_w" in s for s in scores.values())


def test_sigkill_at_random_points_loses_nothing_and_duplicates_nothing(tmp_path):
    out = tmp_path / "killed.csv"
    r = faults.kill_and_resume(out, kills=4, seed=3, tears=1, max_new_rows=8)
    assert r["final_rc"] == 0, r["final_stderr"]
    assert r["lost"] == 0 and r["duplicated"] == 0, r
    # every network whole: the torn one too, measured again by the last run
    assert r["incomplete"] == [] and r["unfinished"] is None and r["gaps"] == [], r
    assert r["torn_cut"] == r["tears"] == 1  # the torn line was cut, and said so, on resume
    assert r["rows"] >= r["killed_at_rows"][-1] > 0
    assert json.loads(sidecar_path(out).read_text())["runs"][-1]["ended"] == "budget"


def test_ctrl_c_ends_a_campaign_in_one_line_and_it_resumes_losing_nothing(tmp_path):
    """Ctrl-C reaches the whole process group, the measuring server too (isolated.py), which
    printed a traceback of its own beside the campaign's one line (seen 2026-12-06)."""
    r = faults.interrupt_and_resume(tmp_path / "interrupted.csv", interrupts=2, seed=1)
    assert r["clean_interrupts"] == 2 and r["tracebacks"] == 0, r["unclean"]
    assert r["final_rc"] == 0, r["final_stderr"]
    assert r["lost"] == 0 and r["duplicated"] == 0 and r["incomplete"] == [], r
    assert r["rows"] > 0


@pytest.mark.parametrize("how, problem", [("enospc", "disk full"),
                                          ("rlimit", "file too large")])
def test_a_full_disk_ends_with_one_line_and_leaves_a_valid_file(tmp_path, how, problem):
    out = tmp_path / "full.csv"
    p = faults.fill_disk(out, free_bytes=6_000, how=how)
    assert p.returncode == 1, p.stderr
    *logs, error = p.stderr.splitlines()  # logs: "power: not measured ..." on this machine
    assert "Traceback" not in p.stderr and not any("error" in line for line in logs), p.stderr
    assert error.startswith(f"neuralpower profile: error: {out}: {problem}"), p.stderr
    assert error.endswith("run the same command to resume")
    # Valid before any resume: whole lines of the schema, whole networks, loadable.
    text = out.read_text()
    assert text.endswith("\n") and len(text.encode()) <= 6_000
    assert all(len(line) == len(CSV_COLUMNS) for line in csv.reader(text.splitlines()))
    before = faults.complete_rows(out)
    assert faults.audit(out) == {"rows": len(before), "lost": 0, "duplicated": 0,
                                 "incomplete": [], "unfinished": None, "gaps": []}
    assert len(load(out)) == len(before) > 0
    # The sidecar is whole too: the old one where the disk had no room for the run record.
    run = json.loads(sidecar_path(out).read_text())["runs"][-1]
    assert run["ended"] == ("running" if how == "enospc" else f"error: {error.split(': ', 2)[2]}")
    assert not list(tmp_path.glob("*.tmp"))
    # Space is back: the same command resumes it, with nothing to repair.
    again = faults.resume(out, budget_s=faults.FULL_DISK_BUDGET_S)  # the same command
    assert again.returncode == 0, again.stderr
    assert "partial last line" not in again.stderr
    after = faults.audit(out, before)
    assert after["lost"] == after["duplicated"] == 0 and after["rows"] > len(before), after
    assert after["incomplete"] == [] and after["unfinished"] is None and after["gaps"] == [], after


def test_power_share_caps_the_time_spent_on_power_windows(tmp_path):
    out = tmp_path / "share.csv"
    small = Limits(max_macs=10**6, max_pool_macs=10**5, max_elements=2**16)
    specs = [(f"n{i}", sample(0, i, limits=small)) for i in range(12)]
    meter = faults.FlakyMeter(fail_stop=lambda i: False, fail_start=lambda i: False)
    # windows long beside a network's measuring (a fresh process each): the share binds on a
    # slow or loaded machine too (with 0.05 s windows a slow run kept under it and measured all)
    summary = Campaign(out, meter=meter, power_window_s=0.2, power_share=0.25,
                       log=lambda m: None).run(budget_s=1e6, progress=False, specs=specs)
    d = pd.read_csv(out, dtype={"layer": str})
    by_net = d.groupby("network").power_source.agg(set)
    with_power = [n for n, s in by_net.items() if s == {"fake"}]
    without = [n for n, s in by_net.items() if s == {"none"}]
    assert len(with_power) + len(without) == 12 and with_power and without
    assert summary["power_networks"] == len(with_power) and "n0" in with_power
    assert d[d.power_source == "fake"].power_w.notna().all()
    assert d[d.power_source == "none"].power_w.isna().all()
    # the windows kept to their share, give or take the last network measured with power
    windows = d.power_window_s.fillna(0).sum()
    latest = d[d.network.isin(with_power)].sort_values("campaign_s").network.iloc[-1]
    last = d[d.network == latest].power_window_s.sum()
    assert windows - last <= 0.25 * d.campaign_s.max() + 1e-6
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["runs"][-1]["power_share"] == 0.25
    assert meta["runs"][-1]["power_networks"] == len(with_power)
    with pytest.raises(NeuralPowerError, match="--power-share"):
        Campaign(tmp_path / "x.csv", meter=meter, power_share=1.5)
