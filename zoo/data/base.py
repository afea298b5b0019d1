"""What every dataset provides: a description, uint8 tensors held in memory, batches from them.

A dataset is small enough to hold whole (Fashion-MNIST is 55 MB as uint8), so there is no per-sample
`Dataset.__getitem__` and no DataLoader: batches are slices of one tensor, converted to float and
normalised on the device that trains on them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from zoo.errors import ZooError
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
class Split:
    """One split held in memory: images uint8 (N, C, H, W); targets integer class ids, (N,) for
    classification or (N, H, W) for segmentation, in the smallest dtype that holds them (uint8)."""

    images: torch.Tensor
    targets: torch.Tensor
    skipped: tuple[str, ...] = ()  # bad source files left out (skip_bad), a sentence each

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.targets[indices])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.targets.to(device))

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.targets.nbytes


@dataclass
class Splits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    skipped: tuple[str, ...] = ()  # bad source files the loader left out (skip_bad)

    def to(self, device: torch.device) -> Splits:
        """All splits on `device`: on a GPU, batches are then sliced there with no host copy."""
        return Splits(self.info, self.train.to(device), self.val.to(device), self.test.to(device))


def register_dataset(info: DatasetInfo):
    """Decorator: register `load(root: Path, download: bool) -> dict[str, Split]` for `info.name`.

    The loader returns "train" and "test" (and "val" if the dataset defines one). Segmentation
    loaders also take `skip_bad`: leave out unusable files instead of raising, and list them in
    the returned splits' `skipped`.
    """
    return DATASETS.register(info.name, task=info.task, description=info.description, info=info)


def list_datasets(pattern: str = "*", task: Task | None = None) -> list[str]:
    return DATASETS.names(pattern, task)


def get_dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name).info


def default_data_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "zoo" / "data"


def resolve_data_root(data_dir: str | Path | None = None) -> Path:
    """`--data-dir`, else `$ZOO_DATA`, else the user cache folder (`~/.cache/zoo/data`)."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("ZOO_DATA"):
        return Path(os.environ["ZOO_DATA"]).expanduser()
    return default_data_root()


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit_train: int | None = None,
    download: bool = True,
    skip_bad: bool = False,
) -> Splits:
    """Load dataset `name` into memory and carve a seeded validation split out of train.

    The split depends on `split_seed` only, never on the training seed, so every run of every
    model on a dataset is selected on the same validation images; the test split is never used
    for selection. `limit_train` keeps the first N shuffled training images (for quick runs).
    `skip_bad` (segmentation datasets) leaves out unusable files; `Splits.skipped` lists them.
    """
    entry = DATASETS.get(name)
    options = {"skip_bad": skip_bad} if entry.task == "segmentation" else {}
    splits = entry.factory(resolve_data_root(data_dir), download=download, **options)
    skipped = tuple(line for split in splits.values() for line in split.skipped)
    train, test = splits["train"], splits["test"]
    if "val" in splits:
        val = splits["val"]
    else:
        if not 0 < val_fraction < 1:
            raise ZooError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
        num_val = round(len(train) * val_fraction)
        train, val = train.subset(order[num_val:]), train.subset(order[:num_val])
    if limit_train is not None:
        train = train.subset(torch.arange(min(limit_train, len(train))))
    return Splits(entry.info, train, val, test, skipped)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 standardised with the dataset's mean and std."""
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean) / std


BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple]


def iterate_batches(
    split: Split,
    info: DatasetInfo,
    batch_size: int,
    *,
    device: torch.device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    transform: BatchTransform | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float images, targets) batches on `device`, slicing the in-memory split.

    `transform(images_uint8, targets, generator)` augments a batch before normalisation.
    """
    order = torch.randperm(len(split), generator=generator) if shuffle else None
    if order is not None:
        order = order.to(split.images.device)
    for start in range(0, len(split), batch_size):
        if order is None:
            images = split.images[start : start + batch_size]
            targets = split.targets[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            images, targets = split.images[index], split.targets[index]
        if transform is not None:
            images, targets = transform(images, targets, generator)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True).long()
        images = normalize(images, info)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, targets


def num_batches(split: Split, batch_size: int) -> int:
    return -(-len(split) // batch_size)
