"""Photo/mask pairs for segmentation datasets: finding them, reading them, and the decode cache.

Every photo and label map is decoded once into uint8 arrays that are cached in the user's cache
folder (`~/.cache/zoo/decoded/`, see `base.cache_root`; never in the data folder, which may be
read-only or shared), keyed by the source files' paths, sizes and modification times, so no
epoch and no later run decodes again, and editing, adding or removing a file invalidates the
cache. A cache folder that cannot be written costs time only: one warning, and no cache.

A bad pair (unreadable image, missing mask, sizes that differ, ids outside the classes) is an
error naming the file; with `skip_bad` it is left out and listed instead.

A set too large to hold decoded is streamed instead (`--data-mode stream`, or auto): `check_pairs`
decodes every pair once to find the bad ones and count the photos' pixel sums, caches only that,
and returns the files, which `zoo.data.streaming` decodes batch by batch with `read_pair`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data.base import Arrays, PairFiles, cache_root, channel_sums, choose_data_mode
from zoo.data.images import BadImage, read_image, read_mask
from zoo.errors import ZooError, ZooWarning
from zoo.progress import phase

CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SIZE = (256, 256)  # (H, W) the samples are resized to when --img-size does not say
SKIP_HINT = "fix or remove it, or pass --skip-bad-samples to leave such files out"


@dataclass
class Decoded:
    """Decoded pairs: images (N, 3, H, W) and masks (N, H, W) uint8, plus the bad ones."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    skipped: list[str]  # one sentence per bad pair, naming its file

    def arrays(self, indices: np.ndarray | None = None) -> Arrays:
        if indices is None:
            return Arrays(self.images, self.masks)
        return Arrays(self.images[indices], self.masks[indices])

    def largest_id(self) -> int:
        return int(self.masks.max())

    def photo_sums(self) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        """`base.channel_sums` of the photos: exact per-channel sums, for a mean and std."""
        return channel_sums(self.images)


@dataclass
class Checked:
    """Pairs checked for streaming: the usable ones' files, plus what `Decoded` would have told
    of them (the photos' exact channel sums, the largest mask id), and the bad ones."""

    photos: np.ndarray  # str paths of the usable pairs
    masks: np.ndarray
    size: tuple[int, int]
    num_classes: int
    label_offset: int
    sums: np.ndarray  # (2, 3) int64: per-channel sums of the photos' values and of their squares
    largest: int  # the largest class id of the masks
    skipped: list[str]

    @property
    def names(self) -> list[str]:
        return [Path(photo).name for photo in self.photos]

    def arrays(self, indices: np.ndarray | None = None) -> PairFiles:
        index = slice(None) if indices is None else indices
        return PairFiles(
            self.photos[index], self.masks[index], self.size, self.num_classes, self.label_offset
        )

    def largest_id(self) -> int:
        return self.largest

    def photo_sums(self) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        return (self.sums[0], self.sums[1]), len(self.photos) * self.size[0] * self.size[1]


