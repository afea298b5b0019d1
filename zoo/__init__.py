"""zoo: a model zoo with a benchmark harness for small-image vision work."""

__version__ = "0.1.0"

from zoo import data, models  # noqa: E402,F401  (importing them registers the entries)
from zoo.registry import create_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "register_model"]
