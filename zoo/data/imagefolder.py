"""`imagefolder:PATH`: your own images, one folder per class (torchvision's ImageFolder layout).

`PATH/<class>/<image>`: every file in a class folder (at any depth, hidden ones aside) is a
sample, and the class names are the folder names, sorted. When PATH has `train/` and `test/`
(and `val/`) folders, each laid out so, they are the splits (without `val/`, a seeded
`--val-fraction` of train is held out). Otherwise one permutation seeded by `--split-seed`
of all the images gives test and val a `--val-fraction` share each (at least one image each,
not stratified by class), and train the rest.

Samples are square, `--img-size` pixels a side (default: the median shorter side of the
training images, between 8 and 64), made as timm's evaluation transform makes them: the
shorter side resized to side / `--crop-pct` (default 0.875), then a centre crop; at 1, an
image already side x side is taken as it is. They are decoded once, through
`images.read_square` (the per-file decode a streaming loader can reuse), into uint8 arrays
cached in zoo's cache folder, never in PATH. Channels: 1 when every training image is grey,
else 3; always 3 for timm/ and smp/ models. Mean and std: measured on the training split, or
ImageNet's with `--imagenet`.

`--data-mode stream` (or auto, when the decoded images would take more than MEMORY_SHARE of
the available memory) decodes nothing up front but a check: every file is decoded once to
find the bad ones, the grey ones and the training split's pixel sums, and only that index is
cached; the splits are then `Files`, read batch by batch (zoo/data/streaming.py) with the same
per-file decode, so the samples and the statistics are those of the in-memory path. docs/data.md
says all of this for users.
"""

from __future__ import annotations

import functools
import hashlib
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.data import pairs
from zoo.data.base import (
    Arrays,
    DatasetInfo,
    Files,
    channel_sums,
    choose_data_mode,
    stats_from_sums,
)
from zoo.data.images import DEFAULT_CROP_PCT, BadImage, is_grey, read_square
from zoo.errors import ZooError
from zoo.progress import phase
from zoo.registry import DATASETS, Entry

SPLIT_FOLDERS = ("train", "val", "test")
DEFAULT_SIDE_RANGE = (8, 64)  # the default --img-size: the median shorter side, within these
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm.data.IMAGENET_DEFAULT_MEAN / _STD
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODED_KEYS = ("images", "targets", "grey", "names", "skipped")
INDEX_KEYS = ("targets", "grey", "names", "skipped", "sums", "squares")  # stream mode's cache


def visible(path: Path, root: Path) -> bool:
    """Hidden files and folders (.DS_Store, .ipynb_checkpoints) are not data."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def class_files(folder: Path) -> dict[str, list[Path]]:
    """Class name -> its files, sorted, for every class folder in `folder`."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and visible(p, folder))
    return {
        c.name: sorted(p for p in c.rglob("*") if p.is_file() and visible(p, folder))
        for c in classes
    }


def layout(path: Path) -> dict[str, Path]:
    """The split folders of `path`: train/test[/val] when it has them, else {"all": path}."""
    found = {name: path / name for name in SPLIT_FOLDERS if (path / name).is_dir()}
    if "train" in found and "test" in found:
        return found
    return {"all": path}


def resolve_imagefolder(
    name: str,
    *,
    img_size: int | None = None,
    crop_pct: float | None = None,
    rgb: bool = False,
    imagenet_stats: bool = False,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    skip_bad: bool = False,
    data_mode: str = "auto",
) -> Entry:
    """The dataset entry of `imagefolder:PATH` with these options (see `run_data_options`)."""
    path = Path(name.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise ZooError(
            f"{path} is not a folder; use imagefolder:PATH with a folder that holds one "
            "subfolder of images per class."
        )
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and visible(p, path)]
    digest = pairs.fingerprint([(f,) for f in files], sorted(p for p in path.rglob("*")))
    sample = (img_size, crop_pct or DEFAULT_CROP_PCT, rgb or imagenet_stats, imagenet_stats)
    splits = (val_fraction, split_seed, skip_bad, data_mode)
    return _imagefolder_entry(str(path.resolve()), name, digest, *sample, *splits)


