"""The bench files: one CSV + JSON per setting (mode, precision, memory format, machine), their row
schema (zoo's columns and timm's benchmark.py columns), reading, merging and migrating.

A bench run merges into its files: it replaces the rows of the models and setting it measured
and keeps every other row. Files written before the current schema are migrated; any other file
in the way stops the run before any work, naming the file. `zoo compare` reads these files
without importing the code that measures them (zoo/bench.py).

    BENCH_COLUMNS, TIMM_COLUMNS, load_bench_rows        the row schema and reading the files
    merge_rows, write_merged, migrate_bench_folder      writing them
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from zoo.errors import ZooError

SCHEMA_VERSION = 2  # of the bench files; 1 (until 2026-12-01) had no timm columns, no peak source

# One row per model and mode. FLOPs = 2 x multiply-adds (timm and torchvision print MACs).
BENCH_COLUMNS = {
    "model": str,
    "task": str,
    "dataset": str,
    "mode": str,  # infer | train
    "device": str,
    "device_name": str,
    "torch": str,  # torch.__version__
    "precision": str,  # what ran: fp32 | fp16 | bf16
    "memory_format": str,  # nchw | nhwc
    "compiled": bool,
    "batch_size_asked": int,
    "batch_size": int,  # used, after any out-of-memory halving
    "oom_retried": bool,
    "input_shape": str,  # C x H x W
    "params": int,
    "flops_per_image": float,  # forward (infer) or forward + backward (train)
    "images_per_second": float,  # sustained: median over the repeats of images / time
    "latency_ms_median": float,  # per batch
    "latency_ms_p90": float,
    "latency_ms_p99": float,
    "latency_ms_iqr": float,
    "timed_iterations": int,
    "repeats": int,
    "peak_memory_mb": float,  # CUDA max allocated; CPU: peak RSS growth of the process
    "peak_reserved_mb": float,  # CUDA max reserved
    "achieved_tflops": float,
    "peak_tflops": float,  # the peak no kernel exceeds, in the same dtype (see peak_source)
    "peak_source": str,  # datasheet | instruction set | measured | migrated: how it was found
    "matmul_tflops": float,  # the best matmul of the sweep, measured beside it
    "mfu": float,  # achieved / peak
    "compile_seconds": float,
    "measured_at": str,  # UTC start of the bench run; empty in rows migrated from schema 1
    # timm's benchmark.py columns, in its units (its infer_macts, fvcore's activation count, is
    # not counted by zoo): the row's own mode's columns are filled, the other mode's are empty.
    "infer_samples_per_sec": float,
    "infer_step_time": float,  # ms per batch at the sustained rate: 1000 x batch / samples/s
    "infer_batch_size": int,
    "infer_img_size": int,  # the input's width
    "infer_gmacs": float,  # G multiply-adds of one image's forward: flops_per_image / 2 / 1e9
    "train_samples_per_sec": float,
    "train_step_time": float,
    "train_batch_size": int,
    "train_img_size": int,
    "param_count": float,  # millions
    "error": str,  # empty, or why this model/setting has no figures
}
# What timm's benchmark.py writes with --bench both (and a FLOP counter installed).
TIMM_COLUMNS = (
    "model",
    "infer_samples_per_sec",
    "infer_step_time",
    "infer_batch_size",
    "infer_img_size",
    "infer_gmacs",
    "train_samples_per_sec",
    "train_step_time",
    "train_batch_size",
    "train_img_size",
    "param_count",
)
LEGACY_COLUMNS = (  # schema 1's header, migrated when read (`upgrade_legacy_files`)
    "model", "task", "dataset", "mode", "device", "device_name", "precision", "memory_format",
    "compiled", "batch_size_asked", "batch_size", "oom_retried", "input_shape", "params",
    "flops_per_image", "images_per_second", "latency_ms_median", "latency_ms_p90",
    "latency_ms_p99", "latency_ms_iqr", "timed_iterations", "repeats", "peak_memory_mb",
    "peak_reserved_mb", "achieved_tflops", "peak_tflops", "mfu", "compile_seconds", "error",
)  # fmt: skip
# The rows a bench run replaces: same model, input, batch asked and way of running.
ROW_KEY = ("model", "dataset", "mode", "precision", "memory_format", "compiled",
           "batch_size_asked", "input_shape")  # fmt: skip
KIND_WORDS = {str: "text", int: "a whole number", float: "a number", bool: "True or False"}
MIGRATION_NOTE = (
    "Rewritten from a schema-1 file without measuring anything again: torch from the file's "
    "environment; timm's columns from each row's own figures; matmul_tflops is the old "
    "peak_tflops (the one matmul its bench run measured); peak_tflops is the larger of that "
    "matmul and the fastest row of the same bench run (the rows that share one measured "
    "peak), and mfu = achieved_tflops / peak_tflops. The file does not record the CPU's model "
    "or clock, so no instruction-set peak could be derived."
)


class BenchFileError(ValueError):
    """A file that is not a zoo bench file; the message says why (and names the line)."""


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


def parse_row(header: list[str], cells: list[str], line: int) -> dict:
    """One CSV line as a typed row; BenchFileError naming the line when it is not a bench row."""
    if len(cells) != len(header):
        raise BenchFileError(
            f"line {line} has {len(cells)} cells where the header has {len(header)}"
        )
    row = {}
    for name, text in zip(header, cells, strict=True):
        kind = BENCH_COLUMNS[name]
        try:
            row[name] = parse_cell(kind, text)
        except ValueError:
            raise BenchFileError(
                f"line {line} has {name} {text!r}, not {KIND_WORDS[kind]}"
            ) from None
    if not row["model"] or row["mode"] not in ("infer", "train"):
        raise BenchFileError(f"line {line} has no model or no mode (infer or train)")
    return row


def read_bench_csv(path: Path) -> tuple[list[dict], int]:
    """The typed rows of one bench CSV and its schema version (1: to be migrated, see
    `upgrade_legacy_files`). BenchFileError when its columns are not a zoo bench file's or a
    line is not a bench row; OSError or UnicodeDecodeError when it cannot be read as text."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header == list(BENCH_COLUMNS):
            version = SCHEMA_VERSION
        elif header == list(LEGACY_COLUMNS):
            version = 1
        else:
            raise BenchFileError("not a zoo bench file of this version (its columns differ)")
        rows = [parse_row(header, cells, reader.line_num) for cells in reader if cells]
    return rows, version


