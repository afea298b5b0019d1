"""Experiment trackers as loop callbacks: `zoo train --logger tensorboard --logger mlflow`.

A logger mirrors the run into a tracker; it never owns the run. The run folder (zoo/results.py)
stays the record, and `csv` names it alone (history.csv, metrics.json: always written). What a
logger sends:

    on_fit_start   the recipe as hyperparameters, the environment, the model summary
    on_log         the epoch's mean training loss so far and the learning rate, every LOG_EVERY
                   steps, at the global step
    on_epoch_end   the history row (train and val metrics, mean AP, mIoU) at the epoch
    close          the final val/test metrics with per-class scores, the figures, metrics.json

A logger that fails (a tracking server out of reach, a full disk) warns once, logs nothing more
and lets the run go on. With several processes only rank 0 has loggers (zoo/run.py). On
`--resume` both go on where they were: TensorBoard in the same folder, dropping what an
interrupted epoch logged after the saved state (`purge_step`), MLflow in the same run, whose id
is kept in the run folder (MLFLOW_RUN), with per-step points sent only once their epoch is saved.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

from zoo import results
from zoo.errors import ZooError, ZooWarning, first_line
from zoo.train import Callback, Loop

TENSORBOARD_FOLDER = "tensorboard"  # in the run folder: `tensorboard --logdir results`
MLFLOW_RUN = "mlflow.json"  # in the run folder: the tracking URI and run id, for --resume
MLFLOW_STORE = "mlflow.db"  # next to the run folders (in OUT) when MLFLOW_TRACKING_URI is unset
MLFLOW_ARTIFACTS = "mlartifacts"  # next to it: the local store's artifacts
EXPERIMENT = "zoo"  # MLflow experiment of zoo's runs, unless MLFLOW_EXPERIMENT_NAME says otherwise
SUMMARY_DEPTH = 3  # torchinfo's nesting depth of the logged model summary


def missing_extra(package: str) -> ZooError:
    return ZooError(
        f"--logger {package} needs the {package} package; install it with "
        "`pip install 'zoo[tracking]'`."
    )


class Logger(Callback):
    """A callback whose failures are warnings: the first one disables it for the run."""

    name = ""

    def __init__(self, record: results.RunRecord):
        self.record = record
        self.failed = False

    def guarded(self, action, *args) -> None:
        if self.failed:
            return
        try:
            action(*args)
        except Exception as error:  # a tracker's failure must never cost the run
            self.failed = True
            warnings.warn(
                ZooWarning(
                    f"the {self.name} logger failed ({first_line(error)}) and logs nothing "
                    f"more for this run; training goes on, and the run record in "
                    f"{self.record.run_dir} is complete."
                ),
                stacklevel=2,
            )

    def on_fit_start(self, loop: Loop) -> None:
        self.guarded(self.start, loop)

    def on_log(self, loop: Loop, step: int, loss: float, accuracy: float, images: int) -> None:
        lr = loop.trainer.optimizer.param_groups[0]["lr"]
        self.guarded(self.log_step, loop.step + step, loss, lr)

    def on_epoch_end(self, loop: Loop, row: dict) -> None:
        self.guarded(self.log_epoch, row)

    def close(self, record: results.RunRecord) -> None:
        """After the run's final evaluation (zoo/run.py), whatever its status."""
        self.guarded(self.finish, record)

    def start(self, loop: Loop) -> None: ...

    def log_step(self, step: int, loss: float, lr: float) -> None: ...

    def log_epoch(self, row: dict) -> None: ...

    def finish(self, record: results.RunRecord) -> None: ...


def epoch_metrics(row: dict) -> dict[str, float]:
    """A history row's numbers but the epoch itself."""
    return {key: float(value) for key, value in row.items() if key != "epoch"}


def final_metrics(record: results.RunRecord) -> dict[str, float]:
    """The evaluated (best) checkpoint's scores, per class too: best_val_* (apart from the
    history's per-epoch val_*) and test_*, e.g. test_mean_ap, test_ap/<class>."""
    metrics = {}
    for split, prefix in (("val", "best_val"), ("test", "test")):
        scores = record.split(split)
        for name in ("loss", *record.metrics.scores):
            if scores.get(name) is not None:
                metrics[f"{prefix}_{name}"] = float(scores[name])
        for name in record.metrics.per_class:
            for class_name, value in record.per_class(split, name).items():
                if value is not None:
                    metrics[f"{prefix}_{name}/{class_name}"] = float(value)
    return metrics


