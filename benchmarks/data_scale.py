"""Memory vs stream on synthetic ImageFolders of 256-px JPEGs (issue 22, part 3).

    python benchmarks/data_scale.py rss --sizes 2000,8000,32000      # peak RSS, one epoch
    python benchmarks/data_scale.py rss --limit-train 1024           # ... of 1,024 images
    python benchmarks/data_scale.py wait --size 2000 --workers 0,1,2 # data wait share of a step

`rss`: peak RSS of `zoo train baseline-cnn --img-size 224 --epochs 1` per folder size and
mode, each in a fresh process (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`, the largest
process: the trainer; workers are smaller). `--limit-train N` trains that epoch on N images
only: the whole folder is still decoded or indexed, and the whole val and test splits
evaluated. `wait`: the share of each training step spent
waiting for the next batch, over `--steps` steps after two of warm-up, per model and workers.
The folders are made by this script in `--root` (kept, so a second call reuses them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 10


def make_folder(root: Path, count: int, side: int = 256) -> Path:
    """`count` JPEGs, side x side, in CLASSES folders; each class a colour plus noise."""
    folder = root / f"jpeg{side}-{count}"
    if (folder / ".done").exists():
        return folder
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % CLASSES
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 120, (side, side, 3), dtype=np.uint8)
        pixels[..., label % 3] += np.uint8(25 * (label // 3) + 60)
        Image.fromarray(pixels).save(folder / f"c{label}" / f"{i}.jpg", quality=90)
    (folder / ".done").touch()
    return folder


def peak_rss(folder: Path, mode: str, out: Path, workers: int, limit: int | None) -> dict:
    """One epoch of baseline-cnn at 224 px in a fresh process; its peak RSS and seconds."""
    command = [
        sys.executable,
        "-m",
        "zoo",
        "train",
        "baseline-cnn",
        "--dataset",
        f"imagefolder:{folder}",
        "--img-size",
        "224",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--data-mode",
        mode,
        "--data-workers",
        str(workers),
        "--out",
        str(out),
    ] + (["--limit-train", str(limit)] if limit else [])
    # A fresh parent per run: RUSAGE_CHILDREN's maximum never goes down within one process.
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True,"
        " text=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        " print(r.returncode); print(r.stderr.strip().splitlines()[-1] if r.returncode else '')"
    )
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", wrapper, *command], capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    max_rss_kb, returncode, error = (process.stdout.splitlines() + ["", "", ""])[:3]
    return {
        "mode": mode,
        "peak_rss_mb": int(max_rss_kb) / 1024,
        "seconds": seconds,
        "error": error if returncode != "0" else "",
    }


def data_wait(folder: Path, model: str, workers: int, steps: int) -> dict:
    """Share of the step time spent in `next(batches)`, streaming at 224 px, batch 32."""
    import torch

    from zoo.config import TrainConfig
    from zoo.data import iterate_batches, load_dataset
    from zoo.data.base import run_data_options
    from zoo.registry import create_model
    from zoo.runtime import resolve_precision
    from zoo.train import make_trainer, train_step

    config = TrainConfig(
        model=model,
        dataset=f"imagefolder:{folder}",
        img_size=224,
        batch_size=32,
        data_mode="stream",
        data_workers=workers,
    )
    data = load_dataset(config.dataset, options=run_data_options(config), workers=workers)
    device = torch.device("cpu")
    model_ = create_model(model, num_classes=data.info.num_classes, in_chans=data.info.in_chans)
    model_ = model_.to(memory_format=torch.channels_last)
    precision = resolve_precision(device, False, config.amp_dtype)
    trainer = make_trainer(
        config, model_, device=device, precision=precision, steps_per_epoch=10**6
    )
    batches = iterate_batches(
        data.train,
        data.info,
        32,
        device=device,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        channels_last=True,
    )
    waited = total = 0.0
    for step in range(steps + 2):
        start = time.perf_counter()
        images, targets = next(batches)
        got = time.perf_counter()
        train_step(trainer, images, targets)
        if step >= 2:  # warm-up: worker start, first prefetch
            waited += got - start
            total += time.perf_counter() - start
    return {
        "model": model,
        "workers": workers,
        "wait_share": waited / total,
        "step_seconds": total / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("rss", "wait"))
    parser.add_argument("--sizes", default="2000,8000,32000")
    parser.add_argument("--modes", default="stream,memory")
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--models", default="baseline-cnn,timm/resnet18")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--root", type=Path, default=Path("/tmp/zoo-data-scale"))
    args = parser.parse_args()
    os.environ.setdefault("ZOO_CACHE", str(args.root / "cache"))
    if args.what == "rss":
        for size in (int(s) for s in args.sizes.split(",")):
            folder = make_folder(args.root, size)
            for mode in args.modes.split(","):
                workers = int(args.workers.split(",")[-1])
                row = peak_rss(folder, mode, args.root / "runs", workers, args.limit_train)
                facts = {"images": size, "workers": workers, "limit_train": args.limit_train}
                print(json.dumps({**facts, **row}), flush=True)
    else:
        folder = make_folder(args.root, args.size)
        for model in args.models.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                row = data_wait(folder, model, workers, args.steps)
                print(json.dumps({"images": args.size, **row}), flush=True)


if __name__ == "__main__":
    main()
