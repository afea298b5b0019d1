"""Property-based tests (hypothesis) for everything zoo parses from disk: whatever the bytes,
the result is the data, a clear ZooError naming the file, or a skipped-and-reported sample;
never a traceback, and never a changed file. And a full disk during a write."""

import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import COMMITTED_BASELINE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file, save_file

from zoo import results
from zoo.checkpoint import CheckpointError, load_training_state, load_weights
from zoo.config import TrainConfig
from zoo.data import pairs
from zoo.data.fashion_mnist import read_idx
from zoo.data.images import BadImage
from zoo.errors import ZooError
from zoo.registry import create_model
from zoo.runtime import place_model
from zoo.train import make_trainer

PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def cut(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


# ----------------------------------------------------------------------------- IDX files


def valid_idx() -> bytes:
    labels = np.arange(12, dtype=np.uint8) % 10
    header = (2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    return header + labels.tobytes()


@PROPERTY
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        st.builds(cut, st.just(valid_idx()), st.floats(0, 1)),
        st.builds(lambda b, x: b[:8] + x, st.just(valid_idx()), st.binary(max_size=32)),
    ),
    gzipped=st.booleans(),
)
def test_any_bytes_as_an_idx_file_are_an_array_or_one_clear_error(tmp_path, raw, gzipped):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    before = snapshot(tmp_path)
    try:
        array = read_idx(path)
    except ZooError as error:
        assert str(path) in str(error)
    else:  # the bytes happened to be a whole IDX file: its header and its length agree
        assert array.dtype == np.uint8 and array.size == len(raw) - 4 - 4 * array.ndim
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- photos and masks


