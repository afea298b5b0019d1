"""What every dataset provides: a `DatasetInfo` and a loader returning uint8 arrays.

This module imports neither torch nor any decoder, so `zoo datasets` and `zoo --help` stay
instant; `zoo.data.splits` turns a loader's arrays into the tensors training slices batches from.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass, replace
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


@dataclass
class PairFiles:
    """One segmentation split as a streaming loader returns it: photo and mask files, one
    sample each, decoded as uint8 (3, H, W) and (H, W) at `size` by `pairs.read_pair`."""

    photos: np.ndarray  # str, one path per sample
    masks: np.ndarray  # str, the photo's mask
    size: tuple[int, int]  # (H, W)
    num_classes: int
    label_offset: int = 0  # subtracted from the mask values (CMP Facade's ids start at 1)
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


SIZE_OPTIONS = {  # the sample-size options, and the datasets that take them
    "img_size": "imagefolder:PATH, segfolder:PATH and the segmentation datasets",
    "crop_pct": "imagefolder:PATH datasets",
}


def get_dataset(name: str, **options) -> Entry:
    """The entry of dataset `name`. A folder dataset (`imagefolder:PATH`, `segfolder:PATH`)
    takes `options` (see `run_data_options`), each resolver those its signature names. A named
    dataset whose loader takes `img_size` (the segmentation sets) is resized to it; on the
    others (Fashion-MNIST), `--img-size` is an error."""
    DATASETS.load()
    resolver = DATASETS.prefixes.get(name.partition(":")[0]) if ":" in name else None
    entry = None if resolver else DATASETS.get(name)
    taken = inspect.signature(resolver or entry.factory).parameters
    for option, datasets in SIZE_OPTIONS.items():
        if options.get(option) is not None and option not in taken:
            flag = "--" + option.replace("_", "-")
            raise ZooError(
                f"{flag} is for {datasets}, and {name} has its own sample size; drop {flag}."
            )
    if options.get("data_mode") == "stream" and "data_mode" not in taken:
        raise ZooError(
            f"--data-mode stream is for image folders and the segmentation datasets, and {name} "
            "is held in memory; drop --data-mode, or write its images out as a folder per class."
        )
    if entry is not None:
        return with_options(entry, {k: v for k, v in options.items() if k in taken})
    if not options:
        return DATASETS.get(name)
    return resolver(name, **{key: value for key, value in options.items() if key in taken})


def with_options(entry: Entry, options: dict) -> Entry:
    """A named dataset's entry with its loader's `options` bound: `img_size` (samples that side
    square, in the info too) and `data_mode`; the entry itself when they change nothing."""
    side = options.get("img_size")
    if side is not None and (side, side) == entry.info.image_size:
        side = None
    mode = options.get("data_mode")
    bound = {
        **({"img_size": side} if side is not None else {}),
        **({"data_mode": mode} if mode not in (None, "auto") else {}),
    }
    if not bound:
        return entry
    info = replace(entry.info, image_size=(side, side)) if side else entry.info
    return replace(entry, info=info, arguments={**entry.arguments, **bound})


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


# ----------------------------------------------------------------------------- sizes and statistics

MEMORY_SHARE = 0.5  # auto streams when the decoded images would take more of the free memory


def available_memory() -> int:
    """Bytes the system can still give without swapping (MemAvailable of /proc/meminfo), else
    the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def choose_data_mode(requested: str, decoded_bytes: int) -> str:
    """The mode, "memory" or "stream": as asked, or (auto) stream when the decoded images would take
    more than MEMORY_SHARE of the available memory."""
    if requested != "auto":
        return requested
    return "stream" if decoded_bytes > MEMORY_SHARE * available_memory() else "memory"


def channel_sums(images: np.ndarray, chunk: int = 256) -> tuple[tuple[np.ndarray, np.ndarray], int]:
    """((per-channel sum of the uint8 values, sum of their squares), pixels per channel): exact
    integers, from 256-bin histograms of `chunk` images at a time (np.bincount casts its input
    to int64: over a whole split at once, that copy was 2.7 times the split's own bytes)."""
    counts = np.zeros((images.shape[1], 256), dtype=np.int64)
    for start in range(0, len(images), chunk):
        for c in range(images.shape[1]):
            counts[c] += np.bincount(images[start : start + chunk, c].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.int64)
    return (counts @ levels, counts @ levels**2), int(images[:, 0].size)


def stats_from_sums(
    sums: np.ndarray, squares: np.ndarray, pixels: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale, from exact integer sums (the variance's
    numerator in Python integers), so memory and stream modes get the same floats."""
    means, stds = [], []
    for total, square in zip(sums.tolist(), squares.tolist(), strict=True):
        variance = (square * pixels - total * total) / (pixels * pixels * 255 * 255)
        means.append(total / (pixels * 255))
        stds.append(max(variance**0.5, 1e-3))
    return tuple(means), tuple(stds)
