"""Photo/mask pairs for segmentation datasets: finding them, reading them, and the decode cache.

Every photo and label map is decoded once into uint8 arrays that are cached in the user's cache
folder (`~/.cache/zoo/decoded/`, see `base.cache_root`; never in the data folder, which may be
read-only or shared), keyed by the source files' paths, sizes and modification times, so no
epoch and no later run decodes again, and editing, adding or removing a file invalidates the
cache. A cache folder that cannot be written costs time only: one warning, and no cache.

A bad pair (unreadable image, missing mask, sizes that differ, ids outside the classes) is an
error naming the file; with `skip_bad` it is left out and listed instead.
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

from zoo.data.base import Arrays, cache_root
from zoo.data.images import BadImage, read_image, read_mask
from zoo.errors import ZooError, ZooWarning
from zoo.progress import phase

CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SIZE = (256, 256)  # (H, W) every sample is stored at
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


def read_pair(
    image_path: Path, mask_path: Path, *, num_classes: int, label_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One (image (3, H, W), mask (H, W)) uint8 pair at SIZE; raise BadImage naming the file."""
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
    height, width = SIZE
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
        ids = np.asarray(Image.fromarray(ids.astype(np.uint8)).resize((width, height), 0))
    return np.asarray(image).transpose(2, 0, 1), ids.astype(np.uint8)


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
    digest = hashlib.sha1(repr((CACHE_VERSION, SIZE, parameters)).encode())
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
    pairs: list[tuple[Path, Path]], num_classes: int, offset: int, key: str = "pairs"
) -> Decoded:
    """Decode every pair; a bad one is recorded in `skipped` (one sentence) and left out."""
    images, masks, names, skipped = [], [], [], []
    with phase(f"decoding {key}", total=len(pairs), unit="images") as advance:
        for image_path, mask_path in pairs:
            advance()
            try:
                image, mask = read_pair(
                    image_path, mask_path, num_classes=num_classes, label_offset=offset
                )
            except BadImage as error:
                skipped.append(str(error))
                continue
            images.append(image)
            masks.append(mask)
            names.append(image_path.name)
    height, width = SIZE
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
) -> Decoded:
    """All usable pairs as uint8 arrays, through the cache; a bad pair raises unless `skip_bad`."""
    folder = cache_folder()
    digest = fingerprint(pairs, num_classes, label_offset)
    cache_path = folder / f"{key}-{digest}.npz" if folder is not None else None
    decoded = load_cache(cache_path) if cache_path is not None else None
    if decoded is None:
        decoded = decode_files(pairs, num_classes, label_offset, key)
        if cache_path is not None:
            save_cache(cache_path, decoded)
    if decoded.skipped and not skip_bad:
        raise BadImage(f"{decoded.skipped[0]}; {SKIP_HINT}.")
    if not decoded.names:
        raise ZooError(f"None of the {len(pairs)} pairs for {key} is usable: {decoded.skipped[0]}.")
    return decoded


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
