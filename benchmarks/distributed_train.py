"""Training throughput with 1 and 2 processes (torchrun, DistributedDataParallel), and the cost
of the DDP wrapper itself in one process.

(a) `zoo train MODEL --nproc 1` and `--nproc 2` on the same slice of the data, interleaved
    `--repeats` times: the training images/s each run records (median over its epochs, the
    first left out as warm-up), the wall time of the whole command, and the 2-process /
    1-process ratio. Each of the 2 processes gets cpu_count / 2 threads (zoo sets
    OMP_NUM_THREADS), so on a 2-core CPU both variants use both cores and a gain is not
    expected: the figure shows the overhead of gradient all-reduces and per-process batches.
(b) One process: `zoo.train.train_step` on the plain model against the same step with the model
    wrapped in DistributedDataParallel (a 1-process group: gloo on CPU, NCCL on a GPU),
    interleaved: the DDP wrapper's own overhead.

    ZOO_DATA=/path/to/data .venv/bin/python benchmarks/distributed_train.py
    .venv/bin/python benchmarks/distributed_train.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def zoo_train(args: argparse.Namespace, nproc: int) -> dict:
    """One `zoo train` run in its own process tree; its recorded throughput and wall time."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "zoo", "train", args.model, "--device", args.device]
        command += ["--epochs", str(args.epochs), "--limit-train", str(args.limit_train)]
        command += ["--nproc", str(nproc), "--out", out]
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            sys.exit(f"`{' '.join(command)}` failed:\n{proc.stderr}")
        from zoo.results import load_runs

        (record,), _ = load_runs(out)
    rates = [row["train_images_per_second"] for row in record.history[1:]] or [
        record.history[0]["train_images_per_second"]
    ]
    return {"nproc": nproc, "images_per_second": statistics.median(rates), "seconds": seconds}


def wrapper_overhead(args: argparse.Namespace) -> dict:
    """Median seconds of train_step, plain vs in DDP, interleaved, in a 1-process group."""
    import torch
    import torch.distributed as dist

    import zoo
    from zoo.config import TrainConfig
    from zoo.data import get_dataset_info
    from zoo.runtime import place_model, resolve_device, resolve_precision, wrap_for_training
    from zoo.train import make_trainer, train_step

    device = resolve_device(args.device)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(29600 + os.getpid() % 1000))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    info = get_dataset_info(zoo.registry.get_model_entry(args.model).dataset)
    config = TrainConfig(model=args.model, device=args.device, schedule="none", batch_size=128)
    torch.manual_seed(0)
    model = place_model(zoo.create_model(args.model), device, config.channels_last)
    precision = resolve_precision(device, False, "float16")
    trainer = make_trainer(config, model, device=device, precision=precision, steps_per_epoch=1)
    plain, wrapped = trainer.step_model, wrap_for_training(model, ddp_device=device)
    images = torch.randn(128, info.in_chans, *info.image_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, info.num_classes, (128,), device=device)
    times: dict[str, list[float]] = {"plain": [], "ddp": []}
    for i in range(2 * (args.steps + 5)):
        name = "plain" if i % 2 == 0 else "ddp"
        trainer.step_model = plain if name == "plain" else wrapped
        start = time.perf_counter()
        train_step(trainer, images, targets)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 10:  # 5 warm-up steps of each
            times[name].append(time.perf_counter() - start)
    dist.destroy_process_group()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "plain_step_ms": 1000 * medians["plain"],
        "ddp_step_ms": 1000 * medians["ddp"],
        "ddp_overhead": medians["ddp"] / medians["plain"] - 1,
        "device": str(device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="baseline-cnn")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=3, help="per run (the first is warm-up)")
    parser.add_argument("--limit-train", type=int, default=20000, help="training images per epoch")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant, interleaved")
    parser.add_argument("--steps", type=int, default=50, help="timed steps for (b), each way")
    parser.add_argument("--data-dir", help="data root (default: $ZOO_DATA or zoo's cache)")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()

    runs = [zoo_train(args, nproc) for _ in range(args.repeats) for nproc in (1, 2)]
    summary = {}
    for nproc in (1, 2):
        mine = [run for run in runs if run["nproc"] == nproc]
        summary[nproc] = {
            "images_per_second": statistics.median(r["images_per_second"] for r in mine),
            "seconds": statistics.median(r["seconds"] for r in mine),
        }
    ratio = summary[2]["images_per_second"] / summary[1]["images_per_second"]
    overhead = wrapper_overhead(args)

    print(
        f"{args.model} on {args.device}, {args.limit_train} images x {args.epochs} epochs, "
        f"{os.cpu_count()} CPUs, {args.repeats} runs each (medians)"
    )
    print(f"{'processes':>10} {'train img/s':>12} {'wall s':>8}")
    for nproc, figures in summary.items():
        print(f"{nproc:>10} {figures['images_per_second']:>12,.0f} {figures['seconds']:>8.1f}")
    print(f"2 processes / 1 process: {ratio:.2f}x training images/s")
    print(
        f"DDP wrapper in one process ({overhead['device']}): step {overhead['plain_step_ms']:.2f}"
        f" ms plain, {overhead['ddp_step_ms']:.2f} ms in DDP ({overhead['ddp_overhead']:+.1%})"
    )
    if args.json:
        payload = {"args": vars(args) | {"json": str(args.json)}, "runs": runs, "ratio": ratio}
        args.json.write_text(json.dumps(payload | {"summary": summary, "ddp": overhead}, indent=2))


if __name__ == "__main__":
    main()
