"""Run records: the one schema of what a run folder holds, its atomic I/O, and reading many.

    results/<dataset>/<model>/<run-id>/
        config.json      the recipe (TrainConfig), the precision that ran, the environment
        history.csv      one row per completed epoch
        metrics.json     status, progress, final val/test metrics, tags (SCHEMA_VERSION)
        figures/*.png    what people look at
        best.safetensors, last.safetensors, train_state.safetensors   (git-ignored)

`RunRecord` is that schema in code: every reader (eval, compare, sweep, the report) goes through
`read_record` / `load_runs` and the task's metric names in `TASK_METRICS`, never through the
JSON keys or the folder name. Every file is written to a temporary name and renamed into place,
so a crash, Ctrl-C or full disk never leaves a half-written record behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from zoo.config import TrainConfig
from zoo.errors import ZooError

SCHEMA_VERSION = 2
# Version 2 added these optional metrics.json keys and renamed the config field skip_bad to
# skip_bad_samples; version 1 records read as version 2 ones without them.
V2_KEYS = ("skipped_samples", "tags", "distributed", "figures", "resumed")
CONFIG, HISTORY, METRICS, FIGURES = "config.json", "history.csv", "metrics.json", "figures"
BEST, LAST, STATE = "best.safetensors", "last.safetensors", "train_state.safetensors"
# "killed" is never written by a live process: it is how `read_record` reports a record that
# says "running" while no process holds the run's lock (killed, out of memory, power loss).
STATUSES = ("running", "completed", "interrupted", "diverged", "pruned", "killed")
LOCK = ".lock"
HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "train_images_per_second",
]


@dataclass(frozen=True)
class TaskMetrics:
    """The metric names of one task, so readers need not know which task a record is."""

    selection: str  # history column that picks best.safetensors (higher is better)
    scores: tuple[str, ...]  # split-level scores in val/test; the first is the headline
    per_class: tuple[str, ...]  # per-class scores in val/test["per_class"][name]


TASK_METRICS = {
    "classification": TaskMetrics("val_accuracy", ("accuracy", "mean_ap"), ("accuracy", "ap")),
    "segmentation": TaskMetrics(
        "val_mean_iou", ("mean_ap", "mean_iou", "pixel_accuracy"), ("ap", "iou", "accuracy")
    ),
}
METRIC_LABELS = {  # how tables title them
    "accuracy": "accuracy",
    "mean_ap": "mean AP",
    "mean_iou": "mIoU",
    "pixel_accuracy": "pixel accuracy",
    "ap": "AP",
    "iou": "IoU",
}


@dataclass
class RunRecord:
    """A run folder's config.json + history.csv + metrics.json as one typed object."""

    config: TrainConfig  # the recipe, with the model's defaults filled in
    task: str  # classification | segmentation
    precision: str  # what training ran: fp32 | fp16 | bf16
    environment: dict  # versions, hardware, threads, git commit (`environment()`)
    status: str = "running"  # one of STATUSES
    message: str = ""  # empty when completed, else what happened and what to do
    num_parameters: int | None = None
    epochs_completed: int = 0
    best_epoch: int | None = None
    train_images_per_second: float | None = None  # median over the epochs
    history: list[dict] = field(default_factory=list)  # history.csv rows
    checkpoint: str | None = None  # the weights val/test were computed from
    eval_precision: str | None = None
    class_names: list[str] = field(default_factory=list)
    input: dict | None = None  # what the model saw: in_chans, image_size, mean, std, normalisation
    val: dict | None = None  # split metrics (metrics.py), None until evaluated
    test: dict | None = None
    skipped_samples: list[str] = field(default_factory=list)  # bad files left out
    tags: dict[str, str] = field(default_factory=dict)  # e.g. study, trial, seed group
    distributed: dict | None = None  # world_size, per-rank batch size, backend
    figures: list[str] = field(default_factory=list)  # paths relative to the run folder
    resumed: list[int] = field(default_factory=list)  # epochs `--resume` went on from
    schema_version: int = SCHEMA_VERSION
    run_dir: Path | None = None  # where it was read from or is written to (not saved)

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def metrics(self) -> TaskMetrics:
        return TASK_METRICS[self.task]

    def split(self, name: str) -> dict:
        """val or test metrics; an unevaluated split is {} (so score() gives None)."""
        return getattr(self, name) or {}

    def score(self, split: str, name: str) -> float | None:
        return self.split(split).get(name)

    def per_class(self, split: str, name: str) -> dict[str, float | None]:
        """{class name: `name` score} of one split, e.g. per_class("test", "ap")."""
        per_class = self.split(split).get("per_class", {})
        return {c: per_class[c][name] for c in self.class_names if c in per_class}

    def metrics_document(self) -> dict:
        """What metrics.json holds."""
        document = {
            "schema_version": self.schema_version,
            "model": self.model,
            "dataset": self.dataset,
            "task": self.task,
            "precision": self.precision,
            "num_parameters": self.num_parameters,
            "status": self.status,
            "message": self.message,
            "epochs_completed": self.epochs_completed,
            "best_epoch": self.best_epoch,
            "train_images_per_second": self.train_images_per_second,
            "checkpoint": self.checkpoint,
            "eval_precision": self.eval_precision,
            "class_names": self.class_names,
            "input": self.input,
            "val": self.val,
            "test": self.test,
            "skipped_samples": self.skipped_samples,
            "tags": self.tags,
            "distributed": self.distributed,
            "figures": self.figures,
            "resumed": self.resumed,
        }
        optional = ("checkpoint", "eval_precision", "class_names", "input", "val", "test", *V2_KEYS)
        return {k: v for k, v in document.items() if k not in optional or v not in (None, [], {})}


