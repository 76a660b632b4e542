"""The bad-input matrix (benchmarks/bad_inputs.py), one test per cell: every command against bad
CSVs, predictor files, NETs, input shapes and options ends in one line naming the problem, exit
code 1, no traceback, no output file. Commands run in-process (``cli.main``, as the console
script does); tests/test_cli.py runs a few of the same cells as real subprocesses."""
import importlib.util

import pytest

from neuralpower.cli import main

from .conftest import ROOT


def _bad_inputs():
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bad = _bad_inputs()


@pytest.fixture(scope="module")
def files(tmp_path_factory, cpu_predictor_file):
    return bad.make_bad_files(tmp_path_factory.mktemp("bad"), cpu_predictor_file.read_bytes())


def assert_refused(files, argv, fragment):
    problem = bad.refusal_problem(bad.run_argv(files, argv), fragment)
    assert problem is None, problem


def _ids(cells):
    return dict(argvalues=[c[1:] for c in cells], ids=[c[0] for c in cells])


@pytest.mark.parametrize("argv, fragment", **_ids(bad.CSV_CELLS))
def test_bad_measurement_csv(files, argv, fragment):
    assert_refused(files, argv, fragment)


def test_unknown_kinds_only(files):
    code, _, err, left = bad.run_argv(files, ["fit", "unknown_kinds.csv", "-o", "x.predictor"])
    assert code == 1 and "nothing to fit" in err.strip().splitlines()[-1] and not left
    assert "skipping kinds with no model: roll (40 rows)" in err
    assert_refused(files, ["score", "good.predictor", "unknown_kinds.csv"],
                   "no rows of a kind this predictor models")


@pytest.mark.parametrize("argv, fragment", **_ids(bad.PREDICTOR_CELLS))
def test_bad_predictor_file(files, argv, fragment):
    assert_refused(files, argv, fragment)


@pytest.mark.parametrize("argv, fragment", **_ids(bad.NET_CELLS))
def test_unresolvable_net(files, argv, fragment):
    assert_refused(files, argv, fragment)


@pytest.mark.parametrize("argv, fragment", **_ids(bad.INPUT_CELLS))
def test_malformed_input(files, argv, fragment):
    assert_refused(files, argv, fragment)


@pytest.mark.parametrize("argv, fragment", **_ids(bad.NO_MODELED_LAYER_CELLS))
def test_network_with_no_modeled_layer(files, argv, fragment):
    assert_refused(files, argv, fragment)


@pytest.mark.parametrize("argv, fragment", **_ids(bad.JSONL_CELLS))
def test_bad_search_space(files, argv, fragment):
    assert_refused(files, argv, fragment)


@pytest.mark.parametrize("argv, fragment", **_ids(bad.OPTION_CELLS))
def test_bad_option(files, argv, fragment):
    assert_refused(files, argv, fragment)


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
