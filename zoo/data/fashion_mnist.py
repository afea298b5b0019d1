"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 28x28 grey images of 10 kinds of clothing.

Expected layout: `<data root>/fashion-mnist/` holding the four official gzipped IDX files. Missing
files are downloaded from the official mirror; every file is checked against its official MD5.
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np

from zoo.data.base import Arrays, DatasetInfo, md5sum, register_dataset
from zoo.data.download import download
from zoo.errors import ZooError

FOLDER = "fashion-mnist"
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> official MD5 of the .gz file
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
IDX_MAGIC = {2049: 1, 2051: 3}  # magic number -> number of dimensions (labels, images)
MAX_IDX_BYTES = 1 << 31  # far above any real IDX file (Fashion-MNIST's largest is 47 MB)

INFO = DatasetInfo(
    name="fashion-mnist",
    task="classification",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    in_chans=1,
    image_size=(28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    description="Zalando's 28x28 grey clothing photos, 10 classes, 60k train + 10k test.",
)


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file into a uint8 array, checking its magic number and length.

    The bytes are decompressed straight into the final array, so loading costs no extra copy.
    """
    try:
        with gzip.open(path, "rb") as f:
            magic = int.from_bytes(f.read(4), "big")
            if magic not in IDX_MAGIC:
                raise ZooError(
                    f"{path} has magic number {magic}, not an IDX label (2049) or image (2051) "
                    "file; replace it with the official file."
                )
            dims = f.read(4 * IDX_MAGIC[magic])
            shape = tuple(int.from_bytes(dims[i : i + 4], "big") for i in range(0, len(dims), 4))
            if len(dims) != 4 * IDX_MAGIC[magic] or math.prod(shape) > MAX_IDX_BYTES:
                raise ZooError(
                    f"{path} has a damaged header (shape {shape}); the file is truncated or "
                    "damaged, delete it and retry."
                )
            array = np.empty(shape, dtype=np.uint8)
            view = memoryview(array).cast("B")
            filled = 0
            while filled < len(view) and (count := f.readinto(view[filled : filled + (1 << 20)])):
                filled += count
            if len(dims) != 4 * IDX_MAGIC[magic] or filled != len(view) or f.read(1):
                raise ZooError(
                    f"{path} does not hold the {len(view)} bytes its header {shape} announces; "
                    "the file is truncated or damaged, delete it and retry."
                )
    except (OSError, EOFError) as error:
        raise ZooError(
            f"{path} is not a readable gzip file ({error}); delete it and retry."
        ) from None
    return array


def ensure_files(folder: Path, download_missing: bool) -> None:
    """Download missing files, then check every file's MD5; raise ZooError naming the culprit."""
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing and download_missing:
        try:
            for name in missing:
                download(MIRROR + name, folder / name, FILES[name])
            missing = []
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            raise ZooError(
                f"Fashion-MNIST files {', '.join(missing)} are missing from {folder} and could not "
                f"be downloaded from {MIRROR} ({reason}); copy them there, or point ZOO_DATA or "
                f"--data-dir at a folder whose {FOLDER}/ subfolder holds them."
            ) from None
    if missing:
        raise ZooError(
            f"Fashion-MNIST files {', '.join(missing)} are missing from {folder}; copy them there, "
            f"or point ZOO_DATA or --data-dir at a folder whose {FOLDER}/ subfolder holds them."
        )
    for name, expected in FILES.items():
        actual = md5sum(folder / name)
        if actual != expected:
            raise ZooError(
                f"{folder / name} has MD5 {actual}, expected {expected}: the file is damaged or "
                "not the official one; delete it to download it again, or replace it."
            )


def class_folder(label: int) -> str:
    """`0-t-shirt-top` ... `9-ankle-boot`: the label first, so that `imagefolder:`'s sorted class
    folders come in Fashion-MNIST's label order (one digit each: 10 classes)."""
    return f"{label}-{re.sub('[^a-z0-9]+', '-', INFO.class_names[label].lower()).strip('-')}"


def write_image_folder(root: Path, out: Path, *, train_per_class: int | None = None) -> Path:
    """The official splits as an `imagefolder:` dataset of grey 28x28 PNGs, the IDX pixels
    unchanged: `out/train/<class>/<index>.png` and `out/test/<class>/<index>.png`, `<index>`
    the image's place in its IDX file (zero-padded, so file order is IDX order). All 10,000
    test images; the first `train_per_class` training images of each class, or all 60,000.
    Returns `out`."""
    from PIL import Image

    labels = range(INFO.num_classes)
    for split, arrays in load(root, download=False).items():
        kept = np.arange(len(arrays.targets))
        if split == "train" and train_per_class is not None:
            first = [np.flatnonzero(arrays.targets == c)[:train_per_class] for c in labels]
            kept = np.concatenate(first)
        for label in labels:
            (out / split / class_folder(label)).mkdir(parents=True, exist_ok=True)
        for index in kept.tolist():
            folder = out / split / class_folder(int(arrays.targets[index]))
            Image.fromarray(arrays.images[index, 0]).save(folder / f"{index:05d}.png")
    return out


@register_dataset(INFO)
def load(root: Path, download: bool = True) -> dict[str, Arrays]:
    folder = root / FOLDER
    ensure_files(folder, download)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ZooError(
                f"{folder / f'{prefix}-images-idx3-ubyte.gz'} and its labels file do not match "
                f"(images {images.shape}, labels {labels.shape}); replace both with official ones."
            )
        if labels.max(initial=0) >= INFO.num_classes:
            raise ZooError(f"{folder / f'{prefix}-labels-idx1-ubyte.gz'} has labels above 9.")
        splits[split] = Arrays(images[:, None], labels)  # (N, 1, 28, 28), no copy
    return splits
