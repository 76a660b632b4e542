"""Property-based tests (hypothesis) of the CSV loader, the layer features and the aggregation.

* ``data.load`` on CSV text generated from the schema's columns with arbitrary cells either
  refuses the file with a one-line ``NeuralPowerError`` or returns exactly the rows written
  (status ``ok``), whose targets are plausible numbers and whose modeled rows feature cleanly.
* ``features`` of valid layers (sizes from 1 up to 2**31 elements) are finite and non-negative
  for every modeled kind, and MACs follow the hand formulas.
* predictions of generated layer tables and of traced random ``nn.Sequential`` models are never
  negative or NaN for modeled layers, and the totals, ``by_kind()`` and ``by_module()`` add up.

The bugs these properties found keep a minimal reproducer each (``test_bug*``) as a regression
test.
"""
from __future__ import annotations

import csv
import io
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

from neuralpower import NeuralPowerError
from neuralpower.data import MAX_POWER_W, MAX_RUNTIME_MS, MAX_SIZE, load
from neuralpower.features import (INPUT_COLUMNS, MODELED_KINDS, SHAPE_COLUMNS, STAND_INS,
                                  features, macs)
from neuralpower.predict import predict, predict_table, totals
from neuralpower.trace import COLUMNS as TRACE_COLUMNS
from neuralpower.trace import trace

FUNCTION_FIXTURE = [HealthCheck.function_scoped_fixture]

# ----------------------------------------------------------------------------- the CSV loader
UNKNOWN_KINDS = ["free", "conv3d", "Conv2d", "lstm", " ", " linear", "my kind, with comma"]
UNKNOWN_KINDS += ["", "nan", "NA"]
KINDS = list(MODELED_KINDS) + UNKNOWN_KINDS
OPTIONAL_SIZES = ["pad_h", "pad_w", "dilation_h", "dilation_w", "groups"]
SCHEMA = ["kind", *SHAPE_COLUMNS, "runtime_ms", "power_w", "device", "status", "repeats"]
# pandas reads these cells as missing (read_csv's default na_values)
NA_TEXT = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
           "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}

_WILD_NUMBERS = ["0", "-0", "-1", "-0.5", "0.5", "1e-300", "5e-324", "1e300", "inf", "-inf",
                 "Infinity", str(2**31), str(2**31 + 1), str(2**63), "1" + "0" * 25, "1e3",
                 " 7 ", "0007", "1.0", "nan", "NaN", ""]
_WILD_TEXT = ["abc", "True", "false", "1,5", "3 x 3", 'say "hi"', "line\nbreak", "0x10",
              "1_000", "NULL", "None", "#N/A", "-", "½"]


def _number_text(draw):
    return draw(st.one_of(st.integers(-2**70, 2**70).map(str),
                          st.floats(allow_nan=True, allow_infinity=True).map(repr),
                          st.sampled_from(_WILD_NUMBERS)))


def _as_float(text: str):
    try:
        return float(text)
    except ValueError:
        return None


@st.composite
def _cell(draw, column: str, kind: str, wild_rate: int) -> str:
    """Text of one cell: a valid value for the column, or (``wild_rate`` in 20) anything."""
    wild = draw(st.integers(0, 19)) < wild_rate
    if column == "kind":
        return kind
    if column == "status":
        return draw(st.sampled_from(["ok", "ok", "ok", "failed", ""]))
    if column in ("device", "repeats"):
        return draw(st.sampled_from(["cpu", "Intel i7, 8 threads", "", "3"]))
    if column == "runtime_ms":
        if wild:
            return draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                  st.sampled_from(_WILD_NUMBERS + _WILD_TEXT)))
        return repr(draw(st.floats(1e-4, 1e4)))
    if column == "power_w":
        if wild:
            return draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                  st.sampled_from(_WILD_NUMBERS + _WILD_TEXT)))
        return draw(st.one_of(st.just(""), st.floats(1.0, 400.0).map(repr)))
    pad = column.startswith("pad")
    if wild:
        if draw(st.booleans()):
            return draw(st.one_of(st.sampled_from(_WILD_TEXT), st.text(max_size=6)))
        return _number_text(draw)
    if column in OPTIONAL_SIZES and draw(st.integers(0, 4)) == 0:
        return ""
    if pad:
        return str(draw(st.integers(0, 3)))
    return str(draw(st.one_of(st.integers(1, 64), st.integers(1, 2**16),
                              st.floats(0.5, 512.0).map(lambda x: round(x, 3)))))


