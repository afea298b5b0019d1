import gzip
import io
import urllib.error

import numpy as np
import pytest
import torch
from conftest import md5, needs_real_data, real_data_root, write_idx

from zoo.data import fashion_mnist, load_dataset, resolve_data_root
from zoo.data.splits import normalize
from zoo.data.transforms import random_crop_flip
from zoo.errors import ZooError


def test_read_idx_round_trip(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    write_idx(tmp_path / "x.gz", images)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "x.gz"), images)


def test_load_tiny_dataset_splits(tiny_root):
    data = load_dataset("fashion-mnist", tiny_root)
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 50)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)
    assert data.train.targets.dtype == torch.uint8
    assert data.info.num_classes == 10 and data.info.class_names[6] == "Shirt"


def test_validation_split_is_seeded_and_disjoint(tiny_root):
    a = load_dataset("fashion-mnist", tiny_root, split_seed=0)
    b = load_dataset("fashion-mnist", tiny_root, split_seed=0)
    c = load_dataset("fashion-mnist", tiny_root, split_seed=1)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    train_rows = {bytes(x.flatten().tolist()) for x in a.train.images}
    assert not any(bytes(x.flatten().tolist()) in train_rows for x in a.val.images)


def test_limit_train(tiny_root):
    data = load_dataset("fashion-mnist", tiny_root, limit_train=32)
    assert len(data.train) == 32 and len(data.val) == 20


def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "flag") == tmp_path / "flag"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("ZOO_DATA")
    monkeypatch.delenv("ZOO_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root(None) == tmp_path / "cache" / "zoo" / "data"


def test_bad_md5_names_the_file(tiny_root):
    path = tiny_root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ZooError, match="train-labels-idx1-ubyte.gz has MD5"):
        load_dataset("fashion-mnist", tiny_root)


def rewrite_with_md5(monkeypatch, path, writer):
    """Replace a file of the tiny set and accept its new MD5, so the parser's checks are reached."""
    writer(path)
    monkeypatch.setitem(fashion_mnist.FILES, path.name, md5(path))


def test_wrong_magic_names_the_file(tiny_root, monkeypatch):
    path = tiny_root / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    rewrite_with_md5(monkeypatch, path, lambda p: write_idx(p, np.zeros((50, 28, 28)), magic=1234))
    with pytest.raises(ZooError, match=r"t10k-images-idx3-ubyte.gz has magic number 1234"):
        load_dataset("fashion-mnist", tiny_root)


def test_truncated_file_names_the_file(tiny_root, monkeypatch):
    path = tiny_root / "fashion-mnist" / "train-images-idx3-ubyte.gz"

    def truncate(p):
        raw = gzip.decompress(p.read_bytes())
        p.write_bytes(gzip.compress(raw[:-100]))

    rewrite_with_md5(monkeypatch, path, truncate)
    with pytest.raises(ZooError, match=r"train-images-idx3-ubyte.gz does not hold .* truncated"):
        load_dataset("fashion-mnist", tiny_root)


def test_overlong_file_names_the_file(tiny_root, monkeypatch):
    path = tiny_root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"

    def append_a_byte(p):
        p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes()) + b"x"))

    rewrite_with_md5(monkeypatch, path, append_a_byte)
    with pytest.raises(ZooError, match=r"t10k-labels-idx1-ubyte.gz does not hold"):
        load_dataset("fashion-mnist", tiny_root)


def test_cut_gzip_stream_names_the_file(tiny_root, monkeypatch):
    path = tiny_root / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    rewrite_with_md5(monkeypatch, path, lambda p: p.write_bytes(p.read_bytes()[:500]))
    with pytest.raises(ZooError, match=r"train-images-idx3-ubyte.gz is not a readable gzip"):
        load_dataset("fashion-mnist", tiny_root)


