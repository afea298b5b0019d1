"""zoo.data.splits on small hand-made tensors: the seeded split, batches, shards and devices.

The meta device stands in for an accelerator: a tensor moved there says so in `.device`, so the
device moves are checked on a machine without a GPU.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from zoo.data import fashion_mnist, load_dataset
from zoo.data.base import Arrays, DatasetInfo, Files
from zoo.data.splits import (
    Split,
    Splits,
    iterate_batches,
    normalize,
    num_batches,
    shard_indices,
    slice_uint8_batches,
    to_split,
)
from zoo.data.streaming import FileSplit, FolderDataset, default_workers
from zoo.errors import ZooError

CPU, META = torch.device("cpu"), torch.device("meta")

RGB = DatasetInfo(
    name="three-channels",
    task="classification",
    class_names=("a", "b", "c"),
    in_chans=3,
    image_size=(4, 5),
    mean=(0.1, 0.5, 0.9),
    std=(0.2, 0.25, 0.5),
)

GREY = DatasetInfo("grey", "classification", tuple("abcde"), 1, (4, 4), (0.5,), (0.25,))


def numbered_split(count: int = 10, chans: int = 3) -> Split:
    """Image i is filled with the value i and its target is i: a batch says which it holds."""
    images = torch.arange(count, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, chans, 4, 5)
    return Split(images.contiguous(), torch.arange(count, dtype=torch.uint8))


def indices(batches) -> list[list[int]]:
    return [targets.tolist() for _, targets in batches]


def test_split_subset_length_bytes_and_device_move():
    split = numbered_split(10)
    assert len(split) == 10
    assert split.nbytes == 10 * 3 * 4 * 5 + 10
    part = split.subset(torch.tensor([7, 2]))
    assert part.targets.tolist() == [7, 2] and part.images[:, 0, 0, 0].tolist() == [7, 2]
    moved = split.to(META)
    assert moved.images.device == META and moved.targets.device == META
    assert moved.images.shape == split.images.shape and moved.targets.shape == (10,)


def test_splits_move_every_split_and_keep_what_was_skipped():
    train, val, test = numbered_split(6), numbered_split(3), numbered_split(2)
    splits = Splits(RGB, train, val, test, skipped=("bad.png: not an image",))
    assert splits.mode == "memory"
    moved = splits.to(META)
    assert moved.info is RGB and moved.skipped == ("bad.png: not an image",)
    assert [len(s) for s in (moved.train, moved.val, moved.test)] == [6, 3, 2]
    assert all(s.images.device == META for s in (moved.train, moved.val, moved.test))


def test_normalize_standardises_each_channel_with_its_own_mean_and_std():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 3, 2, 3)
    out = normalize(images, RGB)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 2, 3)
    for channel, (mean, std) in enumerate(zip(RGB.mean, RGB.std, strict=True)):
        expected = (np.array([0, 51, 255]) / 255 - mean) / std
        np.testing.assert_allclose(out[0, channel, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert normalize(images.to(META), RGB).device == META, "statistics made on the images' device"


@pytest.mark.parametrize("count", [1, 7, 10, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_shard_indices_take_what_distributed_sampler_takes(count, world_size):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(count))
    shares = [shard_indices(order, rank, world_size) for rank in range(world_size)]
    for rank, share in enumerate(shares):
        sampler = DistributedSampler(range(count), world_size, rank, shuffle=False)
        assert share.tolist() == order[list(sampler)].tolist()
    assert len({len(share) for share in shares}) == 1, "every rank steps the same number of times"
    assert set(torch.cat(shares).tolist()) == set(order.tolist())


def test_num_batches_counts_the_short_last_batch():
    assert [num_batches(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_unshuffled_batches_are_the_split_in_order_with_a_short_last_one():
    batches = list(slice_uint8_batches(numbered_split(10), 4, False, None, 0, 1))
    assert indices(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    for images, targets in batches:
        assert images.dtype == torch.uint8 and torch.equal(images[:, 0, 0, 0], targets)


def test_shuffled_batches_follow_the_generator_and_keep_images_with_their_targets():
    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return list(slice_uint8_batches(numbered_split(10), 4, True, generator, 0, 1))

    first, again, other = draw(3), draw(3), draw(4)
    expected = torch.randperm(10, generator=torch.Generator().manual_seed(3)).tolist()
    assert sum(indices(first), []) == expected
    assert indices(first) == indices(again) and indices(first) != indices(other)
    assert [len(t) for _, t in first] == [4, 4, 2]
    for images, targets in first:
        assert torch.equal(images[:, 0, 0, 0], targets)


def test_shuffled_batches_of_one_rank_are_its_shard_of_the_permutation():
    split, world_size = numbered_split(11), 3
    order = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    seen = []
    for rank in range(world_size):
        generator = torch.Generator().manual_seed(5)
        batches = slice_uint8_batches(split, 2, True, generator, rank, world_size)
        got = sum(indices(batches), [])
        assert got == shard_indices(order, rank, world_size).tolist()
        seen += got
    assert len(seen) == 12 and set(seen) == set(range(11)), "padded to a multiple of 3, all seen"


def test_iterate_batches_normalises_after_the_transform_on_the_device():
    calls = []

    def transform(images, targets, generator):
        calls.append((images.dtype, generator))
        return images.flip(-1), targets + 1

    generator = torch.Generator().manual_seed(0)
    split = numbered_split(5)
    split.images[:, :, :, 0] = 255  # the first column bright: the flip moves it to the last
    batches = list(
        iterate_batches(split, RGB, 2, device=CPU, shuffle=True, generator=generator,
                        transform=transform)
    )  # fmt: skip
    assert [dtype for dtype, _ in calls] == [torch.uint8] * 3, "the transform sees uint8"
    assert all(given is generator for _, given in calls)
    order = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    assert sum((t.tolist() for _, t in batches), []) == (order + 1).tolist()
    images, targets = batches[0]
    assert images.dtype == torch.float32 and targets.dtype == torch.long
    white = (1 - torch.tensor(RGB.mean)) / torch.tensor(RGB.std)
    torch.testing.assert_close(images[:, :, 0, -1], white.expand(2, 3))


def test_iterate_batches_in_channels_last_only_when_asked():
    split = numbered_split(4)
    plain = next(iterate_batches(split, RGB, 4, device=CPU))[0]
    last = next(iterate_batches(split, RGB, 4, device=CPU, channels_last=True))[0]
    assert plain.is_contiguous() and not plain.is_contiguous(memory_format=torch.channels_last)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(plain, last)


def test_iterate_batches_moves_images_and_targets_to_the_device():
    images, targets = next(iterate_batches(numbered_split(4), RGB, 4, device=META))
    assert images.device == META and targets.device == META and targets.dtype == torch.long


def write_pngs(folder, count: int) -> list:
    """PNGs of numbered_split's images (grey, 4x4): image i filled with 10 * i."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((4, 4), 10 * i, np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def test_to_split_holds_arrays_in_memory_and_lists_files_to_stream(tmp_path):
    images = np.zeros((3, 1, 4, 4), np.uint8)
    held = to_split(Arrays(images, np.array([0, 1, 2], np.uint8)), workers=2)
    assert isinstance(held, Split) and held.targets.tolist() == [0, 1, 2]
    held.images[0, 0, 0, 0] = 9
    assert images[0, 0, 0, 0] == 9, "no copy of the decoded arrays"

    paths = np.array(write_pngs(tmp_path, 3))
    streamed = to_split(Files(paths, np.array([2, 0, 1]), 4, 1, 0.875), workers=2)
    assert isinstance(streamed, FileSplit) and streamed.workers == 2
    data = streamed.dataset
    assert list(data.paths) == list(paths) and data.targets.tolist() == [2, 0, 1]
    assert (data.side, data.in_chans, data.crop_pct) == (4, 1, 0.875)


