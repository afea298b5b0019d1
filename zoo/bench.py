"""`zoo bench`: throughput, latency, memory and FLOPs of registry models on synthetic input.

Measured the way timm's benchmark.py and torch.utils.benchmark do: inputs already on the device
at the dataset's input size (data loading is not measured), warm-up iterations first, the device
synchronised around every timed iteration, `inference_mode` for inference, the training step
being zoo's own (`zoo.train.train_step`), every iteration's time kept and summarised by its
median with p90, p99 and IQR. Each model runs in a fresh process, so one model's memory state
cannot change the next one's numbers; a model that fails becomes an error row.

    BENCH_COLUMNS, bench_file_stem, load_bench_rows     the row schema and its files
    measure_model                                       one model, one mode (in a child process)
    run_bench                                           the models, each in its own process
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

from zoo.errors import ZooError

# One row per model and mode. FLOPs = 2 x multiply-adds (timm and torchvision print MACs).
BENCH_COLUMNS = {
    "model": str,
    "task": str,
    "dataset": str,
    "mode": str,  # infer | train
    "device": str,
    "device_name": str,
    "precision": str,  # what ran: fp32 | fp16 | bf16
    "memory_format": str,  # nchw | nhwc
    "compiled": bool,
    "batch_size_asked": int,
    "batch_size": int,  # used, after any out-of-memory halving
    "oom_retried": bool,
    "input_shape": str,  # C x H x W
    "params": int,
    "flops_per_image": float,  # forward (infer) or forward + backward (train)
    "images_per_second": float,  # median over every timed iteration
    "latency_ms_median": float,  # per batch
    "latency_ms_p90": float,
    "latency_ms_p99": float,
    "latency_ms_iqr": float,
    "timed_iterations": int,
    "repeats": int,
    "peak_memory_mb": float,  # CUDA max allocated; CPU: peak RSS growth of the process
    "peak_reserved_mb": float,  # CUDA max reserved
    "achieved_tflops": float,
    "peak_tflops": float,  # the machine's matmul peak in the same dtype, measured
    "mfu": float,  # achieved / peak
    "compile_seconds": float,
    "error": str,  # empty, or why this model/setting has no figures
}


def bench_file_stem(mode: str, precision: str, memory_format: str, environment: dict) -> str:
    """timm's naming: benchmark-<mode>-<precision>-<memory format>-pt<torch>-<device>."""
    device = environment.get("cuda_slug") or environment["device_name"]
    device = re.sub(r"[^a-z0-9.]+", "-", device.lower()).strip("-")
    torch_version = environment["torch"].split("+")[0]
    return f"benchmark-{mode}-{precision}-{memory_format}-pt{torch_version}-{device}"


def parse_cell(kind: type, text: str):
    if text == "":
        return None
    if kind is bool:
        if text not in ("True", "False", "true", "false"):
            raise ValueError(f"not a boolean: {text!r}")
        return text.lower() == "true"
    return kind(text)


def rows_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(BENCH_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in BENCH_COLUMNS})
    return buffer.getvalue()


def read_bench_csv(path: Path) -> list[dict]:
    """The typed rows of one bench CSV; ValueError when it is not one."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or list(reader.fieldnames)[: len(BENCH_COLUMNS)] != list(
            BENCH_COLUMNS
        ):
            raise ValueError("its columns are not zoo bench's")
        return [
            {name: parse_cell(kind, row[name] or "") for name, kind in BENCH_COLUMNS.items()}
            for row in reader
        ]


def load_bench_rows(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Every bench row in `folder`'s benchmark-*.csv files (searched recursively), and one
    warning per file that is not a zoo bench file (skipped)."""
    folder = Path(folder)
    rows, warnings = [], []
    for path in sorted(folder.rglob("benchmark-*.csv")):
        try:
            rows += read_bench_csv(path)
        except (ValueError, OSError, csv.Error, UnicodeDecodeError, TypeError) as error:
            warnings.append(f"Skipped {path}: not a zoo bench file ({error}).")
    return rows, warnings


def write_rows(folder: Path, stem: str, rows: list[dict], header: dict) -> None:
    """The CSV and the JSON (with the environment and the measured peak) of one bench file,
    each written atomically, so an interrupted bench leaves the rows measured so far."""
    from zoo.results import atomic_write_bytes, write_json

    atomic_write_bytes(folder / f"{stem}.csv", rows_csv(rows).encode())
    write_json(folder / f"{stem}.json", {**header, "rows": rows})


def check_mode(mode: str) -> tuple[str, ...]:
    if mode not in ("infer", "train", "both"):
        raise ZooError(f"--mode must be infer, train or both, got {mode!r}.")
    return ("infer", "train") if mode == "both" else (mode,)


def to_json(value) -> str:
    return json.dumps(value)
