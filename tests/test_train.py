"""`zoo train` / `zoo eval` end to end through Typer's CliRunner, and each way a run can fail."""

import csv
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from zoo import results
from zoo import train as train_module
from zoo.cli import app
from zoo.runtime import resolve_precision

runner = CliRunner()
FIGURES = {
    "curves.png",
    "per_class_accuracy.png",
    "per_class_ap.png",
    "confusion_matrix.png",
    "filters.png",
    "examples.png",
}


def run_folders(out):
    return [p for p in out.glob("*/*/*") if p.is_dir()]


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def train_args(root, out, *extra):
    return ["train", "baseline-cnn", "--data-dir", str(root), "--out", str(out), *extra]


@pytest.fixture
def quick_run(fashion_root, tmp_path):
    """One real training run on a slice of the data, shared by the record checks below."""
    out = tmp_path / "results"
    result = runner.invoke(
        app, train_args(fashion_root, out, "--epochs", "2", "--limit-train", "2048")
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(out)
    return run_dir, result, fashion_root


def test_train_writes_a_complete_run_record(quick_run):
    run_dir, result, _ = quick_run
    assert run_dir.parent.name == "baseline-cnn" and run_dir.parent.parent.name == "fashion-mnist"
    assert "Shirt" in result.stdout and "overall" in result.stdout  # the metrics table

    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["model"] == "baseline-cnn" and saved["config"]["epochs"] == 2
    assert saved["precision"] == "fp32"
    for key in ("zoo", "torch", "device", "device_name", "cpu", "torch_threads", "git_commit"):
        assert key in saved["environment"]

    rows = read_rows(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(float(r["train_images_per_second"]) > 0 for r in rows)
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine schedule

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["schema_version"] == 2 and metrics["status"] == "completed"
    assert metrics["epochs_completed"] == 2 and metrics["best_epoch"] in (1, 2)
    for split in ("val", "test"):
        m = metrics[split]
        assert set(m["per_class"]) == set(metrics["class_names"]) and len(m["per_class"]) == 10
        assert sum(map(sum, m["confusion_matrix"])) == m["num_samples"]
        assert 0.3 < m["accuracy"] <= 1, "two epochs on 2,048 images learn far above chance (0.1)"
        assert 0 <= m["mean_ap"] <= 1
    # the history's binned val mean AP of the best epoch: the exact one of its checkpoint, nearly
    best_row = rows[metrics["best_epoch"] - 1]
    assert float(best_row["val_mean_ap"]) == pytest.approx(metrics["val"]["mean_ap"], abs=5e-3)
    assert {p.name for p in (run_dir / "figures").iterdir()} >= FIGURES
    assert all((run_dir / "figures" / f).stat().st_size > 5000 for f in FIGURES)
    assert not list(run_dir.rglob(".*.tmp")), "no temporary files are left behind"

    weights = load_file(run_dir / "best.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_eval_reproduces_the_training_metrics(quick_run):
    run_dir, _, root = quick_run
    before = json.loads((run_dir / "metrics.json").read_text())
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(root)])
    assert result.exit_code == 0, result.output
    after = json.loads((run_dir / "metrics.json").read_text())
    assert after["test"]["accuracy"] == pytest.approx(before["test"]["accuracy"])
    assert after["val"]["mean_ap"] == pytest.approx(before["val"]["mean_ap"])

    result = runner.invoke(
        app, ["eval", str(run_dir), "--data-dir", str(root), "--checkpoint", "last"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "metrics.json").read_text())["checkpoint"] == "last.safetensors"


def test_eval_of_a_damaged_checkpoint_is_one_clear_error(quick_run):
    run_dir, _, root = quick_run
    before = (run_dir / "metrics.json").read_bytes()
    (run_dir / "last.safetensors").write_bytes(b"cut off mid-write")
    result = runner.invoke(
        app, ["eval", str(run_dir), "--data-dir", str(root), "--checkpoint", "last"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        f"Checkpoint {run_dir / 'last.safetensors'} is not a readable safetensors" in result.stderr
    )
    assert "--checkpoint best or last" in result.stderr
    assert (run_dir / "metrics.json").read_bytes() == before, "the record is left as it was"


def test_eval_of_a_missing_folder_is_one_clear_error(tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "options,message",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "0"], "--lr must be greater than 0"),
        (["--lr", "-0.1"], "--lr must be greater than 0"),
        (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
        (["--limit-train", "0"], "--limit-train must be at least 1"),
        (
            ["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"],
            "device",
        ),
    ],
)
def test_invalid_options_are_rejected_before_any_work(tmp_path, options, message):
    out = tmp_path / "results"
    result = runner.invoke(app, train_args(tmp_path / "no-data", out, *options))
    assert result.exit_code == 1, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not out.exists(), "no run folder for a rejected recipe"