def load_bench_rows(folder: str | Path) -> tuple[list[dict], list[str]]:
    """Every bench row in `folder`'s benchmark-*.csv files (searched recursively), files of an
    earlier schema migrated in memory, and one warning per file that cannot be read as a zoo
    bench file (skipped; the other files are still read)."""
    files, warnings = [], []
    for path in sorted(Path(folder).rglob("benchmark-*.csv")):
        try:
            rows, version = read_bench_csv(path)
        except BenchFileError as error:
            warnings.append(f"Skipped {path}: {error}.")
            continue
        except (ValueError, OSError, csv.Error) as error:
            warnings.append(f"Skipped {path}: not a zoo bench file ({error}).")
            continue
        files.append((path, rows, version))
    upgrade_legacy_files([(path, rows) for path, rows, version in files if version == 1])
    return [in_column_order(row) for _, rows, _ in files for row in rows], warnings


def in_column_order(row: dict) -> dict:
    """The row with every column, in BENCH_COLUMNS' order, empty cells None (as read back)."""
    return {name: None if row.get(name) == "" else row.get(name) for name in BENCH_COLUMNS}


def timm_columns(row: dict) -> dict:
    """timm benchmark.py's columns of a row, in timm's units, from the row's own figures: its
    mode's samples/s, step time (ms), batch size and image size, the forward's GMACs (inference
    rows, as timm profiles inference only) and the parameters in millions."""
    values = dict.fromkeys(TIMM_COLUMNS[1:])
    if row.get("params") is not None:
        values["param_count"] = row["params"] / 1e6
    rate, mode, batch = row.get("images_per_second"), row.get("mode"), row.get("batch_size")
    if rate and batch and mode in ("infer", "train"):
        width = (row.get("input_shape") or "").split("x")[-1]
        values[f"{mode}_samples_per_sec"] = rate
        values[f"{mode}_step_time"] = 1000 * batch / rate
        values[f"{mode}_batch_size"] = batch
        values[f"{mode}_img_size"] = int(width) if width.isdigit() else None
        if mode == "infer" and row.get("flops_per_image") is not None:
            values["infer_gmacs"] = row["flops_per_image"] / 2 / 1e9
    return values


