"""Inputs with a dtype (``1x128:int64``): language models' token ids traced, predicted and
measured for real, from Python and from the command line."""
import json
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

from neuralpower import NeuralPowerError, predict, trace
from neuralpower.archs import trace_many
from neuralpower.inputs import Shape, as_shapes, example, parse, text
from neuralpower.measure import measure

LM = '''import torch.nn as nn


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(1000, 64)
        self.enc = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(64, 4, 128, batch_first=True), 1)
        self.head = nn.Linear(64, 1000)

    def forward(self, ids):
        return self.head(self.enc(self.emb(ids)))


def lm():
    return TinyLM()
'''


@pytest.fixture
def lm_file(tmp_path):
    (tmp_path / "lm.py").write_text(LM)
    return tmp_path / "lm.py"


def tiny_lm():
    namespace = {}
    exec(LM, namespace)
    return namespace["lm"]()


def test_an_input_spec_carries_its_dtype_through_text_and_pickling():
    ids, image = parse("2x16:int64, 1x3x8x8")
    assert ids == (2, 16) and ids.dtype == torch.int64
    assert image == (1, 3, 8, 8) and image.dtype == torch.float32
    assert parse("1x4:long")[0].dtype == torch.int64 and parse("1x4:half")[0].dtype == torch.float16
    assert text([ids, image]) == "2x16:int64,1x3x8x8"
    again = pickle.loads(pickle.dumps(ids))   # as worker processes receive it
    assert again == ids and again.dtype == torch.int64
    assert ids.with_batch(8).dtype == torch.int64 and ids.with_batch(8) == (8, 16)
    assert as_shapes((1, 3, 8, 8)) == [(1, 3, 8, 8)] and as_shapes("1x8:int32")[0].dtype == torch.int32
    for bad, fragment in [("1x8:int8", "unknown dtype 'int8'"), ("1x8:", "expected sizes"),
                          ("1x0:int64", "positive")]:
        with pytest.raises(NeuralPowerError, match=fragment):
            parse(bad)


def test_integer_examples_index_every_embedding_table():
    model = nn.ModuleDict({"a": nn.Embedding(7, 4), "b": nn.Embedding(50, 4)})
    ids = example(Shape((4, 100), "int64"), model)
    assert ids.dtype == torch.int64 and 0 <= int(ids.min()) and int(ids.max()) < 7
    assert example(Shape((2, 3)), model).dtype == torch.float32


def test_token_ids_trace_and_predict_a_language_model(cpu_predictor):
    model = tiny_lm()
    t = trace(model, "2x16:int64")
    assert t.kind.iloc[0] == "embedding" and "linear" in set(t.kind)
    p = predict(model, "2x16:int64", cpu_predictor)   # the public CPU predictor: linear modeled
    assert p.input_shape[0].dtype == torch.int64 and p.totals["runtime_ms"] > 0
    with pytest.raises(NeuralPowerError, match=r"embedding takes integer ids.*2x16:int64"):
        trace(model, (2, 16))   # floats where an embedding wants ids: told what to give


def test_token_ids_measure_a_real_language_model():
    m = measure(tiny_lm(), parse("2x16:int64"), target_s=0.2)
    assert m["runtime_ms"] > 0 and m["repeats"] >= 10


def test_token_ids_reach_the_parallel_tracer(lm_file, monkeypatch):
    monkeypatch.chdir(lm_file.parent)
    tables = trace_many(["lm.py:lm", "lm.py:lm"], parse("1x8:int64")[0], workers=2)
    assert set(tables.network) == {"lm.py:lm"} and (tables.kind == "embedding").sum() == 2


def test_token_ids_on_the_command_line(cpu_predictor_file, lm_file):
    r = subprocess.run([sys.executable, "-m", "neuralpower", "predict", str(cpu_predictor_file),
                        "lm.py:lm", "--input", "1x32:int64", "--json"], cwd=lm_file.parent,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["input"] == ["1x32:int64"] and out["totals"]["runtime_ms"] > 0
    assert any(layer["kind"] == "embedding" for layer in out["layers"])
