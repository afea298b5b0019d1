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
the median and best images/s of each, the ratio of the medians, and PASS/FAIL per target; and
images per CPU second (the process's CPU time, user + system, which the other jobs of a loaded
machine inflate much less than wall time; with one torch thread it is the work itself).
`--profile STEPS` then runs STEPS more steps of each under torch.profiler and prints the step's
time by kind (data, convolution, matmul, optimizer, ..., Python outside every operator), the
kinds of benchmarks/profile_step.py. MB here means 2**20 bytes. Run it (`make bench` does the
first):

    ZOO_DATA=/path/to/data .venv/bin/python benchmarks/fashion_mnist_train.py
    .venv/bin/python benchmarks/fashion_mnist_train.py --samples 3000 --repeats 1 --json out.json
    .venv/bin/python benchmarks/fashion_mnist_train.py --threads 1 --profile 20
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
Wrap = Callable[[Iterator], Iterator]  # what the batch iterator goes through (a profiler label)
Train = Callable[[int, Wrap], int]  # train(steps, wrap) -> images trained
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


def zoo_loop(data_dir: str | None) -> tuple[Train, dict]:
    """`train(steps, wrap)` of zoo's loop (it returns the images trained), and the dataset's
    figures."""
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

    def train(count: int, wrap: Wrap) -> int:
        return train_one_epoch(trainer, wrap(repeat_epochs(epoch, count)))["images"]

    splits = (data.train, data.val, data.test)
    extra = {"dataset_mb": sum(s.nbytes for s in splits) / MB, "dataset_rss_growth_mb": growth}
    return train, extra


def reference_loop(data_dir: str | None) -> tuple[Train, dict]:
    """`train(steps, wrap)` of the reports' plain loop, and no figures."""
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

    def train(count: int, wrap: Wrap) -> int:
        seen = 0
        for images, targets in wrap(repeat_epochs(lambda: loader, count)):
            loss = F.cross_entropy(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(images)
        return seen

    model.train()
    return train, {}


def unwrapped(batches: Iterator) -> Iterator:
    return batches


def labelled(batches: Iterator) -> Iterator:
    """`batches`, each one's making (slicing, augmentation, DataLoader) under a profiler label."""
    from profile_step import DATA
    from torch.profiler import record_function

    batches = iter(batches)
    while True:
        with record_function(DATA):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch


def profile_steps(train: Train, steps: int) -> dict:
    """torch.profiler over `steps` more steps: the share of each kind of work (profile_step.py's
    kinds, the batches' making as "data"), and the time outside every operator (Python)."""
    from profile_step import classify
    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        start = time.perf_counter()
        images = train(steps, labelled)
        wall = time.perf_counter() - start
    seconds, _ = classify(prof.events())
    seconds = {kind: us / 1e6 for kind, us in seconds.items()}
    seconds["outside operators"] = max(0.0, wall - sum(seconds.values()))
    share = {kind: s / wall for kind, s in sorted(seconds.items(), key=lambda x: -x[1])}
    return {"share": share, "ms_per_image": wall / images * 1e3}


def child(variant: str, args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    train, result = (zoo_loop if variant == "zoo" else reference_loop)(args.data_dir)
    train(WARMUP_STEPS, unwrapped)
    start, cpu_start = time.perf_counter(), time.process_time()
    images = train(-(-args.samples // BATCH), unwrapped)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result |= {"variant": variant, "images": images, "seconds": seconds, "cpu_seconds": cpu_seconds}
    result |= {"images_per_second": images / seconds, "images_per_cpu_second": images / cpu_seconds}
    if args.profile:
        result["profile"] = profile_steps(train, args.profile)
    result |= {"peak_rss_mb": peak_rss_mb(), "torch_threads": torch.get_num_threads()}
    print(json.dumps(result | {"torch_version": torch.__version__}), flush=True)


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--samples", str(args.samples)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += ["--threads", str(args.threads)] if args.threads else []
    command += ["--profile", str(args.profile)] if args.profile else []
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
        cpu_rates = [r["images_per_cpu_second"] for r in mine]
        figures[f"{variant}_cpu_median"] = statistics.median(cpu_rates)
        profiles = [r["profile"] for r in mine if "profile" in r]
        if profiles:
            kinds = {kind for p in profiles for kind in p["share"]}
            figures[f"{variant}_profile"] = {
                kind: statistics.mean(p["share"].get(kind, 0.0) for p in profiles) for kind in kinds
            }
    figures["ratio"] = figures["zoo_median"] / figures["reference_median"]
    figures["cpu_ratio"] = figures["zoo_cpu_median"] / figures["reference_cpu_median"]
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
        f"\nimages per CPU second (process time, which other jobs' load inflates much less): zoo "
        f"{figures['zoo_cpu_median']:,.0f}, reference {figures['reference_cpu_median']:,.0f}, "
        f"{figures['cpu_ratio']:.2f}x"
        f"\ndataset: {figures['dataset_mb']:.1f} MB of tensors, RSS grew "
        f"{figures['dataset_rss_growth_mb']:.1f} MB loading it\n`zoo train` run: peak RSS "
        f"{figures['run_peak_rss_mb']:,.0f} MB in {figures['run_seconds']:.0f} s"
    )
    if "zoo_profile" in figures:
        shares = Table("share of the step (torch.profiler)", *VARIANTS)
        kinds = sorted(figures["zoo_profile"].keys() | figures["reference_profile"].keys(),
                       key=lambda kind: -figures["zoo_profile"].get(kind, 0.0))  # fmt: skip
        for kind in kinds:
            cells = (f"{figures[f'{v}_profile'].get(kind, 0.0):.1%}" for v in VARIANTS)
            shares.add_row(kind, *cells)
        console.print(shares)
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
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="STEPS",
        help="then profile STEPS more steps of each run: the shares of the step",
    )
    parser.add_argument("--json", type=Path, help="also write all figures to this file")
    args = parser.parse_args()
    if args.variant:
        return child(args.variant, args)
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
