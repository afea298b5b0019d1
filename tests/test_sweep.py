"""`zoo sweep`: search spaces, bad input before any trial, pruning through the loop, studies
shared by real worker processes (SQLite, and PostgreSQL where its server is installed)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zoo import results, sweep
from zoo.cli import app
from zoo.config import TrainConfig
from zoo.errors import ZooError
from zoo.run import train_run

runner = CliRunner()


def test_the_space_is_ranges_log_ranges_choices_and_fixed_values():
    params, fixed = sweep.parse_space(
        {"lr": "1e-4:1e-2:log", "epochs": "2:5", "augment": "true,false", "batch_size": "64",
         "optimizer": "adam,sgd", "label_smoothing": [0.0, 0.1]}
    )  # fmt: skip
    by_name = {param.name: param for param in params}
    assert by_name["lr"] == sweep.Param("lr", 1e-4, 1e-2, log=True)
    assert by_name["epochs"] == sweep.Param("epochs", 2, 5, integer=True)
    assert by_name["augment"].choices == (True, False)
    assert by_name["optimizer"].choices == ("adam", "sgd")
    assert by_name["label_smoothing"].choices == (0.0, 0.1)
    assert fixed == {"batch_size": 64}


@pytest.mark.parametrize(
    "options,message",
    [
        ({"learning_rate": "1e-4:1e-2"}, "'learning_rate' is not a searchable zoo train option"),
        ({"lr": "1e-2:1e-4"}, "--lr 1e-2:1e-4: the range is empty"),
        ({"batch_size": ","}, "--batch-size ',': the list of choices is empty"),
        ({"lr": "0:1e-2:log"}, "a log range needs low > 0"),
        ({"lr": "-1:1"}, "--lr -1:1 reaches -1.0, which a recipe cannot take: --lr must be"),
        ({"batch_size": "0,8"}, "--batch-size 0,8 reaches 0, which a recipe cannot take"),
        ({"augment": "yes,no"}, "--augment got 'yes'; give true or false"),
        ({"optimizer": "adam,rmsprop"}, "--optimizer got 'rmsprop'; give adam, adamw, sgd"),
    ],
)
def test_a_bad_space_is_one_sentence_before_any_trial(tmp_path, options, message):
    with pytest.raises(ZooError, match=re.escape(message)):
        sweep.make_spec("baseline-cnn", {**options, "out": str(tmp_path)}, trials=2)
    assert not (tmp_path / "sweeps").exists()


def test_grid_needs_choices_and_trials_must_be_positive(tmp_path):
    with pytest.raises(ZooError, match="--sampler grid searches lists of choices only"):
        sweep.make_spec("baseline-cnn", {"lr": "1e-4:1e-2"}, trials=2, sampler="grid")
    with pytest.raises(ZooError, match="--trials must be at least 1"):
        sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3"}, trials=0)


def test_an_unreachable_storage_is_one_sentence(tmp_path):
    spec = sweep.make_spec(
        "baseline-cnn", {"lr": "1e-4,1e-3", "out": str(tmp_path)}, trials=1,
        storage="postgresql://nobody@127.0.0.1:1/zoo",
    )  # fmt: skip
    with pytest.raises(ZooError, match="Cannot reach the study storage postgresql://nobody@"):
        sweep.open_study(spec)


def sweep_args(root, out, *extra):
    args = ["sweep", "baseline-cnn", "--epochs", "1", "--data-dir", str(root), "--out", str(out)]
    return [*args, "--lr", "1e-3:3e-3:log", "--label-smoothing", "0,0.1", *extra]


def test_a_tiny_sweep_runs_tagged_trials_shows_the_best_and_goes_on(tiny_root, tmp_path):
    result = runner.invoke(app, sweep_args(tiny_root, tmp_path, "--trials", "2"))
    assert result.exit_code == 0, result.output
    assert "Best: trial" in result.stdout and "zoo train baseline-cnn --epochs 1" in result.stdout
    folder = tmp_path / "sweeps" / "baseline-cnn-fashion-mnist"
    assert (folder / "study.db").exists()
    assert {p.name for p in (folder / "figures").iterdir()} >= {
        "optimization_history.png", "slice.png", "param_importances.png",
    }  # fmt: skip
    records, _ = results.load_runs(folder / "trials")
    assert sorted(r.tags["trial"] for r in records) == ["0", "1"]
    assert {r.tags["study"] for r in records} == {"baseline-cnn-fashion-mnist"}

    result = runner.invoke(app, sweep_args(tiny_root, tmp_path, "--trials", "3"))
    assert result.exit_code == 0, result.output
    study = sweep.load_study("baseline-cnn-fashion-mnist", f"sqlite:///{folder / 'study.db'}")
    assert sweep.counted(study) == 3, "the second command ran the one trial still to do"
    first, _, third = (trial.params["lr"] for trial in study.trials)
    assert third != first, "the re-run samples afresh, not the first run's values again"

    # The same study name with another model is refused before any trial.
    other = sweep_args(
        tiny_root, tmp_path, "--trials", "4", "--study", "baseline-cnn-fashion-mnist"
    )
    other[1] = "wide-leaky-cnn"
    result = runner.invoke(app, other)
    assert result.exit_code == 1 and "was made for model 'baseline-cnn'" in result.stderr
    assert sweep.counted(study) == 3

    result = runner.invoke(
        app, ["sweep", "show", "baseline-cnn-fashion-mnist", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0 and "Best: trial" in result.stdout


class AlwaysPrune:
    """A stand-in Optuna trial whose pruner says "prune" from the first report on."""

    def __init__(self):
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return True


def test_a_pruned_trial_stops_after_its_epoch_as_a_pruned_record(tiny_root, tmp_path):
    spec = sweep.make_spec(
        "baseline-cnn", {"lr": "1e-4,1e-3", "data_dir": str(tiny_root), "out": str(tmp_path)},
        trials=1,
    )  # fmt: skip
    trial = AlwaysPrune()
    config = TrainConfig(model="baseline-cnn", epochs=3, data_dir=str(tiny_root), out=str(tmp_path))
    record = train_run(config, callbacks=[sweep.make_pruning_callback(trial, spec)])
    assert record.status == "pruned" and record.epochs_completed == 1
    assert "Pruned by the sweep (median rule) after epoch 1" in record.message
    assert trial.reports == [(1, record.history[0]["val_accuracy"])]


def test_ctrl_c_stops_the_sweep_and_keeps_the_finished_trials(tiny_root, tmp_path, monkeypatch):
    from test_train import counting_loss

    # 180 images, batch 128: 2 steps a trial. SIGINT in the second trial's first step.
    def interrupt_in_trial_2(n, loss):
        if n == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss

    counting_loss(monkeypatch, interrupt_in_trial_2)
    result = runner.invoke(app, sweep_args(tiny_root, tmp_path, "--trials", "3"))
    assert result.exit_code == 130, result.output
    assert "the finished trials are saved. Run the same command to go on" in result.stderr
    folder = tmp_path / "sweeps" / "baseline-cnn-fashion-mnist"
    study = sweep.load_study("baseline-cnn-fashion-mnist", f"sqlite:///{folder / 'study.db'}")
    assert sweep.counted(study) == 1
    assert [t.user_attrs.get("status") for t in study.trials] == ["completed", "interrupted"]

    # The same command goes on: the interrupted trial does not count, so two more run.
    result = runner.invoke(app, sweep_args(tiny_root, tmp_path, "--trials", "3"))
    assert result.exit_code == 0, result.output
    assert sweep.counted(study) == 3 and len(study.trials) == 4


def age_heartbeat(storage_url: str, trial_id: int, seconds: int) -> None:
    """Move a trial's last heartbeat `seconds` into the past, as if its worker had been silent
    that long. Optuna compares heartbeats with the database's own clock, which a test cannot
    set; this row of its SQLite schema is the one thing to change instead of waiting."""
    import contextlib
    import sqlite3

    path = storage_url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        changed = db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, ?) WHERE trial_id = ?",
            (f"-{seconds} seconds", trial_id),
        ).rowcount
    assert changed == 1, "no heartbeat row for the trial: has Optuna's storage schema changed?"


def test_a_trial_whose_worker_was_killed_is_failed_and_done_again(tiny_root, tmp_path):
    from optuna.trial import TrialState

    options = {"lr": "1e-3:3e-3:log", "epochs": "1", "data_dir": str(tiny_root),
               "out": str(tmp_path)}  # fmt: skip
    spec = sweep.make_spec("baseline-cnn", options, trials=1)
    study = sweep.open_study(spec)
    # A worker took a trial, beat once and was killed: its last heartbeat is older than the
    # grace period (by a minute, set rather than waited for).
    storage = sweep.make_storage(spec.storage)
    lost = storage.create_new_trial(storage.get_study_id_from_name(spec.study))
    storage.record_heartbeat(lost)
    age_heartbeat(spec.storage, lost, sweep.GRACE_SECONDS + 60)
    assert [t.state for t in study.trials] == [TrialState.RUNNING]
    assert sweep.counted(study) == 0
    assert sweep.run_sweep(spec) is False
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert sweep.counted(study) == 1, "the lost trial is not counted; a new one was done"


# Three fresh interpreters importing torch and four trials with their figures: three minutes on a
# busy two-core machine. A hang fails the test at this limit instead of blocking the suite.
WORKERS_TIMEOUT = 540


def run_workers(root, env, tmp_path, storage: str, trials: int = 4):
    """`zoo sweep --workers 2` in a real process (its workers are fresh interpreters too), on
    the tests' look-alike data; the process group is killed if it outlives the timeout."""
    command = [sys.executable, "-m", "zoo", "sweep", "baseline-cnn", "--trials", str(trials)]
    command += ["--workers", "2", "--epochs", "1", "--data-dir", str(root), "--study", "shared"]
    command += ["--lr", "1e-4:1e-2:log", "--storage", storage, "--out", str(tmp_path)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=WORKERS_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def assert_each_trial_once(tmp_path, storage: str, trials: int = 4):
    study = sweep.load_study("shared", storage)
    assert sweep.counted(study) == trials
    assert sorted(t.number for t in study.trials) == list(range(trials)), "none lost or twice"
    records, _ = results.load_runs(tmp_path / "sweeps" / "shared" / "trials")
    assert sorted(int(r.tags["trial"]) for r in records) == list(range(trials))
    assert len({r.run_dir for r in records}) == trials


@pytest.mark.timeout(WORKERS_TIMEOUT + 60)
def test_two_workers_share_one_sqlite_study_without_losing_a_trial(
    tiny_root, lookalike_env, tmp_path
):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    result = run_workers(tiny_root, lookalike_env, tmp_path, storage)
    assert result.returncode == 0, result.stderr
    assert_each_trial_once(tmp_path, storage)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server, as the `postgres` user (initdb refuses root), in a folder
    that user can reach; its URL, and it is stopped and removed afterwards. It listens on a Unix
    socket in that folder only: no TCP port, so none can be taken by another process first."""
    pytest.importorskip("psycopg", reason="needs the psycopg driver (pip install psycopg[binary])")
    bin_dir = postgres_bin()
    if bin_dir is None or shutil.which("runuser") is None:
        pytest.skip("needs PostgreSQL's server (Debian package postgresql, which .ci/run installs)")
    home = Path(tempfile.mkdtemp(prefix="zoo-postgres-"))  # pytest's tmp_path is root-only
    os.chmod(home, 0o755)
    data = home / "data"
    data.mkdir()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    subprocess.run(
        [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "zoo"],
        check=True, capture_output=True,
    )  # fmt: skip
    options = f"-k {data} -c listen_addresses=''"
    log = data / "server.log"  # the server must not hold our pipes open
    subprocess.run(
        [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log),
         "-w", "start"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    try:
        subprocess.run(
            [*as_postgres, str(bin_dir / "createdb"), "-h", str(data), "-U", "zoo", "sweeps"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield f"postgresql://zoo@/sweeps?host={data}"
    finally:
        subprocess.run(
            [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(WORKERS_TIMEOUT + 60)
def test_two_workers_share_one_postgresql_study(tiny_root, lookalike_env, tmp_path, postgres):
    result = run_workers(tiny_root, lookalike_env, tmp_path, postgres)
    assert result.returncode == 0, result.stderr
    assert_each_trial_once(tmp_path, postgres)


def test_no_trial_is_pruned_in_the_first_third_of_the_shortest_one(tmp_path):
    # baseline-cnn's default 15 epochs would give 6: these give other numbers
    spec = sweep.make_spec("baseline-cnn", {"epochs": "9,20,30", "out": str(tmp_path)}, trials=2)
    assert sweep.warmup_epochs(spec) == 4  # Optuna prunes from this step (epoch) on
    spec = sweep.make_spec("baseline-cnn", {"epochs": "12:30"}, trials=2)
    assert sweep.warmup_epochs(spec) == 5
    spec = sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3", "epochs": "4"}, trials=2)
    assert sweep.warmup_epochs(spec) == 2


class FakeRecord:
    """What `train_run` returns, as far as the objective reads it: a run's history and status."""

    def __init__(self, history, status="completed", message=""):
        self.history, self.status, self.message, self.run_dir = history, status, message, "run"


class FakeTrainRun:
    """`train_run` as the objective calls it: keeps what it was given, returns `record`."""

    def __init__(self, record):
        self.record, self.calls = record, []

    def __call__(self, config, *, callbacks, console, tags):
        self.calls.append(
            {"config": config, "callbacks": callbacks, "console": console, "tags": tags}
        )
        return self.record


def value_of(run_trial, trial) -> float:
    """`run_trial(trial)` for a trial whose run was not interrupted. A KeyboardInterrupt out of it
    fails the test: pytest would stop the whole session on it instead, which is no failure to
    mutmut."""
    try:
        return run_trial(trial)
    except KeyboardInterrupt:
        pytest.fail("a trial that was not interrupted was taken for one stopped by Ctrl-C")


class FakeLoop:
    """The training loop as a callback sees it: the epoch just ended, and its stop request."""

    def __init__(self, epoch):
        self.epoch, self.stops = epoch, []

    def request_stop(self, status, message):
        self.stops.append((status, message))


def test_a_trial_trains_its_values_tagged_into_the_studys_folder(tmp_path, monkeypatch):
    import dataclasses
    import io

    import optuna
    from rich.console import Console

    fake = FakeTrainRun(FakeRecord([{"epoch": 1, "val_accuracy": 0.7}]))
    monkeypatch.setattr("zoo.run.train_run", fake)
    monkeypatch.setattr("zoo.loggers.sweep_run_id", lambda folder: f"parent of {folder.name}")
    options = {"lr": "1e-4:1e-2:log", "label_smoothing": "0,0.1", "optimizer": "adamw,sgd",
               "epochs": "4", "out": str(tmp_path)}  # fmt: skip
    spec = sweep.make_spec("baseline-cnn", options, trials=1)
    study = optuna.create_study(direction=spec.direction)
    trial = study.ask()
    output = io.StringIO()
    console = Console(file=output, width=200)
    assert value_of(sweep.objective(spec, console), trial) == 0.7

    (call,) = fake.calls
    chosen = {name: trial.params[name] for name in ("lr", "label_smoothing", "optimizer")}
    assert chosen["lr"] != TrainConfig(model="baseline-cnn").lr
    expected = dataclasses.replace(spec.base, **chosen, out=str(spec.folder / "trials"))
    assert call["config"] == expected and call["config"].epochs == 4
    assert call["tags"] == {"study": "baseline-cnn-fashion-mnist", "trial": "0"}
    assert call["console"] is console, "the trial's epochs are shown where the sweep is"
    assert trial.user_attrs == {"run_dir": "run", "status": "completed"}
    label = (
        f"trial 0 (lr {chosen['lr']:.4g}, label_smoothing {chosen['label_smoothing']:.4g}, "
        f"optimizer {chosen['optimizer']}): "
    )
    assert label in output.getvalue(), "the trial's phase names its values"

    # The callback it trained with reports to this trial.
    (callback,) = call["callbacks"]
    callback.on_epoch_end(FakeLoop(1), {"val_accuracy": 0.25, "val_loss": 2.0})
    assert study.trials[0].intermediate_values == {1: 0.25}

    # With MLflow, each trial's run is a child of the sweep's run.
    mlflow = dataclasses.replace(spec, base=dataclasses.replace(spec.base, logger=["mlflow"]))
    value_of(sweep.objective(mlflow, None), study.ask())
    parent = f"parent of {spec.folder.name}"
    assert fake.calls[-1]["tags"] == {"study": spec.study, "trial": "1",
                                      "mlflow_parent_run_id": parent}  # fmt: skip


@pytest.mark.parametrize("status", ["interrupted", "pruned", "diverged", "failed"])
def test_a_trial_that_did_not_complete_is_interrupted_pruned_or_failed(
    tmp_path, monkeypatch, status
):
    import io

    import optuna
    from rich.console import Console

    record = FakeRecord([{"epoch": 1, "val_accuracy": 0.7}], status, f"why it {status}")
    monkeypatch.setattr("zoo.run.train_run", FakeTrainRun(record))
    spec = sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3", "out": str(tmp_path)}, trials=1)
    trial = optuna.create_study(direction=spec.direction).ask()
    output = io.StringIO()
    # a narrow terminal: the sentence stays on one line, and its numbers are not coloured
    console = Console(file=output, width=40, force_terminal=True, color_system="standard")
    run_trial = sweep.objective(spec, console)
    expected = {"interrupted": KeyboardInterrupt, "pruned": optuna.TrialPruned}
    with pytest.raises(expected.get(status, sweep.TrialFailed)) as raised:
        run_trial(trial) if status == "interrupted" else value_of(run_trial, trial)
    assert trial.user_attrs == {"run_dir": "run", "status": status}
    if status == "pruned":
        assert str(raised.value) == "why it pruned"
    if status in ("diverged", "failed"):
        assert str(raised.value) == f"trial 0 {status}: why it {status}"
        shown = f"\x1b[33mTrial 0 failed ({status}); the sweep goes on.\x1b[0m why it {status}\n"
        assert output.getvalue().endswith(shown)
    else:
        assert "failed" not in output.getvalue()


def test_the_pruning_callback_reports_each_epoch_and_stops_a_pruned_trial():
    spec = sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3"}, trials=2, metric="val_loss")
    trial = AlwaysPrune()
    loop = FakeLoop(epoch=2)
    sweep.make_pruning_callback(trial, spec).on_epoch_end(loop, {"val_loss": 0.25})
    assert trial.reports == [(2, 0.25)]
    assert loop.stops == [("pruned", "Pruned by the sweep (median rule) after epoch 2: val_loss "
                                     "0.2500.")]  # fmt: skip

    trial.should_prune = lambda: False
    loop = FakeLoop(epoch=3)
    sweep.make_pruning_callback(trial, spec).on_epoch_end(loop, {"val_loss": 0.5})
    assert trial.reports == [(2, 0.25), (3, 0.5)] and loop.stops == []


def test_trials_count_when_completed_pruned_or_failed_not_interrupted_or_killed():
    import optuna
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study()
    for state, status in [
        (TrialState.COMPLETE, "completed"), (TrialState.PRUNED, "pruned"),
        (TrialState.FAIL, "diverged"), (TrialState.FAIL, "interrupted"),
        (TrialState.FAIL, "killed"), (TrialState.FAIL, None), (TrialState.RUNNING, "completed"),
    ]:  # fmt: skip
        attrs = {} if status is None else {"status": status}
        value = 0.5 if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(state=state, value=value, user_attrs=attrs))
    study.add_trial(create_trial(value=0.6, user_attrs={"status": "completed"}))
    assert sweep.counted(study) == 4, "completed twice, pruned, diverged"