# ----------------------------------------------------------------------------- merging files


def row_key(row: dict) -> tuple:
    return tuple(row.get(name) for name in ROW_KEY)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """`old` with the rows of `new`'s models and settings put in place of theirs (one row per
    key, where the old one stood), the other old rows kept, the rest of `new` appended."""
    fresh = {row_key(row): row for row in new}
    merged, placed = [], set()
    for row in old:
        key = row_key(row)
        if key not in fresh:
            merged.append(row)
        elif key not in placed:
            merged.append(fresh[key])
            placed.add(key)
    return merged + [row for key, row in fresh.items() if key not in placed]


def read_bench_file(folder: Path, stem: str) -> tuple[list[dict], dict]:
    """The rows and the JSON header of the bench file `stem` in `folder` ([] and {} when there
    is none), to merge into: a ZooError naming the file when it is not a zoo bench file of
    this schema (run `migrate_bench_folder` first for older ones)."""
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    fix = "fix or move it, or pass another --out"
    if not csv_path.exists():
        if json_path.exists():
            raise ZooError(f"{json_path} has no {csv_path.name} beside it; {fix}.")
        return [], {}
    try:
        rows, version = read_bench_csv(csv_path)
    except BenchFileError as error:
        raise ZooError(f"Cannot add rows to {csv_path}: {error}; {fix}.") from None
    except (ValueError, OSError, csv.Error) as error:
        raise ZooError(
            f"Cannot add rows to {csv_path}: it cannot be read ({error}); {fix}."
        ) from None
    if version != SCHEMA_VERSION:
        raise ZooError(f"Cannot add rows to {csv_path}: it is a schema-{version} file; {fix}.")
    if not json_path.exists():
        return rows, {}
    try:
        header = json.loads(json_path.read_text())
    except (ValueError, OSError) as error:
        raise ZooError(
            f"Cannot add rows to {json_path}: it cannot be read ({error}); {fix}."
        ) from None
    if not isinstance(header, dict) or header.get("schema_version") != SCHEMA_VERSION:
        raise ZooError(
            f"Cannot add rows to {json_path}: it is not a schema-{SCHEMA_VERSION} zoo bench "
            f"file; {fix}."
        )
    return rows, header


def write_bench_file(folder: Path, stem: str, rows: list[dict], header: dict) -> None:
    """The CSV and the JSON (the header: schema, bench runs, migrations; then the rows) of one
    bench file, each written atomically: a reader sees the old file or the new one."""
    from zoo.results import atomic_write_bytes, write_json

    rows = [in_column_order(row) for row in rows]
    atomic_write_bytes(folder / f"{stem}.csv", rows_csv(rows).encode())
    write_json(folder / f"{stem}.json", {**header, "rows": rows})


def write_merged(folder: Path, stem: str, new: list[dict], run: dict) -> None:
    """Merge `new` (rows of the bench run `run`) into the file `stem`: their models' and
    settings' rows replaced, every other row kept; read again before each write, so rows that
    another run wrote meanwhile are kept too. The JSON lists the bench runs that rows remain of."""
    old, header = read_bench_file(folder, stem)
    rows = merge_rows(old, new)
    stamps = {row.get("measured_at") for row in rows}
    runs = [
        r for r in header.get("runs", [])
        if r.get("measured_at") in stamps and r.get("measured_at") != run["measured_at"]
    ]  # fmt: skip
    header = {"schema_version": SCHEMA_VERSION, "runs": [*runs, run]} | (
        {"migrations": header["migrations"]} if header.get("migrations") else {}
    )
    write_bench_file(folder, stem, rows, header)


