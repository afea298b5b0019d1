"""zoo: a model zoo with a benchmark harness for small-image vision work.

`import zoo` is light (no torch): the registries import the model and dataset families on their
first lookup, so `zoo.create_model("baseline-cnn")` and `zoo.list_models()` just work.
`zoo.create_model("fcn", pretrained=True)` loads zoo's published weights, and
`zoo.get_weights("fcn")` tells where they came from (see docs/weights.md).
"""

from zoo.registry import list_models, register_model
from zoo.version import __version__
from zoo.weights import create_model, get_weights, list_weights

__all__ = [
    "__version__",
    "create_model",
    "get_weights",
    "list_models",
    "list_weights",
    "register_model",
]
