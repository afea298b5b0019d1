"""Facade segmentation data: Mini Facade, the CMP Facade Database base set, and your own folder.

Every photo and label map is decoded once into uint8 arrays that are cached under the data root
(`<root>/.zoo-cache/`, or `~/.cache/zoo/decoded/` when the root is read-only), keyed by the
source files' names, sizes and modification times, so no epoch and no later run decodes again,
and editing, adding or removing a file invalidates the cache.

- `mini-facade`: `<root>/mini-facade/{train,test_dev}/NAME.jpg` + `NAME.png` (class ids 0-4),
  256x256; test_dev is the test split and `load_dataset` carves the validation split.
- `cmp-facade`: `<root>/cmp-facade/{images,labels}/` (ids 1-12 become 0-11). The photos (up to
  1024 px, aspect ratios near 1) are resized to 256x256 without keeping the aspect ratio, so the
  whole facade is seen and scored; training crops come from augmentation. Fixed split seeded
  with 0: 76 test, 38 val, 264 train.
- `segfolder:PATH`: your photos with same-name PNG masks of class ids, resized to 256x256.
  PATH holds the pairs (`x.jpg` + `x.png`, or `images/x.*` + `masks/x.png`), optionally in
  `train/` and `test/` subfolders (else 20% of the pairs, seeded, are the test split);
  `PATH/classes.txt` names the classes one per line, else their count is the largest id + 1.

A bad pair (unreadable image, missing mask, sizes that differ, ids outside the classes) is an
error naming the file; with `skip_bad` it is left out and listed in the run record instead.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo.data.base import DatasetInfo, Split, default_data_root, register_dataset
from zoo.data.download import download
from zoo.errors import ZooError
from zoo.registry import DATASETS, Entry

CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused
CACHE_FOLDER = ".zoo-cache"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SIZE = (256, 256)  # (H, W) every sample is stored at
SKIP_HINT = "fix or remove it, or pass --skip-bad-samples to leave such files out"

MINI_FACADE = DatasetInfo(
    name="mini-facade",
    task="segmentation",
    class_names=("others", "facade", "pillar", "window", "balcony"),
    in_chans=3,
    image_size=SIZE,
    mean=(0.4957, 0.4664, 0.4245),  # measured on the 906 training photos
    std=(0.2221, 0.2129, 0.2113),
    description="Facade photos, 256x256, 5 classes per pixel, 906 train + 114 test_dev.",
    palette=((0, 0, 0), (0, 0, 255), (0, 200, 0), (255, 165, 0), (255, 0, 0)),
)

CMP_FACADE = DatasetInfo(
    name="cmp-facade",
    task="segmentation",
    class_names=(
        "background",
        "facade",
        "window",
        "door",
        "cornice",
        "sill",
        "balcony",
        "blind",
        "deco",
        "molding",
        "pillar",
        "shop",
    ),  # fmt: skip
    in_chans=3,
    image_size=SIZE,
    mean=(0.4735, 0.4471, 0.4100),  # measured on a third of the photos at 256x256
    std=(0.2408, 0.2316, 0.2311),
    description="CMP Facade Database base set, 378 photos at 256x256, 12 classes per pixel.",
    palette=(
        (0, 0, 170),
        (0, 0, 255),
        (0, 85, 255),
        (0, 170, 255),
        (0, 255, 255),
        (85, 255, 170),
        (170, 255, 85),
        (255, 255, 0),
        (255, 170, 0),
        (255, 85, 0),
        (255, 0, 0),
        (170, 0, 0),
    ),  # the dataset's own label-map palette  # fmt: skip
)
CMP_URL = "https://cmp.felk.cvut.cz/~tylecr1/facade/CMP_facade_DB_base.zip"
# SHA-256 of the sorted "md5  images/x.jpg" / "md5  labels/x.png" lines of the 756 official files.
CMP_DIGEST = "d7f98a1b913af46c867df3cb816d96d2932bba0c23d4c3f07af54eabd906371c"
CMP_SPLIT_SEED, CMP_NUM_TEST, CMP_NUM_VAL = 0, 76, 38


class BadSample(ZooError):
    """One image/mask pair that cannot be used; its message names the file."""


@dataclass
class Decoded:
    """Decoded pairs: images (N, 3, H, W) and masks (N, H, W) uint8, plus the bad ones."""

    images: np.ndarray
    masks: np.ndarray
    names: list[str]
    skipped: list[str]  # one sentence per bad pair, naming its file


def read_image(path: Path) -> Image.Image:
    """Fully decode an RGB image, so a truncated file fails here and not in an epoch."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise BadSample(f"{path} is not a readable image ({error})") from None