@functools.lru_cache(maxsize=4)
def _imagefolder_entry(
    path_text: str,
    name: str,
    files_digest: str,
    img_size: int | None,
    crop_pct: float,
    rgb: bool,
    imagenet_stats: bool,
    val_fraction: float,
    split_seed: int,
    skip_bad: bool,
    data_mode: str,
) -> Entry:
    """The entry of one state of the folder (`files_digest` changes with any file in it) and
    one set of options; it holds the decoded splits, or the files to stream."""
    path = Path(path_text)
    folders = layout(path)
    first = "all" if "all" in folders else "train"
    listed = {part: class_files(folder) for part, folder in folders.items()}
    classes, skipped = checked_classes(folders[first], listed[first], skip_bad)
    for part, found in listed.items():
        unknown = sorted(set(found) - set(classes) - {c for c in found if not found[c]})
        if unknown:
            raise ZooError(
                f"{folders[part] / unknown[0]} is a class folder that {folders[first]} does not "
                f"have; add a {unknown[0]}/ folder of training images there, or remove it."
            )
    samples = {
        part: [(f, classes.index(c)) for c in classes for f in found.get(c, [])]
        for part, found in listed.items()
    }
    side = img_size or default_side([f for f, _ in samples[first]])
    key = f"imagefolder-{hashlib.sha1(path_text.encode()).hexdigest()[:8]}"
    count = sum(len(found) for found in samples.values())
    stream = choose_data_mode(data_mode, count * 3 * side * side) == "stream"
    read = index_samples if stream else decode_samples
    decoded = {
        part: read(f"{key}-{part}-{side}px", found, side, crop_pct)
        for part, found in samples.items()
    }
    for part in decoded.values():
        skipped += part["skipped"].tolist()
    if skipped and not skip_bad:
        raise BadImage(f"{skipped[0]}; {pairs.SKIP_HINT}.")
    splits = split(path, decoded, val_fraction, split_seed)
    train = splits["train"]
    in_chans = 3 if rgb or not train["grey"].all() else 1
    if stream:
        arrays = {
            part: Files(found["names"], found["targets"], side, in_chans, crop_pct)
            for part, found in splits.items()
        }
        sums = train["sums"][:, :in_chans].sum(0), train["squares"][:, :in_chans].sum(0)
        pixels = len(train["sums"]) * side * side
    else:
        arrays = {
            part: Arrays(found["images"][:, :in_chans], found["targets"])
            for part, found in splits.items()
        }
        sums, pixels = channel_sums(arrays["train"].images)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet_stats else stats_from_sums(*sums, pixels)
    info = DatasetInfo(
        name=name,
        task="classification",
        class_names=tuple(classes),
        in_chans=in_chans,
        image_size=(side, side),
        mean=mean,
        std=std,
        description=f"Your images in {path}, a folder per class.",
        augment="resized-crop-flip",
        crop_pct=crop_pct,
        normalisation="ImageNet" if imagenet_stats else "training split",
    )

    def load(root: Path, download: bool = True, skip_bad: bool = False) -> dict[str, Arrays]:
        # Fresh splits around the same arrays: load_dataset wraps them without a copy.
        if stream:
            found = {
                part: Files(a.paths, a.targets, side, in_chans, crop_pct)
                for part, a in arrays.items()
            }
        else:
            found = {part: Arrays(a.images, a.targets) for part, a in arrays.items()}
        return pairs.with_skipped(found, skipped)

    return Entry(name, "classification", "", info.description, load, info)


def checked_classes(
    folder: Path, found: dict[str, list[Path]], skip_bad: bool
) -> tuple[list[str], list[str]]:
    """The class names (sorted folder names) and the empty class folders left out, if any;
    one sentence naming the folder and the fix for a layout no classifier can train on."""
    empty = [f"{folder / c} is an empty class folder" for c, files in found.items() if not files]
    if empty and not skip_bad:
        raise ZooError(
            f"{empty[0]}; put that class's images in it or delete it, or pass "
            "--skip-bad-samples to leave it out."
        )
    classes = [c for c, files in found.items() if files]
    if not found:
        raise ZooError(
            f"{folder} has no class folders; put each class's images in a subfolder named after "
            "the class (PATH/<class>/<image>)."
        )
    if len(classes) < 2:
        which = f"one class folder ({classes[0]})" if classes else "no class folder with images"
        raise ZooError(
            f"{folder} has {which}; a classifier needs two or more: add a folder of images for "
            "each other class."
        )
    return classes, empty