@st.composite
def csv_files(draw):
    """(text, rows): a CSV of 1-6 rows over a shuffled subset of the schema's columns, and the
    cell texts written, one dict a row."""
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6))
    needed = {c for k in kinds for c in INPUT_COLUMNS.get(k.strip(), [])}
    columns = []
    for c in SCHEMA:
        # what the rows need is there almost always: else nearly every file is refused early
        keep = draw(st.integers(0, 19)) < (19 if c in needed or c in ("kind", "runtime_ms")
                                            else 10)
        if keep:
            columns.append(c)
    columns = draw(st.permutations(columns))
    assume(columns)
    # from files with one odd cell (which reach the checks after the first) to anything goes
    wild_rate = draw(st.sampled_from([0, 1, 2, 5, 10]))
    rows = [{c: draw(_cell(c, k, wild_rate)) for c in columns} for k in kinds]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r[c] for c in columns])
    text = out.getvalue()
    if draw(st.booleans()):
        text = "".join(line + "," * draw(st.integers(0, 2)) + "\n"
                       for line in text.splitlines())
    return text, rows


def _kept(rows: list[dict]) -> list[dict]:
    """The rows load() must return: those the profiler did not mark failed."""
    return [r for r in rows if r.get("status", "") in ("", "ok")]


def _check_loaded(d: pd.DataFrame, rows: list[dict]) -> None:
    assert isinstance(d, pd.DataFrame)
    kept = _kept(rows)
    assert len(d) == len(kept)
    for target in ("runtime_ms", "power_w"):
        assert target in d.columns
    runtime = d.runtime_ms.to_numpy(dtype=float)
    power = d.power_w.to_numpy(dtype=float)
    assert np.isfinite(runtime).all() and (runtime > 0).all() and (runtime <= MAX_RUNTIME_MS).all()
    measured = ~np.isnan(power)
    assert np.isfinite(power[measured]).all() and (power[measured] > 0).all()
    assert (power[measured] <= MAX_POWER_W).all()
    for i, r in enumerate(kept):
        # the rows come back in order, each with the kind and the numbers that were written
        assert isinstance(d.kind.iloc[i], str), d.kind.iloc[i]
        kind = r["kind"].strip()
        if r["kind"] not in NA_TEXT:
            assert d.kind.iloc[i] == kind
        written = _as_float(r["runtime_ms"])
        assert written is not None, f"runtime_ms = {r['runtime_ms']!r} is not a number"
        assert math.isclose(runtime[i], written, rel_tol=1e-12)
        if kind not in INPUT_COLUMNS:
            continue
        for c in INPUT_COLUMNS[kind] + [c for c in OPTIONAL_SIZES if c in r]:
            if r[c].strip() in NA_TEXT:
                assert c in OPTIONAL_SIZES and pd.isna(d[c].iloc[i])
                continue
            written = _as_float(r[c])
            assert written is not None, f"{c} = {r[c]!r} is not a number, yet it loaded"
            assert math.isclose(float(d[c].iloc[i]), written, rel_tol=1e-12), (c, r[c])
            assert (written >= 0 if c.startswith("pad") else written > 0), (c, r[c])
            assert written <= MAX_SIZE, (c, r[c])
    for kind, of_kind in d.groupby("kind"):
        if kind not in MODELED_KINDS:
            continue
        f = features(of_kind, kind).to_numpy(dtype=float)
        assert np.isfinite(f).all(), kind   # no NaN (nor inf) in a loaded row's features
        assert (f >= 0).all(), kind         # "every feature is a non-negative count or size"


