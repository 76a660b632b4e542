"""Hostile predictor files (benchmarks/hostile.py): a payload that runs code when unpickled, or
when its types are trusted, is refused by ``Predictor.load`` and the CLI without running. Each
payload is first shown to be live, so the missing marker is the loader's doing."""
import pytest

from neuralpower import NeuralPowerError, Predictor
from neuralpower.cli import main

from .conftest import benchmark_module

hostile = benchmark_module("hostile")


@pytest.mark.parametrize("kind", hostile.KINDS)
def test_a_hostile_predictor_is_refused_and_its_payload_never_runs(tmp_path, kind,
                                                                   cpu_predictor_file,
                                                                   monkeypatch, capsys):
    marker = tmp_path / "marker"
    assert hostile.prove_live(kind, tmp_path, marker), "the payload is a dud"
    path = tmp_path / "hostile.predictor"
    path.write_bytes(hostile.hostile_predictor(kind, marker, cpu_predictor_file.read_bytes()))

    with pytest.raises(NeuralPowerError) as e:
        Predictor.load(path)
    assert "\n" not in str(e.value)
    if kind == "skops_exec_member":
        assert "builtins.exec" in str(e.value) and "trusted" in str(e.value)

    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(path), "torchvision:resnet18"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neuralpower predict: error:" in err[0]
    assert not marker.exists(), "the payload ran"
