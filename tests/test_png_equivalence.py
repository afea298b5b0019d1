"""Fashion-MNIST written out as PNG folders is Fashion-MNIST (issue "Your own data", part 3): the
folder's test split holds the IDX files' pixels, and the published baseline-cnn, fed it with its
own mean and std, scores what it scores on the IDX files, to the last digit, in memory and
streamed. Needs the real files (ZOO_DATA)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from zoo import publish, weights
from zoo.config import TrainConfig
from zoo.data import fashion_mnist, imagefolder, load_dataset
from zoo.data.base import run_data_options
from zoo.evaluate import Predictions, evaluate
from zoo.runtime import resolve_precision

PUBLISHED = "baseline-cnn@v1"


@pytest.fixture(scope="module")
def idx_root():
    from conftest import real_data_root

    root = real_data_root()
    if root is None:
        pytest.skip("set ZOO_DATA to a folder whose fashion-mnist/ holds the official files")
    return root


@pytest.fixture(scope="module")
def png_root(idx_root, tmp_path_factory):
    """All 10,000 test images, and one training image per class (what imagefolder needs to
    know the classes: train/ names them); decode caches in the test's own folder."""
    folder = tmp_path_factory.mktemp("fashion-mnist-png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZOO_CACHE", str(folder / "cache"))
        imagefolder._imagefolder_entry.cache_clear()
        yield fashion_mnist.write_image_folder(idx_root, folder / "png", train_per_class=1)
    imagefolder._imagefolder_entry.cache_clear()


def png_splits(png_root, mode: str):
    """The folder as `zoo train baseline-cnn --dataset imagefolder:PNG --img-size 28 --crop-pct
    1 --data-mode MODE` loads it: 28x28 files taken as they are, no resize."""
    config = TrainConfig(
        model="baseline-cnn",
        dataset=f"imagefolder:{png_root}",
        img_size=28,
        crop_pct=1.0,
        data_mode=mode,
    )
    return load_dataset(config.dataset, options=run_data_options(config))


def scores(found: weights.Weights, data) -> tuple[dict, Predictions]:
    """Test metrics and per-image scores of the published weights on `data`'s test split,
    normalised with the weights' own mean and std, evaluated as publishing scored them (CPU,
    fp32, NCHW, the published batch size and thread count)."""
    own = dataclasses.replace(data.info, mean=found.mean, std=found.std)
    cpu = torch.device("cpu")
    model = weights.load_weights_model(found, cpu).model
    with publish.cpu_threads(found.evaluation["threads"]):
        return evaluate(
            model, data.test, own, device=cpu, precision=resolve_precision(cpu, False, "float16"),
            batch_size=found.evaluation["batch_size"], channels_last=False,
        )  # fmt: skip


@pytest.fixture(scope="module")
def idx_scores(idx_root) -> tuple[dict, Predictions]:
    found = weights.get_weights(PUBLISHED)
    return scores(found, publish.load_test(found.run_record().config, str(idx_root)).data)


def class_order(idx_root) -> np.ndarray:
    """The IDX test images in the folder's order: by class folder, then by IDX index."""
    return np.argsort(fashion_mnist.load(idx_root, download=False)["test"].targets, kind="stable")


def test_the_png_test_split_holds_the_idx_pixels_and_labels(idx_root, png_root):
    idx = fashion_mnist.load(idx_root, download=False)["test"]
    data = png_splits(png_root, "memory")
    order = class_order(idx_root)
    assert data.info.class_names == tuple(fashion_mnist.class_folder(i) for i in range(10))
    assert (data.info.in_chans, data.info.image_size) == (1, (28, 28))
    assert torch.equal(data.test.targets, torch.from_numpy(idx.targets[order]))
    assert torch.equal(data.test.images, torch.from_numpy(idx.images[order]))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_published_baseline_cnn_scores_the_same_on_png_as_on_idx(
    idx_root, png_root, idx_scores, mode
):
    """Every image's softmax scores are bit-identical, so accuracy, the confusion matrix and
    every AP are too; only the mean loss may differ in its last digits, summed over batches of
    other images (the folder's order is by class)."""
    found = weights.get_weights(PUBLISHED)
    data = png_splits(png_root, mode)
    assert data.mode == mode
    metrics, predictions = scores(found, data)
    idx_metrics, idx_predictions = idx_scores
    order = torch.from_numpy(class_order(idx_root))
    assert torch.equal(predictions.targets, idx_predictions.targets[order])
    assert torch.equal(predictions.probs, idx_predictions.probs[order])
    assert metrics["num_samples"] == idx_metrics["num_samples"] == 10_000
    assert metrics["accuracy"] == idx_metrics["accuracy"]
    assert metrics["confusion_matrix"] == idx_metrics["confusion_matrix"]
    assert metrics["mean_ap"] == idx_metrics["mean_ap"]
    assert list(metrics["per_class"].values()) == list(idx_metrics["per_class"].values())
    assert metrics["loss"] == pytest.approx(idx_metrics["loss"], rel=1e-6)
    published_here = (found.evaluation.get("cpu"), found.torch_version) == (
        publish.cpu_identity(),
        torch.__version__,
    )
    if published_here:  # the CPU model and torch that published it: the published accuracy too
        assert idx_metrics["accuracy"] == found.metrics["accuracy"]
