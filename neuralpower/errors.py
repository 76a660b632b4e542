"""The one exception type users see: its message is the whole, one-line story."""


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
