"""`segfolder:PATH`: your own photos with same-name PNG masks of class ids, resized to 256x256
(or `--img-size` square) when they are decoded, held in memory or streamed (`--data-mode`);
the files stay as they are.

PATH holds the pairs (`x.jpg` + `x.png`, or `images/x.*` + `masks/x.png`), optionally in
`train/` and `test/` subfolders (else 20% of the pairs, seeded, are the test split);
`PATH/classes.txt` names the classes one per line, else their count is the largest id + 1.
The dataset's mean and std are measured on its training photos.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from zoo.data import pairs
from zoo.data.base import DatasetInfo, stats_from_sums
from zoo.errors import ZooError
from zoo.registry import DATASETS, Entry


def folder_pairs(folder: Path) -> list[tuple[Path, Path]]:
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return pairs.find_pairs(folder / "images", folder / "masks")
    return pairs.find_pairs(folder, folder)


def resolve_segfolder(name: str, img_size: int | None = None, data_mode: str = "auto") -> Entry:
    """Build the dataset entry for `segfolder:PATH` from what the folder holds, with samples
    `img_size` square (default: pairs.SIZE), held in memory or streamed (`data_mode`)."""
    path = Path(name.split(":", 1)[1]).expanduser()
    if not path.is_dir():
        raise ZooError(f"{path} is not a folder; use segfolder:PATH with a folder of photos+masks.")
    files = sorted(  # hidden files and folders (.DS_Store, an old .zoo-cache) are not data
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    digest = pairs.fingerprint([(f, f) for f in files])
    size = (img_size, img_size) if img_size else pairs.SIZE
    return _segfolder_entry(str(path.resolve()), name, digest, size, data_mode)


@functools.lru_cache(maxsize=8)
def _segfolder_entry(
    path_text: str, name: str, files_digest: str, size: tuple[int, int], data_mode: str
) -> Entry:
    """The entry of one state of the folder (`files_digest` changes with any file in it) at one
    sample size and data mode."""
    path = Path(path_text)
    classes_file = path / "classes.txt"
    class_names = None
    if classes_file.is_file():
        class_names = tuple(line.strip() for line in classes_file.read_text().splitlines())
        class_names = tuple(n for n in class_names if n)
    has_splits = (path / "train").is_dir() and (path / "test").is_dir()
    parts = {"train": path / "train", "test": path / "test"} if has_splits else {"all": path}
    found = {part: folder_pairs(folder) for part, folder in parts.items()}
    count = sum(map(len, found.values()))
    num_classes = len(class_names) if class_names else 256  # uint8 ids; inferred below
    key = f"segfolder-{hashlib.sha1(path_text.encode()).hexdigest()[:8]}"
    read = pairs.check_pairs if pairs.streams(data_mode, count, size) else pairs.decode_pairs

    def decode(part: str, skip_bad: bool) -> pairs.Decoded | pairs.Checked:
        return read(
            f"{key}-{part}", found[part], num_classes=num_classes, skip_bad=skip_bad, size=size
        )

    decoded_train = decode("train" if has_splits else "all", skip_bad=True)
    if class_names is None:
        largest = max(decoded_train.largest_id(), 1)
        if has_splits:
            largest = max(largest, decode("test", skip_bad=True).largest_id())
        class_names = tuple(f"class{i}" for i in range(largest + 1))
    (sums, squares), pixels = decoded_train.photo_sums()  # exact integers, no float copy
    mean, std = stats_from_sums(sums, squares, pixels)
    info = DatasetInfo(
        name=name,
        task="segmentation",
        class_names=class_names,
        in_chans=3,
        image_size=size,
        mean=mean,
        std=std,
        description=f"Your photos and masks in {path}.",
    )

    def load(root: Path, download: bool = True, skip_bad: bool = False) -> dict:
        if has_splits:
            train, test = decode("train", skip_bad), decode("test", skip_bad)
            splits = {"train": train.arrays(), "test": test.arrays()}
            return pairs.with_skipped(splits, train.skipped + test.skipped)
        everything = decode("all", skip_bad)
        count = len(everything.names)
        test_index, train_index = pairs.seeded_split(count, (max(1, round(0.2 * count)),), 0)
        if not len(train_index):
            raise ZooError(f"{path} holds one usable pair; a folder needs at least two.")
        splits = {"train": everything.arrays(train_index), "test": everything.arrays(test_index)}
        return pairs.with_skipped(splits, everything.skipped)

    return Entry(name, "segmentation", "", info.description, load, info)


DATASETS.register_prefix("segfolder", resolve_segfolder)
