"""`zoo train --logger tensorboard --logger mlflow`, read back with the libraries' own readers:
TensorBoard's EventAccumulator, and MlflowClient against a real `mlflow server` (SQLite backend)
that this module starts once and stops at its end."""

import builtins
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from test_distributed import Processes
from test_resume import fashion_mnist_files
from test_train import counting_loss, run_folders
from typer.testing import CliRunner

from zoo import loggers, results
from zoo import train as train_module
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.data import fashion_mnist
from zoo.errors import ZooError

runner = CliRunner()
# 180 training images / batch 64 = 3 steps per epoch, a per-step point at each (LOG_EVERY 1).
QUICK = ["--epochs", "1", "--batch-size", "64"]
# The first MLflow test waits for the server, which takes minutes to start on a busy CPU.
pytestmark = pytest.mark.timeout(900)


def train(root, out, *extra):
    return runner.invoke(
        app, ["train", "baseline-cnn", "--data-dir", str(root), "--out", str(out), *extra]
    )


@pytest.fixture(autouse=True)
def log_every_step(monkeypatch):
    monkeypatch.setattr(train_module, "LOG_EVERY", 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real tracking server on loopback with a SQLite backend; its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port, url = free_port(), None
    with open(folder / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
             "--default-artifact-root", str(folder / "artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 480  # minutes on a busy CPU
        while url is None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                url = f"http://127.0.0.1:{port}"
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "server.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def tracking(mlflow_server, monkeypatch, request):
    """MLFLOW_TRACKING_URI at the server, an experiment of this test's own; a client."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", request.node.name)
    return MlflowClient(mlflow_server)


def runs_of(client, test_name):
    experiment = client.get_experiment_by_name(test_name)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / loggers.TENSORBOARD_FOLDER), size_guidance={"": 0})
    events.Reload()
    return events, [(e.step, e.value) for e in events.Scalars(tag)] if tag else None


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_logger_is_one_sentence_with_the_close_match(tmp_path):
    result = train(tmp_path, tmp_path, "--logger", "csv", "--logger", "tensorbord")
    assert result.exit_code == 1
    assert "Unknown --logger 'tensorbord'; did you mean tensorboard?" in result.stderr
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())


def test_every_logger_name_has_its_logger():
    from zoo.config import LOGGER_NAMES
    from zoo.loggers import LOGGERS

    assert tuple(LOGGERS) == LOGGER_NAMES


@pytest.mark.parametrize(
    "name, module", [("mlflow", "mlflow"), ("tensorboard", "torch.utils.tensorboard")]
)
def test_a_missing_library_names_the_extra_to_install(tmp_path, monkeypatch, name, module):
    real_import = builtins.__import__

    def without(target, *args, **kwargs):
        if target == module or target.startswith(module + "."):
            raise ImportError(f"No module named {target!r}")
        return real_import(target, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    record = results.RunRecord(
        TrainConfig("baseline-cnn", logger=(name,)), "classification", "fp32", {}
    )
    with pytest.raises(ZooError) as error:
        loggers.make_loggers(record)
    assert str(error.value) == (
        f"--logger {name} needs the {name} package; install it with `pip install 'zoo[tracking]'`."
    )


def test_the_logger_option_repeats_and_round_trips_through_flags_and_records():
    config = TrainConfig("baseline-cnn", logger=["tensorboard", "mlflow"])
    assert config.logger == ("tensorboard", "mlflow")
    assert TrainConfig.from_dict(config.to_dict()) == config
    from zoo.config import to_flags

    assert to_flags({"logger": config.logger}) == ["--logger", "tensorboard", "--logger", "mlflow"]
    assert TrainConfig("baseline-cnn", logger="tensorboard,mlflow").logger == config.logger


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_gets_steps_epochs_hparams_final_metrics_and_figures(tiny_root, tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    result = train(tiny_root, tmp_path, *QUICK, "--logger", "tensorboard", "--lr", "0.002")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path)
    record = results.read_record(run_dir)
    events, losses = scalars(run_dir, "step/train_loss")
    assert [step for step, _ in losses] == [1, 2, 3]
    (epoch,) = events.Scalars("epoch/val_accuracy")
    assert (epoch.step, epoch.value) == (1, pytest.approx(record.history[0]["val_accuracy"]))
    (test,) = events.Scalars("test_accuracy")
    assert test.value == pytest.approx(record.test["accuracy"])
    shirt = events.Scalars("test_ap/Shirt")[0].value
    assert shirt == pytest.approx(record.test["per_class"]["Shirt"]["ap"])
    # The schedule's rate after each step: cosine from 0.002 over the run's 3 steps.
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.002)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=3)
    expected = [optimizer.step() or schedule.step() or schedule.get_last_lr()[0] for _ in range(3)]
    assert [e.value for e in events.Scalars("step/lr")] == pytest.approx(expected, rel=1e-6)

    tags = events.Tags()
    assert {f"figures/{name}" for name in ("curves", "confusion_matrix")} <= set(tags["images"])
    table = events.Tensors("test_per_class/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"| Shirt | {record.test['per_class']['Shirt']['accuracy']:.4f} |" in table
    summary = events.Tensors("model_summary/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "Total params: 211,690" in summary  # torchinfo's count of baseline-cnn
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["lr"].number_value == 0.002 and hparams["model"].string_value == "baseline-cnn"


def test_tensorboard_resume_continues_the_folder_without_duplicated_steps(
    tiny_root, tmp_path, monkeypatch
):
    def interrupt_at_step_5(n, loss):  # epoch 2, whose steps 4 and 5 are logged, not saved
        if n == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    counting_loss(monkeypatch, interrupt_at_step_5)
    result = train(tiny_root, tmp_path, "--epochs", "2", "--batch-size", "64",
                   "--logger", "tensorboard")  # fmt: skip
    assert result.exit_code == 130
    monkeypatch.undo()
    monkeypatch.setattr(fashion_mnist, "FILES", fashion_mnist_files(tiny_root))
    monkeypatch.setattr(train_module, "LOG_EVERY", 1)
    (run_dir,) = run_folders(tmp_path)
    _, before = scalars(run_dir, "step/train_loss")
    assert [step for step, _ in before] == [1, 2, 3, 4, 5]

    result = runner.invoke(app, ["train", "--resume", str(run_dir), "--data-dir", str(tiny_root)])
    assert result.exit_code == 0, result.output
    events, after = scalars(run_dir, "step/train_loss")
    assert [step for step, _ in after] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("epoch/val_loss")] == [1, 2]
    assert len(events.Tensors("model_summary/text_summary")) == 1
    assert len(list((run_dir / loggers.TENSORBOARD_FOLDER).glob("events.*"))) == 2


# ----------------------------------------------------------------------------- MLflow


def test_mlflow_run_carries_params_metrics_tags_and_artifacts(
    tiny_root, tmp_path, tracking, request
):
    result = train(tiny_root, tmp_path, *QUICK, "--logger", "mlflow", "--log-weights")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path)
    record = results.read_record(run_dir)
    (run,) = runs_of(tracking, request.node.name)
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["batch_size"] == "64"
    assert run.data.tags["dataset"] == "fashion-mnist" and run.data.tags["run_id"] == run_dir.name
    assert run.data.tags["zoo_version"] == record.environment["zoo"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(record.test["accuracy"])
    assert run.data.metrics["test_ap/Shirt"] == pytest.approx(
        record.test["per_class"]["Shirt"]["ap"]
    )
    history = tracking.get_metric_history(run.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [
        (1, pytest.approx(record.history[0]["val_accuracy"]))
    ]
    steps = tracking.get_metric_history(run.info.run_id, "step_train_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3]
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.json", "figures", "weights", "environment.json"} <= artifacts
    figures = {a.path for a in tracking.list_artifacts(run.info.run_id, "figures")}
    assert "figures/curves.png" in figures
    weights = {a.path for a in tracking.list_artifacts(run.info.run_id, "weights")}
    assert weights == {"weights/best.safetensors", "weights/last.safetensors"}


def test_mlflow_resume_goes_on_in_the_same_run_without_duplicated_steps(
    tiny_root, tmp_path, tracking, request
):
    result = train(tiny_root, tmp_path, *QUICK, "--logger", "mlflow")
    assert result.exit_code == 0, result.output
    (run_dir,) = run_folders(tmp_path)
    resume = ["train", "--resume", str(run_dir), "--epochs", "2", "--data-dir", str(tiny_root)]
    result = runner.invoke(app, resume)
    assert result.exit_code == 0, result.output
    (run,) = runs_of(tracking, request.node.name)
    assert run.info.status == "FINISHED"
    history = tracking.get_metric_history(run.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == [1, 2]
    steps = tracking.get_metric_history(run.info.run_id, "step_train_loss")
    assert sorted(m.step for m in steps) == [1, 2, 3, 4, 5, 6]


def test_an_unreachable_tracking_server_warns_once_and_the_run_completes(
    tiny_root, tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = train(tiny_root, tmp_path, *QUICK, "--logger", "mlflow", "--logger", "tensorboard")
    assert result.exit_code == 0, result.output
    # The CLI prints a ZooWarning as one `Warning: ...` line on stderr.
    assert result.stderr.count("Warning: the mlflow logger failed (") == 1, result.stderr
    assert "Traceback" not in result.output
    (run_dir,) = run_folders(tmp_path)
    assert results.read_record(run_dir).status == "completed"
    _, losses = scalars(run_dir, "step/train_loss")  # the other logger went on
    assert len(losses) == 3


def test_without_a_tracking_uri_mlflow_uses_a_sqlite_store_in_out(tiny_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = train(tiny_root, tmp_path / "out", *QUICK, "--logger", "mlflow")
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / loggers.MLFLOW_STORE}")
    (run,) = runs_of(client, loggers.EXPERIMENT)
    assert "metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (tmp_path / "out" / loggers.MLFLOW_ARTIFACTS).is_dir()
    assert not (tmp_path / "mlruns").exists(), "nothing lands in the working directory"


def test_a_sweep_is_a_parent_run_with_one_child_per_trial(tiny_root, tmp_path, tracking, request):
    args = ["sweep", "baseline-cnn", *QUICK, "--data-dir", str(tiny_root), "--out", str(tmp_path),
            "--lr", "1e-3:3e-3:log", "--trials", "2", "--logger", "mlflow"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    runs = runs_of(tracking, request.node.name)
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run is not parent]
    assert parent.data.params["lr"] == "0.001:0.003:log" and parent.info.status == "FINISHED"
    assert sorted(run.data.tags["trial"] for run in children) == ["0", "1"]
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_two_process_run_logs_from_rank_0_only(tiny_root, tmp_path, lookalike_env, mlflow_server):
    from mlflow import MlflowClient

    env = {**lookalike_env, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": mlflow_server,
           "MLFLOW_EXPERIMENT_NAME": "two-processes"}  # fmt: skip
    processes = Processes(env)
    try:
        result = processes.zoo("train", "baseline-cnn", "--nproc", "2", *QUICK,
                               "--data-dir", str(tiny_root), "--out", str(tmp_path),
                               "--logger", "mlflow", "--logger", "tensorboard")  # fmt: skip
    finally:
        processes.kill_all()
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_folders(tmp_path)
    assert len(list((run_dir / loggers.TENSORBOARD_FOLDER).glob("events.*"))) == 1
    _, epochs = scalars(run_dir, "epoch/val_accuracy")
    assert [step for step, _ in epochs] == [1], "one process wrote it, once"
    client = MlflowClient(mlflow_server)
    (run,) = runs_of(client, "two-processes")
    assert run.data.tags["run_id"] == run_dir.name and run.info.status == "FINISHED"