# ----------------------------------------------------------------------------- atomic files


class WriteError(ZooError):
    """A file could not be written (full disk, ...); the previous version of it is intact."""

    def __init__(self, path: Path, error: Exception):
        reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
        reason = reason.split("I/O error: ")[-1]  # safetensors: "Error while serializing: I/O.."
        super().__init__(
            f"Could not write {path} ({reason}); its previous version is intact. Free some space "
            "(or fix the folder's permissions) and run the command again (`zoo train --resume "
            "RUN_DIR` goes on from the last saved epoch)."
        )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to `.NAME.tmp`, fsync, rename: a reader sees the old file or the new one, and a
    failed write (full disk, ...) leaves the old one intact and raises WriteError."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        raise WriteError(path, error) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooError(f"{path} does not exist; is {path.parent} a zoo run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZooError(f"{path} is not valid JSON ({error}); the run record is damaged.") from None
    except OSError as error:
        raise ZooError(
            f"{path} cannot be read ({error.strerror}); check its permissions."
        ) from None
    if not isinstance(data, dict):
        raise ZooError(f"{path} holds a {type(data).__name__}, not a run record's JSON object.")
    return data


def history_text(rows: list[dict]) -> str:
    """HISTORY_COLUMNS, then the other columns of the rows (val_mean_ap, val_mean_iou...) in
    their first row's order; a row without one (resumed from an older zoo) leaves it empty."""
    buffer = io.StringIO()
    extra = list(dict.fromkeys(key for row in rows for key in row if key not in HISTORY_COLUMNS))
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS + extra, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    try:
        with open(path, newline="") as f:
            rows = [
                {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)
            ]
    except (ValueError, csv.Error, UnicodeDecodeError) as error:
        raise ZooError(
            f"{path} is not a zoo history CSV ({error}); the record is damaged."
        ) from None
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return rows


# ----------------------------------------------------------------------------- records


def write_config(record: RunRecord) -> None:
    document = {
        "schema_version": record.schema_version,
        "config": record.config.to_dict(),
        "precision": record.precision,
        "environment": record.environment,
    }
    write_json(record.run_dir / CONFIG, document)


def write_history(record: RunRecord) -> None:
    atomic_write_bytes(record.run_dir / HISTORY, history_text(record.history).encode())


def write_metrics(record: RunRecord) -> None:
    write_json(record.run_dir / METRICS, record.metrics_document())


def write_record(record: RunRecord) -> None:
    """All three files (config.json, history.csv, metrics.json)."""
    write_config(record)
    write_history(record)
    write_metrics(record)


