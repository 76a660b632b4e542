"""The one exception type users see: its message is the whole, one-line story."""


class NeuralPowerError(Exception):
    """A problem with the user's input (file, network name, shape, predictor); the CLI prints
    its message on one line and exits non-zero."""