def read_mask(path: Path) -> Image.Image:
    if not path.is_file():
        raise BadSample(f"{path} is missing: every photo needs a same-name PNG mask")
    try:
        with Image.open(path) as mask:
            mask.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise BadSample(f"{path} is not a readable PNG mask ({error})") from None
    if mask.mode not in ("L", "P", "I", "I;16"):
        raise BadSample(
            f"{path} is a {mask.mode} image, not a single-channel PNG whose pixels are class ids"
        )
    return mask


def read_pair(
    image_path: Path, mask_path: Path, *, num_classes: int, label_offset: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One (image (3, H, W), mask (H, W)) uint8 pair at SIZE; raise BadSample naming the file."""
    mask = read_mask(mask_path)
    image = read_image(image_path)
    if image.size != mask.size:
        raise BadSample(
            f"{image_path} is {image.size[0]}x{image.size[1]} but its mask {mask_path} is "
            f"{mask.size[0]}x{mask.size[1]}"
        )
    ids = np.asarray(mask).astype(np.int64) - label_offset
    bad = np.unique(ids[(ids < 0) | (ids >= num_classes)])
    if len(bad):
        shown = ", ".join(str(v + label_offset) for v in bad[:5])
        raise BadSample(
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


def user_cache_folder() -> Path:
    return default_data_root().parent / "decoded"


def marked_read_only(path: Path) -> bool:
    """The nearest existing folder of `path` has no write bit set at all (r-x for everyone).

    Such a folder is read-only by intent even where the process could still write to it
    (as root does), so the cache must not be put there.
    """
    for folder in (path, *path.parents):
        if folder.exists():
            return folder.stat().st_mode & 0o222 == 0
    return False


def writable_folder(folder: Path) -> bool:
    if marked_read_only(folder):
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return True
    except OSError:
        return False


def cache_folder(root: Path) -> Path | None:
    """`<root>/.zoo-cache`, else the user cache when the root is read-only; None if neither."""
    for folder in (root / CACHE_FOLDER, user_cache_folder()):
        if writable_folder(folder):
            return folder
    return None


def load_cache(path: Path) -> Decoded | None:
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return Decoded(
                arrays["images"],
                arrays["masks"],
                arrays["names"].tolist(),
                arrays["skipped"].tolist(),
            )
    except (OSError, KeyError, ValueError):  # missing or damaged: decode again
        return None


def save_cache(path: Path, decoded: Decoded) -> None:
    """Write atomically, then delete this key's stale versions; a failed write only costs time."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                images=decoded.images,
                masks=decoded.masks,
                names=np.array(decoded.names, dtype=str),
                skipped=np.array(decoded.skipped, dtype=str),
            )
        os.replace(tmp, path)
        prefix = path.name.rsplit("-", 1)[0]
        for stale in path.parent.glob(f"{prefix}-*.npz"):
            if stale != path and len(stale.name) == len(path.name):
                stale.unlink(missing_ok=True)
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def decode_files(pairs: list[tuple[Path, Path]], num_classes: int, offset: int) -> Decoded:
    """Decode every pair; a bad one is recorded in `skipped` (one sentence) and left out."""
    images, masks, names, skipped = [], [], [], []
    for image_path, mask_path in pairs:
        try:
            image, mask = read_pair(
                image_path, mask_path, num_classes=num_classes, label_offset=offset
            )
        except BadSample as error:
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
    root: Path,
    *,
    num_classes: int,
    label_offset: int = 0,
    skip_bad: bool = False,
) -> Decoded:
    """All usable pairs as uint8 arrays, through the cache; a bad pair raises unless `skip_bad`."""
    folder = cache_folder(root)
    digest = fingerprint(pairs, num_classes, label_offset)
    cache_path = folder / f"{key}-{digest}.npz" if folder is not None else None
    decoded = load_cache(cache_path) if cache_path is not None else None
    if decoded is None:
        decoded = decode_files(pairs, num_classes, label_offset)
        if cache_path is not None:
            save_cache(cache_path, decoded)
    if decoded.skipped and not skip_bad:
        raise BadSample(f"{decoded.skipped[0]}; {SKIP_HINT}.")
    if not decoded.names:
        raise ZooError(f"None of the {len(pairs)} pairs for {key} is usable: {decoded.skipped[0]}.")
    return decoded


