"""imagefolder:PATH: layout, splits, channels, normalisation, every kind of bad input, and the
commands on a run trained on it."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zoo import bench
from zoo.cli import app
from zoo.config import TrainConfig, default_eval_batch
from zoo.data import base, imagefolder, load_dataset
from zoo.data.base import get_dataset_info, run_data_options
from zoo.data.images import read_image, read_square
from zoo.data.transforms import random_resized_crop_flip
from zoo.errors import ZooError
from zoo.registry import create_model

runner = CliRunner()
CLASSES = ("cat", "dog", "owl")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Decode caches go to this test's folder (and never into the data folder)."""
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    imagefolder._imagefolder_entry.cache_clear()


def photo(side: tuple[int, int], label: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A photo whose class is its colour: red, green or blue, plus noise."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(side[1], side[0], 3))
    pixels[..., label % 3] += 180
    return Image.fromarray(pixels.astype(np.uint8)).convert(mode)


def write_folder(
    root: Path, per_class: int = 4, classes=CLASSES, grey: bool = False, mixed: bool = True
) -> Path:
    """A folder per class of 12-40 px photos of mixed sizes; with `mixed`, one grey one in the
    first class (else all RGB), or all grey with `grey`."""
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            size = (12 + 7 * i % 29, 14 + 5 * i % 27)
            mode = "L" if grey or (mixed and label == 0 and i == 0) else "RGB"
            photo(size, label, 10 * label + i, mode).save(root / name / f"{i}.png")
    return root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_classes_are_the_sorted_folders_and_a_seeded_test_split_is_carved(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=6, classes=("owl", "cat", "dog"))
    before = listing(root)
    name = f"imagefolder:{root}"
    data = load_dataset(name, options={"val_fraction": 0.2, "split_seed": 3})
    assert data.info.class_names == ("cat", "dog", "owl") and data.info.task == "classification"
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 4)
    assert data.info.in_chans == 3, "one RGB image makes the dataset RGB"
    side = data.info.image_size[0]
    assert 12 <= side <= 40 and data.train.images.shape[1:] == (3, side, side)
    again = load_dataset(name, options={"val_fraction": 0.2, "split_seed": 3})
    other = load_dataset(name, options={"val_fraction": 0.2, "split_seed": 4})
    assert torch.equal(again.test.images, data.test.images)
    assert not torch.equal(other.test.images, data.test.images), "--split-seed picks the split"
    assert listing(root) == before, "nothing is written into the data folder"
    assert list((tmp_path / "cache" / "decoded").glob("imagefolder-*.npz"))
    # Every image is in exactly one split.
    everything = torch.cat([data.train.images, data.val.images, data.test.images])
    assert len({bytes(image.numpy()) for image in everything}) == 18


def test_grey_folders_have_one_channel_unless_the_model_takes_rgb(tmp_path):
    root = write_folder(tmp_path / "grey", grey=True)
    name = f"imagefolder:{root}"
    assert get_dataset_info(name, img_size=16).in_chans == 1
    data = load_dataset(name, options={"img_size": 16, "rgb": True})
    assert data.info.in_chans == 3 and data.train.images.shape[1:] == (3, 16, 16)
    assert torch.equal(data.train.images[:, 0], data.train.images[:, 2]), "grey, replicated"


def test_mean_and_std_come_from_the_training_split_or_imagenet(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=5)
    data = load_dataset(f"imagefolder:{root}", options={"img_size": 12})
    pixels = data.train.images.double() / 255
    assert np.allclose(data.info.mean, pixels.mean((0, 2, 3)), atol=1e-6)
    assert np.allclose(data.info.std, pixels.std((0, 2, 3), unbiased=False), atol=1e-6)
    assert data.info.normalisation == "training split"
    imagenet = get_dataset_info(f"imagefolder:{root}", img_size=12, imagenet_stats=True)
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.normalisation == "ImageNet"


