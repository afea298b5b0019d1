"""--data-mode stream: the same pixels and batches as in memory, auto's choice, resume, errors."""

import json

import numpy as np
import pytest
import torch
from conftest import write_facade_pairs
from safetensors.torch import load_file
from test_imagefolder import write_folder
from test_train import run_folders
from typer.testing import CliRunner

from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data import base, imagefolder, iterate_batches, load_dataset
from zoo.data.base import get_dataset
from zoo.data.images import BadImage
from zoo.data.streaming import FileSplit
from zoo.data.transforms import joint_augmentation
from zoo.errors import ZooError

runner = CliRunner()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    imagefolder._imagefolder_entry.cache_clear()


def load(root, mode, workers=0, **options):
    options = {"img_size": 12, "val_fraction": 0.2, "data_mode": mode, **options}
    return load_dataset(f"imagefolder:{root}", options=options, workers=workers)


def batches(split, info, size=5, **kwargs):
    return list(iterate_batches(split, info, size, device=torch.device("cpu"), **kwargs))


def test_stream_reads_the_pixels_memory_holds_in_the_same_batches(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6)
    memory, stream = load(root, "memory"), load(root, "stream", workers=1)
    assert memory.mode == "memory" and stream.mode == "stream"
    assert isinstance(stream.train, FileSplit)
    assert stream.info == memory.info, "same classes, channels, size, mean and std"
    for name in ("train", "val", "test"):
        held, streamed = getattr(memory, name), getattr(stream, name)
        assert torch.equal(held.targets, streamed.targets)
        assert torch.equal(held.images, streamed.images[:]), f"{name}: other pixels"
        for (a, ta), (b, tb) in zip(
            batches(held, memory.info), batches(streamed, stream.info), strict=True
        ):
            assert torch.equal(a, b) and torch.equal(ta, tb)
    # Shuffled and augmented from the same generator: the same training batches, the short
    # last one (10 = 4 + 4 + 2) included.
    from zoo.data.transforms import random_resized_crop_flip

    shuffled = {}
    for data in (memory, stream):
        generator = torch.Generator().manual_seed(3)
        shuffled[data.mode] = batches(
            data.train, data.info, 4, shuffle=True, generator=generator,
            transform=random_resized_crop_flip(),
        )  # fmt: skip
    assert len(shuffled["stream"][-1][0]) == 2
    for (a, ta), (b, tb) in zip(shuffled["memory"], shuffled["stream"], strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)


