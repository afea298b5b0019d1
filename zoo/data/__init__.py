"""Datasets: importing a dataset module registers it.

The registry side (`DatasetInfo`, `list_datasets`, `get_dataset_info`) imports no torch; the
in-memory splits and batches (`load_dataset`, `iterate_batches`, ...) come from
`zoo.data.splits`, imported on first use.
"""

from zoo.data import (
    facade,  # noqa: F401  (registers mini-facade, cmp-facade)
    fashion_mnist,  # noqa: F401  (registers "fashion-mnist")
    imagefolder,  # noqa: F401  (registers the imagefolder: prefix)
    segfolder,  # noqa: F401  (registers the segfolder: prefix)
)
from zoo.data.base import (
    Arrays,
    DatasetInfo,
    get_dataset_info,
    list_datasets,
    register_dataset,
    resolve_data_root,
)

SPLITS_NAMES = ("Split", "Splits", "iterate_batches", "load_dataset", "normalize")


def __getattr__(name: str):
    if name in SPLITS_NAMES:
        from zoo.data import splits

        return getattr(splits, name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")


__all__ = [
    "Arrays",
    "DatasetInfo",
    "get_dataset_info",
    "list_datasets",
    "register_dataset",
    "resolve_data_root",
    *SPLITS_NAMES,
]
