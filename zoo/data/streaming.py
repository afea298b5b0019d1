"""Splits read from disk, one file per sample, for data sets too large to hold decoded.

A `FileSplit` stands where an in-memory `Split` does: `iterate_batches` gives the same
(float images, targets) batches from either. Here a torch `DataLoader` decodes the files in
its worker processes with the in-memory path's own per-file decode (`images.read_square` for
an image folder's `FolderDataset`, `pairs.read_pair` for a segmentation set's `PairDataset`), so
the pixels are the same; batches come pinned on CUDA, and the workers persist across epochs.

The order of an epoch is one `randperm` drawn from the run's shuffle generator, as the
in-memory path draws it (`Permutation`), and the batch augmentation runs on the
collated uint8 batch with that same generator: a one-process run trains on the same batches,
bit for bit, in either mode, and `--resume` restores the order with the generator. Under
torchrun, `DistributedSampler` shards each epoch; its epoch number is drawn from the shuffle
generator, so it too is restored with the training state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from zoo.data.base import PairFiles
from zoo.data.images import BadImage, read_square
from zoo.data.pairs import read_pair

PREFETCH_BATCHES = 2  # batches each worker decodes ahead (DataLoader's prefetch_factor)


def default_workers() -> int:
    """Decoding processes when --data-workers is not given: one core is left to the training
    step (see docs/data.md for the measurements behind it), at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


class FolderDataset(Dataset):
    """Sample i: the file `paths[i]` decoded as uint8 (in_chans, side, side), and its class id."""

    def __init__(
        self, paths: np.ndarray, targets: torch.Tensor, side: int, in_chans: int, crop_pct: float
    ):
        self.paths, self.targets = paths, targets  # a numpy str array: no refcounts to copy
        self.side, self.in_chans, self.crop_pct = side, in_chans, crop_pct

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Decoded as RGB and cut to in_chans, as the in-memory path stores it.
        image = read_square(Path(self.paths[index]), self.side, "RGB", self.crop_pct)
        image = image[: self.in_chans]
        return torch.from_numpy(np.ascontiguousarray(image)), self.targets[index]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), self.in_chans, self.side, self.side)

    @property
    def nbytes(self) -> int:
        return len(self) * self.in_chans * self.side * self.side + self.targets.nbytes

    def subset(self, index: np.ndarray) -> FolderDataset:
        chosen = torch.from_numpy(index)
        return FolderDataset(
            self.paths[index], self.targets[chosen], self.side, self.in_chans, self.crop_pct
        )


class PairDataset(Dataset):
    """Sample i: the photo `photos[i]` and its mask `masks[i]`, decoded by `pairs.read_pair` at
    `size` as uint8 (3, H, W) and (H, W), as the in-memory path stores them."""

    def __init__(self, files: PairFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files.photos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.files
        image, mask = read_pair(
            Path(files.photos[index]), Path(files.masks[index]), num_classes=files.num_classes,
            label_offset=files.label_offset, size=files.size,
        )  # fmt: skip
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(mask)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, *self.files.size)

    @property
    def nbytes(self) -> int:
        return len(self) * 4 * self.files.size[0] * self.files.size[1]  # photo and mask

    def read_masks(self) -> torch.Tensor:
        """Every mask of the split, decoded: (N, H, W) uint8."""
        masks = [self[i][1] for i in range(len(self))]
        return torch.stack(masks) if masks else torch.zeros((0, *self.files.size), torch.uint8)

    def subset(self, index: np.ndarray) -> PairDataset:
        files = self.files
        return PairDataset(replace(files, photos=files.photos[index], masks=files.masks[index]))


class Permutation(Sampler[int]):
    """One `torch.randperm` of the split per epoch, drawn from `generator` (set before each
    epoch). Not torch's RandomSampler: it draws a second permutation from the generator once an
    epoch's indices run out, which would shift the augmentation of a short last batch away from
    the in-memory path's."""

    def __init__(self, count: int):
        self.count = count
        self.generator = torch.Generator()

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.count, generator=self.generator).tolist()