# ----------------------------------------------------------------------------- older files


def legacy_header(path: Path) -> dict:
    """A schema-1 JSON's header ({} when it is missing or unreadable: its CSV holds the rows)."""
    try:
        header = json.loads(path.read_text())
    except (ValueError, OSError):
        return {}
    return header if isinstance(header, dict) else {}


def upgrade_legacy_files(files: list[tuple[Path, list[dict]]]) -> None:
    """Bring schema-1 rows (read from `files`) to today's columns, in place, from their own
    figures (see MIGRATION_NOTE): rows that share a measured peak, device and precision came
    from one bench run, whose peak becomes the larger of its matmul and its fastest row."""
    for path, rows in files:
        environment = legacy_header(path.with_suffix(".json")).get("environment") or {}
        found = re.search(r"-pt([0-9][^-]*)-", path.name)
        torch_version = environment.get("torch") or (found.group(1) if found else None)
        for row in rows:
            row.setdefault("torch", torch_version)
            row.setdefault("measured_at", None)
    groups: dict[tuple, list[dict]] = {}
    for _, rows in files:
        for row in rows:
            if row.get("achieved_tflops") is not None and row.get("peak_tflops"):
                key = (row["device_name"], row["precision"], row["peak_tflops"])
                groups.setdefault(key, []).append(row)
    for (_, _, matmul), members in groups.items():
        fastest = max(members, key=lambda row: row["achieved_tflops"])
        side = 2048 if (fastest.get("device") or "cpu").startswith("cpu") else 4096
        if fastest["achieved_tflops"] > matmul:
            peak = fastest["achieved_tflops"]
            source = (
                f"migrated: the fastest row of its bench run ({fastest['model']} "
                f"{fastest['mode']}, {peak:.4g} TFLOP/s), above the {side} matmul it measured "
                f"({matmul:.4g})"
            )
        else:
            peak, source = matmul, f"migrated: the {side} matmul its bench run measured"
        for row in members:
            row.update(peak_tflops=peak, peak_source=source, matmul_tflops=matmul)
            row["mfu"] = row["achieved_tflops"] / peak
    for _, rows in files:
        for row in rows:
            row.update(timm_columns(row))


def migrate_bench_folder(folder: str | Path) -> list[Path]:
    """Rewrite `folder`'s schema-1 bench files (CSV and JSON) in today's columns, nothing
    measured again (MIGRATION_NOTE, recorded in each JSON's `migrations`); returns their CSVs.
    Files that are not zoo bench files are left alone (readers and `read_bench_file` name them)."""
    legacy = []
    for path in sorted(Path(folder).glob("benchmark-*.csv")):
        try:
            rows, version = read_bench_csv(path)
        except (ValueError, OSError, csv.Error):
            continue
        if version == 1:
            legacy.append((path, rows))
    upgrade_legacy_files(legacy)
    today = datetime.now(timezone.utc).date().isoformat()
    for path, rows in legacy:
        old = legacy_header(path.with_suffix(".json"))
        measured = [row for row in rows if row.get("peak_tflops") is not None]
        models = list(dict.fromkeys(row["model"] for row in rows))
        environment = dict(old.get("environment") or {})
        environment.pop("peak_tflops", None)  # schema 1's one matmul: now matmul_tflops
        run = {"measured_at": None, "environment": environment or None,
               "setting": old.get("setting"), "models": models}  # fmt: skip
        if measured:
            run |= {k: measured[0][k] for k in ("peak_tflops", "peak_source", "matmul_tflops")}
        migration = {
            "on": today,
            "from_schema": 1,
            "to_schema": SCHEMA_VERSION,
            "how": MIGRATION_NOTE,
        }
        header = {"schema_version": SCHEMA_VERSION, "runs": [run], "migrations": [migration]}
        write_bench_file(path.parent, path.stem, rows, header)
    return [path for path, _ in legacy]
