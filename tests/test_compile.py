"""`zoo train --compile`: what compiles and how often, what a user is told before training, and
the one sentence where torch.compile cannot run.

Most of these swap inductor for torch.compile's "eager" backend: dynamo still captures graphs and
guards them (so recompiles count the same), without minutes of building C++ kernels.
"""

import functools
import stat

import pytest
import torch
import torch._dynamo
import torch._inductor.config
from test_train import run_folders, train_args
from torch._dynamo.utils import counters
from typer.testing import CliRunner

from zoo import run
from zoo.cli import app
from zoo.runtime import CPU_COMPILE_SPEED, compile_warning

runner = CliRunner()


@pytest.fixture
def eager_backend(monkeypatch):
    """torch.compile with the "eager" backend, any C++ compiler accepted, and dynamo's caches and
    counters cleared before and after."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    monkeypatch.setattr(run, "check_compile", lambda device: None)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
    counters.clear()


def test_an_epoch_with_a_partial_batch_and_validation_compiles_one_graph(
    tiny_root, tmp_path, eager_backend
):
    # 180 training images in batches of 128: a full batch and a partial one of 52 each epoch,
    # then validation (eval mode, no grad, another batch size): one graph, no recompile.
    out = tmp_path / "results"
    args = ["--epochs", "2", "--device", "cpu", "--compile"]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 0, result.output
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert not counters["recompiles"], dict(counters["recompiles"])
    assert len(run_folders(out)) == 1


def test_compile_on_the_cpu_says_what_it_was_measured_at_before_training(
    tiny_root, tmp_path, eager_backend
):
    args = train_args(tiny_root, tmp_path / "results", "--epochs", "1", "--device", "cpu")
    result = runner.invoke(app, [*args, "--compile"])
    assert result.exit_code == 0, result.output
    speed, _ = CPU_COMPILE_SPEED["baseline-cnn"]
    warning = f"--compile on the CPU trained baseline-cnn at {speed:.2f}x the speed of eager"
    assert warning in result.stderr
    assert result.stderr.index(warning) < result.stderr.index("epoch   1/1")
    # The run still compiles: the warning switches nothing.
    assert counters["stats"]["unique_graphs"] == 1


def test_compile_warning_only_where_it_was_measured_slower():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert compile_warning("baseline-cnn", cpu).startswith("--compile on the CPU trained")
    assert compile_warning("baseline-cnn", cuda) is None
    assert compile_warning("timm/resnet18", cpu) is None  # measured faster compiled (1.12x)
    assert compile_warning("my-plugin-net", cpu) is None  # not measured: nothing to say
    bench = compile_warning("timm/efficientnet_b0", cpu)
    assert "at 0.85x the speed of eager in zoo bench (benchmarks/zen3-cpu)" in bench


def test_compile_without_a_cpp_compiler_is_one_sentence(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("no-such-c++",))
    out = tmp_path / "results"
    args = ["--epochs", "1", "--device", "cpu", "--compile"]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 1
    assert "--compile on the CPU needs a C++ compiler" in result.stderr
    assert "train without --compile" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()  # said before anything was written


@pytest.mark.slow
def test_compile_with_a_broken_cpp_compiler_is_one_sentence(tiny_root, tmp_path, monkeypatch):
    # A compiler that answers --version, so the check passes, but builds nothing.
    fake = tmp_path / "broken-c++"
    fake.write_text('#!/bin/sh\n[ "$1" = --version ] && echo "broken 1.0" && exit 0\nexit 1\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (str(fake),))
    monkeypatch.setattr(torch._inductor.config, "force_disable_caches", True)
    monkeypatch.setattr(torch._inductor.config, "compile_threads", 1)
    torch._dynamo.reset()
    args = ["--epochs", "1", "--device", "cpu", "--compile"]
    result = runner.invoke(app, train_args(tiny_root, tmp_path / "results", *args))
    torch._dynamo.reset()
    assert result.exit_code == 1, result.output
    assert "--compile could not build baseline-cnn's kernels" in result.stderr
    assert "Traceback" not in result.output