@pytest.mark.parametrize(
    "metric,expected", [("val_accuracy", 0.8), ("val_loss", 0.3)]
)  # the best epoch (2nd), not the last (3rd): max for a score, min for a loss
def test_a_trials_value_is_its_best_epochs_not_its_last(tmp_path, monkeypatch, metric, expected):
    import optuna

    history = [
        {"epoch": 1, "val_accuracy": 0.5, "val_loss": 0.9},
        {"epoch": 2, "val_accuracy": 0.8, "val_loss": 0.3},
        {"epoch": 3, "val_accuracy": 0.6, "val_loss": 0.5},
    ]
    monkeypatch.setattr("zoo.run.train_run", lambda config, **kwargs: FakeRecord(history))
    spec = sweep.make_spec(
        "baseline-cnn", {"lr": "1e-4,1e-3", "out": str(tmp_path)}, trials=1, metric=metric
    )
    assert spec.direction == ("minimize" if metric == "val_loss" else "maximize")
    trial = optuna.create_study(direction=spec.direction).ask()
    assert value_of(sweep.objective(spec, None), trial) == expected


def test_a_metric_no_epoch_reports_is_refused_before_any_trial(tmp_path):
    for model, metric in (("baseline-cnn", "val_mean_iou"), ("baseline-cnn", "train_loss"),
                          ("unet-small", "val_iou")):  # fmt: skip
        with pytest.raises(ZooError, match=f"--metric '{metric}' is not a validation column"):
            sweep.make_spec(model, {"lr": "1e-4,1e-3", "out": str(tmp_path)}, trials=1,
                            metric=metric)  # fmt: skip
    spec = sweep.make_spec(
        "unet-small", {"lr": "1e-4,1e-3", "out": str(tmp_path)}, trials=1, metric="val_mean_iou"
    )
    assert spec.direction == "maximize"
    assert not (tmp_path / "sweeps").exists()


def test_the_median_pruner_waits_for_5_completed_trials_and_a_third_of_the_epochs(tmp_path):
    """docs/sweeps.md: a trial below the median is pruned once 5 trials have completed, and not
    in the first third of the shortest trial (9 epochs here: from epoch 4 on)."""
    import optuna

    spec = sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3", "epochs": "9"}, trials=10)
    study = optuna.create_study(direction="maximize", pruner=sweep.make_pruner(spec))

    def complete_one():
        scores = {epoch: 0.9 for epoch in range(1, 10)}
        study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values=scores))

    def pruned_after(epochs: int) -> bool:
        """Whether a new trial far below the others is pruned after `epochs` epochs."""
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(0.1, epoch)
        return trial.should_prune()

    for _ in range(4):
        complete_one()
    assert not pruned_after(9), "4 completed trials: too few to prune"
    complete_one()
    assert [pruned_after(epochs) for epochs in range(1, 10)] == [False] * 3 + [True] * 6

    spec = sweep.make_spec("baseline-cnn", {"lr": "1e-4,1e-3"}, trials=10, pruner="none")
    assert isinstance(sweep.make_pruner(spec), optuna.pruners.NopPruner)
