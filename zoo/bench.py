"""`zoo bench`: throughput, latency, memory and FLOPs of registry models on synthetic input.

Measured the way timm's benchmark.py and torch.utils.benchmark do: inputs already on the device
at the dataset's input size (data loading is not measured), warm-up iterations first, the device
synchronised around every timed iteration, `inference_mode` for inference, the training step
being zoo's own (`zoo.train.train_step`). Throughput is sustained: each repeat's images over
its time, the median over the repeats (timm's samples / elapsed, per repeat). Latency per batch
is every iteration's time, summarised by its median, p90, p99 and IQR. Each model runs in a
fresh process, so one model's memory state cannot change the next one's numbers; a model that
fails becomes an error row.

    BENCH_COLUMNS, bench_file_stem, load_bench_rows     the row schema and its files
    measure_model                                       one model, one mode (in a child process)
    run_bench                                           the models, each in its own process
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

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


# ----------------------------------------------------------------------------- measuring

MIN_ITERATIONS = 6  # timed iterations in all, whatever the budget (spread over the repeats)
WARMUP = 2  # untimed iterations first (after the first call, which compiles with --compile)


@dataclass(frozen=True)
class Setting:
    """What one bench run measures, the same for every model (plain values: it goes to the
    child processes as JSON)."""

    mode: str  # infer | train
    device: str
    amp: bool = False
    amp_dtype: str = "float16"
    channels_last: bool = True
    compile: bool = False
    batch_size: int | None = None  # None: the task's training batch (128; segmentation 8)
    img_size: int | None = None  # None: the dataset's input size
    dataset: str | None = None  # None: each model's default dataset
    repeats: int = 3
    budget: float = 6.0  # seconds of timed iterations per model and mode, over all repeats
    retry: bool = True  # halve the batch on CUDA out-of-memory


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


def peak_flops(device, precision, seconds: float = 2.0) -> float:
    """The machine's matmul throughput in the setting's dtype (FLOP/s), measured: the peak that
    model FLOP utilisation is a share of."""
    import time

    import torch

    from zoo.runtime import synchronize

    side = 4096 if device.type == "cuda" else 2048
    dtype = precision.autocast_dtype or torch.float32
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or count < 3:
        a @ b
        count += 1
    synchronize(device)
    return 2 * side**3 * count / (time.perf_counter() - start)


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


def measure_model(model_name: str, setting: Setting, peak: float) -> dict:
    """One row: `model_name` in `setting`, in this process (a fresh one: `run_bench` starts
    one per model and mode). Exceptions become the row's `error`."""
    row = dict.fromkeys(BENCH_COLUMNS)
    row.update(model=model_name, mode=setting.mode, device=setting.device, error="")
    try:
        measure_into(row, model_name, setting, peak)
    except Exception as error:  # a model that fails is a row saying why, never a crash
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        row["error"] = f"{type(error).__name__}: {first_line}"[:300]
    return row


def measure_into(row: dict, model_name: str, setting: Setting, peak: float) -> None:
    import resource
    import time

    import torch

    from zoo.config import TASK_DEFAULTS, TrainConfig
    from zoo.data.base import get_dataset_info
    from zoo.registry import create_model, get_model_entry
    from zoo.results import cpu_model
    from zoo.runtime import (
        autocast,
        place_model,
        resolve_device,
        resolve_precision,
        synchronize,
    )  # fmt: skip
    from zoo.train import compute_loss, make_trainer, train_step

    entry = get_model_entry(model_name)
    info = get_dataset_info(setting.dataset or entry.dataset)
    device = resolve_device(setting.device)
    precision = resolve_precision(device, setting.amp, setting.amp_dtype)
    height, width = (setting.img_size,) * 2 if setting.img_size else info.image_size
    batch = setting.batch_size or TASK_DEFAULTS[entry.task]["batch_size"]
    layout = torch.channels_last if setting.channels_last else torch.contiguous_format
    row.update(
        task=entry.task, dataset=info.name, precision=precision.label, compiled=setting.compile,
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        memory_format="nhwc" if setting.channels_last else "nchw", batch_size_asked=batch,
        input_shape=f"{info.in_chans}x{height}x{width}", repeats=setting.repeats, oom_retried=False,
    )  # fmt: skip
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
        runner = torch.compile(model) if setting.compile else model

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
    row["peak_tflops"] = peak / 1e12
    row["mfu"] = row["achieved_tflops"] / row["peak_tflops"]


def child_main() -> None:
    """`python -m zoo.bench SPEC_JSON`: measure one model in this fresh process, print its row."""
    import sys

    spec = json.loads(sys.argv[1])
    torch_threads = spec.pop("threads", None)
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    row = measure_model(spec["model"], Setting(**spec["setting"]), spec["peak"])
    print(json.dumps(row), flush=True)


# ----------------------------------------------------------------------------- a bench run


def bench_environment(device, precision, setting: Setting, peak: float) -> dict:
    """What the bench files say about where they were measured."""
    import os

    import torch

    from zoo.results import environment

    env = environment(device)
    env |= {
        "dtype": str(precision.autocast_dtype or torch.float32).removeprefix("torch."),
        "memory_format": "nhwc" if setting.channels_last else "nchw",
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "peak_tflops": peak / 1e12,
        "inputs": "synthetic, already on the device (data loading is not measured)",
        "images_per_second": "sustained: median over the repeats of images / time",
    }
    if device.type == "cuda":
        env["cuda_slug"] = f"cu{torch.version.cuda.replace('.', '')}-{env['device_name']}"
    return env


def run_bench(
    models: list[str], setting_args: dict, modes: tuple[str, ...], out: Path, on_row=None
):
    """Measure `models` in each mode, each model and mode in a fresh process, appending rows to
    the bench files in `out` as they come (an interrupted run keeps them). Returns the rows."""
    import subprocess
    import sys

    from zoo.runtime import resolve_device, resolve_precision

    device = resolve_device(setting_args["device"])
    precision = resolve_precision(device, setting_args["amp"], setting_args["amp_dtype"])
    first = Setting(mode=modes[0], **setting_args)
    peak = peak_flops(device, precision, seconds=max(0.5, min(2.0, first.budget)))
    env = bench_environment(device, precision, first, peak)
    everything = []
    for mode in modes:
        setting = Setting(mode=mode, **setting_args)
        stem = bench_file_stem(mode, precision.label, env["memory_format"], env)
        header = {"environment": env, "setting": setting.__dict__, "peak_tflops": peak / 1e12}
        rows: list[dict] = []
        for model in models:
            spec = {"model": model, "setting": setting.__dict__, "peak": peak}
            proc = subprocess.run(
                [sys.executable, "-m", "zoo.bench", json.dumps(spec)],
                capture_output=True, text=True,
            )  # fmt: skip
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode == 0 and lines:
                row = json.loads(lines[-1])
            else:  # the process itself died (killed, out of memory, ...)
                row = dict.fromkeys(BENCH_COLUMNS) | {"model": model, "mode": mode}
                tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
                row["error"] = f"the benchmark process failed: {tail}"[:300]
            rows.append(row)
            everything.append(row)
            write_rows(Path(out), stem, rows, header)
            if on_row is not None:
                on_row(row)
    return everything


if __name__ == "__main__":
    child_main()
