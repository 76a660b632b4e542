"""Measuring in a fresh process (neuralpower/profiling/isolated.py), for real: child processes of
a server that never computes."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from neuralpower.measure import measure_fresh
from neuralpower.profiling import isolated

pytestmark = pytest.mark.skipif(not isolated.available(), reason="no fork on this platform")


def _kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def test_each_call_runs_in_a_fresh_process_and_returns_its_value():
    pids = [isolated.call(os.getpid) for _ in range(3)]
    assert os.getpid() not in pids and len(set(pids)) == 3
    assert isolated.call(sum, [1, 2, 3]) == 6


def test_an_exception_in_the_child_is_raised_here():
    with pytest.raises(ValueError, match="invalid literal"):
        isolated.call(int, "not a number")


def test_a_killed_child_costs_that_call_only():
    with pytest.raises(isolated.ChildDied, match=r"killed by signal 9, out of memory\?"):
        isolated.call(_kill_self)
    assert isolated.call(sum, [2, 2]) == 4  # the server goes on


def test_the_child_works_in_the_callers_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isolated.call(os.getcwd) == str(tmp_path)


def test_a_child_runs_torch_after_its_caller_did():
    # A child forked from a process that has run OpenMP work hangs in its first parallel
    # region; the server's children come from a process that never ran any.
    script = textwrap.dedent("""
        import torch
        from neuralpower.profiling import isolated
        torch.set_num_threads(2)
        conv = torch.nn.Conv2d(32, 32, 3)
        conv(torch.randn(4, 32, 32, 32))      # OpenMP work in the caller
        print(isolated.call(torch.get_num_threads),
              tuple(isolated.call(conv, torch.randn(4, 32, 32, 32)).shape))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "(4,", "32,", "30,", "30)"]


def test_measure_fresh_measures_a_named_network_in_another_process():
    m = measure_fresh("torchvision:squeezenet1_1", (1, 3, 64, 64), "cpu", target_s=0.05)
    assert m["runtime_ms"] > 0 and m["repeats"] >= 5 and m["reference_ms"] > 0
    assert m["process_cpu_s"] > 0 and m["power_w"] is None