def test_train_val_test_folders_are_used_as_they_are(tmp_path):
    write_folder(tmp_path / "f" / "train", per_class=3)
    write_folder(tmp_path / "f" / "val", per_class=2, mixed=False)
    write_folder(tmp_path / "f" / "test", per_class=1, classes=("cat", "owl"), mixed=False)
    data = load_dataset(f"imagefolder:{tmp_path / 'f'}", options={"img_size": 12})
    assert (len(data.train), len(data.val), len(data.test)) == (9, 6, 2)
    assert data.test.targets.tolist() == [0, 2], "test's classes are train's ids"


def test_img_size_resizes_the_shorter_side_and_centre_crops_as_timm_evaluates(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, 20:40] = 255  # a white middle third: all the centre crop sees
    Image.fromarray(pixels).save(path)
    sample = read_square(path, 16, "RGB")
    assert sample.shape == (3, 16, 16) and sample.min() > 200


@pytest.mark.parametrize("mode", ["memory", "stream"])
def test_crop_pct_1_takes_images_of_the_sample_size_pixel_for_pixel(tmp_path, mode):
    root = tmp_path / "f"
    write_folder(root / "train", per_class=2, grey=True)
    write_folder(root / "test", per_class=1, grey=True)
    for file in root.rglob("*.png"):  # all 16x16, the sample size
        Image.open(file).resize((16, 16)).save(file)
    stored = [np.asarray(Image.open(root / "test" / c / "0.png"))[None] for c in sorted(CLASSES)]
    options = {"img_size": 16, "data_mode": mode}
    exact = load_dataset(f"imagefolder:{root}", options={**options, "crop_pct": 1.0}, workers=0)
    resized = load_dataset(f"imagefolder:{root}", options=options, workers=0)
    assert (exact.info.crop_pct, resized.info.crop_pct) == (1.0, 0.875)
    assert torch.equal(exact.test.images[:], torch.from_numpy(np.stack(stored)))
    assert not torch.equal(resized.test.images[:], exact.test.images[:])
    with pytest.raises(ZooError, match="--crop-pct is for imagefolder:PATH datasets"):
        get_dataset_info("fashion-mnist", crop_pct=1.0)
    with pytest.raises(ZooError, match=r"--crop-pct must be in \(0, 1\], got 1.5"):
        TrainConfig(model="baseline-cnn", crop_pct=1.5)


def test_augment_is_a_seeded_random_resized_crop_and_flip(tmp_path):
    images = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    transform = random_resized_crop_flip()
    first, _ = transform(images, torch.zeros(4), torch.Generator().manual_seed(0))
    second, _ = transform(images, torch.zeros(4), torch.Generator().manual_seed(0))
    assert first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(first, second) and not torch.equal(first, images)


@pytest.mark.parametrize("name", ["baseline-cnn", "wide-leaky-cnn"])
@pytest.mark.parametrize(("in_chans", "side"), [(1, 12), (3, 40), (3, 64)])
def test_from_scratch_classifiers_adapt_to_the_folder_s_size_and_channels(name, in_chans, side):
    model = create_model(name, num_classes=3, in_chans=in_chans).eval()
    assert model(torch.rand(2, in_chans, side, side)).shape == (2, 3)


def test_timm_and_smp_models_get_three_channels_and_imagenet_statistics_with_imagenet():
    timm_options = run_data_options(TrainConfig("timm/resnet18", imagenet=True, img_size=32))
    assert timm_options["rgb"] and timm_options["imagenet_stats"] and timm_options["img_size"] == 32
    assert not run_data_options(TrainConfig("baseline-cnn"))["rgb"]


# ----------------------------------------------------------------------------- bad input


def load(root: Path, **options):
    return load_dataset(f"imagefolder:{root}", options={"img_size": 12, **options})


def test_an_empty_class_folder_names_it_and_skip_bad_samples_leaves_it_out(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "emu").mkdir()
    with pytest.raises(ZooError, match=r"emu is an empty class folder; put .* or delete it"):
        load(root)
    data = load(root, skip_bad=True)
    assert data.info.class_names == CLASSES
    assert len(data.skipped) == 1 and "emu is an empty class folder" in data.skipped[0]


