"""`zoo explain`: attributions (Captum), activation maximisation, confused pairs; figures listed
in the record; one sentence per bad input, the other images still done."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zoo import explain, results
from zoo.checkpoint import load_run_model
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.run import train_run

runner = CliRunner()


@pytest.fixture
def classifier_run(tiny_root, tmp_path):
    config = TrainConfig(model="baseline-cnn", epochs=3, data_dir=str(tiny_root), out=str(tmp_path))
    return train_run(config).run_dir, tiny_root


def test_explain_draws_every_figure_and_lists_them_in_the_record(classifier_run):
    run_dir, root = classifier_run
    result = runner.invoke(app, ["explain", str(run_dir), "--steps", "20", "--data-dir", str(root)])
    assert result.exit_code == 0, result.output
    names = {
        "attributions.png", "activation_max_classes.png", "activation_max_channels.png",
        "confused_pairs.png",
    }  # fmt: skip
    folder = run_dir / "figures" / "explain"
    assert {p.name for p in folder.iterdir()} == names
    assert all((folder / name).stat().st_size > 10_000 for name in names)
    record = results.read_record(run_dir)
    assert {f"figures/explain/{name}" for name in names} <= set(record.figures)
    assert "figures/curves.png" in record.figures, "the run's own figures stay listed"
    assert "never confused either way" in result.stdout


def test_a_record_from_before_the_figure_list_keeps_its_own_figures(classifier_run):
    run_dir, root = classifier_run
    record = results.read_record(run_dir)
    record.figures = []  # as the records written before runs listed their figures
    results.write_metrics(record)
    result = runner.invoke(
        app, ["explain", str(run_dir), "--method", "confused", "--data-dir", str(root)]
    )
    assert result.exit_code == 0, result.output
    figures = results.read_record(run_dir).figures
    assert "figures/explain/confused_pairs.png" in figures and "figures/curves.png" in figures


def test_attribution_maps_are_neither_blank_nor_the_same_for_every_image(classifier_run):
    run_dir, root = classifier_run
    record = results.read_record(run_dir)
    model, info = load_run_model(record, "best.safetensors", torch.device("cpu"))
    images, labels, predicted, *_ = explain.test_examples(
        model, record, info, torch.device("cpu"), str(root), 0
    )
    _, layer = explain.find_layer(model, None)
    maps = explain.attributions(
        model, images, predicted.tolist(), layer, explain.ATTRIBUTIONS, steps=8
    )
    assert len(labels) == len(images) > 2
    for name, found in maps.items():
        assert found.shape == (len(images), 28, 28), name
        assert torch.isfinite(found).all() and found.amax((1, 2)).min() > 0, f"{name}: blank"
        assert not torch.allclose(found[0], found[1]), f"{name}: the same for two images"


def test_class_activation_maximisation_differs_by_class_and_raises_its_logit(classifier_run):
    run_dir, _ = classifier_run
    record = results.read_record(run_dir)
    model, info = load_run_model(record, "best.safetensors", torch.device("cpu"))
    model.requires_grad_(False)
    classes = list(range(info.num_classes))
    objective = explain.class_objective(model, classes, segmentation=False)
    shape = (len(classes), 1, 28, 28)
    noise = 0.1 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    found = explain.maximize(objective, shape, info, steps=60)
    with torch.no_grad():
        assert (objective(found) > objective(noise)).all(), "each class logit was raised"
    flat = found.flatten(1)
    distances = torch.cdist(flat, flat)
    assert distances[~torch.eye(len(classes), dtype=bool)].min() > 1.0, "every class its own image"
    low, high = explain.valid_range(info)
    assert (found >= low - 1e-6).all() and (found <= high + 1e-6).all(), "a real image's range"


def test_segmentation_attributions_explain_one_class_over_a_region(facade_root, tmp_path):
    config = TrainConfig(model="unet-small", epochs=2, data_dir=str(facade_root), out=str(tmp_path))
    run_dir = train_run(config).run_dir
    args = ["explain", str(run_dir), "--target", "window", "--data-dir", str(facade_root)]
    result = runner.invoke(app, [*args, "--method", "saliency"])
    assert result.exit_code == 0, result.output
    assert (run_dir / "figures" / "explain" / "attributions_saliency_window.png").exists()
    result = runner.invoke(app, [*args, "--method", "activation-max", "--steps", "5"])
    assert result.exit_code == 0, result.output
    # the region model: one number per image, the class's mean logit over its mask
    model = torch.nn.Conv2d(3, 5, 1)
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    out = explain.RegionLogit(model, mask)(torch.randn(4, 3, 8, 8))  # two IG steps of a batch
    assert out.shape == (4, 5)


@pytest.mark.parametrize(
    "model,root_fixture",
    [("timm/mobilenetv3_small_100", "tiny_root"), ("smp/unet-resnet18", "facade_root")],
)
def test_gradcam_works_for_timm_and_smp_models(model, root_fixture, request, tmp_path):
    root = request.getfixturevalue(root_fixture)
    config = TrainConfig(model=model, epochs=1, data_dir=str(root), out=str(tmp_path))
    run_dir = train_run(config).run_dir
    result = runner.invoke(
        app, ["explain", str(run_dir), "--method", "gradcam", "--data-dir", str(root)]
    )
    assert result.exit_code == 0, result.output
    assert list((run_dir / "figures" / "explain").glob("attributions_gradcam*.png"))


def test_bad_input_is_one_sentence_and_the_other_images_are_still_done(classifier_run, tmp_path):
    run_dir, root = classifier_run
    base = ["explain", str(run_dir), "--data-dir", str(root), "--method", "saliency"]
    result = runner.invoke(app, [*base, "--layer", "features.9.0"])
    assert result.exit_code == 1 and "has no layer 'features.9.0'; conv layers are" in result.stderr
    assert "features.0.0" in result.stderr
    result = runner.invoke(app, [*base, "--target", "Hat"])
    assert result.exit_code == 1 and "'Hat' is not a class of fashion-mnist" in result.stderr
    assert "Shirt" in result.stderr
    good = tmp_path / "good.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(good)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    result = runner.invoke(
        app, [*base, str(tmp_path / "bad.png"), str(good), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "bad.png is not a readable image" in result.stderr
    assert (tmp_path / "o" / "attributions_saliency.png").exists(), "good.png was still explained"
    (run_dir / "best.safetensors").unlink()
    result = runner.invoke(app, base)
    assert result.exit_code == 1 and "best.safetensors does not exist" in result.stderr
    assert "Traceback" not in result.output
