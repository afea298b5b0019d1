"""`zoo train --resume`: exact continuation, refused recipe changes, SIGKILL mid-epoch, locks,
concurrent runs and the pickles zoo never loads."""

import json
import os
import pickle
import signal
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import torch
from safetensors.torch import load_file
from test_train import counting_loss, read_rows, run_folders
from typer.testing import CliRunner

from zoo import results
from zoo.checkpoint import load_training_state, save_training_state
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data import fashion_mnist
from zoo.registry import create_model
from zoo.run import train_run
from zoo.runtime import Precision, place_model
from zoo.train import make_trainer

runner = CliRunner()
# wide-leaky-cnn has dropout (the global RNG) and batch norm; --augment draws from the shuffle
# generator: everything a resumed run must restore to go on bit for bit.
RECIPE = ["wide-leaky-cnn", "--epochs", "3", "--batch-size", "64", "--augment", "--seed", "7"]
TIMING = ("epoch_seconds", "train_images_per_second")


def train(root, out, *extra):
    return runner.invoke(
        app, ["train", *RECIPE, "--data-dir", str(root), "--out", str(out), *extra]
    )


def assert_same_run(a, b):
    """Same weights bit for bit, same metrics, same history but for the clocks."""
    for name in ("best.safetensors", "last.safetensors"):
        left, right = load_file(a / name), load_file(b / name)
        assert left.keys() == right.keys()
        for key in left:
            assert torch.equal(left[key], right[key]), f"{name}: {key} differs"
    first, second = results.read_record(a), results.read_record(b)
    assert first.val == second.val and first.test == second.test
    strip = [{k: v for k, v in row.items() if k not in TIMING} for row in first.history]
    assert strip == [{k: v for k, v in row.items() if k not in TIMING} for row in second.history]


@pytest.fixture
def uninterrupted(tiny_root, tmp_path):
    result = train(tiny_root, tmp_path / "whole")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path / "whole")
    return run_dir


def test_a_run_stopped_after_epoch_1_and_resumed_equals_an_uninterrupted_one(
    tiny_root, tmp_path, monkeypatch, uninterrupted
):
    # 180 training images / batch 64 = 3 steps per epoch: Ctrl-C at step 5 is in epoch 2.
    def interrupt_at_step_5(n, loss):
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    counting_loss(monkeypatch, interrupt_at_step_5)
    result = train(tiny_root, tmp_path / "stopped")
    assert result.exit_code == 130 and "zoo train --resume" in result.stderr
    monkeypatch.undo()
    monkeypatch.setattr(fashion_mnist, "FILES", fashion_mnist_files(tiny_root))
    (run_dir,) = run_folders(tmp_path / "stopped")
    assert results.read_record(run_dir).epochs_completed == 1

    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--data-dir", str(tiny_root)])
    assert result.exit_code == 0, result.output
    assert f"Resuming {run_dir} (interrupted) from the end of epoch 1 of 3" in result.stderr
    assert_same_run(uninterrupted, run_dir)
    record = results.read_record(run_dir)
    assert record.status == "completed" and record.resumed == [1]
    assert not list(run_dir.glob(".*.tmp"))


def fashion_mnist_files(root):
    """The MD5 table the tiny_root fixture installed (monkeypatch.undo() also undid it)."""
    from zoo.data.base import md5sum

    folder = root / fashion_mnist.FOLDER
    return {path.name: md5sum(path) for path in folder.glob("*.gz")}