def test_streamed_batches_equal_the_in_memory_ones(tmp_path):
    paths = np.array(write_pngs(tmp_path, 5))
    targets = torch.arange(5)
    streamed = FileSplit(FolderDataset(paths, targets, 4, 1, 1.0), workers=0)
    held = Split(torch.stack([torch.full((1, 4, 4), 10 * i, dtype=torch.uint8) for i in range(5)]),
                 targets)  # fmt: skip
    for shuffle in (False, True):
        got = [
            list(iterate_batches(split, GREY, 2, device=CPU, shuffle=shuffle,
                                 generator=torch.Generator().manual_seed(1)))
            for split in (streamed, held)
        ]  # fmt: skip
        assert len(got[0]) == len(got[1]) == 3
        for (a_images, a_targets), (b_images, b_targets) in zip(*got, strict=True):
            assert torch.equal(a_targets, b_targets) and torch.equal(a_images, b_images)


def test_streamed_shards_cover_the_split(tmp_path):
    paths = np.array(write_pngs(tmp_path, 5))
    streamed = FileSplit(FolderDataset(paths, torch.arange(5), 4, 1, 1.0), workers=0)
    shares = [
        sum((t.tolist() for _, t in iterate_batches(
            streamed, GREY, 2, device=CPU, shuffle=True,
            generator=torch.Generator().manual_seed(1), rank=rank, world_size=2)), [])
        for rank in (0, 1)
    ]  # fmt: skip
    assert [len(share) for share in shares] == [3, 3]
    assert set(shares[0] + shares[1]) == set(range(5))