def test_auto_streams_when_the_decoded_images_exceed_half_the_free_memory(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pets", per_class=3)
    decoded = 9 * 3 * 12 * 12
    monkeypatch.setattr(base, "available_memory", lambda: 2 * decoded + 2)
    assert load(root, "auto").mode == "memory"
    imagefolder._imagefolder_entry.cache_clear()
    monkeypatch.setattr(base, "available_memory", lambda: 2 * decoded - 2)
    assert load(root, "auto").mode == "stream"
    assert load(root, "memory").mode == "memory", "--data-mode memory is obeyed"


def test_stream_on_a_named_dataset_and_negative_workers_are_one_sentence(tmp_path):
    with pytest.raises(ZooError, match="--data-mode stream is for image folders and the segm"):
        get_dataset("fashion-mnist", data_mode="stream")
    with pytest.raises(ZooError, match="--data-workers must be 0 or more, got -1"):
        TrainConfig(model="baseline-cnn", data_workers=-1)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_that_breaks_after_the_check_is_named(tmp_path, workers):
    root = write_folder(tmp_path / "pets", per_class=3)
    data = load(root, "stream", workers=workers)
    (root / "cat" / "1.png").write_bytes(b"not a png any more")
    with pytest.raises(BadImage) as caught:
        for _ in iterate_batches(data.train, data.info, 64, device=torch.device("cpu")):
            pass
    message = str(caught.value)
    assert message.startswith(str(root / "cat" / "1.png")) and "Traceback" not in message
    assert "changed after zoo checked the folder" in message


def weights(run_dir):
    return load_file(run_dir / "last.safetensors")


def test_stream_trains_as_memory_does_and_resumes_exactly(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6)
    recipe = ["train", "baseline-cnn", "--dataset", f"imagefolder:{root}", "--img-size", "12"]
    recipe += ["--batch-size", "4", "--augment", "--schedule", "none", "--seed", "5"]
    runs = {}
    for name, extra in {
        "memory": ["--data-mode", "memory", "--epochs", "2"],
        "stream": ["--data-mode", "stream", "--data-workers", "1", "--epochs", "2"],
        "resumed": ["--data-mode", "stream", "--data-workers", "1", "--epochs", "1"],
    }.items():
        result = runner.invoke(app, [*recipe, *extra, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        (runs[name],) = run_folders(tmp_path / name)
    metrics = json.loads((runs["stream"] / "metrics.json").read_text())
    assert metrics["input"]["data_mode"] == "stream" and metrics["status"] == "completed"
    result = runner.invoke(
        app, ["train", "--resume", str(runs["resumed"]), "--epochs", "2", "--data-workers", "0"]
    )
    assert result.exit_code == 0, result.output
    expected = weights(runs["memory"])
    for name in ("stream", "resumed"):
        found = weights(runs[name])
        assert all(torch.equal(expected[k], found[k]) for k in expected), f"{name} differs"
    scores = [json.loads((runs[n] / "metrics.json").read_text())["test"] for n in runs]
    assert all(np.isclose(s["accuracy"], scores[0]["accuracy"]) for s in scores)


# ----------------------------------------------------------------------------- segmentation


def facade_pairs(root, count=10, size=40):
    write_facade_pairs(root / "mini-facade" / "train", count, size=size, seed=0)
    write_facade_pairs(root / "mini-facade" / "test_dev", 3, size=size, seed=1)
    return root


def test_a_streamed_segmentation_set_gives_the_pixels_and_batches_memory_holds(tmp_path):
    root = facade_pairs(tmp_path / "data")
    options = {"img_size": 24}
    memory = load_dataset("mini-facade", root, options={**options, "data_mode": "memory"})
    stream = load_dataset(
        "mini-facade", root, options={**options, "data_mode": "stream"}, workers=1
    )
    assert (memory.mode, stream.mode) == ("memory", "stream") and stream.info == memory.info
    for name in ("train", "val", "test"):
        held, streamed = getattr(memory, name), getattr(stream, name)
        assert streamed.images.shape == held.images.shape == (len(held), 3, 24, 24)
        assert torch.equal(held.images, streamed.images[:]), f"{name}: other pixels"
        assert torch.equal(held.targets, streamed.targets), f"{name}: other masks"
    shuffled = {}
    for data in (memory, stream):
        generator = torch.Generator().manual_seed(3)
        shuffled[data.mode] = batches(
            data.train, data.info, 4, shuffle=True, generator=generator,
            transform=joint_augmentation(crop=16),
        )  # fmt: skip
    assert [len(t) for _, t in shuffled["stream"]] == [4, 4, 1]
    for (a, ta), (b, tb) in zip(shuffled["memory"], shuffled["stream"], strict=True):
        assert a.shape[-1] == 16 and torch.equal(a, b) and torch.equal(ta, tb)


def test_auto_streams_a_segmentation_set_too_large_for_half_the_free_memory(tmp_path, monkeypatch):
    root = facade_pairs(tmp_path / "data")
    decoded = 13 * 4 * 24 * 24  # photos and masks of both splits at --img-size 24
    monkeypatch.setattr(base, "available_memory", lambda: 2 * decoded + 2)
    assert load_dataset("mini-facade", root, options={"img_size": 24}).mode == "memory"
    monkeypatch.setattr(base, "available_memory", lambda: 2 * decoded - 2)
    assert load_dataset("mini-facade", root, options={"img_size": 24}).mode == "stream"


def test_a_streamed_segmentation_set_checks_every_pair_before_training(tmp_path):
    root = facade_pairs(tmp_path / "data")
    bad = root / "mini-facade" / "train" / "f004.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(BadImage, match=f"{bad} is not a readable PNG mask"):
        load_dataset("mini-facade", root, options={"data_mode": "stream"})
    data = load_dataset("mini-facade", root, skip_bad=True, options={"data_mode": "stream"})
    assert len(data.train) + len(data.val) == 9 and data.skipped[0].startswith(str(bad))


def test_segfolder_streams_with_the_mean_and_std_memory_measures(tmp_path):
    write_facade_pairs(tmp_path / "mine", 10, size=40, num_classes=3)
    name = f"segfolder:{tmp_path / 'mine'}"
    found = {
        mode: load_dataset(name, options={"img_size": 20, "data_mode": mode})
        for mode in ("memory", "stream")
    }
    assert found["stream"].mode == "stream" and found["stream"].info == found["memory"].info
    assert found["stream"].info.num_classes == 3
    assert torch.equal(found["memory"].test.targets, found["stream"].test.targets)


def test_a_streamed_segmentation_run_trains_as_memory_does(tmp_path):
    root = facade_pairs(tmp_path / "data")
    recipe = ["train", "unet-small", "--data-dir", str(root), "--img-size", "24", "--epochs", "1"]
    recipe += ["--batch-size", "4", "--augment", "--crop-size", "16", "--seed", "2"]
    runs = {}
    for mode, extra in {"memory": [], "stream": ["--data-workers", "1"]}.items():
        args = [*recipe, "--data-mode", mode, *extra, "--out", str(tmp_path / mode)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        (runs[mode],) = run_folders(tmp_path / mode)
    record = json.loads((runs["stream"] / "metrics.json").read_text())
    assert record["input"]["data_mode"] == "stream" and record["input"]["image_size"] == [24, 24]
    expected, found = weights(runs["memory"]), weights(runs["stream"])
    assert all(torch.equal(expected[k], found[k]) for k in expected)
    memory = json.loads((runs["memory"] / "metrics.json").read_text())
    assert record["test"]["mean_ap"] == memory["test"]["mean_ap"]
    assert record["test"]["num_pixels"] == 3 * 24 * 24
