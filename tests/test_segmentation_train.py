"""`zoo train` / `zoo eval` on a tiny facade look-alike, through Typer's CliRunner."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data import get_dataset_info
from zoo.data.transforms import joint_augmentation
from zoo.plots import plot_curves
from zoo.registry import get_model_entry
from zoo.weights import load_weights_model, source_weights

runner = CliRunner()
FIGURES = {
    "curves.png",
    "per_class_ap.png",
    "per_class_iou.png",
    "confusion_matrix.png",
    "examples.png",
}


def record_palette():
    return get_dataset_info("mini-facade").palette


def train(root, out, *extra):
    args = ["train", "unet-small", "--data-dir", str(root), "--out", str(out), "--epochs", "1"]
    return runner.invoke(app, [*args, *extra])


def test_a_segmentation_run_writes_its_record_figures_and_table(facade_root, tmp_path):
    result = train(
        facade_root, tmp_path / "runs", "--augment", "--augment-scale", "0.8", "--batch-size", "4"
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "mini-facade" / "unet-small").iterdir()
    assert "window" in result.stdout and "test IoU" in result.stdout

    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["task"] == "segmentation"
    assert record["num_parameters"] == 465_857 and "skipped_samples" not in record
    assert record["train_images_per_second"] > 0
    for split in ("val", "test"):
        m = record[split]
        assert set(m["per_class"]) == {"others", "facade", "pillar", "window", "balcony"}
        assert m["ap_method"] == "exact" and 0 <= m["mean_ap"] <= 1
        assert 0 <= m["mean_iou"] <= 1 and 0 <= m["pixel_accuracy"] <= 1
        assert sum(map(sum, m["confusion_matrix"])) == m["num_pixels"]
    assert record["test"]["num_pixels"] == 6 * 32 * 32
    with open(run_dir / "history.csv") as f:
        (row,) = csv.DictReader(f)
    assert 0 <= float(row["val_mean_iou"]) <= 1
    assert float(row["val_mean_ap"]) == pytest.approx(record["val"]["mean_ap"], abs=5e-3)
    assert {p.name for p in (run_dir / "figures").iterdir()} == FIGURES
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert saved["eval_batch_size"] == 16 and saved["skip_bad_samples"] is False
    assert saved["augment_scale"] == 0.8 and saved["augment_color"] == 0.2

    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(facade_root)])
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["test"]["mean_ap"] == record["test"]["mean_ap"]

    # zoo predict: a mask and an overlay per readable image at its own size; a bad file is
    # named on stderr while the others are still written.
    photo = facade_root / "mini-facade" / "test_dev" / "f001.jpg"
    Image.open(photo).resize((40, 24)).save(tmp_path / "odd-size.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    files = [photo, tmp_path / "broken.jpg", tmp_path / "odd-size.jpg"]
    result = runner.invoke(
        app, ["predict", str(run_dir), *map(str, files), "--out", str(tmp_path / "pred")]
    )
    assert result.exit_code == 1 and "broken.jpg" in result.stderr
    assert "Traceback" not in result.output
    written = {p.name for p in (tmp_path / "pred").iterdir()}
    assert written == {
        "f001_mask.png",
        "f001_overlay.png",
        "odd-size_mask.png",
        "odd-size_overlay.png",
    }
    mask = np.asarray(Image.open(tmp_path / "pred" / "odd-size_mask.png"))
    assert mask.shape == (24, 40, 3)
    palette = {tuple(c) for c in record_palette()}
    assert {tuple(c) for c in mask.reshape(-1, 3)} <= palette, "only palette colours"


def test_the_curves_of_a_segmentation_run_add_a_val_mean_iou_panel():
    row = {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "train_accuracy": 0.5}
    classification = plot_curves([{**row, "val_accuracy": 0.6}])
    segmentation = plot_curves([{**row, "val_accuracy": 0.6, "val_mean_iou": 0.3}])
    titles = [ax.get_title() for ax in segmentation.axes]
    assert len(classification.axes) == 2
    assert titles == ["loss: train vs val", "accuracy: train vs val", "mean_iou: val"]
    rows = [{**row, "epoch": n, "val_accuracy": 0.6} for n in range(1, 21)]
    for ax in plot_curves(rows).axes:  # epochs are whole numbers: no tick at 2.5
        ax.figure.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert len(ticks) >= 3 and all(float(t).is_integer() for t in ticks), ticks


def test_a_bad_sample_stops_the_run_or_is_skipped_and_listed(facade_root, tmp_path):
    bad_mask = facade_root / "mini-facade" / "train" / "f005.png"
    bad_mask.unlink()
    result = train(facade_root, tmp_path / "runs")
    assert result.exit_code == 1 and str(bad_mask) in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()

    result = train(facade_root, tmp_path / "runs", "--skip-bad-samples", "--limit-train", "4")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "mini-facade" / "unet-small").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert len(record["skipped_samples"]) == 1 and str(bad_mask) in record["skipped_samples"][0]
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(facade_root)])
    assert result.exit_code == 0, result.output  # eval skips the same files
    assert "1 bad samples were left out" in result.stdout


@pytest.mark.parametrize(
    "option,message",
    [
        ("--augment-scale", "--augment-scale must be in (0, 1]"),
        ("--augment-color", "--augment-color"),
    ],
)
def test_bad_augmentation_settings_are_rejected_before_any_work(tmp_path, option, message):
    result = train(tmp_path, tmp_path / "runs", option, "1.5")
    assert result.exit_code == 1 and message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_segmentation_models_default_to_small_batches():
    def resolved(model):
        entry = get_model_entry(model)
        return TrainConfig(model=model).resolve(entry.task, entry.dataset)

    assert TrainConfig(model="unet-small").batch_size is None, "no registry lookup on creation"
    assert resolved("unet-small").batch_size == 8 and resolved("unet-small").eval_batch_size == 16
    assert resolved("baseline-cnn").batch_size == 128


def test_joint_augmentation_moves_photo_and_mask_together():
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    images[:, :, :, :8] = 200  # a bright band on the left, labelled class 1
    masks = torch.zeros(4, 32, 32, dtype=torch.uint8)
    masks[:, :, :8] = 1
    transform = joint_augmentation(brightness_contrast=0)
    out_images, out_masks = transform(images, masks, torch.Generator().manual_seed(0))
    assert out_images.shape == images.shape and out_masks.shape == masks.shape
    assert out_images.dtype == torch.uint8 and out_masks.dtype == torch.uint8
    agreement = ((out_images[:, 0] > 100) == (out_masks == 1)).float().mean()
    assert agreement > 0.95, "the mask follows the photo (up to interpolated edge pixels)"
    assert not torch.equal(out_masks, masks), "something was flipped or cropped"
    again = transform(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], out_masks), "seeded by the generator"


def test_crop_size_takes_windows_at_the_images_own_scale():
    rows = torch.arange(32, dtype=torch.uint8).view(1, 32, 1).expand(4, 32, 32)
    cols = torch.arange(32, dtype=torch.uint8).view(1, 1, 32).expand(4, 32, 32)
    images = torch.stack([rows, cols, rows], 1).contiguous()  # each pixel names its position
    masks = (rows % 5).contiguous()
    transform = joint_augmentation(flip=False, scale=(1.0, 1.0), brightness_contrast=0, crop=12)
    out_images, out_masks = transform(images, masks, torch.Generator().manual_seed(0))
    assert out_images.shape == (4, 3, 12, 12) and out_masks.shape == (4, 12, 12)
    for photo, mask in zip(out_images, out_masks, strict=True):
        top, left = int(photo[0, 0, 0]), int(photo[1, 0, 0])
        assert torch.equal(photo[0], rows[0, top : top + 12, left : left + 12]), "not resized"
        assert torch.equal(photo[1], cols[0, top : top + 12, left : left + 12])
        assert torch.equal(mask, masks[0, top : top + 12, left : left + 12]), "same window"
    assert len({int(p[0, 0, 0]) * 32 + int(p[1, 0, 0]) for p in out_images}) > 1, "random"


def test_a_run_with_crop_size_trains_on_crops_and_evaluates_whole_images(facade_root, tmp_path):
    result = train(facade_root, tmp_path / "runs", "--crop-size", "16", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "mini-facade" / "unet-small").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["config"]["crop_size"] == 16
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["test"]["num_pixels"] == 6 * 32 * 32


@pytest.mark.parametrize(
    "model,size,message",
    [
        ("unet-small", "0", "--crop-size must be at least 1, got 0."),
        ("unet-small", "48", "--crop-size 48 is larger than mini-facade's 32-pixel training"),
        ("baseline-cnn", "16", "--crop-size is for segmentation models and baseline-cnn"),
    ],
)
def test_a_bad_crop_size_is_rejected_before_any_work(facade_root, tmp_path, model, size, message):
    args = ["train", model, "--data-dir", str(facade_root), "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--crop-size", size])
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_predict_with_a_classification_run_prints_the_top_classes(tiny_root, tmp_path):
    args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "r" / "fashion-mnist" / "baseline-cnn").iterdir()
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "grey.png")
    result = runner.invoke(
        app, ["predict", str(run_dir), str(tmp_path / "grey.png"), "--top-k", "3"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith(str(tmp_path / "grey.png")) and line.count(", ") == 2


def test_img_size_trains_and_evaluates_at_that_size(facade_root, tmp_path):
    result = train(facade_root, tmp_path / "runs", "--img-size", "24", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs" / "mini-facade" / "unet-small").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["config"]["img_size"] == 24
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["input"]["image_size"] == [24, 24]
    assert record["test"]["num_pixels"] == 6 * 24 * 24, "scored at 24x24, not the files' 32x32"
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(facade_root)])
    assert result.exit_code == 0, result.output
    again = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert again["num_pixels"] == 6 * 24 * 24, "eval reads the run's size too"
    assert again["mean_ap"] == record["test"]["mean_ap"]

    hub = tmp_path / "hub"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "hub", "--out", str(hub)])
    assert result.exit_code == 0, result.output
    loaded = load_weights_model(source_weights(hub), torch.device("cpu"))
    assert loaded.info.image_size == (24, 24), "its weights predict at the size they learnt"
