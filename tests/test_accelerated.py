"""What this 2-core CPU does not run by default: torch.compile and CUDA (AMP, channels-last).

The CUDA tests run wherever a GPU is visible and are skipped elsewhere; compile is `slow`.
"""

import json

import pytest
import torch
from test_train import run_folders, train_args
from typer.testing import CliRunner

from zoo.cli import app

runner = CliRunner()
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.slow
def test_compile_trains_and_checkpoints_plain_weights(tiny_root, tmp_path):
    out = tmp_path / "results"
    args = ["--epochs", "1", "--device", "cpu", "--compile"]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(out)
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(tiny_root)])
    assert result.exit_code == 0, result.output  # the weights load into an uncompiled model


@needs_cuda
@pytest.mark.parametrize("dtype,label", [("float16", "fp16"), ("bfloat16", "bf16")])
def test_cuda_amp_runs_the_asked_precision(tiny_root, tmp_path, dtype, label):
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        label = "fp32"
    out = tmp_path / "results"
    args = ["--epochs", "2", "--device", "cuda", "--amp", "--amp-dtype", dtype]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["precision"] == label and metrics["status"] == "completed"
    assert metrics["test"]["accuracy"] > 0.2
    assert json.loads((run_dir / "config.json").read_text())["environment"]["cuda"]


@needs_cuda
def test_cuda_channels_last_and_contiguous_agree(tiny_root, tmp_path):
    accuracies = []
    for flag in ("--channels-last", "--no-channels-last"):
        out = tmp_path / flag
        args = ["--epochs", "1", "--device", "cuda", flag, "--seed", "1"]
        result = runner.invoke(app, train_args(tiny_root, out, *args))
        assert result.exit_code == 0, result.output
        (run_dir,) = run_folders(out)
        accuracies.append(json.loads((run_dir / "metrics.json").read_text())["val"]["accuracy"])
    assert accuracies[0] == pytest.approx(accuracies[1], abs=0.1)