def test_a_single_class_is_one_sentence_asking_for_more(tmp_path):
    root = write_folder(tmp_path / "pets", classes=("cat",))
    with pytest.raises(ZooError, match=r"has one class folder \(cat\); a classifier needs two"):
        load(root)


def bad_files(root: Path) -> dict[str, str]:
    """Write each kind of bad file into `root`/dog; name -> what the error must say."""
    (root / "dog" / "notes.txt").write_text("not an image")
    photo((30, 30), 1, 0).save(root / "dog" / "cut.jpg")
    data = (root / "dog" / "cut.jpg").read_bytes()
    (root / "dog" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "dog" / "empty.png").write_bytes(b"")
    return {
        "notes.txt": "is not a readable image",
        "cut.jpg": "truncated",
        "empty.png": "is an empty (0-byte) file",
    }


@pytest.mark.parametrize("bad", ["notes.txt", "cut.jpg", "empty.png"])
def test_a_bad_file_is_named_with_the_fix_and_skip_bad_samples_lists_it(tmp_path, bad):
    root = write_folder(tmp_path / "pets")
    expected = bad_files(root)
    for other in set(expected) - {bad}:
        (root / "dog" / other).unlink()
    with pytest.raises(ZooError) as error:
        load(root)
    message = str(error.value)
    assert str(root / "dog" / bad) in message and expected[bad] in message.lower()
    assert "fix or remove it, or pass --skip-bad-samples" in message
    data = load(root, skip_bad=True)
    assert len(data.train) + len(data.val) + len(data.test) == 12
    assert len(data.skipped) == 1 and str(root / "dog" / bad) in data.skipped[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_an_unreadable_file_is_named(tmp_path):
    root = write_folder(tmp_path / "pets")
    locked = root / "dog" / "0.png"
    locked.chmod(0)
    try:
        with pytest.raises(ZooError, match="Permission denied"):
            load(root)
    finally:
        locked.chmod(0o644)


def test_cmyk_palette_and_16_bit_images_decode_to_their_colours(tmp_path):
    red = Image.new("RGB", (16, 16), (250, 10, 10))
    red.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    palette = red.convert("P", palette=Image.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png")
    levels = np.full((16, 16), 30000, np.uint16)  # 30000 / 65535 of white: grey 117
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    for name in ("cmyk.jpg", "palette.png"):
        r, g, b = read_image(tmp_path / name).getpixel((8, 8))
        assert r > 200 and g < 60 and b < 60, name
    assert read_image(tmp_path / "deep.png", "L").getpixel((8, 8)) == 117, "scaled, not clipped"


def test_a_50_megapixel_jpeg_is_decoded_at_reduced_size(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    Image.new("L", (8660, 5780), 128).save(path, quality=50)
    decoded_sizes = []
    load_pixels = Image.Image.load

    def recording_load(image):
        decoded_sizes.append(image.size)
        return load_pixels(image)

    monkeypatch.setattr(Image.Image, "load", recording_load)
    sample = read_square(path, 32, "RGB")
    assert sample.shape == (3, 32, 32) and abs(int(sample[0, 16, 16]) - 128) < 3
    largest = max(w * h for w, h in decoded_sizes)
    assert largest < 8660 * 5780 // 50, f"decoded at {decoded_sizes}, not drafted down"


def test_a_path_that_is_not_a_folder_is_one_sentence(tmp_path):
    (tmp_path / "file.png").write_bytes(b"")
    for path in (tmp_path / "nope", tmp_path / "file.png"):
        with pytest.raises(ZooError, match=r"is not a folder; use imagefolder:PATH with a folder"):
            load_dataset(f"imagefolder:{path}")


@pytest.mark.parametrize("chunk", [1, 7, 256])
def test_channel_sums_are_exact_integers_whatever_the_chunk(chunk):
    images = np.random.default_rng(0).integers(0, 256, (50, 3, 9, 7), dtype=np.uint8)
    (sums, squares), pixels = base.channel_sums(images, chunk=chunk)
    wide = images.astype(np.int64)
    assert sums.tolist() == wide.sum(axis=(0, 2, 3)).tolist()
    assert squares.tolist() == (wide**2).sum(axis=(0, 2, 3)).tolist() and pixels == 50 * 9 * 7


def test_the_evaluation_batch_holds_about_the_pixels_of_1024_fashion_mnist_images():
    assert [default_eval_batch("classification", side) for side in (None, 28, 32, 64, 224)] == [
        1024, 1024, 784, 196, 32,
    ]  # fmt: skip
    assert default_eval_batch("classification", 1024) == 32, "never fewer than 32"
    assert default_eval_batch("segmentation", 256) == 16
    assert default_eval_batch("segmentation", 512) == 4, "the pixels of 16 at 256x256"
    assert default_eval_batch("segmentation", 2048) == 1

    def resolved(**options):
        return TrainConfig(model="baseline-cnn", **options).resolve("classification", "f-mnist")

    assert resolved().eval_batch_size == 1024
    assert resolved(dataset="imagefolder:/x", img_size=224).eval_batch_size == 32
    assert resolved(dataset="imagefolder:/x").eval_batch_size is None, "the side is not known yet"
    assert resolved(img_size=224, eval_batch_size=1024).eval_batch_size == 1024, "as given"


def test_img_size_on_a_dataset_of_fixed_size_is_refused_naming_those_that_take_it(tmp_path):
    with pytest.raises(
        ZooError,
        match=r"--img-size is for imagefolder:PATH, segfolder:PATH and the segmentation "
        r"datasets, and fashion-mnist has its own sample size; drop --img-size\.",
    ):
        get_dataset_info("fashion-mnist", img_size=32)


def test_folder_datasets_given_to_the_other_task_say_which_prefix_fits(tmp_path):
    root = write_folder(tmp_path / "pets")
    result = runner.invoke(
        app, ["train", "unet-small", "--dataset", f"imagefolder:{root}", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unet-small is a segmentation model" in result.output
    assert "segfolder:PATH for a folder of your own" in result.output
    from conftest import write_facade_pairs

    write_facade_pairs(tmp_path / "facades", 4, num_classes=2)
    args = ["train", "baseline-cnn", "--dataset", f"segfolder:{tmp_path / 'facades'}"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "imagefolder:PATH for a folder of your own" in result.output


# ----------------------------------------------------------------------------- end to end


def test_train_eval_predict_compare_and_bench_on_an_imagefolder_run(tmp_path):
    root = write_folder(tmp_path / "pets", per_class=5)
    dataset = f"imagefolder:{root}"
    out = tmp_path / "results"
    args = ["train", "baseline-cnn", "--dataset", dataset, "--epochs", "1", "--augment"]
    args += ["--limit-train", "8", "--batch-size", "4", "--val-fraction", "0.2"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p.parent for p in out.rglob("metrics.json")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["class_names"] == list(CLASSES)
    assert metrics["input"]["in_chans"] == 3 and metrics["input"]["normalisation"] == (
        "training split"
    )
    config = json.loads((run_dir / "config.json").read_text())["config"]
    side = config["img_size"]
    assert side == metrics["input"]["image_size"][0], "the default size is recorded"
    assert config["eval_batch_size"] == default_eval_batch("classification", side), "then set"
    per_class = metrics["test"]["per_class"]
    assert list(per_class) == list(CLASSES) or list(next(iter(per_class.values()))) == list(CLASSES)

    result = runner.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "owl" in result.output

    result = runner.invoke(app, ["predict", str(run_dir), str(root / "dog" / "0.png")])
    assert result.exit_code == 0, result.output
    assert any(name in result.output for name in CLASSES)

    result = runner.invoke(app, ["compare", str(out), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in CLASSES)

    result = runner.invoke(app, ["explain", str(run_dir), "--steps", "4", "--method", "saliency"])
    assert result.exit_code == 0, result.output

    setting = bench.Setting(mode="infer", device="cpu", dataset=dataset, budget=0.1, repeats=1)
    row = bench.measure_model("baseline-cnn", setting)
    assert row["error"] == "" and row["input_shape"] == f"3x{side}x{side}"
