"""zoo's version, in a module of its own so that any module can read it without importing the
package's public names (`zoo/__init__.py` imports the registry and the weights loader)."""

__version__ = "0.1.0"
