"""Memory vs stream on Fashion-MNIST written out as PNG folders (issue "Your own data", part 3).

    ZOO_DATA=/path/to/data python benchmarks/fashion_mnist_png.py [--root DIR] [--repeats N]

Writes the official splits as grey 28x28 PNGs (`fashion_mnist.write_image_folder`: 60,000 in
`train/<class>/`, 10,000 in `test/<class>/`) into `--root` (kept, so a second call reuses
them), then runs `zoo train baseline-cnn --dataset imagefolder:ROOT/png --img-size 28
--crop-pct 1 --epochs 1 --data-mode MODE` once per mode, side by side, each in a fresh
process with an empty decode cache. One JSON row per run: the epoch's training images/s and
seconds (from the run's metrics.json and history.csv) and the wall seconds of the whole
command, which adds the first decode (memory) or check (stream) of all 70,000 files, and the
evaluation of val and test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from zoo import results
from zoo.data import fashion_mnist
from zoo.data.base import resolve_data_root
from zoo.data.streaming import default_workers


def png_folder(root: Path) -> Path:
    """The PNG copy of Fashion-MNIST under `root`, written once."""
    folder = root / "png"
    if not (root / "png.done").exists():
        shutil.rmtree(folder, ignore_errors=True)
        fashion_mnist.write_image_folder(resolve_data_root(), folder)
        (root / "png.done").touch()
    return folder


def one_epoch(folder: Path, mode: str, root: Path) -> dict:
    """One epoch of baseline-cnn in `mode`, in a fresh process with an empty decode cache."""
    cache, out = root / "cache", root / "runs"
    shutil.rmtree(cache, ignore_errors=True)
    command = [
        sys.executable, "-m", "zoo", "train", "baseline-cnn",
        "--dataset", f"imagefolder:{folder}", "--img-size", "28", "--crop-pct", "1",
        "--epochs", "1", "--data-mode", mode, "--out", str(out),
    ]  # fmt: skip
    before = set(out.glob("*/*/*"))
    start = time.perf_counter()
    done = subprocess.run(
        command, env={**os.environ, "ZOO_CACHE": str(cache)}, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode:
        return {"mode": mode, "error": done.stderr.strip().splitlines()[-1]}
    (run_dir,) = set(out.glob("*/*/*")) - before
    record = results.read_record(run_dir)
    (epoch,) = record.history
    return {
        "mode": record.input["data_mode"],
        "data_workers": default_workers() if mode == "stream" else 0,
        "train_images_per_second": round(record.train_images_per_second, 1),
        "epoch_seconds": round(epoch["epoch_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "test_accuracy": record.test["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/tmp/zoo-fashion-mnist-png"))
    parser.add_argument("--modes", default="memory,stream")
    parser.add_argument("--repeats", type=int, default=1, help="Rounds of all modes, in turn.")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    folder = png_folder(args.root)
    print(json.dumps({"png_folder": str(folder), "seconds": round(time.perf_counter() - start)}))
    for _ in range(args.repeats):
        for mode in args.modes.split(","):
            print(json.dumps(one_epoch(folder, mode, args.root)), flush=True)


if __name__ == "__main__":
    main()
