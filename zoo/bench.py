"""`zoo bench`: throughput, latency, memory and FLOPs of registry models on synthetic input.

Measured the way timm's benchmark.py and torch.utils.benchmark do: inputs already on the device
at the dataset's input size (data loading is not measured), warm-up iterations first, the device
synchronised around every timed iteration, `inference_mode` for inference, the training step
being zoo's own (`zoo.train.train_step`). Throughput is sustained: each repeat's images over
its time, the median over the repeats (timm's samples / elapsed, per repeat). Latency per batch
is every iteration's time, summarised by its median, p90, p99 and IQR. Each model runs in a
fresh process, so one model's memory state cannot change the next one's numbers; a model that
fails becomes an error row.

The rows are merged into the bench files (zoo/benchfiles.py: the schema, merging, migrating).
FLOP utilisation is a share of a peak that no kernel exceeds (zoo/peaks.py).

    measure_model                                       one model, one mode (in a child process)
    select_models, run_bench, result_table              what `zoo bench` calls
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from zoo.benchfiles import (
    BENCH_COLUMNS,
    bench_file_stem,
    migrate_bench_folder,
    read_bench_file,
    timm_columns,
    write_merged,
)
from zoo.config import AmpDtype, option, plain_choices
from zoo.errors import ZooError
from zoo.peaks import apply_peak, cpu_identity, machine_peak, outruns, raise_peak
from zoo.progress import phase

# ----------------------------------------------------------------------------- measuring

MIN_ITERATIONS = 6  # timed iterations in all, whatever the budget (spread over the repeats)
WARMUP = 2  # untimed iterations first (after the first call, which compiles with --compile)


class BenchMode(str, Enum):
    infer = "infer"
    train = "train"
    both = "both"


@dataclass(frozen=True)
class Setting:
    """What one bench run measures, the same for every model; each field is a `zoo bench`
    option. Plain values (an enum's choice is kept as its string): it goes to the child
    processes as JSON."""

    dataset: str | None = option(
        None, "Input size and classes of this dataset; default: each model's."
    )
    amp: bool = option(False, "Mixed precision (CUDA; CPU only bf16).")
    amp_dtype: str = option("float16", "Autocast dtype.", choices=AmpDtype)
    channels_last: bool = option(True, "NHWC memory format.")
    compile: bool = option(False, "torch.compile (its time reported apart).")
    batch_size: int | None = option(None, "Images per batch; default 128, segmentation 8.", min=1)
    img_size: int | None = option(None, "Square input side; default the dataset's.", min=1)
    mode: str = option("both", "Inference, training step, or both.", choices=BenchMode)
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    repeats: int = option(3, "Timed repeats; all are kept.", min=1)
    budget: float = option(
        6.0,
        "Seconds of timed iterations per model and mode, split evenly over the repeats; "
        f"whatever the budget, each repeat times at least ceil({MIN_ITERATIONS}/repeats) "
        "iterations.",
        min=0,
    )
    retry: bool = option(True, "Halve the batch on CUDA out-of-memory.")

    def __post_init__(self) -> None:
        plain_choices(self)

    def modes(self) -> tuple[str, ...]:
        return ("infer", "train") if self.mode == "both" else (self.mode,)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile by linear interpolation (numpy's default)."""
    import numpy as np

    return float(np.percentile(values, q))


def conv_backward_flops(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation,
    transposed, _output_padding, _groups, output_mask, **kwargs,
) -> int:  # fmt: skip
    """FLOPs of a convolution's backward: the input gradient and the weight gradient each cost
    what the forward does. torch's own formula (2.14) forgets the groups in the weight gradient,
    which counts a depthwise convolution's backward `groups` times over (pytorch PR 183405)."""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (bool(output_mask[0]) + bool(output_mask[1]))


def count_flops(step, *args) -> float:
    """FLOPs of one call of `step(*args)`, counted by torch.utils.flop_counter (2 per
    multiply-add, as FLOPs are usually counted; MACs are half of it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step(*args)
    return float(counter.get_total_flops())


def summarize(repeats: list[list[float]], batch: int) -> dict:
    """The row's figures from each repeat's iteration times (seconds). Throughput is each
    repeat's images over its time, the median of the repeats: what a run of many steps gets,
    stalls included (the median of single iterations would leave them out and read higher).
    Latency is per batch, over every iteration."""
    times = [t for repeat in repeats for t in repeat]
    return {
        "images_per_second": percentile([batch * len(r) / sum(r) for r in repeats], 50),
        "latency_ms_median": 1000 * percentile(times, 50),
        "latency_ms_p90": 1000 * percentile(times, 90),
        "latency_ms_p99": 1000 * percentile(times, 99),
        "latency_ms_iqr": 1000 * (percentile(times, 75) - percentile(times, 25)),
        "timed_iterations": len(times),
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def new_row(model_name: str, setting: Setting) -> dict:
    row = dict.fromkeys(BENCH_COLUMNS)
    row.update(model=model_name, mode=setting.mode, device=setting.device, error="")
    return row


def describe(model_name: str, setting: Setting) -> dict:
    """The row's what-and-where columns (task, dataset, device name, torch, precision, memory
    format, compiled, batch asked, input shape), known before anything is measured."""
    import torch

    from zoo.config import TASK_DEFAULTS
    from zoo.data.base import get_dataset_info
    from zoo.registry import get_model_entry
    from zoo.results import cpu_model
    from zoo.runtime import resolve_device, resolve_precision

    entry = get_model_entry(model_name)
    info = get_dataset_info(setting.dataset or entry.dataset)
    device = resolve_device(setting.device)
    height, width = (setting.img_size,) * 2 if setting.img_size else info.image_size
    return {
        "task": entry.task,
        "dataset": info.name,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "torch": torch.__version__,
        "precision": resolve_precision(device, setting.amp, setting.amp_dtype).label,
        "memory_format": "nhwc" if setting.channels_last else "nchw",
        "compiled": setting.compile,
        "batch_size_asked": setting.batch_size or TASK_DEFAULTS[entry.task]["batch_size"],
        "oom_retried": False,
        "input_shape": f"{info.in_chans}x{height}x{width}",
        "repeats": setting.repeats,
    }


def measure_model(model_name: str, setting: Setting) -> dict:
    """One row: `model_name` in `setting`, in this process (a fresh one: `run_bench` starts
    one per model and mode, and sets the peak columns). Exceptions become the row's `error`."""
    row = new_row(model_name, setting)
    try:
        row.update(describe(model_name, setting))
        measure_into(row, model_name, setting)
    except Exception as error:  # a model that fails is a row saying why, never a crash
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        row["error"] = f"{type(error).__name__}: {first_line}"[:300]
    row.update(timm_columns(row))
    return row


