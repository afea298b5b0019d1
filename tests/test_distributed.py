"""Several processes as one run, with torchrun and gloo on this CPU (real processes on loopback).

The workers are fresh interpreters reading the tests' Fashion-MNIST look-alike (tiny_root, whose
MD5 table `lookalike_env` installs in them), so these tests need no ZOO_DATA.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from test_train import run_folders

from zoo import results

TIMEOUT = 240  # seconds per command; a hang (one rank waiting for another forever) fails the test
# Each test starts several fresh interpreters that import torch, a minute or more on a busy CPU.
pytestmark = pytest.mark.timeout(600)


class Processes:
    """Commands started in their own process groups, every group killed when the test ends, so
    that a test stopped by a timeout leaves no torchrun agent or worker behind."""

    def __init__(self, env: dict[str, str]):
        self.env, self.started = env, []

    def start(self, *command: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *command], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        self.started.append(proc)
        return proc

    def run(self, *command: str) -> subprocess.CompletedProcess:
        proc = self.start(*command)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def zoo(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "zoo", *args)

    def torchrun(self, *args: str) -> subprocess.Popen:
        return self.start("-m", "torch.distributed.run", *args)

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def processes(lookalike_env):
    started = Processes({**lookalike_env, "OMP_NUM_THREADS": "1"})
    yield started
    started.kill_all()


def test_two_processes_train_one_run_that_single_process_eval_agrees_with(
    tiny_root, tmp_path, processes
):
    data = ["--data-dir", str(tiny_root)]
    result = processes.zoo("train", "baseline-cnn", "--nproc", "2", "--epochs", "2", *data,
                           "--out", str(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path)
    record = results.read_record(run_dir)
    assert record.status == "completed"
    assert record.distributed == {"world_size": 2, "batch_size_per_process": 64, "backend": "gloo"}
    assert "2 processes" in result.stderr

    # The final metrics are those a single process computes from the checkpoint...
    result = processes.zoo("eval", str(run_dir), "--device", "cpu", *data)
    assert result.returncode == 0, result.stderr
    again = results.read_record(run_dir)
    assert again.val == record.val and again.test == record.test
    # ... and the last epoch's validation scores, reduced over the two shards, are what one
    # process computes for the last weights (the loss up to the order of the float sums).
    result = processes.zoo("eval", str(run_dir), "--checkpoint", "last", *data)
    assert result.returncode == 0, result.stderr
    last = results.read_record(run_dir)
    assert record.history[-1]["val_accuracy"] == pytest.approx(last.val["accuracy"], abs=1e-7)
    assert record.history[-1]["val_loss"] == pytest.approx(last.val["loss"], rel=1e-6)


def test_two_torchrun_launches_with_a_c10d_rendezvous_form_one_job(tiny_root, tmp_path, processes):
    """What two machines do, each with one process: `--nnodes 2` and a shared endpoint. The
    endpoint's store is hosted here, on a port the kernel picked (port 0) and this process holds:
    a port found free and closed again may be taken before torchrun binds it."""
    from torch.distributed import TCPStore

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    node = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    node += ["--rdzv-endpoint", f"127.0.0.1:{store.port}", "--rdzv-conf", "is_host=false"]
    node += ["--rdzv-id", "zoo-test", "-m", "zoo", "train", "baseline-cnn", "--epochs", "2"]
    node += ["--data-dir", str(tiny_root), "--out", str(tmp_path)]
    nodes = [processes.torchrun(*node) for _ in range(2)]
    for proc in nodes:
        _, stderr = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, stderr
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
    if torch.is_grad_enabled():  # training, not evaluation
        steps["n"] += 1
        if os.environ["RANK"] == "1" and steps["n"] >= 3:
            return loss * float("nan")
    return loss

train.compute_loss = poisoned
from zoo.cli import app
app(sys.argv[1:])
"""


def test_a_nan_on_one_rank_stops_every_rank(tiny_root, tmp_path, processes):
    script = tmp_path / "nan_on_rank_1.py"
    script.write_text(NAN_ON_RANK_1)
    out = tmp_path / "runs"
    # 180 training images in batches of 32, 16 a process: 6 steps an epoch, step 3 in epoch 1.
    proc = processes.torchrun(
        "--standalone", "--nproc-per-node", "2", str(script), "train", "baseline-cnn",
        "--epochs", "2", "--batch-size", "32", "--data-dir", str(tiny_root), "--out", str(out),
    )  # fmt: skip
    proc.communicate(timeout=TIMEOUT)  # no hang: both ranks stopped
    assert proc.returncode != 0
    (run_dir,) = run_folders(out)
    record = results.read_record(run_dir)
    assert record.status == "diverged" and record.epochs_completed == 0
    assert "non-finite at epoch 1, step 3" in record.message, record.message


def test_a_two_process_run_resumes_with_two_processes(tiny_root, tmp_path, processes):
    first = ["wide-leaky-cnn", "--nproc", "2", "--data-dir", str(tiny_root)]
    result = processes.zoo("train", *first, "--epochs", "1", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path)
    result = processes.zoo("train", "--resume", str(run_dir), "--nproc", "2", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    record = results.read_record(run_dir)
    assert record.status == "completed" and record.resumed == [1]
    assert [row["epoch"] for row in record.history] == [1, 2]
    assert record.distributed["world_size"] == 2
    assert json.loads((run_dir / "config.json").read_text())["config"]["epochs"] == 2


def test_a_two_process_stream_run_resumes_exactly(tmp_path, processes):
    """--data-mode stream under two processes: each rank reads its DistributedSampler shard in
    its own decoding worker, and a run stopped after epoch 1 and resumed ends with the weights
    and history of the run that was not stopped (the sampler's epoch and seeds restored)."""
    from test_imagefolder import write_folder
    from test_resume import assert_same_run

    root = write_folder(tmp_path / "pets", per_class=6)
    recipe = ["train", "baseline-cnn", "--dataset", f"imagefolder:{root}", "--img-size", "12"]
    recipe += ["--batch-size", "4", "--augment", "--schedule", "none", "--seed", "5"]
    recipe += ["--data-mode", "stream", "--data-workers", "1", "--nproc", "2"]
    runs = {}
    for name, epochs in {"whole": "2", "resumed": "1"}.items():
        result = processes.zoo(*recipe, "--epochs", epochs, "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        (runs[name],) = run_folders(tmp_path / name)
    again = ["train", "--resume", str(runs["resumed"]), "--epochs", "2", "--nproc", "2"]
    result = processes.zoo(*again)
    assert result.returncode == 0, result.stderr
    whole, resumed = (results.read_record(runs[name]) for name in ("whole", "resumed"))
    assert whole.distributed["world_size"] == resumed.distributed["world_size"] == 2
    assert json.loads((runs["whole"] / "metrics.json").read_text())["input"]["data_mode"] == (
        "stream"
    )
    assert resumed.resumed == [1]
    assert_same_run(runs["whole"], runs["resumed"])
