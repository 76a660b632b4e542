"""The bad-input matrix (benchmarks/bad_inputs.py), one test per cell: every command against bad
CSVs, predictor files, NETs, input shapes and options ends in one line naming the problem, exit
code 1, no traceback, no output file. Commands run in-process (``cli.main``, as the console
script does); tests/test_cli.py runs a few of the same cells as real subprocesses."""
import pytest

from neuralpower.cli import main

from .conftest import benchmark_module

bad = benchmark_module("bad_inputs")


@pytest.fixture(scope="module")
def files(tmp_path_factory, cpu_predictor_file):
    return bad.make_bad_files(tmp_path_factory.mktemp("bad"), cpu_predictor_file.read_bytes())


def assert_refused(files, argv, fragment):
    problem = bad.refusal_problem(bad.run_argv(files, argv), fragment)
    assert problem is None, problem


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in bad.ALL_CELLS],
                         ids=[c[0] for c in bad.ALL_CELLS])
def test_bad_input_is_refused_on_one_line(files, argv, fragment):
    """One cell: a command against one bad CSV, predictor file, NET, input shape, search space
    or option (the groups of benchmarks/bad_inputs.py)."""
    assert_refused(files, argv, fragment)


def test_unknown_kinds_only(files):
    code, _, err, left = bad.run_argv(files, ["fit", "unknown_kinds.csv", "-o", "x.predictor"])
    assert code == 1 and "nothing to fit" in err.strip().splitlines()[-1] and not left
    assert "skipping kinds with no model: conv3d (40 rows)" in err
    assert_refused(files, ["score", "good.predictor", "unknown_kinds.csv"],
                   "no rows of a kind this predictor models")


@pytest.mark.parametrize("argv", [
    ["profile", "-o", "out", "--budget", "soon"],
    ["predict", "good.predictor"],
    ["fly"],
])
def test_usage_errors_are_one_line_too(monkeypatch, capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "error:" in err[0] and "--help" in err[0]


@pytest.mark.parametrize("script, argv", [
    ("profile_accuracy", ["--csv", "nope.csv"]),   # read by neuralpower.data.load
    ("public_drift", ["nope.csv"]),                # read by pandas, keeping the file's order
])
def test_benchmark_scripts_end_a_missing_file_on_one_line(tmp_path, script, argv):
    import subprocess
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{script}.py"
    run = subprocess.run([sys.executable, str(path), *argv], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 1 and len(err) == 1 and err[0].startswith(f"{script}: error: ")
    assert "nope.csv" in err[0] and "not found" in err[0] and "Traceback" not in run.stderr
