"""Name -> factory registries for models and datasets, in the style of torchvision's `_api.py`.

Each registry imports its package (`zoo.models`, `zoo.data`) on its first lookup, so
`zoo.create_model("baseline-cnn")` just works, and this module imports neither torch nor numpy.
Importing a dataset module (`zoo.data.fashion_mnist`, ...) registers its entries. zoo's models
are declared instead (`declare_model` in `zoo/models/__init__.py`): name, task, dataset and the
"module:function" of the factory, whose module (and torch with it) is imported when the model
is built, so `zoo list` and a misspelt name's close matches come without torch's import time.
On that same first lookup it loads the plugins: the entry points of its group (`zoo.models`,
`zoo.datasets`) that installed packages declare, each naming a module (or a function) whose
import (or call) registers that package's entries (docs/adding-a-model.md).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from zoo.errors import UnknownNameError, ZooError, ZooWarning

Task = Literal["classification", "segmentation"]
TASKS: tuple[Task, ...] = ("classification", "segmentation")


def import_target(target: str) -> Any:
    """The object a "module:name" string names, importing its module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Entry:
    name: str
    task: Task
    dataset: str  # default dataset (models) or "" (datasets)
    description: str  # one line, shown by `zoo list`
    target: Callable[..., Any] | str  # the factory, or where it is: "module:function"
    info: Any = None  # datasets: their DatasetInfo
    num_parameters: int | None = None  # models: declared so that `zoo list` builds nothing
    arguments: dict = field(default_factory=dict)  # keywords bound to the target, e.g. timm_name

    @property
    def factory(self) -> Callable[..., Any]:
        """The factory; a "module:function" target is imported here, when it is first needed."""
        factory = import_target(self.target) if isinstance(self.target, str) else self.target
        return functools.partial(factory, **self.arguments) if self.arguments else factory

    @property
    def module(self) -> str:
        """The module that defines the factory (named in messages), without importing it."""
        if isinstance(self.target, str):
            return self.target.partition(":")[0]
        return self.target.__module__


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class Registry:
    """One dict of entries plus the lookups every registry needs."""

    def __init__(
        self, kind: str, list_command: str, package: str | None = None, group: str | None = None
    ):
        self.kind = kind  # "model" or "dataset", used in messages
        self.list_command = list_command  # what to type to see the names
        self.package = package  # importing it registers zoo's own entries (None: nothing to import)
        self.group = group  # the entry-point group of third-party plugins (None: no plugins)
        self.loaded = False  # set back to False, the next lookup reads the plugins again
        self.plugin: str | None = None  # the plugin being loaded, named in its warnings
        self.entries: dict[str, Entry] = {}
        # Prefix resolvers build entries on demand for names like "timm/resnet18"; a resolver
        # given as "module:function" is imported on its first name.
        self.prefixes: dict[str, Callable[[str], Entry] | str] = {}

    def load(self) -> None:
        """Once, on the first lookup: import the package that registers zoo's own entries, then
        load each plugin of the entry-point group."""
        if self.loaded:
            return
        self.loaded = True
        if self.package is not None:
            importlib.import_module(self.package)
        if self.group is not None:
            from importlib.metadata import entry_points  # here: `zoo --help` never pays for it

            for entry_point in entry_points(group=self.group):
                self.load_plugin(entry_point)

    def load_plugin(self, entry_point) -> None:
        """Import the entry point's module (calling it if it names a function). A plugin that
        raises is left out whole, with one warning; zoo goes on with the others."""
        dist = entry_point.dist
        self.plugin = f"{entry_point.name!r}" + (f" ({dist.name} {dist.version})" if dist else "")
        before = set(self.entries)
        try:
            loaded = entry_point.load()
            if callable(loaded):
                loaded()
        except Exception as error:
            for name in set(self.entries) - before:
                del self.entries[name]
            warnings.warn(
                ZooWarning(
                    f"The zoo plugin {self.plugin} failed to load ({type(error).__name__}: "
                    f"{error}), so its {self.kind}s are left out; fix it, or uninstall "
                    f"{dist.name if dist else 'it'}."
                ),
                stacklevel=2,
            )
        finally:
            self.plugin = None

    def register(
        self,
        name: str,
        *,
        task: Task,
        dataset: str = "",
        description: str = "",
        info: Any = None,
        num_parameters: int | None = None,
    ):
        """Decorator: register the factory it wraps under `name` (see `add`)."""
        check_task(task)

        def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
            self.add(Entry(name, task, dataset, description, factory, info, num_parameters))
            return factory

        return wrap

    def add(self, entry: Entry) -> None:
        """Register `entry`. A name registered twice raises, naming the module that has it; from
        a plugin, it is skipped with a warning instead."""
        if entry.name in self.entries:
            owner = self.entries[entry.name].module
            if self.plugin is None:
                raise ValueError(
                    f"A {self.kind} named {entry.name!r} is already registered (by {owner})."
                )
            warnings.warn(
                ZooWarning(
                    f"The zoo plugin {self.plugin} registers the {self.kind} {entry.name!r} "
                    f"that {owner} already registered, so zoo keeps {owner}'s and skips the "
                    "plugin's; rename it in the plugin."
                ),
                stacklevel=3,
            )
            return
        self.entries[entry.name] = entry

    def register_prefix(self, prefix: str, resolver: Callable[[str], Entry] | str) -> None:
        if prefix in self.prefixes:
            raise ValueError(f"The {self.kind} prefix {prefix!r} is already registered.")
        self.prefixes[prefix] = resolver

    def names(self, pattern: str | list[str] = "*", task: Task | None = None) -> list[str]:
        self.load()
        patterns = [pattern] if isinstance(pattern, str) else pattern
        found = {
            name
            for name, entry in self.entries.items()
            if (task is None or entry.task == task)
            and any(fnmatch.fnmatch(name, p) for p in patterns)
        }
        return sorted(found, key=_natural_key)

    def get(self, name: str) -> Entry:
        self.load()
        if name in self.entries:
            return self.entries[name]
        for separator in ("/", ":"):  # timm/resnet18, segfolder:PATH
            prefix, sep, _ = name.partition(separator)
            if sep and prefix in self.prefixes:
                resolver = self.prefixes[prefix]
                return (import_target(resolver) if isinstance(resolver, str) else resolver)(name)
        raise self.unknown(name)

    def unknown(self, name: str, candidates: list[str] | None = None) -> UnknownNameError:
        candidates = list(self.entries) if candidates is None else candidates
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return UnknownNameError(
            f"Unknown {self.kind} {name!r}.{hint} Run `{self.list_command}` to see them all."
        )


