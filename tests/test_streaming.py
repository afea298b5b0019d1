"""--data-mode stream: the same pixels and batches as in memory, auto's choice, resume, errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_imagefolder import write_folder
from test_train import run_folders
from typer.testing import CliRunner

from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data import imagefolder, iterate_batches, load_dataset
from zoo.data.base import get_dataset
from zoo.data.images import BadImage
from zoo.data.streaming import FileSplit
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
    monkeypatch.setattr(imagefolder, "available_memory", lambda: 2 * decoded + 2)
    assert load(root, "auto").mode == "memory"
    imagefolder._imagefolder_entry.cache_clear()
    monkeypatch.setattr(imagefolder, "available_memory", lambda: 2 * decoded - 2)
    assert load(root, "auto").mode == "stream"
    assert load(root, "memory").mode == "memory", "--data-mode memory is obeyed"


def test_stream_on_a_named_dataset_and_negative_workers_are_one_sentence(tmp_path):
    with pytest.raises(ZooError, match="--data-mode stream is for imagefolder:PATH datasets"):
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
