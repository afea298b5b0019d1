"""What every dataset provides: a `DatasetInfo` and a loader returning uint8 arrays.

This module imports neither torch nor any decoder, so `zoo datasets` and `zoo --help` stay
instant; `zoo.data.splits` turns a loader's arrays into the tensors training slices batches from.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.registry import DATASETS, Task


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: Task
    class_names: tuple[str, ...]
    in_chans: int
    image_size: tuple[int, int]  # (H, W) of the samples the models see
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    description: str = ""
    palette: tuple[tuple[int, int, int], ...] | None = None  # segmentation: RGB per class

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class Arrays:
    """One split as a loader returns it: images uint8 (N, C, H, W); targets integer class ids,
    (N,) for classification or (N, H, W) for segmentation, in the smallest dtype that holds them."""

    images: np.ndarray
    targets: np.ndarray
    skipped: tuple[str, ...] = ()  # bad source files left out (skip_bad), a sentence each


def register_dataset(info: DatasetInfo):
    """Decorator: register `load(root: Path, download: bool) -> dict[str, Arrays]` for `info.name`.

    The loader returns "train" and "test" (and "val" if the dataset defines one). Segmentation
    loaders also take `skip_bad`: leave out unusable files instead of raising, and list them in
    the returned splits' `skipped`.
    """
    return DATASETS.register(info.name, task=info.task, description=info.description, info=info)


def list_datasets(pattern: str = "*", task: Task | None = None) -> list[str]:
    return DATASETS.names(pattern, task)


def get_dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name).info


def cache_root() -> Path:
    """zoo's folder in the user's cache: `$ZOO_CACHE`, else `$XDG_CACHE_HOME/zoo`, else
    `~/.cache/zoo`. Downloads and decode caches go here, never into a data folder."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "zoo"


def default_data_root() -> Path:
    return cache_root() / "data"


def resolve_data_root(data_dir: str | Path | None = None) -> Path:
    """`--data-dir`, else `$ZOO_DATA`, else the user cache folder (`~/.cache/zoo/data`)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("ZOO_DATA"):
        return Path(os.environ["ZOO_DATA"]).expanduser()
    return default_data_root()


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
