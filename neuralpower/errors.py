"""The one exception type users see: its message is the whole, one-line story."""
import sys
from pathlib import Path


def first_line(e: BaseException, plain: tuple = ()) -> str:
    """The first line of ``e``'s message, after its type's name unless ``e`` is one of
    ``plain`` (types whose messages say what they are; with no message, a bare ``raise
    NotImplementedError``, the type's name alone): one line for a user to read."""
    text = str(e).splitlines()[0] if str(e).strip() else ""
    if isinstance(e, plain):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}"


class NeuralPowerError(Exception):
    """A problem with the user's input (file, network name, shape, predictor); the CLI prints
    its message on one line and exits non-zero."""


def script_exit(main, *args) -> None:
    """End a script of ``benchmarks/`` the way the CLI ends: ``main``'s return as the exit
    status, a NeuralPowerError (a bad file or option) or a missing file as one line and status
    1, Ctrl-C as status 130. A bug keeps its traceback: these scripts are for developers."""
    name = Path(sys.argv[0]).stem
    try:
        code = main(*args)
    except NeuralPowerError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except FileNotFoundError as e:  # the scripts that read a CSV with pandas, keeping its order
        print(f"{name}: error: {e.filename!r} not found", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
