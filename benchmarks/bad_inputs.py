"""The bad-input matrix: every command against every kind of bad input it can be given.

Shared by tests/test_bad_input.py (one test per cell) and benchmarks/reliability.py (which
counts). Each cell is ``(id, argv, fragment)``: the command must end with exit code 1 (a user
error; 3 would be our own bug), one line on stderr that names the problem (``fragment``), no
traceback, and no output file left behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from neuralpower.cli import main  # noqa: E402

PUBLIC = ROOT / "profiling" / "public"
GOOD_CSV = "good.csv"
HEADER = ("kind,batch,in_channels,in_h,in_w,out_channels,out_h,out_w,kernel_h,kernel_w,"
          "stride_h,stride_w,pad_h,pad_w,in_features,out_features,runtime_ms,power_w")
CONV = "conv2d,1,3,32,32,8,32,32,3,3,1,1,1,1,,,{runtime},{power}"
LINEAR = "linear,{batch},,,,,,,,,,,,,{inp},64,0.05,20"


def _csv(*rows):
    return "\n".join([HEADER, *rows]) + "\n"


def _linear_rows(n=40):
    return [LINEAR.format(batch=b, inp=i) for b in (1, 2, 4, 8) for i in range(16, 16 + 10 * (n // 4), 10)]


# Measurement CSVs, by what is wrong with them (file name -> text; None: not created).
BAD_CSVS = {
    "missing.csv": None,
    "empty.csv": "",
    "header_only.csv": HEADER + "\n",
    "wrong_columns.csv": "a,b,c\n1,2,3\n",
    "no_runtime.csv": "kind,batch,in_features,out_features\nlinear,1,8,8\n",
    "no_shape_column.csv": "kind,batch,in_features,runtime_ms\nlinear,1,8,0.1\n",
    "nan_runtime.csv": _csv(CONV.format(runtime="nan", power=20)),
    "zero_runtime.csv": _csv(CONV.format(runtime=0, power=20)),
    "negative_runtime.csv": _csv(CONV.format(runtime=-0.5, power=20)),
    "huge_runtime.csv": _csv(CONV.format(runtime="1e300", power=20)),
    "inf_power.csv": _csv(CONV.format(runtime=0.1, power="inf")),
    "negative_power.csv": _csv(CONV.format(runtime=0.1, power=-3)),
    "text_runtime.csv": _csv(CONV.format(runtime="fast", power=20)),
    "text_size.csv": _csv(CONV.format(runtime=0.1, power=20).replace("conv2d,1,3", "conv2d,1,three")),
    "negative_size.csv": _csv(CONV.format(runtime=0.1, power=20).replace("conv2d,1,3", "conv2d,1,-3")),
    "zero_size.csv": _csv(CONV.format(runtime=0.1, power=20).replace("conv2d,1,3", "conv2d,0,3")),
    "huge_size.csv": _csv(CONV.format(runtime=0.1, power=20).replace("conv2d,1,3", "conv2d,1,9e15")),
    "nan_size.csv": _csv(CONV.format(runtime=0.1, power=20).replace("conv2d,1,3", "conv2d,1,nan")),
    "unknown_kinds.csv": _csv(*[r.replace("linear", "conv3d") for r in _linear_rows()]),
    "duplicate_rows.csv": _csv(*_linear_rows(), _linear_rows()[5]),
    "binary.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x00",
    "ragged.csv": HEADER + "\n" + CONV.format(runtime=0.1, power=20) + ",1,2,3,4\n",
}
CSV_MESSAGES = {
    "missing.csv": "not found",
    "empty.csv": "file is empty",
    "header_only.csv": "no data rows",
    "wrong_columns.csv": "missing column(s) kind, runtime_ms",
    "no_runtime.csv": "missing column(s) runtime_ms",
    "no_shape_column.csv": "linear rows need column(s) out_features",
    "nan_runtime.csv": "line 2: conv2d row has no runtime_ms",
    "twice": "is given twice",
    "zero_runtime.csv": "runtime_ms = 0 is not a plausible measurement",
    "negative_runtime.csv": "runtime_ms = -0.5 is not a plausible measurement",
    "huge_runtime.csv": "runtime_ms = 1e+300 is not a plausible measurement",
    "inf_power.csv": "power_w = inf is not a plausible measurement",
    "negative_power.csv": "power_w = -3 is not a plausible measurement",
    "text_runtime.csv": "runtime_ms = 'fast' is not a number",
    "text_size.csv": "in_channels = 'three' is not a number",
    "negative_size.csv": "in_channels = -3 is out of range",
    "zero_size.csv": "batch = 0 is out of range",
    "huge_size.csv": "in_channels = 9e+15 is out of range",
    "nan_size.csv": "conv2d row has no in_channels",
    "duplicate_rows.csv": "line 42 repeats line 7",
    "binary.csv": "not a readable CSV",
    "ragged.csv": "not a readable CSV",
}


def make_bad_files(d, good_predictor: bytes):
    """Write every bad file once, beside a good predictor and a good CSV, into folder ``d``."""
    for name, text in BAD_CSVS.items():
        if text is not None:
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    lines = (PUBLIC / "willowec_raptorlake_cpu.csv").read_text().splitlines()
    (d / GOOD_CSV).write_text("\n".join(lines[:200]) + "\n")
    (d / "good.predictor").write_bytes(good_predictor)
    for name, blob in _bad_predictors(good_predictor).items():
        (d / name).write_bytes(blob)
    (d / "act.py").write_text("import torch.nn as nn\ndef net():\n    return nn.ReLU()\n")
    (d / "broken.py").write_text("def net(:\n")
    (d / "raises.py").write_text("def net():\n    raise ValueError('no such width')\n")
    (d / "notmodule.py").write_text("def net():\n    return 42\n")
    (d / "adir.predictor").mkdir()
    for name, text in BAD_JSONL.items():
        (d / name).write_text(text)
    return d


def _rezip(good: bytes, edit) -> bytes:
    """The good predictor with ``edit(name, data) -> data or None (drop)`` applied per member."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                dst.writestr(info.filename, data)
    return out.getvalue()