@settings(max_examples=150, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(csv_files())
def test_load_refuses_on_one_line_or_returns_what_was_written(tmp_path, file):
    """Never another exception; a loaded file is the rows written, checked (_check_loaded)."""
    text, rows = file
    path = tmp_path / "data.csv"
    path.write_text(text)
    try:
        d = load(path)
    except NeuralPowerError as e:
        assert str(e) and "\n" not in str(e)
        return
    _check_loaded(d, rows)


@settings(max_examples=60, deadline=None, suppress_health_check=FUNCTION_FIXTURE)
@given(st.lists(st.tuples(st.sampled_from(["linear", "max_pool2d", "conv2d", "relu", "lstm"]),
                          st.floats(1e-3, 1e3), st.sampled_from(["", "12.5"]),
                          st.integers(1, 4096)), min_size=1, max_size=5, unique=True))
def test_load_of_valid_rows_keeps_every_row_and_number(tmp_path, layers):
    """All-valid files (no row repeated exactly: that is refused) always load, with every
    number as written."""
    columns = ["kind", *SHAPE_COLUMNS, "runtime_ms", "power_w"]
    rows = []
    for kind, runtime, power, size in layers:
        r = {c: "" if c in OPTIONAL_SIZES else str(size) for c in SHAPE_COLUMNS}
        rows.append({**r, "kind": kind, "runtime_ms": repr(runtime), "power_w": power})
    path = tmp_path / "valid.csv"
    path.write_text(",".join(columns) + "\n"
                    + "".join(",".join(r[c] for c in columns) + "\n" for r in rows))
    _check_loaded(load(path), rows)


# Minimal reproducers of the loader bugs the properties found (see the report in the issue).
def _load_text(tmp_path, text):
    path = tmp_path / "bug.csv"
    path.write_text(text)
    return load(path)


def _refused_or_checked(tmp_path, text, rows):
    try:
        d = _load_text(tmp_path, text)
    except NeuralPowerError as e:
        assert "\n" not in str(e)
        return
    _check_loaded(d, rows)


def test_bug1_trailing_delimiter(tmp_path):
    """Fixed bug 1: a trailing delimiter made pandas take the first column as the index: the
    columns shifted (rows silently dropped or misread), or data._line() raised ValueError
    int('linear')."""
    _refused_or_checked(tmp_path, "kind,batch,in_features,out_features,runtime_ms\n"
                        "linear,8,16,32,0.5,\n",
                        [{"kind": "linear", "batch": "8", "in_features": "16",
                          "out_features": "32", "runtime_ms": "0.5"}])


@pytest.mark.parametrize("text", [
    # an unmodeled row's free text in a column a modeled kind reads
    "kind,batch,in_features,out_features,runtime_ms\nlinear,8,16,32,0.5\nlstm,abc,1,1,0.5\n",
    # a modeled row of a kind checked later (embedding's bad cell should be refused by name)
    "kind,batch,in_features,out_features,runtime_ms\nlinear,8,16,32,0.5\nembedding,x,1,1,0.5\n",
    # an integer too wide for 64 bits beside a decimal makes a text column too (it should
    # be refused as "out of range")
    "kind,batch,in_features,out_features,runtime_ms\nlinear,8,16,32,0.5\n"
    "embedding,100000000000000000000,1,1,0.5\nlstm,2.5,1,1,0.5\n",
], ids=["text-in-an-unmodeled-row", "text-in-a-later-kind", "wide-integer-beside-a-decimal"])
def test_bug2_text_in_a_size_column(tmp_path, text):
    # load() -> TypeError: Invalid value for dtype 'str'. Value should be a string or missing value
    rows = list(csv.DictReader(io.StringIO(text)))
    _refused_or_checked(tmp_path, text, rows)


def test_bug3_negative_fractional_padding(tmp_path):
    text = ("kind,batch,in_channels,in_h,in_w,out_channels,out_h,out_w,kernel_h,kernel_w,"
            "stride_h,stride_w,pad_h,runtime_ms\nconv2d,1,3,8,8,4,6,6,3,3,1,1,-0.5,0.1\n")
    _refused_or_checked(tmp_path, text, list(csv.DictReader(io.StringIO(text))))


@pytest.mark.parametrize("runtime", ["", "nan", "NA"])
def test_bug4_missing_runtime(tmp_path, runtime):
    """Fixed bug 4: an empty (or 'nan') runtime_ms loaded as NaN (data._check_range only
    checked the cells that are not NaN)."""
    text = f"kind,batch,in_features,out_features,runtime_ms\nlinear,8,16,32,{runtime}\n"
    _refused_or_checked(tmp_path, text, list(csv.DictReader(io.StringIO(text))))


def test_bug5_boolean_text_is_a_number(tmp_path):
    text = "kind,batch,in_features,out_features,runtime_ms\nlinear,True,16,32,0.5\n"
    _refused_or_checked(tmp_path, text, list(csv.DictReader(io.StringIO(text))))


@pytest.mark.parametrize("kind", ["", "NA"])
def test_bug6_empty_kind(tmp_path, kind):
    text = f"kind,batch,in_features,out_features,runtime_ms\n{kind},8,16,32,0.5\n"
    _refused_or_checked(tmp_path, text, list(csv.DictReader(io.StringIO(text))))


def test_bug8_empty_status_column_is_future_proof(tmp_path):
    future = getattr(pd.errors, "Pandas4Warning", FutureWarning)
    text = "kind,batch,in_features,out_features,runtime_ms,status\nlinear,8,16,32,0.5,\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error", future)
        _refused_or_checked(tmp_path, text, list(csv.DictReader(io.StringIO(text))))


