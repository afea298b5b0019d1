"""Facade segmentation data: Mini Facade and the CMP Facade Database base set.

- `mini-facade`: `<root>/mini-facade/{train,test_dev}/NAME.jpg` + `NAME.png` (class ids 0-4),
  256x256; test_dev is the test split and `load_dataset` carves the validation split.
- `cmp-facade`: `<root>/cmp-facade/{images,labels}/` (ids 1-12 become 0-11). The photos (up to
  1024 px, aspect ratios near 1) are resized to 256x256 without keeping the aspect ratio, so the
  whole facade is seen and scored; training crops come from augmentation. Fixed split seeded
  with 0: 76 test, 38 val, 264 train.

The files stay as they are on disk; `--img-size N` (the loaders' `img_size`) resizes them to
N x N instead of 256 x 256 when they are decoded. `--data-mode stream` (or auto, for a size too
large to hold) decodes them batch by batch instead of once (`pairs.check_pairs`).

Both decode through `zoo.data.pairs` (reader, checks and cache); `segfolder:PATH` (your own
photos) is in `zoo.data.segfolder`.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

from zoo.data import pairs
from zoo.data.base import Arrays, DatasetInfo, PairFiles, md5sum, register_dataset
from zoo.data.download import download
from zoo.errors import ZooError

MINI_FACADE = DatasetInfo(
    name="mini-facade",
    task="segmentation",
    class_names=("others", "facade", "pillar", "window", "balcony"),
    in_chans=3,
    image_size=pairs.SIZE,
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
    image_size=pairs.SIZE,
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


@register_dataset(MINI_FACADE)
def load_mini_facade(
    root: Path,
    download: bool = True,
    skip_bad: bool = False,
    img_size: int | None = None,
    data_mode: str = "auto",
) -> dict:
    folder = root / "mini-facade"
    if not folder.is_dir():
        raise ZooError(
            f"Mini Facade is not in {folder} (it has no public download); copy its train/ and "
            "test_dev/ folders there, or point ZOO_DATA or --data-dir at a folder holding "
            "mini-facade/."
        )
    size = (img_size, img_size) if img_size else None
    found = {sub: pairs.find_pairs(folder / sub, folder / sub) for sub in ("train", "test_dev")}
    stream = pairs.streams(data_mode, sum(map(len, found.values())), size)
    read = pairs.check_pairs if stream else pairs.decode_pairs
    splits, skipped = {}, []
    for split, sub in (("train", "train"), ("test", "test_dev")):
        decoded = read(
            f"mini-facade-{sub}",
            found[sub],
            num_classes=MINI_FACADE.num_classes,
            skip_bad=skip_bad,
            size=size,
        )
        splits[split] = decoded.arrays()
        skipped += decoded.skipped
    return pairs.with_skipped(splits, skipped)


def cmp_digest(folder: Path) -> str:
    """CMP_DIGEST's recipe applied to `folder`'s images/ and labels/."""
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
def load_cmp_facade(
    root: Path,
    download: bool = True,
    skip_bad: bool = False,
    img_size: int | None = None,
    data_mode: str = "auto",
) -> dict:
    folder = root / "cmp-facade"
    if not (folder / "images").is_dir():
        if not download:
            raise ZooError(
                f"The CMP Facade base set is not in {folder}; put its images/ and labels/ there."
            )
        download_cmp(folder)
    found = pairs.find_pairs(folder / "images", folder / "labels")
    size = (img_size, img_size) if img_size else None
    read = pairs.check_pairs if pairs.streams(data_mode, len(found), size) else pairs.decode_pairs
    decoded = read(
        "cmp-facade",
        found,
        num_classes=CMP_FACADE.num_classes,
        label_offset=1,
        skip_bad=skip_bad,
        size=size,
    )
    count = len(decoded.names)
    num_test = round(count * CMP_NUM_TEST / 378)
    num_val = round(count * CMP_NUM_VAL / 378)
    test, val, train = pairs.seeded_split(count, (num_test, num_val), CMP_SPLIT_SEED)
    splits: dict[str, Arrays | PairFiles] = {
        "train": decoded.arrays(train),
        "val": decoded.arrays(val),
        "test": decoded.arrays(test),
    }
    return pairs.with_skipped(splits, decoded.skipped)