def test_image_and_label_counts_must_match(tiny_root, monkeypatch):
    path = tiny_root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    rewrite_with_md5(monkeypatch, path, lambda p: write_idx(p, np.zeros(49)))
    with pytest.raises(
        ZooError, match="t10k-images-idx3-ubyte.gz and its labels file do not match"
    ):
        load_dataset("fashion-mnist", tiny_root)


def test_missing_files_without_network(tmp_path, monkeypatch):
    calls = []

    def offline(url, timeout=None):
        calls.append(timeout)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ZooError) as info:
        load_dataset("fashion-mnist", tmp_path)
    message = str(info.value)
    for needle in (
        "train-images-idx3-ubyte.gz",
        str(tmp_path / "fashion-mnist"),
        "ZOO_DATA",
        "--data-dir",
    ):
        assert needle in message
    assert "no network" in message
    assert calls and all(t is not None and t <= 60 for t in calls), "downloads must time out"
    assert not list((tmp_path / "fashion-mnist").glob("*")), "nothing half-downloaded is left"


def test_missing_files_with_download_off(tmp_path):
    with pytest.raises(ZooError, match="missing from .*ZOO_DATA"):
        load_dataset("fashion-mnist", tmp_path, download=False)


class FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_download_fetches_and_verifies(tiny_root, tmp_path, monkeypatch):
    source = tiny_root / "fashion-mnist"
    served = []

    def fake_urlopen(url, timeout=None):
        name = url.rsplit("/", 1)[1]
        served.append(name)
        return FakeResponse((source / name).read_bytes())

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    root = tmp_path / "fresh"
    data = load_dataset("fashion-mnist", root)
    assert sorted(served) == sorted(fashion_mnist.FILES)
    assert len(data.test) == 50
    assert sorted(p.name for p in (root / "fashion-mnist").iterdir()) == sorted(fashion_mnist.FILES)


def test_download_with_bad_md5_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=None: FakeResponse(b"junk"))
    with pytest.raises(ZooError, match="could not be downloaded.*expected"):
        load_dataset("fashion-mnist", tmp_path)
    assert not list((tmp_path / "fashion-mnist").glob("*"))


def test_random_crop_flip_keeps_shape_and_content():
    images = torch.randint(0, 255, (16, 1, 28, 28), dtype=torch.uint8)
    targets = torch.arange(16)
    generator = torch.Generator().manual_seed(0)
    out, out_targets = random_crop_flip(padding=2)(images, targets, generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out_targets, targets)
    same, _ = random_crop_flip(padding=0, flip=False)(images, targets, generator)
    assert torch.equal(same, images)
    flipped, _ = random_crop_flip(padding=0, flip=True)(images, targets, generator)
    for original, result in zip(images, flipped, strict=True):
        assert torch.equal(result, original) or torch.equal(result, original.flip(2))
    shifted, _ = random_crop_flip(padding=2, flip=False)(images, targets, generator)
    assert not torch.equal(shifted, images)  # 16 crops all at offset (2, 2) has odds 25**-16


def test_normalize_uses_dataset_statistics(tiny_root):
    data = load_dataset("fashion-mnist", tiny_root)
    x = normalize(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8), data.info)
    torch.testing.assert_close(x, torch.full_like(x, (1 - 0.2860) / 0.3530))


@needs_real_data
def test_real_fashion_mnist():
    data = load_dataset("fashion-mnist", real_data_root())
    assert (len(data.train), len(data.val), len(data.test)) == (54000, 6000, 10000)
    train_and_val = torch.cat([data.train.targets, data.val.targets])
    assert torch.bincount(train_and_val.long()).tolist() == [6000] * 10
    assert torch.bincount(data.test.targets.long()).tolist() == [1000] * 10
    total = data.train.nbytes + data.val.nbytes + data.test.nbytes
    assert total <= 60e6, f"in-memory dataset is {total / 1e6:.1f} MB"
    mean = torch.cat([data.train.images, data.val.images]).float().mean().item() / 255
    assert abs(mean - 0.2860) < 1e-3
