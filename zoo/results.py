"""Run records: the folder a training run writes, written atomically, and read back.

    results/<dataset>/<model>/<run-id>/
        config.json      the recipe (TrainConfig) and the environment it ran in
        history.csv      one row per epoch
        metrics.json     status and final val/test metrics (SCHEMA_VERSION)
        figures/*.png    what people look at
        best.safetensors, last.safetensors   weights (git-ignored)

Every file is written to a temporary name and renamed into place, so a crash or Ctrl-C never
leaves a half-written record behind.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save_file

from zoo.errors import ZooError
from zoo.registry import load_weights

SCHEMA_VERSION = 1
CONFIG, HISTORY, METRICS, FIGURES = "config.json", "history.csv", "metrics.json", "figures"
BEST, LAST = "best.safetensors", "last.safetensors"
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ZooError(f"{path} does not exist; is {path.parent} a zoo run folder?") from None
    except json.JSONDecodeError as error:
        raise ZooError(f"{path} is not valid JSON ({error}); the run record is damaged.") from None


def write_history(path: Path, rows: list[dict]) -> None:
    """HISTORY_COLUMNS, then any task-specific columns of the rows (e.g. val_mean_iou)."""
    buffer = io.StringIO()
    extra = [key for key in (rows[0] if rows else {}) if key not in HISTORY_COLUMNS]
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS + extra, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def save_checkpoint(path: Path, model: torch.nn.Module, metadata: dict[str, str]) -> None:
    """Model weights as safetensors, written atomically; metadata values must be strings."""
    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module) -> None:
    """Load a run's checkpoint; missing or damaged -> a ZooError naming the file and the fix."""
    fix = "train the run again, or use its other checkpoint (--checkpoint best or last)."
    load_weights(unwrap(model), path, "the run's model", what="Checkpoint", fix=fix)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under torch.compile's wrapper, whose state_dict keys are the plain ones."""
    return getattr(model, "_orig_mod", model)


def new_run_dir(out: str | Path, dataset: str, model: str) -> Path:
    """A fresh folder results/<dataset>/<model>/<UTC time>[-N]; model names like timm/x nest."""
    parent = Path(out) / dataset / model.replace("/", "--")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(2, 1000))]:
        run_dir = parent / f"{stamp}{suffix}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise ZooError(f"Could not create a new run folder under {parent}; clean it up and retry.")


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


def environment(device: torch.device) -> dict:
    """What a reader needs to judge or reproduce the numbers: versions, hardware, threads."""
    from zoo import __version__

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


def load_run(run_dir: str | Path) -> tuple[dict, dict]:
    """(config.json, metrics.json) of a run folder, with clear errors for anything else."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ZooError(f"Run folder {run_dir} does not exist; pass a folder made by `zoo train`.")
    config, metrics = read_json(run_dir / CONFIG), read_json(run_dir / METRICS)
    if metrics.get("schema_version", 0) > SCHEMA_VERSION:
        raise ZooError(f"{run_dir / METRICS} is from a newer zoo; upgrade zoo to read it.")
    return config, metrics
