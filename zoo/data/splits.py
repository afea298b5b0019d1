"""Datasets in memory as uint8 tensors, and training batches sliced from them.

A dataset small enough to hold whole (Fashion-MNIST is 55 MB as uint8) needs no per-sample
`Dataset.__getitem__` and no DataLoader: batches are slices of one tensor, converted to float
and normalised on the device that trains on them. With several processes, each takes its own
shard of every epoch's permutation, as DistributedSampler does. An image folder or a
segmentation set too large to hold decoded is streamed instead (`zoo.data.streaming.FileSplit`);
`iterate_batches` gives the same batches from either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from inspect import signature
from pathlib import Path

import torch

from zoo.data.base import DatasetInfo, Files, PairFiles, get_dataset, resolve_data_root
from zoo.data.streaming import (
    FileSplit,
    FolderDataset,
    PairDataset,
    default_workers,
    stream_uint8_batches,
)
from zoo.errors import ZooError
from zoo.progress import phase


@dataclass
class Split:
    """One split held in memory: images uint8 (N, C, H, W); targets integer class ids, (N,) for
    classification or (N, H, W) for segmentation, in the smallest dtype that holds them (uint8)."""

    images: torch.Tensor
    targets: torch.Tensor

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
    train: Split | FileSplit
    val: Split | FileSplit
    test: Split | FileSplit
    skipped: tuple[str, ...] = ()  # bad source files the loader left out (skip_bad)

    @property
    def mode(self) -> str:
        """Where the images are: "memory" (decoded tensors) or "stream" (files read per batch)."""
        return "stream" if isinstance(self.train, FileSplit) else "memory"

    def to(self, device: torch.device) -> Splits:
        """All splits on `device`: on a GPU, batches are then sliced there with no host copy."""
        return Splits(
            self.info,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.skipped,
        )


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    limit_train: int | None = None,
    download: bool = True,
    skip_bad: bool = False,
    options: dict | None = None,
    workers: int | None = None,
) -> Splits:
    """Load dataset `name` into memory and carve a seeded validation split out of train.

    The split depends on `split_seed` only, never on the training seed, so every run of every
    model on a dataset is selected on the same validation images; the test split is never used
    for selection. `limit_train` keeps the first N shuffled training images (for quick runs).
    `skip_bad` (datasets read from files) leaves out unusable files; `Splits.skipped` lists them.
    `options` (`base.run_data_options` of a recipe) go to folder datasets (`imagefolder:PATH`).
    A streamed folder decodes its batches in `workers` processes (default: `default_workers`).
    """
    with phase(f"loading {name}"):
        entry = get_dataset(name, **(options or {}))
        extra = {"skip_bad": skip_bad} if "skip_bad" in signature(entry.factory).parameters else {}
        loaded = entry.factory(resolve_data_root(data_dir), download=download, **extra)
    skipped = tuple(line for arrays in loaded.values() for line in arrays.skipped)
    workers = default_workers() if workers is None else workers
    splits = {key: to_split(arrays, workers) for key, arrays in loaded.items()}
    train, test = splits["train"], splits["test"]
    kept = None  # the training images kept, when not all of them are
    if "val" in splits:
        val = splits["val"]
    else:
        if not 0 < val_fraction < 1:
            raise ZooError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(split_seed))
        num_val = round(len(train) * val_fraction)
        val, kept = train.subset(order[:num_val]), order[num_val:]
    if limit_train is not None:
        kept = (torch.arange(len(train)) if kept is None else kept)[:limit_train]
    if kept is not None:
        train = train.subset(kept)  # one copy of only the images kept
    return Splits(entry.info, train, val, test, skipped)


def to_split(arrays, workers: int) -> Split | FileSplit:
    """A loader's split as tensors, or as files to stream when the loader listed them."""
    if isinstance(arrays, PairFiles):
        return FileSplit(PairDataset(arrays), workers)
    targets = torch.from_numpy(arrays.targets)
    if isinstance(arrays, Files):
        dataset = FolderDataset(
            arrays.paths, targets, arrays.side, arrays.in_chans, arrays.crop_pct
        )
        return FileSplit(dataset, workers)
    return Split(torch.from_numpy(arrays.images), targets)


def normalize(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 standardised with the dataset's mean and std."""
    mean = torch.tensor(info.mean, device=images.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(info.std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean) / std


BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple]


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s share of a permutation, as DistributedSampler takes it: the order padded
    with its own head to a multiple of `world_size` (repeated, when the order is shorter than the
    padding), then every `world_size`-th index. Every rank gets the same count."""
    if world_size == 1:
        return order
    padding = -len(order) % world_size
    if padding:
        order = torch.cat([order, order.repeat(-(-padding // len(order)))[:padding]])
    return order[rank::world_size]


def iterate_batches(
    split: Split | FileSplit,
    info: DatasetInfo,
    batch_size: int,
    *,
    device: torch.device,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    transform: BatchTransform | None = None,
    channels_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float images, targets) batches on `device`, slicing the in-memory split (or
    reading a streamed one's files).

    `transform(images_uint8, targets, generator)` augments a batch before normalisation. With
    `world_size` > 1 (shuffled training only), this process sees shard `rank` of the
    permutation, in batches of `batch_size` (the per-process share of the global batch).
    """
    if isinstance(split, FileSplit):
        batches = stream_uint8_batches(
            split, batch_size, pin=device.type == "cuda", shuffle=shuffle, generator=generator,
            rank=rank, world_size=world_size,
        )  # fmt: skip
    else:
        batches = slice_uint8_batches(split, batch_size, shuffle, generator, rank, world_size)
    for images, targets in batches:
        if transform is not None:
            images, targets = transform(images, targets, generator)
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True).long()
        images = normalize(images, info)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        yield images, targets


def slice_uint8_batches(
    split: Split,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int,
    world_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 (images, targets) batches of the in-memory `split`, on its device."""
    order = torch.randperm(len(split), generator=generator) if shuffle else None
    if order is not None:
        order = shard_indices(order, rank, world_size).to(split.images.device)
    count = len(split) if order is None else len(order)
    for start in range(0, count, batch_size):
        if order is None:
            images = split.images[start : start + batch_size]
            targets = split.targets[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            images, targets = split.images[index], split.targets[index]
        yield images, targets


def num_batches(count: int, batch_size: int) -> int:
    return -(-count // batch_size)