def test_unknown_optimizer_is_rejected(tmp_path):
    out = tmp_path / "results"
    result = runner.invoke(app, train_args(tmp_path, out, "--optimizer", "rmsprop"))
    assert result.exit_code == 2 and "rmsprop" in result.output
    assert not out.exists()


def test_unknown_model_names_close_matches(tmp_path):
    result = runner.invoke(app, ["train", "wide-leaky", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "'wide-leaky-cnn'" in result.stderr and "zoo list" in result.stderr
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def counting_loss(monkeypatch, on_train_step):
    """Wrap compute_loss; call on_train_step(n, loss) for the n-th training step (1-based)."""
    original = train_module.compute_loss
    steps = {"n": 0}

    def loss_fn(logits, targets, label_smoothing=0.0):
        loss = original(logits, targets, label_smoothing)
        if torch.is_grad_enabled():  # training, not evaluation
            steps["n"] += 1
            loss = on_train_step(steps["n"], loss)
        return loss

    monkeypatch.setattr(train_module, "compute_loss", loss_fn)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    # 180 training images / batch 64 = 3 steps per epoch: step 5 is epoch 2, step 2.
    counting_loss(monkeypatch, lambda n, loss: loss * float("nan") if n >= 5 else loss)
    out = tmp_path / "results"
    result = runner.invoke(app, train_args(tiny_root, out, "--epochs", "3", "--batch-size", "64"))
    assert result.exit_code == 1
    assert "nan at epoch 2, step 2" in result.stderr and "last good checkpoint" in result.stderr
    (run_dir,) = run_folders(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and metrics["epochs_completed"] == 1
    with safe_open(run_dir / "last.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == "1"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())  # noqa: SIM118
    assert len(read_rows(run_dir / "history.csv")) == 1


def test_ctrl_c_keeps_checkpoint_and_history(tiny_root, tmp_path, monkeypatch):
    def interrupt_at_step_5(n, loss):
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process
        return loss

    counting_loss(monkeypatch, interrupt_at_step_5)
    out = tmp_path / "results"
    result = runner.invoke(app, train_args(tiny_root, out, "--epochs", "3", "--batch-size", "64"))
    assert result.exit_code == 130
    assert "Interrupted by Ctrl-C at epoch 2, step 2" in result.stderr
    (run_dir,) = run_folders(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    assert "zoo eval" in metrics["message"]
    with safe_open(run_dir / "last.safetensors", "pt") as f:
        assert f.metadata()["interrupted_at"] == "epoch 2, step 2"
    assert (run_dir / "best.safetensors").exists()
    assert len(read_rows(run_dir / "history.csv")) == 1
    # The interrupted run can still be evaluated from its best checkpoint.
    result = runner.invoke(app, ["eval", str(run_dir), "--data-dir", str(tiny_root)])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"


def test_sigterm_ends_a_run_as_ctrl_c_does(tiny_root, tmp_path, monkeypatch):
    """`kill` (or a batch scheduler's stop) records the run as interrupted with its checkpoints,
    instead of leaving a record that says "running"."""

    def terminate_at_step_5(n, loss):
        if n == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss

    counting_loss(monkeypatch, terminate_at_step_5)
    out = tmp_path / "results"
    result = runner.invoke(app, train_args(tiny_root, out, "--epochs", "3", "--batch-size", "64"))
    assert result.exit_code == 130
    assert "Interrupted by SIGTERM at epoch 2, step 2" in result.stderr
    (run_dir,) = run_folders(out)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["epochs_completed"] == 1
    with safe_open(run_dir / "last.safetensors", "pt") as f:
        assert f.metadata()["interrupted_at"] == "epoch 2, step 2"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back as it was


def test_fp16_amp_on_cpu_warns_and_records_fp32(tiny_root, tmp_path):
    out = tmp_path / "results"
    args = train_args(tiny_root, out, "--epochs", "1", "--device", "cpu", "--amp")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "--amp ignored" in result.stderr and "running fp32" in result.stderr
    (run_dir,) = run_folders(out)
    assert json.loads((run_dir / "metrics.json").read_text())["precision"] == "fp32"


def test_bf16_amp_on_cpu_runs_bf16_where_supported(tiny_root, tmp_path):
    out = tmp_path / "results"
    args = ["--epochs", "1", "--device", "cpu", "--amp", "--amp-dtype", "bfloat16"]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(out)
    expected = resolve_precision(torch.device("cpu"), True, "bfloat16").label
    assert json.loads((run_dir / "config.json").read_text())["precision"] == expected
    if expected == "fp32":
        assert "no native bf16" in result.stderr


def saved_optimizer_and_scheduler(run_dir):
    """The optimizer's state dict and the scheduler's, as the run's training state saved them."""
    from safetensors.torch import load_file

    from zoo.checkpoint import STATE, join_state

    with safe_open(run_dir / STATE, "pt") as f:
        document = json.loads(f.metadata()["state"])
    optimizer = join_state(document["optimizer"], load_file(run_dir / STATE))
    return optimizer, document["scheduler"]


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("schedule", ["onecycle", "none"])
def test_optimizers_and_schedules_train(tiny_root, tmp_path, optimizer, schedule):
    out = tmp_path / "results"
    # 180 training images in batches of 32: 6 steps an epoch, 24 in all
    args = ["--epochs", "4", "--batch-size", "32", "--optimizer", optimizer, "--schedule", schedule]
    args += ["--lr", "0.01", "--weight-decay", "0.001", "--no-channels-last", "--augment"]
    result = runner.invoke(app, train_args(tiny_root, out, *args))
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(out)
    saved = json.loads((run_dir / "config.json").read_text())["config"]
    assert (saved["optimizer"], saved["schedule"]) == (optimizer, schedule)

    state, scheduler = saved_optimizer_and_scheduler(run_dir)
    group = state["param_groups"][0]
    assert group["weight_decay"] == 0.001
    if optimizer == "sgd":
        assert group.get("nesterov") is True, "SGD with Nesterov momentum"
        # momentum 0.9, which OneCycleLR cycles between 0.85 and 0.95 (PyTorch's defaults)
        momentum = group.get("momentum")
        assert momentum == 0.9 if schedule == "none" else 0.85 <= momentum <= 0.95
        assert all("momentum_buffer" in s for s in state["state"].values())
    else:
        assert group.get("decoupled_weight_decay") is True and "momentum" not in group
        assert all("exp_avg" in s for s in state["state"].values())

    rates = [float(r["lr"]) for r in read_rows(run_dir / "history.csv")]  # at each epoch start
    if schedule == "none":
        assert scheduler is None and rates == [0.01] * 4
    else:
        # OneCycleLR: from lr / 25 up to lr at step 0.3 * 24 - 1 = 6.2, then down to lr / 25e4
        assert scheduler["total_steps"] == 24
        assert rates[0] == pytest.approx(0.01 / 25)
        assert rates[1] > 0.9 * 0.01 and rates[1] > rates[2] > rates[3] > 0.01 / 25e4


def test_same_seed_same_history(tiny_root, tmp_path):
    losses = []
    for i in range(2):
        out = tmp_path / f"r{i}"
        result = runner.invoke(app, train_args(tiny_root, out, "--epochs", "2", "--seed", "3"))
        assert result.exit_code == 0, result.output
        (run_dir,) = run_folders(out)
        rows = read_rows(run_dir / "history.csv")
        losses.append([(r["train_loss"], r["val_loss"]) for r in rows])
    assert losses[0] == losses[1]


def test_git_commit_names_zoo_s_checkout_or_nothing(monkeypatch):
    source = Path(results.__file__).parent
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True)
    if head.returncode != 0:
        pytest.skip("zoo is not running from a git checkout")
    assert results.git_commit().removesuffix("+dirty") == head.stdout.decode().strip()

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert results.git_commit() is None
