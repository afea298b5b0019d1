"""Training throughput and memory of baseline-cnn on Fashion-MNIST: zoo against the reports' loop.

Measures, on this machine, in fp32 with batch 128 and Adam 1e-3:

* zoo: `load_dataset` (uint8 tensors in memory), a channels_last model, `iterate_batches` with
  shuffling (and the augmentation `zoo train` would use), `make_trainer` and `train_one_epoch`,
  exactly as `zoo train` runs them with its defaults;
* reference: the reports' plain PyTorch loop (torchvision `FashionMNIST` + `ToTensor` +
  `DataLoader(batch_size=128, shuffle=True)`, NCHW model, forward / loss / zero_grad / backward /
  step), with no augmentation;
* the peak RSS of a whole `zoo train baseline-cnn --epochs 1 --limit-train 20000` run.

Each variant trains `--samples` images (after 20 untimed warm-up steps) in its own subprocess;
the two run interleaved `--repeats` times, because a shared machine is noisy, and the report gives
the median and best images/s of each, the ratio of the medians, and PASS/FAIL per target.
MB here means 2**20 bytes. Run it (`make bench` does the first):

    ZOO_DATA=/path/to/data .venv/bin/python benchmarks/fashion_mnist_train.py
    .venv/bin/python benchmarks/fashion_mnist_train.py --samples 3000 --repeats 1 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

BATCH, LR, WARMUP_STEPS, MB = 128, 1e-3, 20, 2**20
VARIANTS = ("zoo", "reference")
TARGETS = {  # name -> (figure, comparison, bound)
    "zoo images/s": ("zoo_median", ">=", 5000.0),
    "zoo / reference": ("ratio", ">=", 2.0),
    "dataset MB": ("dataset_mb", "<=", 60.0),
    "training run peak RSS MB": ("run_peak_rss_mb", "<=", 1536.0),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MB


def repeat_epochs(make_epoch: Callable[[], Iterable], steps: int) -> Iterator:
    """The first `steps` batches of epoch after epoch."""
    epochs = itertools.chain.from_iterable(make_epoch() for _ in itertools.count())
    return itertools.islice(epochs, steps)


def run_zoo(steps: int, data_dir: str | None) -> dict:
    import torch

    import zoo
    from zoo.config import TrainConfig
    from zoo.data import iterate_batches, load_dataset
    from zoo.runtime import place_model, resolve_precision
    from zoo.train import batch_transform, make_trainer, train_one_epoch

    before = current_rss_mb()
    data = load_dataset("fashion-mnist", data_dir)
    growth = current_rss_mb() - before
    # `zoo train`'s defaults (Adam 1e-3, batch 128, channels-last), with a constant learning rate.
    config = TrainConfig(model="baseline-cnn", schedule="none", device="cpu", batch_size=BATCH)
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(config.seed)
    transform = batch_transform(config, data.info)
    torch.manual_seed(config.seed)
    model = place_model(zoo.create_model(config.model), device, config.channels_last)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    trainer = make_trainer(config, model, device=device, precision=precision, steps_per_epoch=1)

    def epoch() -> Iterator:
        return iterate_batches(
            data.train, data.info, config.batch_size, device=device, shuffle=True,
            generator=generator, transform=transform, channels_last=config.channels_last,
        )  # fmt: skip

    def train(count: int) -> dict:
        return train_one_epoch(trainer, repeat_epochs(epoch, count))

    train(WARMUP_STEPS)
    timed = train(steps)
    splits = (data.train, data.val, data.test)
    extra = {"dataset_mb": sum(s.nbytes for s in splits) / MB, "dataset_rss_growth_mb": growth}
    return {"images": timed["images"], "seconds": timed["seconds"], **extra}


def run_reference(steps: int, data_dir: str | None) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    import zoo
    from zoo.data import resolve_data_root

    with tempfile.TemporaryDirectory() as tmp:  # torchvision wants <root>/FashionMNIST/raw/
        raw = Path(tmp, "FashionMNIST", "raw")
        raw.mkdir(parents=True)
        for gz in (resolve_data_root(data_dir) / "fashion-mnist").glob("*.gz"):
            (raw / gz.name).symlink_to(gz.resolve())
        with contextlib.redirect_stdout(sys.stderr):  # it only verifies and decompresses
            dataset = datasets.FashionMNIST(tmp, True, transforms.ToTensor(), download=True)
    torch.manual_seed(0)
    model = zoo.create_model("baseline-cnn")
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True)

    def train(count: int) -> int:
        seen = 0
        for images, targets in repeat_epochs(lambda: loader, count):
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        return seen

    model.train()
    train(WARMUP_STEPS)
    start = time.perf_counter()
    images = train(steps)
    return {"images": images, "seconds": time.perf_counter() - start}


def child(variant: str, samples: int, data_dir: str | None, threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
    run = run_zoo if variant == "zoo" else run_reference
    result = run(-(-samples // BATCH), data_dir)
    result |= {"variant": variant, "images_per_second": result["images"] / result["seconds"]}
    result |= {"peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads()}
    print(json.dumps(result | {"torch_version": torch.__version__}), flush=True)


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--samples", str(args.samples)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--threads", str(args.threads)] if args.threads else []
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.exit(f"The {variant} variant failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def full_run(args: argparse.Namespace) -> dict:
    """Peak RSS and seconds of a whole `zoo train` run, from wait4's rusage of that child only."""
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryFile() as log:
        command = [sys.executable, "-m", "zoo", "train", "baseline-cnn", "--epochs", "1"]
        command += ["--limit-train", str(args.run_limit_train), "--out", out]
        command += ["--data-dir", args.data_dir] if args.data_dir else []
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            log.seek(0)
            sys.exit(f"`zoo train` failed:\n{log.read().decode(errors='replace')}")
    return {"run_peak_rss_mb": usage.ru_maxrss / 1024, "run_seconds": time.perf_counter() - start}


def cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "?")


def summarise(runs: list[dict], run: dict) -> dict:
    figures: dict = {"runs": runs, **run}
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        rates = [r["images_per_second"] for r in mine]
        figures[f"{variant}_median"] = statistics.median(rates)
        figures[f"{variant}_best"] = max(rates)
        figures[f"{variant}_peak_rss_mb"] = max(r["peak_rss_mb"] for r in mine)
    figures["ratio"] = figures["zoo_median"] / figures["reference_median"]
    figures["best_ratio"] = figures["zoo_best"] / figures["reference_best"]
    zoo_run = next(r for r in runs if r["variant"] == "zoo")
    figures |= {k: zoo_run[k] for k in ("dataset_mb", "dataset_rss_growth_mb")}
    figures["targets"] = {
        name: (figures[key] >= bound) if op == ">=" else (figures[key] <= bound)
        for name, (key, op, bound) in TARGETS.items()
    }
    return figures


def report(figures: dict, environment: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(", ".join(f"{k}: {v}" for k, v in environment.items()), soft_wrap=True)
    table = Table("variant", "median images/s", "best images/s", "peak RSS MB")
    for v in VARIANTS:
        cells = (figures[f"{v}_{k}"] for k in ("median", "best", "peak_rss_mb"))
        table.add_row(v, *(f"{c:,.0f}" for c in cells))
    console.print(table)
    console.print(
        f"zoo / reference: {figures['ratio']:.2f}x (medians), {figures['best_ratio']:.2f}x (best)"
        f"\ndataset: {figures['dataset_mb']:.1f} MB of tensors, RSS grew "
        f"{figures['dataset_rss_growth_mb']:.1f} MB loading it\n`zoo train` run: peak RSS "
        f"{figures['run_peak_rss_mb']:,.0f} MB in {figures['run_seconds']:.0f} s"
    )
    targets = Table("target", "value", "bound", "result")
    for name, (key, op, bound) in TARGETS.items():
        ok = figures["targets"][name]
        verdict = "[green]PASS[/green]" if ok else "[bold red]FAIL[/bold red]"
        targets.add_row(name, f"{figures[key]:,.2f}", f"{op} {bound:,g}", verdict)
    console.print(targets)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2)
    os.replace(f.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=VARIANTS, help="internal: run one variant only")
    parser.add_argument("--samples", type=int, default=30000, help="timed training images")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--run-limit-train", type=int, default=20000, help="`zoo train` images")
    parser.add_argument("--data-dir", help="data root (default: $ZOO_DATA or zoo's cache)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()
    if args.variant:
        return child(args.variant, args.samples, args.data_dir, args.threads)
    load = os.getloadavg()
    runs = [run_variant(v, args) for _ in range(args.repeats) for v in VARIANTS]
    figures = summarise(runs, full_run(args))
    environment = {
        "torch": runs[0]["torch_version"], "cpu": cpu_model(), "cores": os.cpu_count(),
        "torch threads": runs[0]["torch_threads"], "load average": f"{load[0]:.2f}",
        "samples": args.samples, "repeats": args.repeats,
    }  # fmt: skip
    report(figures, environment)
    if args.json:
        write_json(args.json, {"environment": environment, **figures})


if __name__ == "__main__":
    main()
