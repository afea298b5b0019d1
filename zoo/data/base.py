"""What every dataset provides: a `DatasetInfo` and a loader returning uint8 arrays.

This module imports neither torch nor any decoder, so `zoo datasets` and `zoo --help` stay
instant; `zoo.data.splits` turns a loader's arrays into the tensors training slices batches from.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo.errors import ZooError
from zoo.registry import DATASETS, MODELS, Entry, Task


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
    # Classification: what --augment does, "crop-flip" (2-pixel padded random crop + flip) or
    # "resized-crop-flip" (timm's RandomResizedCrop + flip, for photos at --img-size).
    augment: str = "crop-flip"
    crop_pct: float | None = None  # files resized to side / crop_pct, centre-cropped (timm eval)
    normalisation: str = "training split"  # where mean and std come from ("ImageNet" or this)

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


@dataclass
class Files:
    """One split as a streaming loader returns it: the files to decode, one sample each, as
    uint8 (in_chans, side, side) (`images.read_square` at `crop_pct`), and their class ids."""

    paths: np.ndarray  # str, one path per sample
    targets: np.ndarray
    side: int
    in_chans: int
    crop_pct: float  # the shorter side resized to side / crop_pct, then centre-cropped
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


def get_dataset_info(name: str, **options) -> DatasetInfo:
    return get_dataset(name, **options).info


def get_dataset(name: str, **options) -> Entry:
    """The entry of dataset `name`. A folder dataset (`imagefolder:PATH`) takes `options` (see
    `run_data_options`), each resolver those its signature names; a named dataset takes none,
    so `--img-size` on one is an error."""
    DATASETS.load()
    resolver = DATASETS.prefixes.get(name.partition(":")[0]) if ":" in name else None
    taken = inspect.signature(resolver).parameters if resolver else {}
    for option in ("img_size", "crop_pct"):
        if options.get(option) is not None and option not in taken:
            flag = "--" + option.replace("_", "-")
            raise ZooError(
                f"{flag} is for imagefolder:PATH datasets, and {name} has its own sample size; "
                f"drop {flag}."
            )
    if options.get("data_mode") == "stream" and "data_mode" not in taken:
        raise ZooError(
            f"--data-mode stream is for imagefolder:PATH datasets, and {name} is held in memory; "
            "drop --data-mode, or write its images out as a folder per class."
        )
    if resolver is None or not options:
        return DATASETS.get(name)
    return resolver(name, **{key: value for key, value in options.items() if key in taken})


def run_data_options(config) -> dict:
    """What a recipe (a TrainConfig) asks of a folder dataset: the sample side and crop, 3
    channels for the models that start from ImageNet (timm/ and smp/ ones, with a `pretrained`
    parameter), ImageNet's mean and std with --imagenet, the split, whether to skip bad files
    and whether to stream them (--data-mode). Training, `zoo eval`, `predict` and `explain`
    pass the same options, so they see the same samples."""
    factory = MODELS.get(config.model).factory
    return {
        "img_size": config.img_size,
        "crop_pct": config.crop_pct,
        "rgb": "pretrained" in inspect.signature(factory).parameters,
        "imagenet_stats": config.imagenet,
        "val_fraction": config.val_fraction,
        "split_seed": config.split_seed,
        "skip_bad": config.skip_bad_samples,
        "data_mode": getattr(config.data_mode, "value", config.data_mode),
    }


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
    return file_digest(path, "md5")


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file's bytes by `algorithm` (md5 for data checksums, sha256 for
    published weights), read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
