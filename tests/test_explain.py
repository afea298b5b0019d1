"""`zoo explain`: attributions (Captum), activation maximisation, confused pairs; figures listed
in the record; one sentence per bad input, the other images still done."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zoo import explain, results
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.run import train_run
from zoo.weights import load_run_model

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


class BrightOrDark(torch.nn.Module):
    """A classifier whose evidence is known: class 0 is the mean of the bright pixels, class 1
    of the dark ones, through one stride-2 conv layer (channel 0 sees bright, 1 sees dark)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 2, stride=2, bias=False)
        with torch.no_grad():
            self.conv.weight[0].fill_(0.25)
            self.conv.weight[1].fill_(-0.25)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))


def test_gradcam_peaks_where_the_evidence_for_the_class_is():
    image = torch.zeros(1, 1, 28, 28)
    image[..., 2:8, 2:8] = 3.0  # the bright square: evidence for class 0
    image[..., 18:24, 16:26] = -3.0  # the dark one: class 1
    model = BrightOrDark()
    images = image.repeat(2, 1, 1, 1)
    maps = explain.attributions(model, images, [0, 1], model.conv, ("gradcam",))["gradcam"]
    assert maps.shape == (2, 28, 28), "upsampled from the layer's 14x14 to the input"
    bright, dark = maps[:, 2:8, 2:8], maps[:, 18:24, 16:26]
    peak = [divmod(int(m.argmax()), 28) for m in maps]
    assert 2 <= peak[0][0] < 8 and 2 <= peak[0][1] < 8, "class 0: in the bright square"
    assert 18 <= peak[1][0] < 24 and 16 <= peak[1][1] < 26, "class 1: in the dark square"
    assert bright[0].min() > 0 and dark[0].max() == 0 and maps[0, 12:16].max() == 0
    assert dark[1].min() > 0 and bright[1].max() == 0 and maps[1, 12:16].max() == 0


def test_the_default_layer_of_a_classifier_keeps_a_spatial_map():
    """timm MobileNetV3's last conv layer (conv_head) follows global pooling: 1x1, one flat value
    over the image. The default is the last one before it."""
    from zoo.registry import create_model

    model = create_model("timm/mobilenetv3_small_100").eval()
    sample = torch.zeros(1, 1, 28, 28)
    assert explain.conv_layers(model)[-1] == "model.conv_head"
    name, _ = explain.find_layer(model, None, sample=sample)
    assert name == "model.blocks.5.0.conv"
    assert explain.find_layer(model, "model.conv_head", sample=sample)[0] == "model.conv_head"


@pytest.mark.parametrize(
    "model,root_fixture",
    [("timm/mobilenetv3_small_100", "tiny_root"), ("smp/unet-resnet18", "facade_root")],
)
def test_gradcam_works_for_timm_and_smp_models(model, root_fixture, request, tmp_path, monkeypatch):
    root = request.getfixturevalue(root_fixture)
    config = TrainConfig(model=model, epochs=1, data_dir=str(root), out=str(tmp_path))
    run_dir = train_run(config).run_dir
    calls = []  # what explain_run asks of explain.attributions: the model, images and layer
    original = explain.attributions

    def recorded(net, images, targets, layer, methods, **kwargs):
        calls.append((net, images, layer))
        return original(net, images, targets, layer, methods, **kwargs)

    monkeypatch.setattr(explain, "attributions", recorded)
    result = runner.invoke(
        app, ["explain", str(run_dir), "--method", "gradcam", "--data-dir", str(root)]
    )
    assert result.exit_code == 0, result.output
    (figure,) = (run_dir / "figures" / "explain").glob("attributions_gradcam*.png")
    with Image.open(figure) as picture:
        assert np.asarray(picture.convert("L")).std() > 10, "the figure is not blank"

    # The maps at the layer explain_run chose, for the images it drew, for every class.
    ((net, images, layer),) = calls
    classes = len(results.read_record(run_dir).class_names)
    maps = torch.stack(
        [
            original(net, images, [c] * len(images), layer, ("gradcam",))["gradcam"]
            for c in range(classes)
        ]
    )  # (class, image, H, W)
    assert maps.shape[1:] == images[:, 0].shape and torch.isfinite(maps).all()
    assert (maps >= 0).all(), "ReLU'd: evidence for the class only"
    top = maps.amax((2, 3))
    varies = top - maps.amin((2, 3)) > 0.2 * top  # a map from a 1x1 layer is one flat value
    assert varies.any(dim=0).all(), "every image has a map that points somewhere"
    flat = maps.flatten(2)
    assert not torch.allclose(flat[0], flat[1]), "another class, another map"


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
