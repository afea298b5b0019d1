"""`zoo export`: ONNX checked with onnxruntime for every registry entry, the torch.export
program and the hub folder round trips, and the exports that are refused."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from test_weights import lookalikes, runs  # noqa: F401  (module-scoped fixtures)
from typer.testing import CliRunner

import zoo
from zoo import export as exporting
from zoo import weights
from zoo.cli import app
from zoo.data.base import get_dataset_info
from zoo.errors import ZooError
from zoo.registry import MODELS, get_model_entry, list_models, register_model

runner = CliRunner()
# ONNX export through torch.export takes 10-60 s a model on a busy 2-core CPU: the default run
# covers one model of each task; the others carry the slow marker.
FAST_EXPORTS = ("baseline-cnn", "unet-small")
# Entries whose graph holds sizes fixed at export (smp's UPerNet pools to fixed grids): the
# export is refused with one sentence naming the ONNX operator that fails at another size.
NOT_EXPORTABLE = {"smp/upernet-resnet18": "Gather"}


def random_model(name: str) -> tuple[torch.nn.Module, object]:
    """Random weights, with BatchNorm statistics taken from a random batch as training would
    take them: with the initial ones (mean 0, variance 1) a deep net's logits grow to the
    thousands, where 1e-4 is no longer a float32 difference a trained model shows."""
    torch.manual_seed(0)
    info = get_dataset_info(get_model_entry(name).dataset)
    model = zoo.create_model(name)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: one batch sets them
        with torch.no_grad():
            model.train()(torch.randn(8, info.in_chans, *info.image_size))
    return model.eval(), info


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=[pytest.mark.slow] * (name not in FAST_EXPORTS))
        for name in list_models()
    ],
)
def test_every_model_exports_to_onnx_that_matches_pytorch_at_another_size(name, tmp_path):
    model, info = random_model(name)
    path = tmp_path / "model.onnx"
    if name in NOT_EXPORTABLE:
        with pytest.raises(
            ZooError, match=f"fails in onnxruntime at operator {NOT_EXPORTABLE[name]}"
        ):
            exporting.export_onnx(model, info, path, name)
        assert list(tmp_path.iterdir()) == []
        return
    done = exporting.export_onnx(model, info, path, name, facts='{"model": "x"}')
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    assert done.max_abs_difference <= exporting.ONNX_TOLERANCE
    assert "max abs difference" in done.lines[0]
    import onnx

    proto = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if info.task == "segmentation":
        assert dims == ["batch", info.in_chans, "height", "width"]
    else:
        assert dims == ["batch", info.in_chans, *info.image_size]
    assert {p.key: p.value for p in proto.metadata_props}["zoo"] == '{"model": "x"}'
    assert proto.opset_import[0].version == exporting.OPSET


@pytest.mark.parametrize(
    "name", ["baseline-cnn", pytest.param("unet-small", marks=pytest.mark.slow)]
)
def test_a_torch_export_program_round_trips_without_a_pickle(name, tmp_path):
    model, info = random_model(name)
    path = tmp_path / "model.pt2"
    done = exporting.export_pt2(model, info, path, name, facts="{}")
    assert done.max_abs_difference <= 1e-6
    assert exporting.pickled_members(path) == []
    with zipfile.ZipFile(path) as archive:
        configs = [m for m in archive.namelist() if m.endswith("weights_config.json")]
        assert configs and all(b'"use_pickle": false' in archive.read(m) for m in configs)
    program = torch.export.load(path)
    _, checked = exporting.sample_inputs(info, info.task)
    bigger = torch.cat([checked, checked])  # another batch size than traced and checked
    with torch.no_grad():
        torch.testing.assert_close(program.module()(bigger), model(bigger), rtol=0, atol=1e-6)


@pytest.fixture
def run_dir(runs, tmp_path) -> Path:  # noqa: F811  (the fixture above)
    """A copy of test_weights' completed baseline-cnn run (trained once for this module)."""
    copy = tmp_path / "fashion-mnist" / "baseline-cnn" / runs["baseline-cnn"].name
    shutil.copytree(runs["baseline-cnn"], copy)
    return copy


def test_a_hub_folder_loads_back_with_equal_tensors(run_dir, tmp_path):
    out = tmp_path / "hub"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "hub", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "curves.png", "model.safetensors",
    ]  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "baseline-cnn" and config["num_parameters"] == 211_690
    assert config["format"] == weights.FORMAT and len(config["class_names"]) == 10
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "model-index:" in card and "library_name: zoo" in card
    assert "name: accuracy" in card and "type: accuracy" in card
    assert "| Trouser |" in card and "zoo train baseline-cnn" in card and "curves.png" in card
    loaded = zoo.create_model("baseline-cnn", pretrained=out)
    from safetensors.torch import load_file

    best = load_file(str(run_dir / "best.safetensors"))
    state = loaded.state_dict()
    assert state.keys() == best.keys()
    assert all(torch.equal(state[key], value) for key, value in best.items())
    # the folder is a source for the other commands too
    result = runner.invoke(app, ["export", str(out), "--format", "onnx", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.stdout and (tmp_path / "baseline-cnn.onnx").is_file()


# ----------------------------------------------------------------------------- refused


def test_an_operator_onnx_cannot_express_is_named_in_one_sentence(tmp_path, monkeypatch):
    class SingularValues(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.svdvals(x.flatten(2)).flatten(1)[:, :10]

    monkeypatch.setattr(MODELS, "entries", dict(MODELS.entries))  # registered for this test only
    register_model("svd-net", task="classification", dataset="fashion-mnist", description="")(
        lambda num_classes, in_chans: SingularValues()
    )
    model, info = random_model("svd-net")
    with pytest.raises(ZooError) as error:
        exporting.export_onnx(model, info, tmp_path / "svd.onnx", "svd-net")
    message = str(error.value)
    assert "ONNX export of svd-net failed at operator aten._linalg_svd" in message
    assert message.count(". ") == 0 and "\n" not in message, "one sentence"
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_without_a_checkpoint_is_refused_before_any_file(run_dir, tmp_path):
    (run_dir / "best.safetensors").unlink()
    (run_dir / "last.safetensors").unlink()
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "run checkpoints are never committed to the repository" in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("where", ["proc", "under-a-file"])
def test_an_unwritable_out_is_one_sentence(run_dir, tmp_path, where):
    if where == "proc":
        out = "/proc/zoo-export"
    else:
        (tmp_path / "a-file").write_text("x")
        out = str(tmp_path / "a-file" / "export")
    result = runner.invoke(app, ["export", str(run_dir), "--format", "hub", "--out", out])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"Cannot write the export to {out}" in result.stderr
    assert "pass --out with a folder you can write to" in result.stderr


def test_push_without_a_token_is_refused_before_any_file(run_dir, tmp_path, monkeypatch):
    """Pushing itself needs the network and a token; neither exists here (docs/weights.md)."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    out = tmp_path / "hub"
    args = ["export", str(run_dir), "--format", "hub", "--out", str(out)]
    result = runner.invoke(app, [*args, "--push", "someone/baseline-cnn"])
    assert result.exit_code == 1 and "--push needs a Hugging Face token" in result.stderr
    assert not out.exists()
    result = runner.invoke(app, [*args[:2], "--format", "onnx", "--out", str(out), "--push", "a/b"])
    assert result.exit_code == 1 and "pass it with --format hub" in result.stderr