def default_side(files: list[Path]) -> int:
    """The median shorter side of the images (read from their headers), within
    DEFAULT_SIDE_RANGE: small photos keep their detail, large ones stay cheap on a CPU."""
    sides = []
    for file in files:
        try:
            with Image.open(file) as image:
                sides.append(min(image.size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            continue  # a bad file: decode_samples names it
    low, high = DEFAULT_SIDE_RANGE
    return int(min(high, max(low, statistics.median(sides) if sides else high)))


def decode_samples(
    key: str, samples: list[tuple[Path, int]], side: int, crop_pct: float
) -> dict[str, np.ndarray]:
    """Every sample decoded by `read_square` as RGB uint8 (N, 3, side, side), with its class id
    and whether its file is grey, through the decode cache; bad files are listed in "skipped"."""
    folder = pairs.cache_folder()
    targets_key = [target for _, target in samples]
    digest = pairs.fingerprint([(f,) for f, _ in samples], side, crop_pct, targets_key)
    cache_path = folder / f"{key}-{digest}.npz" if folder is not None else None
    decoded = pairs.load_arrays(cache_path, DECODED_KEYS) if cache_path is not None else None
    if decoded is not None:
        return decoded
    images = np.zeros((len(samples), 3, side, side), np.uint8)
    kept, grey, names, skipped = [], [], [], []
    with phase(f"decoding {key}", total=len(samples), unit="images") as advance:
        for i, (file, _) in enumerate(samples):
            advance()
            try:
                images[i] = read_square(file, side, "RGB", crop_pct)
                grey.append(is_grey(file))
            except BadImage as error:
                skipped.append(str(error))
                continue
            except PermissionError as error:  # is_grey's open, if the file changed meanwhile
                skipped.append(f"{file} is not a readable image ({error.strerror})")
                continue
            kept.append(i)
            names.append(str(file))
    targets = np.array(targets_key, dtype=np.min_scalar_type(max(targets_key, default=0)))
    decoded = {
        "images": images[kept],
        "targets": targets[kept],
        "grey": np.array(grey, dtype=bool),
        "names": np.array(names, dtype=str),
        "skipped": np.array(skipped, dtype=str),
    }
    if cache_path is not None:
        pairs.save_arrays(cache_path, **decoded)
    return decoded


def split(
    path: Path, decoded: dict[str, dict], val_fraction: float, split_seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """train/val/test from the split folders, or from one seeded permutation of "all"."""

    def take(part: dict, index: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[index] for key, value in part.items() if key != "skipped"}

    if "all" not in decoded and "val" in decoded:
        return {part: take(found, slice(None)) for part, found in decoded.items()}
    source = decoded.get("all", decoded.get("train"))
    count = len(source["targets"])
    held_out = max(1, round(val_fraction * count))
    if "all" in decoded:
        test, val, train = pairs.seeded_split(count, (held_out, held_out), split_seed)
    else:
        val, train = pairs.seeded_split(count, (held_out,), split_seed)
        test = None
    if not len(train):
        raise ZooError(
            f"{path} holds {count} usable images, too few to split into train, val and test; "
            "add images (three or more), or pass a smaller --val-fraction."
        )
    splits = {"train": take(source, train), "val": take(source, val)}
    splits["test"] = take(decoded["test"], slice(None)) if test is None else take(source, test)
    return splits


def index_samples(
    key: str, samples: list[tuple[Path, int]], side: int, crop_pct: float
) -> dict[str, np.ndarray]:
    """Stream mode's check of every sample, through the cache: each file decoded once, as
    `decode_samples` does, and only its class id, path, greyness and pixel sums kept (the
    training split's mean and std derive from them); bad files are listed in "skipped"."""
    folder = pairs.cache_folder()
    targets_key = [target for _, target in samples]
    digest = pairs.fingerprint([(f,) for f, _ in samples], side, crop_pct, targets_key)
    cache_path = folder / f"{key}-index-{digest}.npz" if folder is not None else None
    index = pairs.load_arrays(cache_path, INDEX_KEYS) if cache_path is not None else None
    if index is not None:
        return index
    sums = np.zeros((len(samples), 3), np.int64)
    squares = np.zeros((len(samples), 3), np.int64)
    kept, grey, names, skipped = [], [], [], []
    with phase(f"checking {key}", total=len(samples), unit="images") as advance:
        for i, (file, _) in enumerate(samples):
            advance()
            try:
                image = read_square(file, side, "RGB", crop_pct)
                grey.append(is_grey(file))
            except BadImage as error:
                skipped.append(str(error))
                continue
            except PermissionError as error:  # is_grey's open, if the file changed meanwhile
                skipped.append(f"{file} is not a readable image ({error.strerror})")
                continue
            (sums[i], squares[i]), _ = channel_sums(image[None])
            kept.append(i)
            names.append(str(file))
    targets = np.array(targets_key, dtype=np.min_scalar_type(max(targets_key, default=0)))
    index = {
        "targets": targets[kept],
        "grey": np.array(grey, dtype=bool),
        "names": np.array(names, dtype=str),
        "skipped": np.array(skipped, dtype=str),
        "sums": sums[kept],
        "squares": squares[kept],
    }
    if cache_path is not None:
        pairs.save_arrays(cache_path, **index)
    return index


DATASETS.register_prefix("imagefolder", resolve_imagefolder)