def test_bug9_every_row_failed(tmp_path):
    """Fixed bug 9 (found on CI): when every row had status failed, the loader went on with no
    rows and raised IndexError while naming a bad cell of a boolean column."""
    text = ("kind,batch,in_features,out_features,runtime_ms,status,repeats\n"
            "linear,True,16,32,0.5,failed,3\n")
    with pytest.raises(NeuralPowerError, match="none of its 1 row"):
        _load_text(tmp_path, text)


# ----------------------------------------------------------------------------- the features
def _size(lo=1, hi=2**31):
    """A size: mostly realistic, sometimes at the extremes."""
    return st.one_of(st.integers(lo, min(hi, 512)), st.integers(lo, hi),
                     st.sampled_from([lo, hi]))


@st.composite
def layer_rows(draw, kind: str, n_max: int = 4):
    """Valid rows of ``kind`` (every size positive, padding >= 0, optional columns sometimes
    left empty), with no tensor in them larger than ~2**31 elements."""
    rows = []
    for _ in range(draw(st.integers(1, n_max))):
        r = {}
        if kind in ("conv2d", "depthwise_conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d"):
            b, c, oc = draw(_size(hi=256)), draw(_size(hi=4096)), draw(_size(hi=4096))
            limit = max(1, 2**31 // (b * max(c, oc)))
            h = draw(_size(hi=min(limit, 2**16)))
            w = draw(_size(hi=max(1, min(limit // h, 2**16))))
            oh, ow = draw(_size(hi=h)), draw(_size(hi=w))
            r.update(batch=b, in_channels=c, in_h=h, in_w=w, out_h=oh, out_w=ow,
                     kernel_h=draw(_size(hi=11)), kernel_w=draw(_size(hi=11)),
                     stride_h=draw(_size(hi=4)), stride_w=draw(_size(hi=4)))
            if kind != "max_pool2d" and kind != "avg_pool2d":
                r["out_channels"] = oc
                g = c if kind == "depthwise_conv2d" else draw(st.sampled_from(
                    [d for d in (1, 2, 4, c) if c % d == 0]))
                if draw(st.booleans()):
                    r["groups"] = g
            for c_ in ("pad_h", "pad_w", "dilation_h", "dilation_w"):
                if draw(st.booleans()):
                    r[c_] = draw(st.integers(0 if c_.startswith("pad") else 1, 5))
        elif kind in ("linear", "embedding"):
            b = draw(_size(hi=2**20))
            i = draw(_size(hi=max(1, min(2**31 // b, 2**20))))
            o = draw(_size(hi=max(1, min(2**31 // max(b, i), 2**20))))
            r.update(batch=b, in_features=i, out_features=o)
        elif kind == "matmul":
            b = draw(_size(hi=1024))
            m = draw(_size(hi=max(1, min(2**31 // b, 2**16))))
            k = draw(_size(hi=max(1, min(2**31 // (b * m), 2**16))))
            n = draw(_size(hi=max(1, min(2**31 // (b * max(m, k)), 2**16))))
            r.update(batch=b, rows=m, in_features=k, out_features=n)
        elif kind == "grouped_mm":  # token-expert pairs, through one of `groups` experts each
            m = draw(_size(hi=2**20))
            k, n = (draw(_size(hi=max(1, min(2**31 // m, 2**14)))) for _ in range(2))
            r.update(batch=1, rows=m, in_features=k, out_features=n, groups=draw(_size(hi=256)))
        elif kind == "attention":  # batch x heads, queries, keys, query/key and value sizes
            b = draw(_size(hi=1024))
            q, k = (draw(_size(hi=max(1, min(2**31 // b, 2**14)))) for _ in range(2))
            e, v = (draw(_size(hi=max(1, min(2**31 // (b * max(q, k)), 2**10)))) for _ in range(2))
            r.update(batch=b, rows=q, inner=k, in_features=e, out_features=v)
        else:  # tensor ops: elements written and read, innermost extent
            e = draw(_size())
            r.update(batch=draw(_size(hi=e)), elements=e,
                     in_elements=draw(_size(hi=2 * e)), inner=draw(_size(hi=e)))
            if kind == "batch_norm":
                r["in_channels"] = draw(_size(hi=e))
            if kind == "group_norm":
                r["groups"] = draw(_size(hi=32))
            if kind in ("cat", "stack"):
                r["n_inputs"] = draw(_size(hi=64))
        rows.append(r)
    return rows


def _frame(rows, dtype):
    d = pd.DataFrame(rows)
    return d.astype("int64") if dtype == "int64" else d.astype(dtype) if dtype else d


@pytest.mark.parametrize("kind", MODELED_KINDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_features_of_valid_layers_are_finite_and_non_negative(kind, data):
    rows = data.draw(layer_rows(kind))
    dtype = data.draw(st.sampled_from([None, "int64", "float64", "object"]))
    if dtype == "int64" and any(r.keys() != rows[0].keys() for r in rows):
        dtype = None   # an empty optional cell: the column is float
    d = _frame(rows, dtype)
    f = features(d, kind)
    assert len(f) == len(rows) and list(f.index) == list(d.index)
    values = f.to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all(), f.to_dict("records")
    if "macs" in f:
        assert (f.macs > 0).all()
        # the list-of-dicts path (the tracer's) gives the same MACs
        np.testing.assert_allclose(macs(rows, kind), f.macs.to_numpy(), rtol=1e-12)
    for c, v in rows[0].items():  # a schema column that is a feature is passed through as is
        if c in f:
            assert f[c].iloc[0] == v


@settings(max_examples=25, deadline=None)
@given(rows=layer_rows("conv2d"))
def test_features_of_text_columns_are_those_of_the_numbers(rows):
    """Size columns as text (a CSV read by pandas 3 gives ``str`` columns, older pandas
    ``object``) feature as the numbers they spell."""
    numbers = pd.DataFrame(rows)
    want = features(numbers, "conv2d")
    for dtype in (object, "str"):
        text = numbers.map(lambda v: "" if pd.isna(v) else str(int(v))).replace("", np.nan)
        got = features(text.astype(dtype), "conv2d")
        pd.testing.assert_frame_equal(got, want, check_dtype=False)


def test_bug7_features_of_a_str_column_with_a_non_number():
    d = pd.read_csv(io.StringIO("kind,batch,in_features,out_features\nlinear,8,16,32\n"
                                "linear,abc,16,32\n"))
    f = features(d, "linear")   # -> ValueError: could not convert string to float: 'abc'
    assert f.macs.iloc[0] == 8 * 16 * 32 and np.isnan(f.macs.iloc[1])


def _hand_macs(kind, r):
    b = r["batch"]
    if kind in ("conv2d", "depthwise_conv2d"):
        g = r.get("groups", 1)
        return b * r["out_h"] * r["out_w"] * r["out_channels"] * (r["in_channels"] / g) \
            * r["kernel_h"] * r["kernel_w"]
    if kind == "conv_transpose2d":   # each input pixel scatters a window
        g = r.get("groups", 1)
        return b * r["in_h"] * r["in_w"] * r["in_channels"] * (r["out_channels"] / g) \
            * r["kernel_h"] * r["kernel_w"]
    if kind == "linear":
        return b * r["in_features"] * r["out_features"]
    if kind == "matmul":
        return b * r["rows"] * r["in_features"] * r["out_features"]
    if kind == "attention":  # its two products, the scores never stored
        return b * r["rows"] * r["inner"] * (r["in_features"] + r["out_features"])
    return b * r["in_channels"] * r["out_h"] * r["out_w"] * r["kernel_h"] * r["kernel_w"]


@pytest.mark.parametrize("kind", ["conv2d", "depthwise_conv2d", "conv_transpose2d", "linear",
                                  "matmul", "attention", "max_pool2d", "avg_pool2d"])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_macs_match_the_hand_formula(kind, data):
    rows = data.draw(layer_rows(kind))
    got = macs(pd.DataFrame(rows), kind)
    want = [float(_hand_macs(kind, r)) for r in rows]  # Python ints: exact, then rounded once
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ----------------------------------------------------------------------------- prediction
PREDICTED = ("conv2d", "linear", "max_pool2d")   # what cpu_predictor models
MODELED = PREDICTED + tuple(k for k, v in STAND_INS.items() if v in PREDICTED)  # + stand-ins
MODULES = ["", "features", "features.0", "features.1.conv", "classifier", "classifier.fc", None]


@st.composite
def layer_tables(draw):
    """A layer table shaped like trace()'s: modeled kinds, kinds cpu_predictor has no model
    for, and free ops, with module paths and MACs."""
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(PREDICTED + MODELED + ("relu", "add", "lstm", "free")))
        if kind in MODELED:
            r = draw(layer_rows(kind, n_max=1))[0]
            r["macs"] = int(macs([r], kind)[0])
        elif kind in ("relu", "add"):
            r = draw(layer_rows(kind, n_max=1))[0]
            r["macs"] = 0
        else:
            r = {"macs": draw(st.integers(0, 10**9)) if kind == "lstm" else 0}
        module = draw(st.sampled_from(MODULES))
        r.update(kind=kind, op=kind, module=module, module_type="", input_shape="",
                 output_shape="", prev_elements=1, net_elements=1)
        rows.append(r)
    table = pd.DataFrame(rows).reindex(columns=TRACE_COLUMNS)
    table["name"] = [f"layer{i}" for i in range(len(table))]
    table["macs"] = table["macs"].astype("int64")
    return table


def _check_prediction(p, table):
    layers = p.layers
    assert len(layers) == int((table.kind != "free").sum())
    modeled = layers[layers.modeled]
    assert set(modeled.kind) <= set(MODELED)
    assert set(layers.kind[~layers.modeled]) & set(MODELED) == set()
    for c in ("runtime_ms", "power_w", "energy_mj"):
        v = modeled[c].to_numpy(dtype=float)
        assert np.isfinite(v).all() and (v > 0).all(), (c, modeled[["kind", c]])
        assert layers[c][~layers.modeled].isna().all()   # no model: no figure, never a guess
    np.testing.assert_allclose(modeled.energy_mj, modeled.power_w * modeled.runtime_ms,
                               rtol=1e-12)
    t = p.totals
    assert t["layers_modeled"] == len(modeled)
    assert t["layers_modeled"] + t["layers_unmodeled"] + t["layers_free"] == len(table)
    assert t["layers_free"] == int((table.kind == "free").sum())
    assert t["macs"] == int(table.macs.sum())
    assert t["unmodeled_macs"] == int(layers.macs[~layers.modeled].sum())
    assert math.isclose(t["runtime_ms"], float(modeled.runtime_ms.sum()), rel_tol=1e-9)
    if len(modeled):
        assert t["energy_mj"] is not None and t["power_w"] is not None
        assert math.isclose(t["energy_mj"], float(modeled.energy_mj.sum()), rel_tol=1e-9)
        assert math.isclose(t["power_w"], t["energy_mj"] / t["runtime_ms"], rel_tol=1e-9)
        # runtime-weighted mean power lies between the layers' extremes
        low, high = modeled.power_w.min(), modeled.power_w.max()
        assert low * (1 - 1e-9) <= t["power_w"] <= high * (1 + 1e-9)
    else:
        assert t["runtime_ms"] == 0 and t["energy_mj"] is None and t["power_w"] is None
    for groups in (p.by_kind(), p.by_module(), p.by_module(depth=2), p.by_module(depth=5)):
        assert int(groups.layers.sum()) == len(modeled)
        assert math.isclose(float(groups.runtime_ms.sum()), t["runtime_ms"], rel_tol=1e-9,
                            abs_tol=1e-12)
        if len(modeled):
            assert math.isclose(float(groups.energy_mj.sum()), t["energy_mj"], rel_tol=1e-9)
            np.testing.assert_allclose(groups.power_w, groups.energy_mj / groups.runtime_ms,
                                       rtol=1e-12)
        assert float(groups.macs.sum()) == float(modeled.macs.sum())
    unmodeled = p.unmodeled
    assert int(unmodeled["count"].sum()) == t["layers_unmodeled"]
    assert int(unmodeled.macs.sum()) == t["unmodeled_macs"]
    top = p.top(3)
    assert len(top) == min(3, len(modeled)) and top.modeled.all()
    by = "energy_mj" if p.has_power else "runtime_ms"
    assert list(top[by]) == sorted(modeled[by], reverse=True)[:len(top)]
    kinds = p.by_kind().set_index("kind")
    for kind, of_kind in modeled.groupby("kind"):
        assert math.isclose(kinds.runtime_ms[kind], of_kind.runtime_ms.sum(), rel_tol=1e-9)


@settings(max_examples=40, deadline=None)
@given(layer_tables())
def test_predicted_tables_are_positive_and_add_up(cpu_predictor, table):
    p = predict(table, (1, 3, 8, 8), cpu_predictor, network="generated")
    _check_prediction(p, table)
    # predict_table + totals directly: the same figures as predict()
    again = predict_table(table, cpu_predictor)
    assert totals(again) == p.totals


@settings(max_examples=20, deadline=None)
@given(table=layer_tables(), copies=st.integers(2, 4))
def test_a_repeated_network_costs_the_sum_of_its_copies(cpu_predictor, table, copies):
    """Layers are predicted independently: k copies of a table cost k times the table."""
    one = predict(table, (1, 3, 8, 8), cpu_predictor).totals
    many_table = pd.concat([table] * copies, ignore_index=True)
    many = predict(many_table, (1, 3, 8, 8), cpu_predictor).totals
    assert math.isclose(many["runtime_ms"], copies * one["runtime_ms"], rel_tol=1e-9)
    if one["energy_mj"] is not None:
        assert math.isclose(many["energy_mj"], copies * one["energy_mj"], rel_tol=1e-9)
        assert math.isclose(many["power_w"], one["power_w"], rel_tol=1e-9)
    assert many["layers_modeled"] == copies * one["layers_modeled"]


@st.composite
def sequential_models(draw):
    """(model, input shape): a small CNN or MLP of hypothesis-chosen sizes, valid by design."""
    if draw(st.booleans()):
        n, c, h = draw(st.integers(1, 4)), draw(st.integers(1, 16)), draw(st.integers(4, 48))
        layers, w = [], h
        for _ in range(draw(st.integers(1, 3))):
            oc, k = draw(st.integers(1, 32)), draw(st.integers(1, min(5, h)))
            s, pad = draw(st.integers(1, 2)), draw(st.integers(0, k // 2))
            groups = draw(st.sampled_from([g for g in (1, 2, 4) if c % g == 0 and oc % g == 0]))
            layers += [nn.Conv2d(c, oc, k, stride=s, padding=pad, groups=groups), nn.ReLU()]
            h = (h + 2 * pad - k) // s + 1
            c = oc
            if h >= 2 and draw(st.booleans()):
                pk = draw(st.integers(1, min(3, h)))
                layers.append(nn.MaxPool2d(pk, stride=draw(st.integers(1, pk))))
                h = (h - pk) // layers[-1].stride + 1
        layers += [nn.Flatten(), nn.Linear(c * h * h, draw(st.integers(1, 64)))]
        return nn.Sequential(*layers), (n, layers[0].in_channels, w, w)
    n, f = draw(st.integers(1, 256)), draw(st.integers(1, 1024))
    layers = []
    for _ in range(draw(st.integers(1, 4))):
        o = draw(st.integers(1, 1024))
        layers += [nn.Linear(f, o), nn.ReLU()]
        f = o
    return nn.Sequential(*layers), (n, layers[0].in_features)


@settings(max_examples=25, deadline=None)
@given(sequential_models())
def test_traced_sequential_models_are_positive_and_add_up(cpu_predictor, model_and_shape):
    model, shape = model_and_shape
    p = predict(model, shape, cpu_predictor)
    table = trace(model, shape)
    _check_prediction(p, table)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    assert p.layers.kind.isin(["conv2d", "depthwise_conv2d"]).sum() == convs
    assert (p.layers.kind == "linear").sum() == linears
    assert p.totals["layers_modeled"] >= convs + linears