MODELS = Registry("model", "zoo list", package="zoo.models", group="zoo.models")
DATASETS = Registry("dataset", "zoo datasets", package="zoo.data", group="zoo.datasets")


def register_model(
    name: str, *, task: Task, dataset: str, description: str, num_parameters: int | None = None
):
    """Decorator: register `factory(num_classes, in_chans, **kwargs) -> nn.Module` under `name`.

    `num_parameters` (for the default dataset's classes and channels) lets `zoo list` show the
    count without building the model; tests/test_models.py checks it against the real count.
    """
    return MODELS.register(
        name, task=task, dataset=dataset, description=description, num_parameters=num_parameters
    )


def declare_model(
    name: str,
    factory: str,
    *,
    task: Task,
    dataset: str,
    description: str,
    num_parameters: int | None = None,
    **arguments,
) -> None:
    """Register model `name` built by `factory`, a "module:function" string: the module is
    imported when the model is first built, not now. `arguments` are keywords bound to the
    function (e.g. which timm model). Otherwise as `register_model`."""
    check_task(task)
    entry = Entry(name, task, dataset, description, factory, None, num_parameters, arguments)
    MODELS.add(entry)


def list_models(pattern: str | list[str] = "*", task: Task | None = None) -> list[str]:
    """Registered model names matching shell-style `pattern`(s), naturally sorted."""
    return MODELS.names(pattern, task)


def get_model_entry(name: str) -> Entry:
    return MODELS.get(name)


def create_model(
    name: str,
    num_classes: int | None = None,
    in_chans: int | None = None,
    *,
    imagenet: bool = False,
    **kwargs,
):
    """Build model `name` with random weights; `num_classes` and `in_chans` default to its default
    dataset's. This only builds: `zoo.create_model` (zoo/weights.py) loads weights into it.

    `imagenet` asks the factory for its ImageNet weights (`zoo train --imagenet`; only factories
    with a `pretrained` parameter have them: timm/ and smp/ models). It never falls back to random
    weights.
    """
    entry = MODELS.get(name)
    if num_classes is None or in_chans is None:
        info = DATASETS.get(entry.dataset).info
        num_classes = info.num_classes if num_classes is None else num_classes
        in_chans = info.in_chans if in_chans is None else in_chans
    if imagenet:
        if "pretrained" not in inspect.signature(entry.factory).parameters:
            raise ZooError(
                f"There are no ImageNet weights for {name} (only timm/ and smp/ models have "
                "them); drop --imagenet, or pass --weights PATH."
            )
        kwargs["pretrained"] = True  # the libraries' own name for their ImageNet weights
    return entry.factory(num_classes=num_classes, in_chans=in_chans, **kwargs)


def count_parameters(name: str) -> int:
    """Parameters of model `name` for its default dataset: the declared count when there is one,
    else counted on the meta device (shapes only, no memory, no init time)."""
    entry = MODELS.get(name)
    if entry.num_parameters is not None:
        return entry.num_parameters
    import torch

    with torch.device("meta"):
        return sum(p.numel() for p in create_model(name).parameters())