def read_record(run_dir: str | Path) -> RunRecord:
    """A run folder's record; a missing, damaged or newer-versioned one is a ZooError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ZooError(f"Run folder {run_dir} does not exist; pass a folder made by `zoo train`.")
    saved, metrics = read_json(run_dir / CONFIG), read_json(run_dir / METRICS)
    version = metrics.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ZooError(f"{run_dir / METRICS} is from a newer zoo; upgrade zoo to read it.")
    try:
        config = TrainConfig.from_dict(saved["config"])
        record = RunRecord(
            config=config,
            task=metrics["task"],
            precision=metrics.get("precision", saved.get("precision", "fp32")),
            environment=saved.get("environment", {}),
            run_dir=run_dir,
            schema_version=version,
            history=read_history(run_dir / HISTORY),
            **{
                key: metrics[key]
                for key in RECORD_KEYS
                if key in metrics and key not in ("model", "dataset", "task", "precision")
            },
        )
    except (KeyError, TypeError, ZooError) as error:
        raise ZooError(
            f"{run_dir} is not a readable zoo run record ({error}); remove it or rerun `zoo train`."
        ) from None
    if record.task not in TASK_METRICS or record.status not in STATUSES:
        raise ZooError(f"{run_dir / METRICS} has an unknown task or status; the record is damaged.")
    if record.status == "running" and not run_is_active(run_dir):
        record.status = "killed"
        record.message = (
            f"The process stopped without a word (killed, out of memory or power loss) after "
            f"{record.epochs_completed} complete epochs; "
            + (
                f"`zoo train --resume {run_dir}` goes on from the last one."
                if (run_dir / STATE).exists()
                else f"with no training state ({STATE}) to go on from, start a new run."
            )
        )
    return record


# ----------------------------------------------------------------------------- run lock


class RunLock:
    """An exclusive lock on a run folder, held by the process that trains it (rank 0).

    It is an flock on `RUN_DIR/.lock`, which the kernel releases when the process ends however
    it ends, so a record that says "running" with its lock free was killed, and a second
    `--resume` of a run that is still going is refused."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.file = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.file = open(self.path, "a")  # noqa: SIM115  (held open for the whole run)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise ZooError(
                f"{self.path.parent} is being trained by another zoo process; wait for it to "
                "end (or stop it) first."
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # closing releases the lock


def run_is_active(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock."""
    import fcntl

    path = Path(run_dir) / LOCK
    if not path.exists():
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


RECORD_KEYS = {
    "num_parameters",
    "status",
    "message",
    "epochs_completed",
    "best_epoch",
    "train_images_per_second",
    "checkpoint",
    "eval_precision",
    "class_names",
    "input",
    "val",
    "test",
    "skipped_samples",
    "tags",
    "distributed",
    "figures",
    "resumed",
}


def load_runs(path: str | Path) -> tuple[list[RunRecord], list[str]]:
    """Every run record under `path` (a run folder or any folder above them), and one warning
    sentence per folder that looks like a run but cannot be read (damaged, foreign, unfinished
    files are skipped, never fatal)."""
    path = Path(path)
    if not path.is_dir():
        raise ZooError(f"{path} is not a folder; pass a results folder such as results/.")
    records, warnings = [], []
    for metrics_path in sorted(path.rglob(METRICS)):
        try:
            records.append(read_record(metrics_path.parent))
        except ZooError as error:
            warnings.append(f"Skipped {metrics_path.parent}: {error}")
    return records, warnings


# ----------------------------------------------------------------------------- run folders


def check_writable(folder: str | Path) -> Path:
    """Prove that run folders can be written under `folder`, before any work starts: a ZooError
    naming the folder otherwise (under a file, read-only, a system path). Folders created for
    the probe are removed again, so a refused recipe leaves nothing behind."""
    folder = Path(folder).expanduser()
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".zoo-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ZooError(
            f"Cannot write run folders to {folder} ({reason}); pass --out with a folder you can "
            "write to."
        ) from None
    finally:
        for path in created:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
    return folder


def utc_now() -> datetime:
    """The clock run ids are read from; a test replaces it to put several runs in one second."""
    return datetime.now(timezone.utc)


def new_run_dir(out: str | Path, dataset: str, model: str) -> Path:
    """A fresh folder out/<dataset>/<model>/<UTC time>[-N]. mkdir is atomic, so processes
    starting in the same second get distinct folders. `/` in a name (timm/x) becomes `--`."""
    parent = Path(out) / dataset.replace("/", "--") / model.replace("/", "--")
    stamp = utc_now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
        run_dir = parent / f"{stamp}{suffix}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise ZooError(f"Could not create a new run folder under {parent}; clean it up and retry.")


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return value if value is not None and math.isfinite(value) else None


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """The commit of zoo's source checkout, "+dirty" when zoo/ differs from it; None outside git."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        changes = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):  # no git, not a checkout (a wheel install)
        return None
    return f"{commit}+dirty" if changes else commit


def environment(device) -> dict:
    """What a reader needs to judge or reproduce the numbers: versions, hardware, threads."""
    import torch

    from zoo.version import __version__

    env = {
        "zoo": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": cpu_model(),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
    return env