def encoded(kind: str) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    if kind == "jpeg":
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    else:
        Image.fromarray(rng.integers(0, 5, (16, 16), dtype=np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


@PROPERTY
@given(
    which=st.sampled_from(["photo", "mask"]),
    raw=st.one_of(
        st.binary(max_size=256),
        st.builds(cut, st.sampled_from([encoded("jpeg"), encoded("png")]), st.floats(0, 0.99)),
    ),
)
def test_any_bytes_as_a_photo_or_mask_are_a_pair_or_a_reported_bad_sample(
    tmp_path, monkeypatch, which, raw
):
    monkeypatch.setattr(pairs, "SIZE", (16, 16))
    photo, mask = tmp_path / "x.jpg", tmp_path / "x.png"
    photo.write_bytes(encoded("jpeg"))
    mask.write_bytes(encoded("png"))
    culprit = photo if which == "photo" else mask
    culprit.write_bytes(raw)
    before = snapshot(tmp_path)
    try:
        image, labels = pairs.read_pair(photo, mask, num_classes=5)
    except BadImage as error:
        assert str(culprit) in str(error)
        # ... and in a dataset, the pair is left out and reported in one sentence.
        decoded = pairs.decode_files([(photo, mask)], num_classes=5, offset=0)
        assert decoded.names == [] and str(culprit) in decoded.skipped[0]
    else:
        assert image.shape == (3, 16, 16) and labels.shape == (16, 16) and labels.max() < 5
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    model = create_model("baseline-cnn")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path.read_bytes()


@PROPERTY
@given(
    how=st.sampled_from(["random", "truncated", "flipped"]),
    fraction=st.floats(0, 1),
    noise=st.binary(min_size=1, max_size=256),
)
def test_any_bytes_as_a_checkpoint_load_or_fail_naming_the_file(
    tmp_path, weights_file, how, fraction, noise
):
    if how == "random":
        raw = noise
    elif how == "truncated":
        raw = cut(weights_file, fraction)
    else:  # one byte of the header changed
        index = int(fraction * min(len(weights_file) - 1, 200))
        flipped = bytes([weights_file[index] ^ noise[0]])
        raw = weights_file[:index] + flipped + weights_file[index + 1 :]
    path = tmp_path / "best.safetensors"
    path.write_bytes(raw)
    model = create_model("baseline-cnn")
    try:
        load_weights(model, path, "baseline-cnn", what="Checkpoint")
    except CheckpointError as error:
        assert str(path) in str(error)
    else:
        assert raw == weights_file or all(torch.isfinite(p).all() for p in model.parameters())
    assert path.read_bytes() == raw


@pytest.fixture(scope="module")
def trainer():
    config = TrainConfig(model="baseline-cnn")
    model = place_model(create_model("baseline-cnn"), torch.device("cpu"), False)
    return make_trainer(
        config, model, device=torch.device("cpu"), precision=results_fp32(), steps_per_epoch=2
    )


def results_fp32():
    from zoo.runtime import Precision

    return Precision(None, "fp32")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@PROPERTY
@given(
    document=st.one_of(
        json_values.map(json.dumps),
        st.text(max_size=64),
        st.fixed_dictionaries(
            {
                "optimizer": json_values,
                "scheduler": json_values,
                "scaler": json_values,
                "rng": json_values,
                "progress": json_values,
            }
        ).map(json.dumps),  # fmt: skip
    )
)
def test_any_training_state_json_loads_or_fails_naming_the_file(tmp_path, trainer, document):
    path = tmp_path / "train_state.safetensors"
    tensors = {f"model.{k}": v.contiguous() for k, v in trainer.model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "zoo-training-state/1", "state": document})
    raw = path.read_bytes()
    with pytest.raises(CheckpointError, match=str(path)):
        load_training_state(path, trainer, torch.Generator())
    assert path.read_bytes() == raw


# ----------------------------------------------------------------------------- run records


@pytest.fixture(scope="module")
def record_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a real run record: the committed baseline-cnn run's."""
    names = ("config.json", "metrics.json")
    return {name: (COMMITTED_BASELINE / name).read_bytes() for name in names}


@PROPERTY
@given(
    name=st.sampled_from(["config.json", "metrics.json", "history.csv"]),
    content=st.one_of(
        json_values.map(lambda v: json.dumps(v).encode()),
        st.binary(max_size=128),
        st.floats(0, 1),
    ),
)
def test_any_run_record_reads_or_is_skipped_with_a_warning(tmp_path, record_files, name, content):
    root = Path(tempfile.mkdtemp(dir=tmp_path))  # one folder per example
    run_dir = root / "runs" / "fashion-mnist" / "baseline-cnn" / "x"
    run_dir.mkdir(parents=True)
    for file, data in record_files.items():
        (run_dir / file).write_bytes(data)
    original = record_files.get(name, b"epoch,train_loss\n1,0.5\n")
    raw = cut(original, content) if isinstance(content, float) else content
    (run_dir / name).write_bytes(raw)
    before = snapshot(run_dir)
    try:
        record = results.read_record(run_dir)
    except ZooError as error:
        assert str(run_dir) in str(error)
        records, warnings = results.load_runs(root / "runs")
        assert records == [] and len(warnings) == 1 and str(run_dir) in warnings[0]
    else:
        assert record.model == "baseline-cnn"
    assert snapshot(run_dir) == before


# ----------------------------------------------------------------------------- a full disk

FULL_DISK = """
import json, resource, signal, sys
from zoo.data import fashion_mnist
from zoo.config import TrainConfig
from zoo.errors import ZooError
from zoo.run import train_run
from zoo.train import Callback

fashion_mnist.FILES = json.loads(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

class DiskFullFromEpoch2(Callback):
    def on_epoch_start(self, loop):
        if loop.epoch == 1:  # no file may grow beyond 4 kB from now on
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))

try:
    train_run(TrainConfig(**json.loads(sys.argv[2])), callbacks=[DiskFullFromEpoch2()])
except ZooError as error:
    print(error, file=sys.stderr)
    sys.exit(1)
"""


def test_a_full_disk_during_a_write_keeps_the_previous_file_and_says_so(tiny_root, tmp_path):
    from test_resume import fashion_mnist_files

    config = {"model": "baseline-cnn", "epochs": 3, "data_dir": str(tiny_root)}
    config["out"] = str(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    files = json.dumps(fashion_mnist_files(tiny_root))
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, files, json.dumps(config)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    (run_dir,) = [p for p in tmp_path.glob("*/*/*") if p.is_dir()]
    assert f"Could not write {run_dir / 'last.safetensors'} (File too large" in proc.stderr
    assert "its previous version is intact" in proc.stderr and "Traceback" not in proc.stderr
    # The epoch-1 files are whole and nothing half-written is left.
    for name in ("last.safetensors", "train_state.safetensors"):
        assert load_file(run_dir / name)
    assert results.read_record(run_dir).epochs_completed == 1
    assert not list(run_dir.glob(".*.tmp"))