def _edit_card(change):
    def edit(name, data):
        if name != "card.json":
            return data
        card = json.loads(data)
        change(card)
        return json.dumps(card)
    return edit


def _bad_predictors(good: bytes) -> dict[str, bytes]:
    def version(card):
        card["format_version"] = 99

    def no_kinds(card):
        del card["kinds"]

    def ranges_text(card):
        for entry in card["kinds"].values():
            entry["feature_ranges"] = "wide"

    def network_text(card):
        card["network"] = {"scale": "big", "per_op_ms": None}

    def clocks_text(card):
        card["clocks"] = {"host_scale": "fast"}

    return {
        "empty.predictor": b"",
        "truncated.predictor": good[: len(good) // 2],
        "csv.predictor": (PUBLIC / "neusight_t4_linear.csv").read_bytes()[:4000],
        "version.predictor": _rezip(good, _edit_card(version)),
        "nocard.predictor": _rezip(good, lambda n, d: None if n == "card.json" else d),
        "badjson.predictor": _rezip(good, lambda n, d: d[:-10] if n == "card.json" else d),
        "nomodels.predictor": _rezip(good, lambda n, d: None if n.startswith("models/") else d),
        "flipped.predictor": _rezip(good, lambda n, d: d[:100] + bytes(b ^ 0x5A for b in d[100:300])
                                    + d[300:] if n.startswith("models/") else d),
        "nokinds.predictor": _rezip(good, _edit_card(no_kinds)),
        "ranges.predictor": _rezip(good, _edit_card(ranges_text)),
        "network.predictor": _rezip(good, _edit_card(network_text)),
        "clocks.predictor": _rezip(good, _edit_card(clocks_text)),
    }


PREDICTOR_MESSAGES = {
    "missing.predictor": "predictor file 'missing.predictor' not found",
    "adir.predictor": "predictor file 'adir.predictor' not found",
    "empty.predictor": "not a valid neuralpower predictor",
    "truncated.predictor": "not a valid neuralpower predictor",
    "csv.predictor": "not a valid neuralpower predictor",
    "version.predictor": "predictor format version 99",
    "nocard.predictor": "not a valid neuralpower predictor",
    "badjson.predictor": "not a valid neuralpower predictor",
    "nomodels.predictor": "predictor holds no models",
    "flipped.predictor": "not a valid neuralpower predictor",
    "nokinds.predictor": "card has no",
    "ranges.predictor": "card has no",
    "network.predictor": "card has no",
    "clocks.predictor": "card has no valid clocks",
}

NETS = {
    "torchvision:no_such_net": "torchvision has no model 'no_such_net'",
    "resnet18": "expected torchvision:NAME",
    "keras:resnet": "unknown source 'keras'",
    "timm:no_such_net": "timm cannot build 'no_such_net'",
    "transformers:no_such_type": "transformers has no model type 'no_such_type'",
    "nowhere.py:net": "network file 'nowhere.py' not found",
    "broken.py:net": "cannot import 'broken.py': SyntaxError",
    "act.py:nothere": "'act.py' has no function 'nothere'",
    "raises.py:net": "'raises.py:net' failed: ValueError: no such width",
    "notmodule.py:net": "is a int, not an nn.Module",
}
INPUTS = {
    "axb": "expected sizes joined by x",
    "1x0x2x2": "sizes must be positive",
    "": "expected sizes joined by x",
    "-1x3x8x8": "expected sizes joined by x",
    "1x3x224": "ResNet with input 1x3x224",
    "99999999x3x224x224": "too large",
    "1x3x8x8:int8": "unknown dtype 'int8'",
    "1x3x8x8:": "expected sizes joined by x",
}

# Commands that read a predictor, with the arguments that follow it (a good NET and the rest).
PREDICTOR_COMMANDS = {
    "score": ["score", "{p}", GOOD_CSV],
    "predict": ["predict", "{p}", "torchvision:resnet18"],
    "rank": ["rank", "{p}", "torchvision:resnet18", "--plot", ""],
    "report": ["report", "{p}", "torchvision:resnet18", "-o", "out"],
    "validate": ["validate", "{p}", "torchvision:resnet18", "--plot", "out.png"],
    "calibrate": ["calibrate", "{p}", "torchvision:resnet18", "torchvision:alexnet",
                  "torchvision:vgg11", "-o", "out.predictor"],
}
# Commands that take a NET (and --input), with a good predictor.
NET_COMMANDS = {
    "predict": ["predict", "good.predictor", "{n}"],
    "rank": ["rank", "good.predictor", "{n}", "--plot", ""],
    "report": ["report", "good.predictor", "{n}", "-o", "out"],
    "validate": ["validate", "good.predictor", "{n}", "--plot", "out.png"],
    "measure": ["measure", "{n}"],
    "calibrate": ["calibrate", "good.predictor", "{n}", "torchvision:alexnet",
                  "torchvision:vgg11", "-o", "out.predictor"],
}
OUTPUTS = ("out", "out.png", "out.predictor", "x.predictor", "card.md", "nowhere")


def _cells(table, fill, argv_of):
    """(id, argv, fragment) for each command of ``table`` against each bad input of ``fill``."""
    return [(f"{command}-{bad}", argv_of(command, bad), fragment)
            for command in sorted(table) for bad, fragment in sorted(fill.items())]


def _csv_argv(command, name):
    names = [GOOD_CSV, GOOD_CSV] if name == "twice" else [name]
    return (["fit", *names, "-o", "x.predictor", "--card", "card.md"] if command == "fit"
            else ["score", "good.predictor", *names])


def _input_argv(command, shape):
    argv = [a.format(n="torchvision:resnet18") for a in NET_COMMANDS[command]]
    return argv + [f"--input{'s' if command == 'calibrate' else ''}={shape}"]  # "=": "-1x" no flag


CSV_CELLS = _cells({"fit": 0, "score": 0}, CSV_MESSAGES, _csv_argv)
PREDICTOR_CELLS = _cells(PREDICTOR_COMMANDS, PREDICTOR_MESSAGES,
                         lambda c, name: [a.format(p=name) for a in PREDICTOR_COMMANDS[c]])
NET_CELLS = _cells(NET_COMMANDS, NETS, lambda c, net: [a.format(n=net) for a in NET_COMMANDS[c]])
INPUT_CELLS = _cells(NET_COMMANDS, INPUTS, _input_argv)
NO_MODELED_LAYER_CELLS = [
    (c, [a.format(n="act.py:net=0.3" if c == "rank" else "act.py:net") for a in NET_COMMANDS[c]]
     + ["--input", "1x8"], "models none of act.py:net's layers" if c == "rank"
     else "no layer of a kind this predictor models") for c in ("predict", "rank", "report")]
# Search spaces (JSON lines of architectures, for rank), by what is wrong with them.
_RELU = '{"kind": "relu", "elements": 8, "in_elements": 8, "inner": 8}'
BAD_JSONL = {
    "notjson.jsonl": "{not json\n",
    "nolayers.jsonl": '{"name": "a"}\n',
    "emptyfile.jsonl": "",
    "twice.jsonl": f'{{"name": "a", "top1_error": 0.3, "layers": [{_RELU}]}}\n' * 2,
    "noerror.jsonl": f'{{"name": "a", "layers": [{_RELU}]}}\n',
    "badsize.jsonl": '{"name": "a", "top1_error": 0.3, "layers": [{"kind": "linear", "batch": 0, '
                     '"in_features": 8, "out_features": 8}]}\n',
    "unmodeled.jsonl": '{"name": "a", "top1_error": 0.3, "layers": [{"kind": "conv3d"}]}\n',
    "badshare.jsonl": '{"name": "a", "top1_error": 0.3, "layers": [{"kind": "relu", "elements": 8, '
                      '"in_elements": 8, "inner": 8, "subnormal_share": 2}]}\n',
}
JSONL_CELLS = [(f"rank-{name}", ["rank", "good.predictor", name, "--plot", ""], fragment)
               for name, fragment in [
                   ("missing.jsonl", "architecture file 'missing.jsonl' not found"),
                   ("notjson.jsonl", "line 1: not JSON"),
                   ("nolayers.jsonl", 'line 1: expected an object with a list of "layers"'),
                   ("emptyfile.jsonl", "no architectures in it"),
                   ("twice.jsonl", "line 2: name 'a' is used by line 1 too"),
                   ("noerror.jsonl", "architecture 'a' has no top1_error"),
                   ("badsize.jsonl", "linear batch 0 (a whole number from 1 is needed)"),
                   ("unmodeled.jsonl", "models none of a's layers"),
                   ("badshare.jsonl", "subnormal_share 2 (a share from 0 to 1 is needed)")]]
OPTION_CELLS = [(" ".join(argv), argv, fragment) for argv, fragment in [
    (["rank", "good.predictor", "torchvision:resnet18=fast"], "is not a number"),
    (["rank", "good.predictor", "torchvision:resnet18=-0.2"], "top-1 error"),
    (["rank", "good.predictor", "torchvision:resnet18=30"], "write 30%"),
    (["rank", "good.predictor", "act.py:net"], "no known top-1 error"),
    (["rank", "good.predictor", "torchvision:resnet18", "--alpha", "-1"], "alpha must be"),
    (["rank", "good.predictor", "torchvision:resnet18", "--power", "-5"], "--power"),
    (["predict", "good.predictor", "torchvision:resnet18", "--top", "-1"], "--top"),
    (["predict", "good.predictor", "torchvision:resnet18", "--epochs", "3"], "add --train"),
    (["predict", "good.predictor", "torchvision:resnet18", "--train", "--epochs", "3"],
     "--train needs --dataset-size"),
    (["predict", "good.predictor", "torchvision:resnet18", "--train", "--epochs", "3",
      "--dataset-size", "100"], "predicts inference"),
    (["report", "good.predictor", "torchvision:resnet18", "--top", "0"], "--top and --depth"),
    (["report", "good.predictor", "torchvision:resnet18", "-o", "good.csv"], "cannot write here"),
    (["calibrate", "good.predictor", "torchvision:resnet18", "-o", "out.predictor"],
     "at least 3 different networks"),
    (["measure", "torchvision:resnet18", "--device", "tpu"], "device"),
    (["measure", "torchvision:resnet18", "--threads", "0"], "--threads"),
    (["fit", "good.csv", "-o", "x.predictor", "--new-kinds-from", "good.csv"],
     "given as data and in --new-kinds-from"),
    (["profile", "-o", "out", "--budget", "-5"], "--budget"),
    (["profile", "-o", "out", "--target-error", "-5"], "--target-error"),
    (["profile", "-o", "out", "--kinds", "conv3d"], "--kinds: conv3d"),
    (["profile", "-o", "out", "--device", "cuda:7"], "cuda"),
    (["profile", "-o", "good.csv/x.csv", "--budget", "5"], "good.csv"),
    (["profile", "-o", "good.csv", "--budget", "5"], "good.csv"),
    (["demo", "-o", "out", "--budget", "-1"], "--budget"),
    (["demo", "-o", "out", "--nets", "torchvision:no_such_net"], "no_such_net"),
    (["demo", "-o", "out", "--power", "0"], "--power"),
]]
ALL_CELLS = (CSV_CELLS + PREDICTOR_CELLS + NET_CELLS + INPUT_CELLS + NO_MODELED_LAYER_CELLS
             + JSONL_CELLS
             + OPTION_CELLS)


def run_argv(folder, argv):
    """Run the command in ``folder`` as the console script would: (exit code, stdout, stderr,
    output files left behind)."""
    for o in OUTPUTS:  # a cell that failed must not fail the next ones
        path = folder / o
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    out, err, cwd = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue(), [o for o in OUTPUTS if (folder / o).exists()]


def refusal_problem(result, fragment) -> str | None:
    """What breaks the contract (a one-line message naming the problem, exit code 1, no
    traceback, no output file), or None."""
    code, out, err, left = result
    lines = [ln for ln in err.strip().splitlines() if ": error: " in ln]
    if "Traceback" in err + out:
        return "traceback"
    if code != 1:
        return f"exit code {code}: {err.strip()[-300:]}"
    # progress lines may come first; the story is the one error line, and it is the last
    if len(lines) != 1 or err.strip().splitlines()[-1] != lines[0]:
        return f"not one error line: {err.strip()[-300:]}"
    if fragment not in lines[0] or not lines[0].startswith("neuralpower "):
        return f"message does not say {fragment!r}: {lines[0]}"
    if left:
        return f"left partial output {left}"
    return None
