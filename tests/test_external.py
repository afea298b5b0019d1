"""timm/ and smp/ adapters: name routing, errors before work, small inputs, weights, lazy imports.

The model contract itself (shapes, gradients, determinism, channels-last) is checked for the
curated entries by tests/test_models.py; these tests cover what is specific to the adapters.
"""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import zoo
from zoo.cli import app
from zoo.errors import UnknownNameError, ZooError
from zoo.registry import MODELS, create_model, get_model_entry, list_models


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """Point the Hugging Face and torch hub caches at an empty folder (as HF_HOME=<tmp> would)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(previous)


def test_curated_entries_are_registered():
    assert len(list_models("timm/*", task="classification")) >= 6
    assert len(list_models("smp/*", task="segmentation")) >= 6
    assert {"timm/resnet18", "smp/unet-resnet34"} <= set(list_models())


@pytest.mark.parametrize(
    "name,task",
    [
        ("timm/resnet10t", "classification"),  # not curated: built on demand
        ("smp/fpn-resnet34", "segmentation"),
        ("smp/unet-tu-resnet10t", "segmentation"),  # encoder with a '-' of its own
        ("smp/unetplusplus-efficientnet-b0", "segmentation"),
    ],
)
def test_prefixed_names_resolve_on_demand(name, task):
    assert name not in MODELS.entries
    entry = get_model_entry(name)
    assert (entry.name, entry.task) == (name, task)


def test_resolved_smp_name_splits_arch_and_encoder():
    model = get_model_entry("smp/unet-tu-resnet10t").factory(num_classes=3, in_chans=1)
    assert type(model.model).__name__ == "Unet"
    assert type(model.model.encoder).__name__ == "TimmUniversalEncoder"


@pytest.mark.parametrize(
    "name,suggestion",
    [
        ("timm/resnet19", "'timm/resnet18'"),
        ("timm/convnext_ato", "'timm/convnext_atto'"),
        ("smp/unet-resnet35", "'smp/unet-resnet34'"),
        ("smp/uent-resnet34", "'smp/unet-resnet34'"),
        ("smp/unet", "'smp/unet-resnet34'"),
        ("smp/unet-tu-convnext_attox", "'smp/unet-tu-convnext_atto'"),
    ],
)
def test_unknown_prefixed_names_name_close_matches_before_any_work(name, suggestion, monkeypatch):
    import segmentation_models_pytorch as smp
    import timm

    def no_work(*args, **kwargs):
        raise AssertionError("a model was built for an invalid name")

    monkeypatch.setattr(timm, "create_model", no_work)
    monkeypatch.setattr(smp, "create_model", no_work)
    with pytest.raises(UnknownNameError) as info:
        create_model(name, num_classes=3, in_chans=1)
    assert repr(name) in str(info.value) and suggestion in str(info.value)


def test_timm_small_grey_inputs_per_family():
    resnet = create_model("timm/resnet18", num_classes=10, in_chans=1)
    assert resnet.model.conv1.stride == (2, 2)
    assert isinstance(resnet.model.maxpool, torch.nn.Identity)
    assert resnet.min_side == 32  # total stride 16: 28x28 is upsampled to 32x32
    convnext = create_model("timm/convnext_atto", num_classes=10, in_chans=1)
    assert convnext.min_side == 64  # patchify stem: 28x28 is upsampled to 64x64
    seen = []
    convnext.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    with torch.no_grad():
        assert convnext(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert seen == [(2, 1, 64, 64)]


def test_timm_fixed_input_size_models_are_resized():
    model = create_model("timm/vit_tiny_patch16_224", num_classes=4, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 4)


@pytest.mark.parametrize("size", [(50, 70), (64, 64), (33, 31)])
def test_smp_pads_to_the_output_stride_and_crops_back(size):
    model = create_model("smp/unet-resnet18", num_classes=3, in_chans=1).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 1, *size))
    assert output.shape == (2, 3, *size)


def test_pretrained_missing_names_the_cache(empty_hub_cache):
    for name in ("timm/resnet18", "smp/unet-resnet34", "smp/unet-tu-convnext_atto"):
        with pytest.raises(ZooError, match="No ImageNet weights for") as info:
            create_model(name, num_classes=3, in_chans=1, imagenet=True)
        assert str(empty_hub_cache) in str(info.value) and "--weights" in str(info.value)


def test_pretrained_reads_weights_from_the_local_cache_offline(empty_hub_cache):
    """A cache laid out as huggingface_hub writes it: refs/main -> snapshots/<commit>/file."""
    import timm

    hub_id = timm.models.get_pretrained_cfg("mobilenetv3_small_100").hf_hub_id
    repo = empty_hub_cache / "hf" / f"models--{hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.manual_seed(5)
    published = timm.create_model("mobilenetv3_small_100")
    state = {k: v.contiguous() for k, v in published.state_dict().items()}
    save_file(state, str(repo / "snapshots" / commit / "model.safetensors"))
    model = create_model("timm/mobilenetv3_small_100", num_classes=10, in_chans=3, imagenet=True)
    torch.testing.assert_close(model.model.conv_stem.weight, published.conv_stem.weight)


def test_imagenet_on_a_from_scratch_model_is_refused():
    with pytest.raises(ZooError, match="no ImageNet weights for baseline-cnn.*--weights"):
        create_model("baseline-cnn", imagenet=True)


def test_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    source = create_model("timm/mobilenetv3_small_100", num_classes=3, in_chans=1).eval()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = zoo.create_model("timm/mobilenetv3_small_100", num_classes=3, in_chans=1, weights=path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), source(x))


def test_weights_missing_or_mismatched_name_the_file(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ZooError, match=f"{missing} does not exist"):
        zoo.create_model("baseline-cnn", weights=missing)
    path = tmp_path / "other.safetensors"
    model = create_model("baseline-cnn", num_classes=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ZooError, match=f"{path} does not fit baseline-cnn"):
        zoo.create_model("baseline-cnn", weights=path)  # 10 classes


def test_train_refuses_imagenet_without_weights(tiny_root, tmp_path):
    runner = CliRunner()
    args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*args, "--imagenet"])
    assert result.exit_code == 1 and "no ImageNet weights for baseline-cnn" in result.output
    result = runner.invoke(app, [*args, "--weights", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 1 and "nope.safetensors does not exist" in result.output
    assert not (tmp_path / "runs").exists()  # refused before any run folder was made


def test_import_zoo_and_list_from_scratch_models_do_not_import_timm_or_smp():
    code = (
        "import sys, zoo\n"
        "from typer.testing import CliRunner\n"
        "from zoo.cli import app\n"
        "zoo.create_model('baseline-cnn')\n"
        "result = CliRunner().invoke(app, ['list', 'cnn'])\n"
        "assert result.exit_code == 0 and 'baseline-cnn' in result.output, result.output\n"
        "loaded = {'timm', 'segmentation_models_pytorch'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_run_started_from_weights_outlives_the_start_file(tiny_root, tmp_path):
    """eval and predict load the run's own checkpoint; the --weights file is not needed again."""
    from PIL import Image

    start = tmp_path / "start.safetensors"
    model = create_model("baseline-cnn")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(start))
    runner = CliRunner()
    out = tmp_path / "runs"
    args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", str(out)]
    result = runner.invoke(app, [*args, "--epochs", "1", "--weights", str(start)])
    assert result.exit_code == 0, result.output
    start.unlink()
    (run_dir,) = [p for p in out.glob("*/*/*") if p.is_dir()]
    image = tmp_path / "grey.png"
    Image.new("L", (28, 28), 128).save(image)
    result = runner.invoke(app, ["predict", str(run_dir), str(image)])
    assert result.exit_code == 0, result.output
    assert "grey.png: " in result.stdout
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(tiny_root)])
    assert result.exit_code == 0, result.output