def raw_fashion_mnist(root, split):
    """The look-alike's official `split` ("train" or "test") as the IDX files hold it."""
    arrays = fashion_mnist.load(root, download=False)[split]
    return torch.from_numpy(arrays.images[:, 0]), torch.from_numpy(arrays.targets)


def test_load_dataset_carves_validation_with_the_split_seed_and_rounds_its_size(tiny_root):
    images, labels = raw_fashion_mnist(tiny_root, "train")
    data = load_dataset("fashion-mnist", tiny_root, val_fraction=1 / 3, split_seed=4)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(4))
    assert len(data.val) == 67, "round(200 / 3), not int()"
    assert torch.equal(data.val.images[:, 0], images[order[:67]])
    assert torch.equal(data.val.targets, labels[order[:67]])
    assert torch.equal(data.train.images[:, 0], images[order[67:]])
    assert torch.equal(data.train.targets, labels[order[67:]])
    test_images, _ = raw_fashion_mnist(tiny_root, "test")
    assert torch.equal(data.test.images[:, 0], test_images), "the test split is never shuffled"
    assert data.info.name == "fashion-mnist" and data.skipped == ()


def test_limit_train_keeps_the_first_shuffled_training_images(tiny_root):
    images, _ = raw_fashion_mnist(tiny_root, "train")
    data = load_dataset("fashion-mnist", tiny_root, val_fraction=0.1, split_seed=2, limit_train=7)
    order = torch.randperm(200, generator=torch.Generator().manual_seed(2))
    assert torch.equal(data.train.images[:, 0], images[order[20:27]])
    assert len(data.val) == 20, "the validation split does not shrink with it"


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_a_validation_fraction_outside_0_1_is_refused(tiny_root, fraction):
    with pytest.raises(ZooError, match=f"val_fraction must be between 0 and 1, got {fraction}"):
        load_dataset("fashion-mnist", tiny_root, val_fraction=fraction)


def write_image_folder(root, per_class: int = 4):
    for part in ("train", "val", "test"):
        for label in ("cat", "dog"):
            write_pngs(root / part / label, per_class)
    return root


def test_a_dataset_with_its_own_validation_split_keeps_it_and_limits_train_in_order(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    full = load_dataset(f"imagefolder:{root}", options={"data_mode": "memory"})
    assert (len(full.train), len(full.val), len(full.test)) == (8, 8, 8)
    limited = load_dataset(f"imagefolder:{root}", limit_train=3, options={"data_mode": "memory"})
    assert torch.equal(limited.train.images, full.train.images[:3])
    assert torch.equal(limited.val.images, full.val.images)


def test_streamed_folders_decode_in_the_workers_asked_or_the_default(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    options = {"data_mode": "stream"}
    default = load_dataset(f"imagefolder:{root}", options=options)
    assert default.mode == "stream" and default.train.workers == default_workers()
    none = load_dataset(f"imagefolder:{root}", options=options, workers=0)
    assert all(split.workers == 0 for split in (none.train, none.val, none.test))


def test_bad_files_left_out_on_request_are_listed(facade_root):
    photo = facade_root / "mini-facade" / "train" / "f003.jpg"
    photo.write_bytes(b"not a jpeg at all")
    with pytest.raises(ZooError, match="--skip-bad-samples"):
        load_dataset("mini-facade", facade_root)
    data = load_dataset("mini-facade", facade_root, skip_bad=True)
    assert len(data.train) + len(data.val) == 23
    assert len(data.skipped) == 1 and str(photo) in data.skipped[0]


def test_the_default_split_seed_is_0(tiny_root):
    def val_images(**seed):
        return load_dataset("fashion-mnist", tiny_root, **seed).val.images

    assert torch.equal(val_images(), val_images(split_seed=0))
    assert not torch.equal(val_images(), val_images(split_seed=1))


def test_download_off_reaches_the_loader(tmp_path, monkeypatch):
    def online(url, timeout=None):
        raise AssertionError(f"download=False fetched {url}")

    monkeypatch.setattr("urllib.request.urlopen", online)
    with pytest.raises(ZooError, match="missing from"):
        load_dataset("fashion-mnist", tmp_path, download=False)