def measure_into(row: dict, model_name: str, setting: Setting) -> None:
    import resource
    import time

    import torch

    from zoo.config import TrainConfig
    from zoo.data.base import get_dataset_info
    from zoo.registry import create_model, get_model_entry
    from zoo.runtime import (
        autocast,
        check_compile,
        compile_model,
        place_model,
        resolve_device,
        resolve_precision,
        synchronize,
    )
    from zoo.train import compute_loss, make_trainer, train_step

    entry = get_model_entry(model_name)
    info = get_dataset_info(row["dataset"])
    device = resolve_device(setting.device)
    if setting.compile:
        check_compile(device)
    precision = resolve_precision(device, setting.amp, setting.amp_dtype)
    _, height, width = map(int, row["input_shape"].split("x"))
    batch = row["batch_size_asked"]
    layout = torch.channels_last if setting.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    model = place_model(
        create_model(model_name, num_classes=info.num_classes, in_chans=info.in_chans),
        device, setting.channels_last,
    )  # fmt: skip
    row["params"] = sum(p.numel() for p in model.parameters())

    def inputs(size: int):
        images = torch.randn(size, info.in_chans, height, width, device=device)
        shape = (size,) if entry.task == "classification" else (size, height, width)
        targets = torch.randint(0, info.num_classes, shape, device=device)
        return images.contiguous(memory_format=layout), targets

    if setting.mode == "infer":
        model.eval()
        runner = compile_model(model, frozen=True) if setting.compile else model

        @torch.inference_mode()
        def step(images, targets):
            with autocast(device, precision):
                return runner(images)

    else:
        config = TrainConfig(
            model=model_name, schedule="none", batch_size=batch, compile=setting.compile,
            amp=setting.amp, amp_dtype=setting.amp_dtype, channels_last=setting.channels_last,
        )  # fmt: skip
        trainer = make_trainer(config, model, device=device, precision=precision, steps_per_epoch=1)

        def step(images, targets):
            return train_step(trainer, images, targets)

    def plain_step(images, targets):  # the same arithmetic as `step`, without compile
        if setting.mode == "infer":
            with torch.inference_mode(), autocast(device, precision):
                model(images)
        else:
            with autocast(device, precision):
                logits = model(images)
            compute_loss(logits, targets).backward()
            model.zero_grad(set_to_none=True)

    # FLOPs per image, on a 2-image batch (they grow linearly with the batch).
    row["flops_per_image"] = count_flops(plain_step, *inputs(2)) / 2

    before_rss = rss_mb()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    while True:
        try:
            images, targets = inputs(batch)
            start = time.perf_counter()
            step(images, targets)  # the first call: compiles with --compile
            synchronize(device)
            first = time.perf_counter() - start
            for _ in range(WARMUP):
                step(images, targets)
            synchronize(device)
            break
        except torch.cuda.OutOfMemoryError:
            if not setting.retry or batch == 1:
                raise
            batch //= 2
            row["oom_retried"] = True
            if setting.compile and setting.mode == "train":
                trainer.compiled_batch_size = batch  # the new full batch: it compiles
            torch.cuda.empty_cache()
    row["batch_size"] = batch
    row["compile_seconds"] = first if setting.compile else None

    repeats: list[list[float]] = []
    per_repeat = setting.budget / setting.repeats
    least = -(-MIN_ITERATIONS // setting.repeats)
    for _ in range(setting.repeats):
        times: list[float] = []
        began = time.perf_counter()
        while len(times) < least or time.perf_counter() - began < per_repeat:
            synchronize(device)
            start = time.perf_counter()
            step(images, targets)
            synchronize(device)
            times.append(time.perf_counter() - start)
        repeats.append(times)
    row.update(summarize(repeats, batch))
    if device.type == "cuda":
        row["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        row["peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        row["peak_memory_mb"] = max(0.0, peak_rss - before_rss)
    row["achieved_tflops"] = row["flops_per_image"] * row["images_per_second"] / 1e12


def child_main() -> None:
    """`python -m zoo.bench SPEC_JSON`: measure one model in this fresh process, print its row."""
    import sys

    spec = json.loads(sys.argv[1])
    torch_threads = spec.pop("threads", None)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    row = measure_model(spec["model"], Setting(**spec["setting"]))
    print(json.dumps(row), flush=True)


def measure_in_child(model_name: str, setting: Setting) -> dict:
    """`measure_model` in a fresh process; a process that dies (killed, out of memory, ...)
    is an error row saying so."""
    import contextlib
    import subprocess
    import sys

    spec = {"model": model_name, "setting": setting.__dict__}
    proc = subprocess.run(
        [sys.executable, "-m", "zoo.bench", json.dumps(spec)], capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    row = new_row(model_name, setting)
    with contextlib.suppress(Exception):  # what it can say without the model
        row.update(describe(model_name, setting))
    tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    row["error"] = f"the benchmark process failed: {tail}"[:300]
    return row | timm_columns(row)


# ----------------------------------------------------------------------------- a bench run


def bench_environment(device, precision, setting: Setting) -> dict:
    """What the bench files say about where a bench run measured."""
    import os

    import torch

    from zoo.results import environment

    env = environment(device)
    env |= {
        "cpu_id": cpu_identity(),
        "dtype": str(precision.autocast_dtype or torch.float32).removeprefix("torch."),
        "memory_format": "nhwc" if setting.channels_last else "nchw",
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "inputs": "synthetic, already on the device (data loading is not measured)",
        "images_per_second": "sustained: median over the repeats of images / time",
    }
    if device.type == "cuda":
        env["cuda_slug"] = f"cu{torch.version.cuda.replace('.', '')}-{env['device_name']}"
    return env


def select_models(
    models: list[str] | None, all_models: bool, task: str | None, dataset: str | None
) -> list[str]:
    """The registry names `zoo bench` measures: `models` (duplicates dropped) or, with
    `all_models`, every registered model (of `task`, or of `dataset`'s task, when given); a
    ZooError for a bad combination or an unknown name (with close matches), before any work."""
    from zoo.registry import get_model_entry, list_models

    task = getattr(task, "value", task)  # the CLI's TaskName enum or a plain string
    if all_models == bool(models):
        raise ZooError("Name the models to bench, or pass --all (not both).")
    if dataset is not None:
        from zoo.data import get_dataset_info

        dataset_task = get_dataset_info(dataset).task
        if task is not None and task != dataset_task:
            raise ZooError(
                f"--dataset {dataset} is a {dataset_task} dataset but --task is {task}; drop one."
            )
        task = dataset_task if all_models else task
    if all_models:
        return list_models("*", task)
    if task is not None:
        raise ZooError("--task only filters --all; drop it, or pass --all instead of names.")
    names = list(dict.fromkeys(models))
    for name in names:
        entry = get_model_entry(name)  # an unknown name: one sentence with close matches
        if dataset is not None and entry.task != dataset_task:
            raise ZooError(
                f"{name} is a {entry.task} model and --dataset {dataset} a {dataset_task} "
                f"dataset; pick a {entry.task} dataset or leave --dataset out."
            )
    return names


def run_bench(
    models: list[str], setting: Setting, out: Path, on_row=None, on_note=None, on_warning=None
) -> list[dict]:
    """Measure `models` in each of `setting`'s modes, each model and mode in a fresh process,
    merging the rows into the bench files in `out` as they come (an interrupted run keeps them,
    and every row it did not measure). Before any work: `out` is checked writable, schema-1
    files in it are migrated, and a file in the way that cannot be merged into is a ZooError
    naming it; `on_warning(text)` when the precision cannot run as asked. `on_note(text)` says
    what is measured, a migrated file or a raised peak; `on_row(row)` after each row. Returns
    this run's rows."""
    from zoo.results import check_writable
    from zoo.runtime import resolve_device, resolve_precision

    out, modes = Path(out), setting.modes()
    device = resolve_device(setting.device)
    setting = replace(setting, device=str(device))
    precision = resolve_precision(device, setting.amp, setting.amp_dtype)
    note = on_note or (lambda text: None)
    if precision.warning:
        (on_warning or note)(precision.warning)
    check_writable(out)
    note(
        f"Benchmarking {len(models)} models ({', '.join(modes)}) on {device}, {precision.label}, "
        f"{'nhwc' if setting.channels_last else 'nchw'}; synthetic inputs on the device, data "
        f"loading not measured; {setting.budget:g} s per model and mode -> {out}"
    )
    env = bench_environment(device, precision, setting)
    stems = {
        mode: bench_file_stem(mode, precision.label, env["memory_format"], env) for mode in modes
    }
    for path in migrate_bench_folder(out):
        note(f"Migrated {path} to the current bench columns (nothing measured again).")
    for stem in stems.values():
        read_bench_file(out, stem)  # a file it cannot merge into: a ZooError naming it
    seconds = max(0.5, min(2.0, setting.budget))
    with phase(f"measuring the peak FLOP/s of {device}"):
        peak = machine_peak(device, precision, seconds)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    asked = {name: value for name, value in asdict(setting).items() if name != "mode"}
    run = {"measured_at": stamp, "environment": env, "setting": asked,
           "models": list(models)} | peak.columns()  # fmt: skip
    measured: dict[str, list[dict]] = {mode: [] for mode in modes}
    everything: list[dict] = []
    for mode in modes:
        for number, model in enumerate(models, start=1):
            # on_row tells how each went: a log needs no line of its own for the model
            with phase(f"{mode} {model} ({number}/{len(models)})", log=False):
                row = measure_in_child(model, replace(setting, mode=mode)) | {"measured_at": stamp}
            raised = outruns(row, peak)
            if raised:  # every row of this run gets the new peak, in both modes' files
                with phase(f"raising the peak FLOP/s of {device}"):
                    peak = raise_peak(peak, row, device, precision, seconds)
                run |= peak.columns()
                for earlier in everything:
                    apply_peak(earlier, peak)
                note(f"Peak raised to {peak.flops / 1e12:.4g} TFLOP/s ({peak.source}).")
            apply_peak(row, peak)
            measured[mode].append(row)
            everything.append(row)
            for written, rows in measured.items():
                if rows and (written == mode or raised):
                    write_merged(out, stems[written], rows, run)
            if on_row is not None:
                on_row(row)
    return everything


RESULT_COLUMNS = ("mode", "model", "batch", "img/s", "ms/batch", "p90 ms", "peak MB",
                  "GFLOP/img", "MFU")  # fmt: skip
DROPPED_FIRST = ("p90 ms", "peak MB", "GFLOP/img", "batch", "ms/batch")  # until the table fits
MIN_ERROR_WIDTH = 20


def progress_line(row: dict) -> str:
    """What `zoo bench` says as each row comes: its speed, or its error."""
    if row["error"]:
        return f"{row['mode']:>5} {row['model']}: {row['error']}"
    return (
        f"{row['mode']:>5} {row['model']}: {row['images_per_second']:,.1f} img/s, "
        f"{row['latency_ms_median']:.2f} ms/batch of {row['batch_size']}"
    )


def result_cells(row: dict) -> dict[str, str]:
    """A row's cells in `result_table` (empty where it has no figures)."""
    cells = {"mode": row["mode"], "model": row["model"], "batch": str(row.get("batch_size") or "")}
    if row.get("error") or row.get("images_per_second") is None:
        return cells
    return cells | {
        "img/s": f"{row['images_per_second']:,.1f}",
        "ms/batch": f"{row['latency_ms_median']:,.2f}",
        "p90 ms": f"{row['latency_ms_p90']:,.2f}",
        "peak MB": f"{row['peak_memory_mb']:,.0f}" if row["peak_memory_mb"] is not None else "",
        "GFLOP/img": f"{row['flops_per_image'] / 1e9:.3f}",
        "MFU": f"{100 * row['mfu']:.1f}%" if row.get("mfu") is not None else "",
    }


def result_table(rows: list[dict], title: str | None = None, width: int = 80):
    """`zoo bench`'s table of `rows`, at most `width` columns wide: numbers and model names
    never wrap or get cut; columns are left out until it fits (DROPPED_FIRST), the mode column
    when every row has the same mode (the title says it). The error column is there only when
    a row has an error, and its text wraps in the room left. The title says the precision
    unless given."""
    from rich.console import Console
    from rich.table import Table

    if title is None:
        labels = sorted({row["precision"] for row in rows if row.get("precision")})
        title = f"zoo bench ({', '.join(labels) or 'no row measured'})"

    cells = [result_cells(row) | {"error": row.get("error") or ""} for row in rows]
    modes = sorted({row["mode"] for row in rows})
    columns = [name for name in RESULT_COLUMNS if name != "mode" or len(modes) > 1]
    title = f"{title}, {modes[0]}" if len(modes) == 1 else title
    errors = any(row["error"] for row in cells)

    def build(names: list[str], error_width: int | None = None) -> Table:
        table = Table(title=title)
        for name in names:
            justify = "left" if name in ("mode", "model") else "right"
            table.add_column(name, justify=justify, no_wrap=True)
        if error_width is not None:
            table.add_column("error", overflow="fold", max_width=error_width)
        shown = [*names, "error"] if error_width is not None else names
        for row in cells:
            table.add_row(*(row.get(name, "") for name in shown))
        return table

    for name in ("", *DROPPED_FIRST):
        if name in columns:
            columns.remove(name)
        used = Console(width=10_000).measure(build(columns)).maximum
        room = width - used - 3  # the error column's border and padding
        if (room >= MIN_ERROR_WIDTH) if errors else (used <= width):
            break
    table = build(columns, max(room, MIN_ERROR_WIDTH) if errors else None)
    peaks = {(row["peak_tflops"], row["peak_source"]) for row in rows if row.get("mfu") is not None}
    if len(peaks) == 1:
        peak, source = peaks.pop()
        table.caption = f"MFU: a share of {peak:.4g} TFLOP/s ({source})"
    return table


if __name__ == "__main__":
    child_main()
