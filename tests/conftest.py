"""Shared fixtures: a small predictor fitted on real public measurements (once per session)."""
import importlib.util
import json
import os
import zipfile
from pathlib import Path

import pytest
from hypothesis import settings

from neuralpower.data import load
from neuralpower.predictor import Predictor

# The property tests draw the same examples on every run, so CI passes or fails for what
# changed in the code and never shrinks a fresh failure for minutes; set HYPOTHESIS_PROFILE=
# explore (or pass --hypothesis-seed) to search new examples.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = ROOT / "profiling" / "public"


def benchmark_module(name: str):
    """A module of benchmarks/ (not a package): the fault injectors and input matrices the
    tests assert on and the benchmarks count with."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def edit_card(src: Path, dst: Path, edit) -> Path:
    """A copy of the predictor file ``src`` at ``dst`` whose card ``edit(card)`` changed in
    place (a card edited by hand, or by someone hostile); every other member as it was."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "card.json":
                card = json.loads(data)
                edit(card)
                data = json.dumps(card)
            zout.writestr(item, data)
    return dst


@pytest.fixture(scope="session")
def cpu_rows():
    """The Raptor Lake CPU measurements (conv2d, linear, max_pool2d; runtime and RAPL power)."""
    return load(PUBLIC / "willowec_raptorlake_cpu.csv")


@pytest.fixture(scope="session")
def cpu_split(cpu_rows):
    """A fixed 75/25 split of a 1,200-row sample, to keep the tests fast on two cores."""
    sample = cpu_rows.sample(n=1200, random_state=0)
    return sample.iloc[:900], sample.iloc[900:]


@pytest.fixture(scope="session")
def cpu_predictor(cpu_split):
    return Predictor.fit(cpu_split[0], log=lambda m: None)


@pytest.fixture(scope="session")
def cpu_predictor_file(cpu_predictor, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "cpu.predictor"
    cpu_predictor.save(path)
    return path