def to_split(decoded: Decoded, indices: np.ndarray | None = None) -> Split:
    images, masks = torch.from_numpy(decoded.images), torch.from_numpy(decoded.masks)
    if indices is None:
        return Split(images, masks)
    index = torch.from_numpy(indices)
    return Split(images[index], masks[index])


def seeded_split(count: int, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Sorted index arrays of the given sizes (the rest last), from one seeded permutation."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).numpy()
    bounds = np.cumsum((0, *sizes))
    parts = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return [np.sort(part) for part in (*parts, order[bounds[-1] :])]


def with_skipped(splits: dict[str, Split], skipped: list[str]) -> dict[str, Split]:
    """Attach the skipped files to the train split, where load_dataset collects them."""
    splits["train"].skipped = tuple(skipped)
    return splits


@register_dataset(MINI_FACADE)
def load_mini_facade(root: Path, download: bool = True, skip_bad: bool = False) -> dict:
    folder = root / "mini-facade"
    if not folder.is_dir():
        raise ZooError(
            f"Mini Facade is not in {folder} (it has no public download); copy its train/ and "
            "test_dev/ folders there, or point ZOO_DATA or --data-dir at a folder holding "
            "mini-facade/."
        )
    splits, skipped = {}, []
    for split, sub in (("train", "train"), ("test", "test_dev")):
        decoded = decode_pairs(
            f"mini-facade-{sub}",
            find_pairs(folder / sub, folder / sub),
            root,
            num_classes=MINI_FACADE.num_classes,
            skip_bad=skip_bad,
        )
        splits[split] = to_split(decoded)
        skipped += decoded.skipped
    return with_skipped(splits, skipped)


def cmp_digest(folder: Path) -> str:
    """CMP_DIGEST's recipe applied to `folder`'s images/ and labels/."""
    from zoo.data.base import md5sum

    files = sorted([*folder.glob("images/*.jpg"), *folder.glob("labels/*.png")])
    lines = sorted((f.relative_to(folder).as_posix(), md5sum(f)) for f in files)
    return hashlib.sha256("".join(f"{md5}  {name}\n" for name, md5 in lines).encode()).hexdigest()


def download_cmp(folder: Path) -> None:
    """Fetch the official base-set zip, unpack photos and label maps, verify every file."""
    archive = folder / "CMP_facade_DB_base.zip"
    try:
        download(CMP_URL, archive)
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                name = Path(member).name
                if name.startswith("cmp_b") and name.endswith((".jpg", ".png")):
                    sub = "images" if name.endswith(".jpg") else "labels"
                    (folder / sub).mkdir(parents=True, exist_ok=True)
                    with zipped.open(member) as src, open(folder / sub / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ZooError(
            f"The CMP Facade base set could not be downloaded from {CMP_URL} ({error}); download "
            f"and unpack it by hand into {folder}/images and {folder}/labels."
        ) from None
    finally:
        archive.unlink(missing_ok=True)
    if cmp_digest(folder) != CMP_DIGEST:
        raise ZooError(
            f"The files downloaded into {folder} differ from the 378 official base-set photos "
            "and label maps; delete the folder and retry, or copy a verified set there."
        )


@register_dataset(CMP_FACADE)
def load_cmp_facade(root: Path, download: bool = True, skip_bad: bool = False) -> dict:
    folder = root / "cmp-facade"
    if not (folder / "images").is_dir():
        if not download:
            raise ZooError(
                f"The CMP Facade base set is not in {folder}; put its images/ and labels/ there."
            )
        download_cmp(folder)
    decoded = decode_pairs(
        "cmp-facade",
        find_pairs(folder / "images", folder / "labels"),
        root,
        num_classes=CMP_FACADE.num_classes,
        label_offset=1,
        skip_bad=skip_bad,
    )
    count = len(decoded.names)
    num_test = round(count * CMP_NUM_TEST / 378)
    num_val = round(count * CMP_NUM_VAL / 378)
    test, val, train = seeded_split(count, (num_test, num_val), CMP_SPLIT_SEED)
    splits = {
        "train": to_split(decoded, train),
        "val": to_split(decoded, val),
        "test": to_split(decoded, test),
    }
    return with_skipped(splits, decoded.skipped)


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for classes without a palette: black, then matplotlib's tab20."""
    from matplotlib import colormaps

    colours = [(0, 0, 0)] + [
        tuple(int(255 * c) for c in colormaps["tab20"](i % 20)[:3]) for i in range(num_classes - 1)
    ]
    return tuple(colours[:num_classes])


def folder_pairs(folder: Path) -> list[tuple[Path, Path]]:
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return find_pairs(folder / "images", folder / "masks")
    return find_pairs(folder, folder)


def resolve_segfolder(name: str) -> Entry:
    """Build the dataset entry for `segfolder:PATH` from what the folder holds."""
    path = Path(name.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise ZooError(f"{path} is not a folder; use segfolder:PATH with a folder of photos+masks.")
    files = sorted(p for p in path.rglob("*") if p.is_file() and CACHE_FOLDER not in p.parts)
    return _segfolder_entry(str(path.resolve()), name, fingerprint([(f, f) for f in files]))


@functools.lru_cache(maxsize=8)
def _segfolder_entry(path_text: str, name: str, files_digest: str) -> Entry:
    """The entry of one state of the folder: `files_digest` changes with any file in it."""
    path = Path(path_text)
    classes_file = path / "classes.txt"
    class_names = None
    if classes_file.is_file():
        class_names = tuple(line.strip() for line in classes_file.read_text().splitlines())
        class_names = tuple(n for n in class_names if n)
    has_splits = (path / "train").is_dir() and (path / "test").is_dir()
    parts = {"train": path / "train", "test": path / "test"} if has_splits else {"all": path}
    pairs = {part: folder_pairs(folder) for part, folder in parts.items()}
    num_classes = len(class_names) if class_names else 256  # uint8 ids; inferred below
    key = f"segfolder-{hashlib.sha1(path_text.encode()).hexdigest()[:8]}"

    def decode(part: str, skip_bad: bool) -> Decoded:
        return decode_pairs(
            f"{key}-{part}", pairs[part], path, num_classes=num_classes, skip_bad=skip_bad
        )

    decoded_train = decode("train" if has_splits else "all", skip_bad=True)
    if class_names is None:
        largest = max(int(decoded_train.masks.max()), 1)
        if has_splits:
            largest = max(largest, int(decode("test", skip_bad=True).masks.max()))
        class_names = tuple(f"class{i}" for i in range(largest + 1))
    pixels = decoded_train.images.astype(np.float32) / 255
    info = DatasetInfo(
        name=name,
        task="segmentation",
        class_names=class_names,
        in_chans=3,
        image_size=SIZE,
        mean=tuple(float(v) for v in pixels.mean((0, 2, 3))),
        std=tuple(float(max(v, 1e-3)) for v in pixels.std((0, 2, 3))),
        description=f"Your photos and masks in {path}.",
        palette=default_palette(len(class_names)),
    )

    def load(root: Path, download: bool = True, skip_bad: bool = False) -> dict:
        if has_splits:
            train, test = decode("train", skip_bad), decode("test", skip_bad)
            splits = {"train": to_split(train), "test": to_split(test)}
            return with_skipped(splits, train.skipped + test.skipped)
        everything = decode("all", skip_bad)
        count = len(everything.names)
        test_index, train_index = seeded_split(count, (max(1, round(0.2 * count)),), 0)
        if not len(train_index):
            raise ZooError(f"{path} holds one usable pair; a folder needs at least two.")
        splits = {
            "train": to_split(everything, train_index),
            "test": to_split(everything, test_index),
        }
        return with_skipped(splits, everything.skipped)

    return Entry(name, "segmentation", "", info.description, load, info)


DATASETS.register_prefix("segfolder", resolve_segfolder)
