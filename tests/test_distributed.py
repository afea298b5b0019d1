"""Several processes as one run, with torchrun and gloo on this CPU (real processes on loopback).

The workers are fresh interpreters, so they read the real Fashion-MNIST files (ZOO_DATA) on a
slice (--limit-train); without them these tests skip, as the other real-data tests do.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import needs_real_data
from test_train import run_folders

from zoo import results

pytestmark = needs_real_data
TIMEOUT = 300  # seconds; a hang (one rank waiting for another forever) fails the test instead
SLICE = ["--limit-train", "2048", "--epochs", "2"]


def zoo(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(
        [sys.executable, "-m", "zoo", *args], env=env, capture_output=True, text=True,
        timeout=TIMEOUT, cwd=cwd,
    )  # fmt: skip


def torchrun(*args):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_processes_train_one_run_that_single_process_eval_agrees_with(tmp_path):
    result = zoo("train", "baseline-cnn", "--nproc", "2", *SLICE, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path)
    record = results.read_record(run_dir)
    assert record.status == "completed"
    assert record.distributed == {"world_size": 2, "batch_size_per_process": 64, "backend": "gloo"}
    assert "2 processes" in result.stderr

    # The final metrics are those a single process computes from the checkpoint...
    result = zoo("eval", str(run_dir), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    again = results.read_record(run_dir)
    assert again.val == record.val and again.test == record.test
    # ... and the last epoch's validation scores, reduced over the two shards, are what one
    # process computes for the last weights (the loss up to the order of the float sums).
    result = zoo("eval", str(run_dir), "--checkpoint", "last")
    assert result.returncode == 0, result.stderr
    last = results.read_record(run_dir)
    assert record.history[-1]["val_accuracy"] == pytest.approx(last.val["accuracy"], abs=1e-7)
    assert record.history[-1]["val_loss"] == pytest.approx(last.val["loss"], rel=1e-6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_torchrun_launches_with_a_c10d_rendezvous_form_one_job(tmp_path):
    """What two machines do, each with one process: `--nnodes 2` and a shared endpoint."""
    endpoint = f"127.0.0.1:{free_port()}"
    node = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    node += ["--rdzv-endpoint", endpoint, "--rdzv-id", "zoo-test", "-m", "zoo", "train"]
    node += ["baseline-cnn", *SLICE, "--out", str(tmp_path)]
    nodes = [torchrun(*node) for _ in range(2)]
    for proc in nodes:
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, stderr.decode()
    (run_dir,) = run_folders(tmp_path)  # only global rank 0 wrote
    record = results.read_record(run_dir)
    assert record.status == "completed" and record.distributed["world_size"] == 2


NAN_ON_RANK_1 = """
import os, sys
import torch
from zoo import train
original = train.compute_loss
steps = {"n": 0}

def poisoned(logits, targets, label_smoothing=0.0):
    loss = original(logits, targets, label_smoothing)
    steps["n"] += 1
    if os.environ["RANK"] == "1" and steps["n"] >= 3:
        return loss * float("nan")
    return loss

train.compute_loss = poisoned
from zoo.cli import app
app(sys.argv[1:])
"""


def test_a_nan_on_one_rank_stops_every_rank(tmp_path):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = tmp_path / "runs"
    proc = torchrun(
        "--standalone", "--nproc-per-node", "2", str(script), "train", "baseline-cnn",
        *SLICE, "--out", str(out),
    )  # fmt: skip
    _, stderr = proc.communicate(timeout=TIMEOUT)  # no hang: both ranks stopped
    assert proc.returncode != 0
    (run_dir,) = run_folders(out)
    record = results.read_record(run_dir)
    assert record.status == "diverged" and record.epochs_completed == 0
    assert "non-finite at epoch 1, step 3" in record.message, record.message


def test_a_two_process_run_resumes_with_two_processes(tmp_path):
    first = ["wide-leaky-cnn", "--nproc", "2", "--limit-train", "1024"]
    result = zoo("train", *first, "--epochs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path)
    result = zoo("train", "--resume", str(run_dir), "--nproc", "2", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    record = results.read_record(run_dir)
    assert record.status == "completed" and record.resumed == [1]
    assert [row["epoch"] for row in record.history] == [1, 2]
    assert record.distributed["world_size"] == 2
    assert json.loads((run_dir / "config.json").read_text())["config"]["epochs"] == 2
