"""Facade datasets: loading, the decoded cache, segfolder:PATH, and every kind of bad input."""

import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import write_facade_pairs
from PIL import Image

from zoo.data import facade, load_dataset, pairs
from zoo.errors import ZooError, ZooWarning
from zoo.plots import class_palette
from zoo.registry import DATASETS


def test_mini_facade_loads_as_uint8_tensors_with_a_seeded_val_split(facade_root):
    data = load_dataset("mini-facade", facade_root, val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    assert data.train.images.shape == (18, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.train.targets.shape == (18, 32, 32) and data.train.targets.dtype == torch.uint8
    assert int(data.train.targets.max()) <= 4 and data.skipped == ()
    again = load_dataset("mini-facade", facade_root, val_fraction=0.25)  # from the cache
    assert torch.equal(again.val.images, data.val.images)
    # Decoded or cached, the same memory layout (NCHW), or convolutions sum in another order.
    assert data.test.images.is_contiguous() and again.test.images.is_contiguous()
    assert data.info.palette[0] == (0, 0, 0) and len(data.info.palette) == 5


def cached_files(tmp_path) -> list:
    return sorted((tmp_path / "user-cache" / "zoo" / "decoded").glob("mini-facade-*.npz"))


def test_the_cache_is_reused_and_invalidated_when_a_file_changes(
    facade_root, tmp_path, monkeypatch
):
    load_dataset("mini-facade", facade_root)
    cached = cached_files(tmp_path)
    assert len(cached) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(pairs, "read_pair", no_decoding)
    load_dataset("mini-facade", facade_root)  # from the .npz files only

    monkeypatch.undo()
    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    photo = facade_root / "mini-facade" / "train" / "f000.jpg"
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    load_dataset("mini-facade", facade_root)
    after = cached_files(tmp_path)
    assert len(after) == 2 and after != cached, "the train cache was rebuilt, the stale one removed"


def tree(folder) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("mode", [0o555, 0o755], ids=["read-only", "writable"])
def test_the_data_folder_is_never_written(facade_root, tmp_path, mode):
    before = tree(facade_root)
    os.chmod(facade_root, mode)
    try:
        load_dataset("mini-facade", facade_root)
    finally:
        os.chmod(facade_root, 0o755)
    assert tree(facade_root) == before, "nothing added, changed or removed in the data folder"
    assert len(cached_files(tmp_path)) == 2, "the decode cache is in the user's cache folder"


def test_zoo_cache_chooses_the_cache_folder(facade_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "elsewhere"))
    load_dataset("mini-facade", facade_root)
    assert len(list((tmp_path / "elsewhere" / "decoded").glob("*.npz"))) == 2
    assert cached_files(tmp_path) == []


def test_an_unwritable_cache_folder_warns_once_and_goes_on(facade_root, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ZOO_CACHE", str(blocker / "zoo"))  # cannot be made, even by root
    monkeypatch.setattr(pairs, "WARNED", set())
    with pytest.warns(ZooWarning) as caught:
        first = load_dataset("mini-facade", facade_root)
        again = load_dataset("mini-facade", facade_root)
    assert len(caught) == 1, "one warning, not one per split or per load"
    message = str(caught[0].message)
    assert f"The cache folder {blocker / 'zoo' / 'decoded'} cannot be written" in message
    assert "set ZOO_CACHE to a writable folder" in message
    assert torch.equal(first.train.images, again.train.images), "decoded without a cache"


def break_one(root, how):
    """Damage the pair f003 of the train folder in one of the ways a user's data goes wrong."""
    folder = root / "mini-facade" / "train"
    photo, mask = folder / "f003.jpg", folder / "f003.png"
    if how == "size":
        Image.fromarray(np.zeros((20, 32), np.uint8), mode="L").save(mask)
        return mask, "is 32x32 but its mask"
    if how == "values":
        Image.fromarray(np.full((32, 32), 7, np.uint8), mode="L").save(mask)
        return mask, "values 7 outside the class ids 0-4"
    if how == "missing":
        mask.unlink()
        return mask, "is missing"
    if how == "truncated":
        photo.write_bytes(photo.read_bytes()[:300])
        return photo, "not a readable image"
    if how == "garbage":
        photo.write_bytes(b"not a jpeg at all")
        return photo, "not a readable image"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["size", "values", "missing", "truncated", "garbage"])
def test_a_bad_pair_is_an_error_naming_the_file_or_skipped_on_request(facade_root, how):
    culprit, message = break_one(facade_root, how)
    with pytest.raises(ZooError) as error:
        load_dataset("mini-facade", facade_root)
    assert str(culprit) in str(error.value) and message in str(error.value)
    assert "--skip-bad-samples" in str(error.value)
    assert (facade_root / "mini-facade" / "train" / "f000.jpg").exists(), "nothing deleted"

    data = load_dataset("mini-facade", facade_root, skip_bad=True)
    assert len(data.train) + len(data.val) == 23
    assert len(data.skipped) == 1 and str(culprit) in data.skipped[0]


def test_an_empty_folder_is_an_error_naming_it(facade_root):
    empty = facade_root / "mini-facade" / "test_dev"
    for path in empty.iterdir():
        path.unlink()
    with pytest.raises(ZooError, match=str(empty)):
        load_dataset("mini-facade", facade_root)


def test_a_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(ZooError) as info:
        load_dataset("mini-facade", tmp_path)
    message = str(info.value)
    folder = tmp_path / "mini-facade"
    assert f"Mini Facade is not in {folder} (it has no public download)" in message
    for fix in ("train/ and test_dev/", "ZOO_DATA", "--data-dir"):
        assert fix in message, f"the message names {fix}"
    assert "\n" not in message and message.endswith("."), "one sentence"
    assert not folder.exists(), "no empty folder is left behind"


def test_cmp_facade_maps_ids_1_to_12_and_splits_with_a_fixed_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    folder = tmp_path / "cmp-facade"
    write_facade_pairs(folder / "images", 20, num_classes=12, offset=1)
    (folder / "labels").mkdir()
    for mask in (folder / "images").glob("*.png"):
        mask.rename(folder / "labels" / mask.name)
    data = load_dataset("cmp-facade", tmp_path)
    assert (len(data.train), len(data.val), len(data.test)) == (14, 2, 4)
    labels = torch.cat([data.train.targets, data.val.targets, data.test.targets])
    assert int(labels.min()) == 0 and int(labels.max()) <= 11
    assert data.info.num_classes == 12 and data.info.class_names[-1] == "shop"
    assert torch.equal(load_dataset("cmp-facade", tmp_path).test.images, data.test.images)


def test_cmp_facade_without_files_or_network_is_one_clear_error(tmp_path, monkeypatch):
    def offline(url, dest, md5=None):
        raise OSError("no network")

    monkeypatch.setattr(facade, "download", offline)
    with pytest.raises(ZooError, match="could not be downloaded"):
        load_dataset("cmp-facade", tmp_path)


def write_cmp_source(folder, count):
    """`count` photo/label pairs named like the base set's (cmp_b0001.jpg + cmp_b0001.png)."""
    write_facade_pairs(folder, count, num_classes=12, offset=1)
    for path in folder.iterdir():
        path.rename(folder / f"cmp_b{int(path.stem[1:]) + 1:04d}{path.suffix}")


def fake_cmp_download(source, monkeypatch):
    """Make `download` write a zip of `source`'s files laid out as the official archive."""

    def fetch(url, dest, md5=None):
        assert url == facade.CMP_URL
        dest.parent.mkdir(parents=True, exist_ok=True)  # as the real download does
        with zipfile.ZipFile(dest, "w") as archive:
            for path in sorted(source.iterdir()):
                archive.write(path, f"base/{path.name}")
            archive.writestr("base/readme.txt", "CMP Facade Database")

    monkeypatch.setattr(facade, "download", fetch)


def test_cmp_facade_is_downloaded_unpacked_and_verified(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    write_cmp_source(tmp_path / "source", 10)
    fake_cmp_download(tmp_path / "source", monkeypatch)
    reference = tmp_path / "reference"
    (reference / "images").mkdir(parents=True)
    (reference / "labels").mkdir()
    for path in (tmp_path / "source").iterdir():
        sub = "images" if path.suffix == ".jpg" else "labels"
        (reference / sub / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(facade, "CMP_DIGEST", facade.cmp_digest(reference))

    data = load_dataset("cmp-facade", tmp_path / "data")
    assert len(data.train) + len(data.val) + len(data.test) == 10
    assert not (tmp_path / "data" / "cmp-facade" / "CMP_facade_DB_base.zip").exists()


def test_a_cmp_download_that_differs_from_the_official_files_is_rejected(tmp_path, monkeypatch):
    write_cmp_source(tmp_path / "source", 3)
    fake_cmp_download(tmp_path / "source", monkeypatch)
    with pytest.raises(ZooError, match="differ from the 378 official"):
        load_dataset("cmp-facade", tmp_path / "data")


def test_segfolder_infers_the_classes_and_carves_a_test_split(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    write_facade_pairs(tmp_path / "mine", 10, num_classes=3)
    name = f"segfolder:{tmp_path / 'mine'}"
    info = DATASETS.get(name).info
    assert info.num_classes == 3 and info.task == "segmentation"
    assert info.palette is None and len(class_palette(info)) == 3  # figures' default colours
    data = load_dataset(name, val_fraction=0.2)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 2)


def test_segfolder_reads_class_names_and_train_test_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(pairs, "SIZE", (32, 32))
    write_facade_pairs(tmp_path / "mine" / "train", 6, num_classes=2)
    write_facade_pairs(tmp_path / "mine" / "test", 3, num_classes=2, seed=1)
    (tmp_path / "mine" / "classes.txt").write_text("sky\nwall\nroof\n")
    data = load_dataset(f"segfolder:{tmp_path / 'mine'}", val_fraction=0.3)
    assert data.info.class_names == ("sky", "wall", "roof") and len(data.test) == 3
    (tmp_path / "mine" / "classes.txt").write_text("sky\nwall\nroof\nchimney\n")
    info = DATASETS.get(f"segfolder:{tmp_path / 'mine'}").info
    assert info.num_classes == 4, "an edited folder is read again, not served from memory"


def test_segfolder_of_a_missing_path_is_one_clear_error(tmp_path):
    with pytest.raises(ZooError, match="is not a folder"):
        DATASETS.get(f"segfolder:{tmp_path / 'nope'}")


def test_img_size_resizes_the_files_from_their_own_size_with_a_cache_per_size(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("ZOO_CACHE", raising=False)
    root = tmp_path / "data"
    write_facade_pairs(root / "mini-facade" / "train", 8, size=64, seed=0)
    write_facade_pairs(root / "mini-facade" / "test_dev", 2, size=64, seed=1)
    default = load_dataset("mini-facade", root)
    assert default.info.image_size == pairs.SIZE == (256, 256)
    assert default.test.images.shape == (2, 3, 256, 256)
    data = load_dataset("mini-facade", root, options={"img_size": 48})
    assert data.info.image_size == (48, 48) and data.info.mean == default.info.mean
    assert data.test.images.shape == (2, 3, 48, 48) and data.test.targets.shape == (2, 48, 48)
    photo = root / "mini-facade" / "test_dev" / "f000.jpg"
    expected = Image.open(photo).convert("RGB").resize((48, 48), Image.BILINEAR)
    assert np.array_equal(data.test.images[0].permute(1, 2, 0).numpy(), np.asarray(expected))
    mask = np.asarray(Image.open(photo.with_suffix(".png")).resize((48, 48), Image.NEAREST))
    assert np.array_equal(data.test.targets[0].numpy(), mask), "masks: nearest, ids kept"
    assert len(cached_files(tmp_path)) == 4, "one cache file per split and size"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although each size has its cache")

    monkeypatch.setattr(pairs, "read_pair", no_decoding)
    again = load_dataset("mini-facade", root, options={"img_size": 48})
    assert torch.equal(again.test.images, data.test.images)
    assert load_dataset("mini-facade", root).test.images.shape[-1] == 256


def test_the_segmentation_sets_take_img_size_and_keep_their_entry_at_their_own():
    from zoo.data import get_dataset_info

    assert get_dataset_info("cmp-facade", img_size=512).image_size == (512, 512)
    assert get_dataset_info("cmp-facade", img_size=256) is get_dataset_info("cmp-facade")


def test_segfolder_takes_img_size_and_measures_its_mean_and_std_at_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    write_facade_pairs(tmp_path / "mine", 10, size=40, num_classes=3)
    name = f"segfolder:{tmp_path / 'mine'}"
    data = load_dataset(name, val_fraction=0.2, options={"img_size": 20})
    assert data.info.image_size == (20, 20) and data.train.images.shape == (6, 3, 20, 20)
    # The folder has no train/ and test/: its stats are those of all its photos.
    everything = torch.cat([data.train.images, data.val.images, data.test.images]).double() / 255
    assert data.info.mean == pytest.approx(everything.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert data.info.std == pytest.approx(everything.std((0, 2, 3), correction=0).tolist())
    assert DATASETS.get(name).info.image_size == pairs.SIZE, "the default size is unchanged"