def test_resume_refuses_another_recipe_and_trains_longer_on_request(tiny_root, uninterrupted):
    resume = ["train", "--resume", str(uninterrupted), "--data-dir", str(tiny_root)]
    before = (uninterrupted / "metrics.json").read_bytes()
    result = runner.invoke(app, [*resume, "--lr", "0.1", "--no-augment"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--lr 0.1 (the run has 0.001), --augment False (the run has True) differ" in (
        result.stderr
    )
    result = runner.invoke(app, [*resume, "--epochs", "2"])
    assert result.exit_code == 1 and "--resume can only train longer" in result.stderr
    result = runner.invoke(app, resume)
    assert result.exit_code == 1 and "already trained its 3 epochs; pass --epochs" in result.stderr
    assert (uninterrupted / "metrics.json").read_bytes() == before, "refusals write nothing"

    result = runner.invoke(app, [*resume, "--epochs", "4"])
    assert result.exit_code == 0, result.output
    record = results.read_record(uninterrupted)
    assert record.config.epochs == 4 and [row["epoch"] for row in record.history] == [1, 2, 3, 4]
    assert record.resumed == [3] and record.status == "completed"
    assert record.history[3]["lr"] < record.history[2]["lr"], "the cosine schedule was stretched"


def test_resume_of_a_folder_without_a_training_state_is_one_sentence(tmp_path):
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1 and "Name the model to train" in result.stderr


def test_a_killed_run_whose_training_state_is_gone_is_not_offered_a_resume(uninterrupted):
    """A machine lost with its run: the record (copied back) says `running` and 3 epochs, but
    train_state.safetensors did not survive. Neither the killed record's message nor `--resume`
    may promise a resume, and --resume says how many epochs the record claims."""
    metrics = uninterrupted / results.METRICS
    metrics.write_text(json.dumps(json.loads(metrics.read_text()) | {"status": "running"}))
    assert "zoo train --resume" in results.read_record(uninterrupted).message
    (uninterrupted / results.STATE).unlink()
    record = results.read_record(uninterrupted)
    assert record.status == "killed" and "zoo train --resume" not in record.message
    assert record.message.endswith(
        "with no training state (train_state.safetensors) to go on from, start a new run."
    )
    result = runner.invoke(app, ["train", "--resume", str(uninterrupted)])
    assert result.exit_code == 1
    assert "its record says 3 epochs completed, but the file is not there" in result.stderr
    assert "no epoch completed" not in result.stderr


KILLER = """
import json, os, signal, sys
from zoo.config import TrainConfig
from zoo.run import train_run
from zoo.train import Callback

class KillMidEpoch2(Callback):
    def on_log(self, loop, step, loss, accuracy, images):
        if loop.epoch == 1:  # one epoch done: SIGKILL in the middle of the second
            os.kill(os.getpid(), signal.SIGKILL)

config = TrainConfig(**json.loads(sys.argv[1]))
train_run(config, callbacks=[KillMidEpoch2()])
"""


def test_a_run_killed_mid_epoch_keeps_whole_files_and_resumes_exactly(
    tiny_root, lookalike_env, tmp_path
):
    # batch 4: 45 steps an epoch, so the kill at step LOG_EVERY = 25 is mid-epoch.
    config = {
        "model": "wide-leaky-cnn", "epochs": 3, "batch_size": 4, "augment": True, "seed": 7,
        "data_dir": str(tiny_root), "out": str(tmp_path / "killed"),
    }  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, json.dumps(config)], env=lookalike_env, capture_output=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    (run_dir,) = run_folders(tmp_path / "killed")
    # Every file is whole: JSON parses, the CSV has the completed epoch, tensors load.
    for name in ("config.json", "metrics.json"):
        json.loads((run_dir / name).read_text())
    assert [row["epoch"] for row in read_rows(run_dir / "history.csv")] == ["1"]
    for name in ("best.safetensors", "last.safetensors", "train_state.safetensors"):
        assert load_file(run_dir / name)
    assert not list(run_dir.glob(".*.tmp"))
    record = results.read_record(run_dir)
    assert record.status == "killed" and "stopped without a word" in record.message
    assert "zoo train --resume" in record.message

    result = runner.invoke(app, ["train", "--resume", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "(killed) from the end of epoch 1 of 3" in result.stderr
    whole = train_run(TrainConfig(**{**config, "out": str(tmp_path / "whole")}))
    assert_same_run(whole.run_dir, run_dir)


def test_a_run_that_is_still_training_cannot_be_resumed_twice(uninterrupted):
    with results.RunLock(uninterrupted):
        assert results.read_record(uninterrupted).status == "completed"
        assert results.run_is_active(uninterrupted)
        result = runner.invoke(app, ["train", "--resume", str(uninterrupted), "--epochs", "4"])
        assert result.exit_code == 1 and "is being trained by another zoo process" in result.stderr
    assert not results.run_is_active(uninterrupted)


SAME_SECOND = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
IN_THE_SAME_SECOND = f"""
import sys
from datetime import datetime
from zoo import results

results.utc_now = lambda: datetime.fromisoformat("{SAME_SECOND.isoformat()}")
from zoo.cli import app
app(sys.argv[1:], standalone_mode=False)
"""


def test_runs_started_in_the_same_second_get_numbered_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "utc_now", lambda: SAME_SECOND)
    folders = [results.new_run_dir(tmp_path, "fashion-mnist", "timm/resnet18") for _ in range(3)]
    assert [folder.name for folder in folders] == [
        "20260102-030405", "20260102-030405-2", "20260102-030405-3",
    ]  # fmt: skip
    assert all(folder.parent == tmp_path / "fashion-mnist" / "timm--resnet18" for folder in folders)


def test_concurrent_runs_into_one_folder_get_distinct_run_folders(
    tiny_root, lookalike_env, tmp_path
):
    """Three processes whose clocks say the same second (injected, not timed) train into one
    folder at once: each gets a run folder of its own, and each run completes."""
    out = tmp_path / "shared"
    args = ["train", "baseline-cnn", "--epochs", "1", "--data-dir", str(tiny_root)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", IN_THE_SAME_SECOND, *args, "--out", str(out)],
            env=lookalike_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr.decode()
    folders = run_folders(out)
    assert sorted(folder.name for folder in folders) == [
        "20260102-030405", "20260102-030405-2", "20260102-030405-3",
    ]  # fmt: skip
    for folder in folders:
        assert results.read_record(folder).status == "completed"


class Payload:
    """Unpickling this runs code: it would write MARKER."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_is_refused_and_nothing_in_it_runs(tiny_root, tmp_path, uninterrupted):
    marker = tmp_path / "pwned"
    raw = pickle.dumps({"weight": Payload(marker)})
    zipped = tmp_path / "zipped.pt"
    torch.save({"weight": Payload(marker)}, zipped)  # torch.save pickles inside a zip
    assert not marker.exists()
    for payload in (raw, zipped.read_bytes()):
        for name in ("best.safetensors", "train_state.safetensors"):
            (uninterrupted / name).write_bytes(payload)
        result = runner.invoke(app, ["eval", str(uninterrupted)])
        assert result.exit_code == 1 and "is a PyTorch pickle" in result.stderr
        result = runner.invoke(app, ["train", "--resume", str(uninterrupted), "--epochs", "4"])
        assert result.exit_code == 1 and "is a PyTorch pickle" in result.stderr
        weights = tmp_path / "weights.pt"
        weights.write_bytes(payload)
        args = ["train", "baseline-cnn", "--data-dir", str(tiny_root), "--out", str(tmp_path)]
        result = runner.invoke(app, [*args, "--weights", str(weights)])
        assert result.exit_code == 1 and "is a PyTorch pickle" in result.stderr
    assert not marker.exists(), "nothing in the pickle ran"


def test_a_resumed_older_record_gets_the_new_history_columns_with_its_old_rows_empty():
    """A record from before val_mean_ap, resumed: the new rows' column is kept (not a
    ValueError from csv), the old rows leave it empty, and reading it back gives None there."""
    old = {column: 1.0 for column in results.HISTORY_COLUMNS} | {"epoch": 1}
    new = old | {"epoch": 2, "val_mean_ap": 0.75, "val_mean_iou": 0.5}
    text = results.history_text([old, new])
    header, first, second = text.splitlines()
    assert header.endswith(",val_mean_ap,val_mean_iou") and first.endswith(",,")
    assert second.endswith(",0.75,0.5")


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_loaded_training_state_has_its_parameters_memory_format(tmp_path, optimizer):
    """The file holds the optimizer's moments contiguous; the fused optimizers walk a parameter
    and its state in memory order, so a channels-last weight must get channels-last moments
    back, or its next step mixes up elements (it did: 0.1 off after one step)."""

    def trainer():
        torch.manual_seed(0)
        model = place_model(create_model("baseline-cnn"), torch.device("cpu"), True)
        config = TrainConfig(model="baseline-cnn", optimizer=optimizer, schedule="none")
        fp32 = Precision(None, "fp32")
        return make_trainer(
            config, model, device=torch.device("cpu"), precision=fp32, steps_per_epoch=1
        )

    def step(trainer, seed):
        images = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
        trainer.optimizer.zero_grad()
        trainer.model(images.contiguous(memory_format=torch.channels_last)).sum().backward()
        trainer.optimizer.step()

    saved, resumed = trainer(), trainer()
    step(saved, 1)
    progress = {"epoch": 1, "step": 1, "history": []}
    save_training_state(tmp_path / "state.safetensors", saved, torch.Generator(), progress)
    load_training_state(tmp_path / "state.safetensors", resumed, torch.Generator())
    for param in resumed.model.parameters():
        for value in resumed.optimizer.state[param].values():
            if value.shape == param.shape:
                assert value.stride() == param.stride()
    step(saved, 2)
    step(resumed, 2)
    for a, b in zip(saved.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
