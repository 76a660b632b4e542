"""neuralpower: predict a neural network's runtime, power and energy, layer by layer.

    from neuralpower import Predictor, predict, trace
    p = predict(model, (1, 3, 224, 224), Predictor.load("models/raptorlake_cpu.predictor"))
    p.layers, p.totals, p.top(5), p.by_kind(), p.unmodeled
    predict_many({"a": model_a, "b": model_b}, predictor)     # totals of many, in one pass
    predict_many(read_jsonl("space.jsonl"), predictor)         # a search space, no modules built
"""
__version__ = "0.1.0"

from .archs import predict_many, read_jsonl  # noqa: E402
from .errors import NeuralPowerError  # noqa: E402
from .predict import Prediction, predict  # noqa: E402
from .predictor import Predictor  # noqa: E402
from .trace import trace  # noqa: E402

__all__ = ["NeuralPowerError", "Prediction", "Predictor", "predict", "predict_many", "read_jsonl",
           "trace", "__version__"]
