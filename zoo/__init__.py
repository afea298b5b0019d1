"""zoo: a model zoo with a benchmark harness for small-image vision work.

`import zoo` is light (no torch): the registries import the model and dataset families on their
first lookup, so `zoo.create_model("baseline-cnn")` and `zoo.list_models()` just work.
"""

__version__ = "0.1.0"

from zoo.registry import create_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "register_model"]