def per_class_table(record: results.RunRecord, split: str = "test") -> str:
    """The per-class scores of a split as a Markdown table (TensorBoard renders it)."""
    names = record.metrics.per_class
    columns = {name: record.per_class(split, name) for name in names}
    lines = [
        "| class | " + " | ".join(results.METRIC_LABELS[n] for n in names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for class_name in record.class_names:
        cells = [columns[n].get(class_name) for n in names]
        text = ["" if cell is None else f"{cell:.4f}" for cell in cells]
        lines.append(f"| {class_name} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def hyperparameters(record: results.RunRecord) -> dict[str, str | int | float | bool]:
    """The recipe as flat scalar values (None and lists as text)."""
    return {
        name: value if isinstance(value, str | int | float | bool) else str(value)
        for name, value in record.config.to_dict().items()
    }


def model_summary(loop: Loop) -> str:
    """torchinfo's layer table of the model at the dataset's input size (zeros: no RNG draw)."""
    import torch
    import torchinfo

    height, width = loop.info.image_size
    model = loop.trainer.model
    inputs = torch.zeros(1, loop.info.in_chans, height, width, device=loop.trainer.device)
    stats = torchinfo.summary(
        model, input_data=[inputs], col_names=("output_size", "num_params"),
        depth=SUMMARY_DEPTH, verbose=0, device=loop.trainer.device,
    )  # fmt: skip
    return str(stats)


class TensorBoardLogger(Logger):
    """Event files in RUN_DIR/tensorboard: scalars under step/, epoch/, val/ and test/, the
    hparams plugin's recipe, the environment, model summary and per-class table as text, the
    figures as images."""

    name = "tensorboard"

    def __init__(self, record: results.RunRecord):
        super().__init__(record)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise missing_extra("tensorboard") from None
        self.make_writer = SummaryWriter
        self.writer = None

    def start(self, loop: Loop) -> None:
        from torch.utils.tensorboard.summary import hparams

        # On --resume, drop whatever an interrupted epoch logged after the saved state.
        folder = self.record.run_dir / TENSORBOARD_FOLDER
        self.writer = self.make_writer(str(folder), purge_step=loop.step + 1 if loop.step else None)
        if loop.step:
            return  # resumed: the start was logged by the first run
        metric_names = [f"test_{name}" for name in ("loss", *self.record.metrics.scores)]
        for summary in hparams(hyperparameters(self.record), dict.fromkeys(metric_names, 0.0)):
            self.writer.file_writer.add_summary(summary)
        environment = "\n".join(f"| {k} | {v} |" for k, v in self.record.environment.items())
        self.writer.add_text("environment", "| | |\n|---|---|\n" + environment, 0)
        self.writer.add_text("model_summary", "```\n" + model_summary(loop) + "\n```", 0)
        self.writer.flush()

    def log_step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("step/train_loss", loss, step)
        self.writer.add_scalar("step/lr", lr, step)

    def log_epoch(self, row: dict) -> None:
        for name, value in epoch_metrics(row).items():
            self.writer.add_scalar(f"epoch/{name}", value, row["epoch"])
        self.writer.flush()

    def finish(self, record: results.RunRecord) -> None:
        import numpy as np
        from PIL import Image

        if self.writer is None:
            return
        step = record.epochs_completed
        for name, value in final_metrics(record).items():
            self.writer.add_scalar(name, value, step)
        if record.test:
            self.writer.add_text("test_per_class", per_class_table(record), step)
        for figure in record.figures:
            image = np.asarray(Image.open(record.run_dir / figure).convert("RGB"))
            self.writer.add_image(f"figures/{Path(figure).stem}", image, step, dataformats="HWC")
        self.writer.close()


def tracking_uri(out: str | Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store in OUT (`mlflow ui --backend-store-uri
    sqlite:///OUT/mlflow.db` shows it)."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(out).resolve() / MLFLOW_STORE}"
    )


def mlflow_client(out: str | Path):
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise missing_extra("mlflow") from None
    return MlflowClient(tracking_uri(out))


def experiment_id(client, out: str | Path) -> str:
    """zoo's experiment (MLFLOW_EXPERIMENT_NAME overrides), made on first use; the local store's
    artifacts go next to it in OUT, not into the working directory."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if "MLFLOW_TRACKING_URI" not in os.environ:
        location = (Path(out).resolve() / MLFLOW_ARTIFACTS).as_uri()
    return client.create_experiment(name, artifact_location=location)


def mlflow_param(name: str, value):
    from mlflow.entities import Param

    return Param(name, str(value))


# A zoo status -> the MLflow run status it ends with.
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "pruned": "KILLED"}


class MLflowLogger(Logger):
    """One MLflow run per zoo run: params (the recipe), per-epoch metrics (step = epoch),
    per-step loss and learning rate (step = global step), tags (zoo version, run id, dataset,
    model, the record's tags), artifacts (figures, metrics.json, config.json, the model summary,
    the environment, and the weights with --log-weights). A sweep's trial is a child of the
    sweep's run (the record's `mlflow_parent_run_id` tag)."""

    name = "mlflow"

    def __init__(self, record: results.RunRecord):
        super().__init__(record)
        self.client = mlflow_client(record.config.out)
        self.run_id = None
        self.pending = []  # per-step points of the running epoch, sent once it is saved

    def start(self, loop: Loop) -> None:
        record, saved = self.record, self.record.run_dir / MLFLOW_RUN
        if saved.exists():  # --resume: the same run
            self.run_id = json.loads(saved.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {
            "zoo_version": record.environment.get("zoo", ""),
            "run_id": record.run_dir.name,
            "run_dir": str(record.run_dir),
            "model": record.model,
            "dataset": record.dataset,
            "task": record.task,
            **record.tags,
        }
        if "mlflow_parent_run_id" in record.tags:
            tags["mlflow.parentRunId"] = record.tags["mlflow_parent_run_id"]
        run = self.client.create_run(
            experiment_id(self.client, record.config.out),
            run_name=f"{record.model}/{record.run_dir.name}",
            tags=tags,
        )
        self.run_id = run.info.run_id
        results.write_json(saved, {"tracking_uri": self.client.tracking_uri, "run_id": self.run_id})
        self.log_params(hyperparameters(record))
        self.client.log_dict(self.run_id, record.environment, "environment.json")
        self.client.log_text(self.run_id, model_summary(loop), "model_summary.txt")

    def log_params(self, values: dict) -> None:
        params = [mlflow_param(name, value) for name, value in values.items()]
        self.client.log_batch(self.run_id, params=params)

    def log_step(self, step: int, loss: float, lr: float) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [
            Metric("step_train_loss", loss, now, step),
            Metric("step_lr", lr, now, step),
        ]

    def log_epoch(self, row: dict) -> None:
        self.log_metrics(epoch_metrics(row), row["epoch"])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(name, value, now, step) for name, value in values.items()]
        self.client.log_batch(self.run_id, metrics=self.pending + metrics)
        self.pending = []

    def finish(self, record: results.RunRecord) -> None:
        if self.run_id is None:
            return
        self.pending = []  # an interrupted epoch's steps: not saved, so not sent
        self.log_metrics(final_metrics(record), record.epochs_completed)
        run_dir = record.run_dir
        for name in (results.METRICS, results.CONFIG):
            self.client.log_artifact(self.run_id, str(run_dir / name))
        for figure in record.figures:
            self.client.log_artifact(self.run_id, str(run_dir / figure), "figures")
        if record.config.log_weights:
            from zoo.checkpoint import BEST, LAST

            for name in (BEST, LAST):
                if (run_dir / name).exists():
                    self.client.log_artifact(self.run_id, str(run_dir / name), "weights")
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(record.status, "FAILED"))


LOGGERS: dict[str, type[Logger] | None] = {
    "csv": None,  # the run folder's own history.csv and metrics.json, always written
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
}


def make_loggers(record: results.RunRecord) -> list[Logger]:
    """The loggers the record's recipe asks for (a ZooError when a library is missing)."""
    return [LOGGERS[name](record) for name in dict.fromkeys(record.config.logger) if LOGGERS[name]]


def sweep_run(folder: Path, study: str, out: str | Path, space: dict[str, str]) -> str | None:
    """The MLflow run of a sweep, whose children are its trials' runs: made on the sweep's first
    command and kept in FOLDER/mlflow.json, so running the sweep again goes on in it. None, after
    a warning, when MLflow cannot be reached (the trials then log as runs of their own)."""
    client = mlflow_client(out)
    saved = Path(folder) / MLFLOW_RUN
    try:
        if saved.exists():
            run_id = json.loads(saved.read_text())["run_id"]
            client.update_run(run_id, status="RUNNING")
            return run_id
        run = client.create_run(
            experiment_id(client, out), run_name=f"sweep {study}", tags={"study": study}
        )
        client.log_batch(run.info.run_id, params=[mlflow_param(k, v) for k, v in space.items()])
    except Exception as error:
        warnings.warn(
            ZooWarning(f"the mlflow logger cannot start the sweep's run ({first_line(error)}); "
                       "the sweep goes on."),
            stacklevel=2,
        )  # fmt: skip
        return None
    saved.parent.mkdir(parents=True, exist_ok=True)
    results.write_json(saved, {"tracking_uri": client.tracking_uri, "run_id": run.info.run_id})
    return run.info.run_id


def end_sweep_run(run_id: str, out: str | Path, interrupted: bool) -> None:
    try:
        mlflow_client(out).set_terminated(run_id, "KILLED" if interrupted else "FINISHED")
    except Exception as error:
        warnings.warn(ZooWarning(f"the mlflow logger failed ({first_line(error)})."), stacklevel=2)


def sweep_run_id(folder: Path) -> str | None:
    """The sweep's MLflow run id, which its trials name as their parent."""
    saved = Path(folder) / MLFLOW_RUN
    return json.loads(saved.read_text())["run_id"] if saved.exists() else None
