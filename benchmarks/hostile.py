"""Hostile predictor files: payloads that run code when unpickled, or when their types are
trusted. Shared by tests/test_hostile.py (which asserts) and benchmarks/reliability.py (which
counts). Every payload writes a marker file when it runs; ``prove_live`` shows that it does,
loaded the unsafe way in a child process, so a missing marker after ``Predictor.load`` means the
loader refused it, not that the payload was a dud.
"""
from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import zipfile

KINDS = ("pickle_file", "pickle_member", "skops_exec_member")


class _Payload:
    """Unpickling this runs ``code`` (pickle calls exec)."""

    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _code(marker) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


def pickle_payload(marker) -> bytes:
    return pickle.dumps(_Payload(_code(marker)))


def skops_payload(marker) -> bytes:
    """A skops file whose one node calls ``builtins.exec(code)`` when constructed: skops builds a
    ``ConstructorFromReduceNode`` by calling its type with its arguments."""
    import skops.io as sio

    def schema(blob):
        return json.loads(zipfile.ZipFile(io.BytesIO(blob)).read("schema.json"))

    args = schema(sio.dumps((_code(marker),)))  # a tuple holding the code, as skops writes it
    node = {"__class__": "exec", "__module__": "builtins",
            "__loader__": "ConstructorFromReduceNode", "content": args,
            "protocol": args.pop("protocol"), "_skops_version": args.pop("_skops_version")}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("schema.json", json.dumps(node))
    return out.getvalue()


def _with_member(good: bytes, member: bytes) -> bytes:
    """The good predictor with its first model replaced by ``member``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        first = next(n for n in src.namelist() if n.startswith("models/"))
        for name in src.namelist():
            dst.writestr(name, member if name == first else src.read(name))
    return out.getvalue()


def hostile_predictor(kind: str, marker, good: bytes) -> bytes:
    """A predictor file (built from the ``good`` one) carrying a payload of ``kind``."""
    if kind == "pickle_file":
        return pickle_payload(marker)
    if kind == "pickle_member":
        return _with_member(good, pickle_payload(marker))
    if kind == "skops_exec_member":
        return _with_member(good, skops_payload(marker))
    raise ValueError(f"no hostile file of kind {kind!r}")


def prove_live(kind: str, folder, marker) -> bool:
    """Load the payload the unsafe way, in a child process; True if the marker appeared (it is
    removed again)."""
    blob = folder / "payload.bin"
    if kind == "skops_exec_member":
        blob.write_bytes(skops_payload(marker))
        code = "import sys, skops.io as sio; sio.load(sys.argv[1], trusted=['builtins.exec'])"
    else:
        blob.write_bytes(pickle_payload(marker))
        code = "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))"
    subprocess.run([sys.executable, "-c", code, str(blob)], capture_output=True, timeout=120)
    ran = marker.exists() and marker.read_text() == "payload ran"
    marker.unlink(missing_ok=True)
    blob.unlink()
    return ran
