"""Run a measurement in a fresh process, so it sees the machine as a newly started program does.

A long campaign's process slows down: on the development VM, MobileNetV2 at 1x3x128x128, timed
layer by layer inside the network, took 5.4-5.5 ms as the first network of a process and 6.5-7.7 ms
after the 54 networks before it in a zoo campaign (two runs; the speed probe moved 4-14 %), and
the four zoo campaigns' rows of their first minute run 4-6 % faster than their later ones. A
user's process that runs one model, and ``neuralpower measure``, see the fresh state.

So each network is measured in a child of a small server process (this module run as a
program): started once, it imports torch and the profiler and never computes, and forks one
child per call, so every child starts as that clean process was (a fork takes milliseconds).
Forking the campaign itself would not do: a child of a process that has run OpenMP work hangs
in its first parallel region (GNU libgomp is not fork-safe). ``multiprocessing``'s fork server
would, but re-imports the caller's main script in every child.

A child that dies (the kernel's out-of-memory killer, a crash in a backend) costs that call
only: :func:`call` raises :class:`ChildDied` (a campaign records the network as failed).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import pickle
import signal
import struct
import subprocess
import sys

from ..errors import NeuralPowerError

# What the server imports once, so that no child pays for it: the measuring functions (and
# torch), and the sources of networks that are installed.
_PRELOAD = ("neuralpower.profiling.campaign", "neuralpower.measure")
_OPTIONAL = ("torchvision", "timm")
_server: subprocess.Popen | None = None


class ChildDied(NeuralPowerError):
    """The child process ended without an answer (killed by a signal, or crashed): a one-line
    error for the command line, a failed network for a campaign."""


def available() -> bool:
    """Whether this platform can fork (Linux, macOS; not Windows)."""
    return hasattr(os, "fork")


# -- the wire: length-prefixed pickles -------------------------------------------------------------

def _send(f, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    f.write(struct.pack("<Q", len(data)) + data)
    f.flush()


def _receive(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError
    return pickle.loads(data)


# -- the caller's side ---------------------------------------------------------------------------

def _start() -> subprocess.Popen:
    global _server
    if _server is None or _server.poll() is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # A session of its own: Ctrl-C goes to the terminal's process group, and the caller
        # alone handles it; a SIGINT here, in a fork's handlers, printed a traceback beside the
        # caller's one line. The server and its children die with the caller (_die_with_parent).
        _server = subprocess.Popen([sys.executable, "-c", f"import {__name__} as m; m.main()"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                   start_new_session=True)
        atexit.register(_stop, _server)
    return _server


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.stdin.close()  # the server ends at end of input
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()


def call(fn, *args):
    """``fn(*args)`` in a fresh child process; its return value, or its exception raised here.
    ``fn`` (a module-level function) and ``args`` must pickle."""
    server = _start()
    try:
        _send(server.stdin, (os.getcwd(), fn, args))  # relative paths mean the same there
        status, value = _receive(server.stdout)
    except (EOFError, BrokenPipeError):
        try:
            code = server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        raise ChildDied(f"the measuring server ended (exit code {code})") from None
    if status == "ok":
        return value
    if status == "died":
        raise ChildDied(value)
    raise value


# -- the server's side ---------------------------------------------------------------------------

def _die_with_parent() -> None:
    """Linux: be killed when the process that started us dies (a campaign killed with SIGKILL
    takes its server and the network being measured with it). Elsewhere nothing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(fn, args, w: int) -> None:
    try:
        answer = ("ok", fn(*args))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the caller
        answer = ("error", e)
    with os.fdopen(w, "wb") as f:
        try:
            _send(f, answer)
        except (pickle.PicklingError, TypeError, AttributeError):  # what pickle refuses
            _send(f, ("error", RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")))


def _serve(requests, answers) -> None:
    while True:
        try:
            cwd, fn, args = _receive(requests)
        except EOFError:
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run, answer, leave without the server's cleanup
            code = 0
            try:
                os.close(r)
                _die_with_parent()
                try:
                    os.chdir(cwd)
                except OSError:  # the caller's directory is gone: absolute paths still work
                    pass
                _child(fn, args, w)
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        whole = len(data) >= 8 and len(data) == 8 + struct.unpack("<Q", data[:8])[0]
        if whole:  # (a child killed while writing leaves a torn answer: reported as died)
            answers.write(data)
            answers.flush()
        else:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.waitstatus_to_exitcode(status)}")
            oom = os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9
            _send(answers, ("died", f"the measuring process died ({how}"
                                    + (", out of memory?" if oom else "") + ")"))


def main() -> None:
    """The server: run as ``python -c "import neuralpower.profiling.isolated as m; m.main()"``."""
    # Answers go to the caller through our stdout alone: whatever else prints (a warning, a
    # library's message) goes to stderr.
    _die_with_parent()
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    for module in _PRELOAD:
        __import__(module)
    for module in _OPTIONAL:
        try:
            __import__(module)
        except ImportError:
            pass
    _serve(sys.stdin.buffer, answers)