def read_pair(
    image_path: Path,
    mask_path: Path,
    *,
    num_classes: int,
    label_offset: int = 0,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One (image (3, H, W), mask (H, W)) uint8 pair resized from the files' own size to `size`
    (default SIZE): the photo bilinearly, the mask by nearest neighbour. Raise BadImage naming
    the file."""
    mask = read_mask(mask_path)
    image = read_image(image_path)
    if image.size != mask.size:
        raise BadImage(
            f"{image_path} is {image.size[0]}x{image.size[1]} but its mask {mask_path} is "
            f"{mask.size[0]}x{mask.size[1]}"
        )
    ids = np.asarray(mask).astype(np.int64) - label_offset
    bad = np.unique(ids[(ids < 0) | (ids >= num_classes)])
    if len(bad):
        shown = ", ".join(str(v + label_offset) for v in bad[:5])
        raise BadImage(
            f"{mask_path} has values {shown} outside the class ids "
            f"{label_offset}-{label_offset + num_classes - 1}"
        )
    height, width = size or SIZE
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
        ids = np.asarray(Image.fromarray(ids.astype(np.uint8)).resize((width, height), 0))
    # C-contiguous, as the cache gives it back: a transposed view would make np.stack keep the
    # channels-last layout, and convolutions then sum in another order (scores move by ~1e-7).
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)), ids.astype(np.uint8)


def find_pairs(image_dir: Path, mask_dir: Path) -> list[tuple[Path, Path]]:
    """(photo, mask) paths, sorted by name; masks are `<mask_dir>/<photo stem>.png`."""
    if not image_dir.is_dir():
        raise ZooError(f"{image_dir} is not a folder; point the dataset at a folder of photos.")
    suffixes = IMAGE_SUFFIXES if image_dir != mask_dir else (".jpg", ".jpeg")
    photos = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in suffixes)
    if not photos:
        raise ZooError(
            f"{image_dir} holds no photos ({', '.join(suffixes)}); put the image/mask pairs there."
        )
    return [(photo, mask_dir / f"{photo.stem}.png") for photo in photos]


def fingerprint(pairs: list[tuple[Path, Path]], *parameters) -> str:
    """Hash of every source file's path, size and mtime plus the decoding parameters."""
    digest = hashlib.sha1(repr((CACHE_VERSION, parameters)).encode())
    for path in (p for pair in pairs for p in pair):
        try:
            stat = path.stat()
            digest.update(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()[:16]


def cache_folder() -> Path | None:
    """The decode cache's folder, or None (after one warning) when it cannot be written."""
    folder = cache_root() / "decoded"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return folder
    except OSError as error:
        if str(folder) not in WARNED:
            WARNED.add(str(folder))
            warnings.warn(
                ZooWarning(
                    f"The cache folder {folder} cannot be written ({error.strerror}); going on "
                    "without a decode cache (set ZOO_CACHE to a writable folder to keep one)."
                ),
                stacklevel=2,
            )
        return None


WARNED: set[str] = set()  # cache folders already warned about, once per process


def load_cache(path: Path) -> Decoded | None:
    arrays = load_arrays(path, ("images", "masks", "names", "skipped"))
    if arrays is None:
        return None
    return Decoded(
        arrays["images"], arrays["masks"], arrays["names"].tolist(), arrays["skipped"].tolist()
    )


def save_cache(path: Path, decoded: Decoded) -> None:
    save_arrays(
        path,
        images=decoded.images,
        masks=decoded.masks,
        names=np.array(decoded.names, dtype=str),
        skipped=np.array(decoded.skipped, dtype=str),
    )


def load_arrays(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The arrays `keys` of a cache file, or None when it is missing or damaged (decode again)."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return {key: arrays[key] for key in keys}
    except (OSError, KeyError, ValueError):
        return None


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache file atomically, then delete this key's stale versions (same name up to the
    last `-`); a failed write only costs time."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        prefix = path.name.rsplit("-", 1)[0]
        for stale in path.parent.glob(f"{prefix}-*.npz"):
            if stale != path and len(stale.name) == len(path.name):
                stale.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def decode_files(
    pairs: list[tuple[Path, Path]],
    num_classes: int,
    offset: int,
    key: str = "pairs",
    size: tuple[int, int] | None = None,
) -> Decoded:
    """Decode every pair at `size`; a bad one is recorded in `skipped` (one sentence) and left
    out."""
    size = size or SIZE
    images, masks, names, skipped = [], [], [], []
    with phase(f"decoding {key}", total=len(pairs), unit="images") as advance:
        for image_path, mask_path in pairs:
            advance()
            try:
                image, mask = read_pair(
                    image_path, mask_path, num_classes=num_classes, label_offset=offset, size=size
                )
            except BadImage as error:
                skipped.append(str(error))
                continue
            images.append(image)
            masks.append(mask)
            names.append(image_path.name)
    height, width = size
    return Decoded(
        np.stack(images) if images else np.zeros((0, 3, height, width), np.uint8),
        np.stack(masks) if masks else np.zeros((0, height, width), np.uint8),
        names,
        skipped,
    )


def decode_pairs(
    key: str,
    pairs: list[tuple[Path, Path]],
    *,
    num_classes: int,
    label_offset: int = 0,
    skip_bad: bool = False,
    size: tuple[int, int] | None = None,
) -> Decoded:
    """All usable pairs as uint8 arrays at `size` (default SIZE), through the cache (one file
    per size, so runs at several sizes do not decode again); a bad pair raises unless
    `skip_bad`."""
    size = tuple(size or SIZE)
    cache_path = cache_file(f"{key}-{size[0]}x{size[1]}", pairs, num_classes, label_offset, size)
    decoded = load_cache(cache_path) if cache_path is not None else None
    if decoded is None:
        decoded = decode_files(pairs, num_classes, label_offset, key, size)
        if cache_path is not None:
            save_cache(cache_path, decoded)
    return usable(decoded, key, len(pairs), skip_bad)


def cache_file(name: str, pairs: list[tuple[Path, Path]], *parameters) -> Path | None:
    """The cache file `<name>-<fingerprint of the pairs and parameters>.npz`, or None when the
    cache folder cannot be written."""
    folder = cache_folder()
    return folder / f"{name}-{fingerprint(pairs, *parameters)}.npz" if folder is not None else None


def usable(found: Decoded | Checked, key: str, count: int, skip_bad: bool) -> Decoded | Checked:
    """`found` if it may be used: a bad pair raises unless `skip_bad`, and so does a set with no
    usable pair."""
    if found.skipped and not skip_bad:
        raise BadImage(f"{found.skipped[0]}; {SKIP_HINT}.")
    if not found.names:
        raise ZooError(f"None of the {count} pairs for {key} is usable: {found.skipped[0]}.")
    return found


def streams(data_mode: str, count: int, size: tuple[int, int] | None) -> bool:
    """Whether `count` pairs are streamed: as `data_mode` asks, or (auto) when their photos and
    masks decoded at `size` would take more than base.MEMORY_SHARE of the available memory."""
    height, width = size or SIZE
    return choose_data_mode(data_mode, count * 4 * height * width) == "stream"


def check_pairs(
    key: str,
    pairs: list[tuple[Path, Path]],
    *,
    num_classes: int,
    label_offset: int = 0,
    skip_bad: bool = False,
    size: tuple[int, int] | None = None,
) -> Checked:
    """`decode_pairs` for streaming: every pair decoded once at `size` as `decode_files` does,
    through a cache of what is kept (which pairs are usable, the photos' sums, the largest id),
    never of the pixels; a bad pair raises unless `skip_bad`."""
    size = tuple(size or SIZE)
    name = f"{key}-index-{size[0]}x{size[1]}"
    cache_path = cache_file(name, pairs, num_classes, label_offset, size)
    keys = ("kept", "skipped", "sums", "largest")
    index = load_arrays(cache_path, keys) if cache_path is not None else None
    if index is None:
        index = index_files(pairs, num_classes, label_offset, key, size)
        if cache_path is not None:
            save_arrays(cache_path, **index)
    kept = index["kept"]
    checked = Checked(
        np.array([str(pairs[i][0]) for i in kept], dtype=str),
        np.array([str(pairs[i][1]) for i in kept], dtype=str),
        size, num_classes, label_offset, index["sums"], int(index["largest"]),
        index["skipped"].tolist(),
    )  # fmt: skip
    return usable(checked, key, len(pairs), skip_bad)


def index_files(
    pairs: list[tuple[Path, Path]], num_classes: int, offset: int, key: str, size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """What `check_pairs` keeps of decoding every pair: the usable pairs' indices, one sentence
    per bad pair, the photos' exact channel sums and squares, and the largest mask id."""
    kept, skipped = [], []
    sums, largest = np.zeros((2, 3), np.int64), 0
    with phase(f"checking {key}", total=len(pairs), unit="images") as advance:
        for i, (image_path, mask_path) in enumerate(pairs):
            advance()
            try:
                image, mask = read_pair(
                    image_path, mask_path, num_classes=num_classes, label_offset=offset, size=size
                )
            except BadImage as error:
                skipped.append(str(error))
                continue
            (total, squares), _ = channel_sums(image[None])
            sums += np.stack([total, squares])
            largest = max(largest, int(mask.max()))
            kept.append(i)
    return {
        "kept": np.array(kept, dtype=np.int64),
        "skipped": np.array(skipped, dtype=str),
        "sums": sums,
        "largest": np.array(largest),
    }


def seeded_split(count: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Sorted index arrays of the given sizes (the rest last), from one seeded permutation."""
    import torch  # torch's permutation, so the splits stay those of the published runs

    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    bounds = np.cumsum((0, *sizes))
    parts = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [np.sort(part) for part in (*parts, order[bounds[-1] :])]


def with_skipped(splits: dict[str, Arrays], skipped: list[str]) -> dict[str, Arrays]:
    """Attach the skipped files to the train split, where load_dataset collects them."""
    splits["train"].skipped = tuple(skipped)
    return splits