class LazyImages:
    """`split.images` of a FileSplit: its shape, and indexing that decodes only what it picks
    (the figures' examples, `zoo explain`'s images)."""

    def __init__(self, dataset: FolderDataset | PairDataset):
        self.dataset = dataset

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.dataset.shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return self.dataset[int(index)][0]
        picked = torch.arange(len(self.dataset))[index].tolist()
        if not picked:
            return torch.zeros((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self.dataset[i][0] for i in picked])


class FileSplit:
    """One split streamed from its files; `workers` decoding processes feed its batches."""

    def __init__(self, dataset: FolderDataset | PairDataset, workers: int):
        self.dataset = dataset
        self.workers = workers
        self.loaders: dict[tuple, DataLoader] = {}  # kept, so that workers persist
        self.masks: torch.Tensor | None = None  # a segmentation split's, once `targets` read them

    @property
    def targets(self) -> torch.Tensor:
        """Every sample's class ids. A segmentation split's masks are decoded on the first ask
        (a byte a pixel): a whole-split score or figure needs them, training never asks."""
        if isinstance(self.dataset, FolderDataset):
            return self.dataset.targets
        if self.masks is None:
            self.masks = self.dataset.read_masks()
        return self.masks

    @property
    def images(self) -> LazyImages:
        return LazyImages(self.dataset)

    @property
    def nbytes(self) -> int:
        """What the split would take decoded in memory."""
        return self.dataset.nbytes

    def __len__(self) -> int:
        return len(self.dataset)

    def subset(self, indices: torch.Tensor) -> FileSplit:
        index = torch.as_tensor(indices, dtype=torch.long).numpy()
        return FileSplit(self.dataset.subset(index), self.workers)

    def to(self, device: torch.device) -> FileSplit:
        return self  # files are read when batches are asked for, and batches go to the device

    def loader(
        self, batch_size: int, *, shuffle: bool, rank: int, world_size: int, pin: bool
    ) -> DataLoader:
        """The DataLoader of these settings, built once (its workers then outlive an epoch)."""
        key = (batch_size, shuffle, rank, world_size, pin)
        if key not in self.loaders:
            if shuffle and world_size > 1:
                sampler = DistributedSampler(self.dataset, world_size, rank, shuffle=True)
            elif shuffle:
                sampler = Permutation(len(self.dataset))
            else:
                sampler = None  # in order
            workers = self.workers
            self.loaders[key] = DataLoader(
                self.dataset,
                batch_size=batch_size,
                sampler=sampler,
                num_workers=workers,
                pin_memory=pin,
                persistent_workers=workers > 0,
                prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
                worker_init_fn=one_thread,
                # The workers' seeds: a private generator, so the global RNG (dropout) is not
                # drawn on and a run trains as it does in memory. Decoding uses no randomness.
                generator=torch.Generator().manual_seed(0),
            )
        return self.loaders[key]


def one_thread(worker_id: int) -> None:
    """Workers decode with PIL; torch threads there would only compete with the training step."""
    torch.set_num_threads(1)


def stream_uint8_batches(
    split: FileSplit,
    batch_size: int,
    *,
    pin: bool,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int,
    world_size: int,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 (images, targets) batches of `split` on the host, in the order `generator` draws."""
    loader = split.loader(batch_size, shuffle=shuffle, rank=rank, world_size=world_size, pin=pin)
    if shuffle and world_size > 1:
        loader.sampler.set_epoch(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    elif shuffle:
        loader.sampler.generator = generator if generator is not None else torch.Generator()
    try:
        yield from loader
    except BadImage as error:  # a file changed since the folder was checked
        raise BadImage(
            f"{worker_message(error)}; it changed after zoo checked the folder: fix or remove "
            "it and run again"
        ) from None


def worker_message(error: Exception) -> str:
    """The original sentence of an error raised in a DataLoader worker (whose text there is
    "Caught BadImage in DataLoader worker ... Original Traceback ... BadImage: <sentence>")."""
    text = str(error).strip()
    last = text.splitlines()[-1] if text else ""
    return last.split("BadImage: ", 1)[-1] if "Original Traceback" in text else text
