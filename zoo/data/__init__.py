"""Datasets: importing a dataset module registers it."""

from zoo.data import (
    facade,  # noqa: F401  (registers mini-facade, cmp-facade, segfolder:)
    fashion_mnist,  # noqa: F401  (registers "fashion-mnist")
)
from zoo.data.base import (
    DatasetInfo,
    Split,
    Splits,
    get_dataset_info,
    iterate_batches,
    list_datasets,
    load_dataset,
    resolve_data_root,
)

__all__ = [
    "DatasetInfo",
    "Split",
    "Splits",
    "get_dataset_info",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "resolve_data_root",
]
