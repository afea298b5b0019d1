"""Does `--compile` pay? One entry, eager and compiled, side by side in one process.

Builds the entry twice from the same seed, as `zoo train` does (`zoo.train.make_trainer`, with
and without `compile`), and runs `--steps` training steps (or inference batches, `--mode infer`)
of each in turn, `--rounds` times: eager, compiled, eager, compiled, ... A machine shared with
other jobs then slows both alike, and the ratio of each round's pair is what to trust; absolute
images/s on such a machine are not. Inputs are random tensors of the dataset's shape, so no data
is read. The compiled model's first steps, where torch.compile compiles, are timed apart
("compiling") and left out of the steady figures.

Prints the medians over the rounds (images/s of each, compiled / eager), the same ratio in CPU
seconds of this process (steadier than wall time on a loaded machine when `--threads 1`: waiting
for a core costs no CPU time) and the compile seconds, with how many of inductor's graphs came
from its on-disk cache (a cached compile is much shorter than a first one).

    .venv/bin/python benchmarks/compile_cpu.py                          # baseline-cnn, training
    .venv/bin/python benchmarks/compile_cpu.py --model strided-net --img-size 128 --mode infer
    .venv/bin/python benchmarks/compile_cpu.py --mode infer --inductor freezing=False

`--inductor KEY=VALUE` (repeatable) compiles with those inductor settings instead of zoo's
(`torch.compile(options=...)`), and `--compile-mode` with a torch.compile mode: for trying
settings, not what `zoo train --compile` runs.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.config import TASK_DEFAULTS, TrainConfig  # noqa: E402
from zoo.data.base import get_dataset_info  # noqa: E402
from zoo.progress import phase, reporting  # noqa: E402
from zoo.registry import create_model, get_model_entry  # noqa: E402
from zoo.results import cpu_model  # noqa: E402
from zoo.runtime import Precision, compile_model, memory_format, place_model  # noqa: E402
from zoo.train import make_trainer, train_step  # noqa: E402

CPU = torch.device("cpu")
FP32 = Precision(None, "fp32")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="baseline-cnn")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument("--batch-size", type=int, help="default: zoo train's for the task")
    parser.add_argument("--img-size", type=int, help="square input side; default the dataset's")
    parser.add_argument("--steps", type=int, default=20, help="steps of each per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, help="torch threads; default torch's")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--compile-mode", help="torch.compile's mode, e.g. max-autotune")
    return parser.parse_args()


def inductor_options(pairs: list[str]) -> dict:
    """["freezing=True", "cpp_wrapper=True"] -> {"freezing": True, "cpp_wrapper": True}."""
    options = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        options[key] = ast.literal_eval(value)
    return options


def build_steps(args: argparse.Namespace, batch: int, shape: tuple[int, ...]) -> dict:
    """{"eager": step, "compiled": step}: each a function running one step on fixed inputs,
    compiled as `zoo train --compile` (training) or `zoo bench --compile` (inference) does."""
    entry = get_model_entry(args.model)
    info = get_dataset_info(entry.dataset)
    images = torch.randn(batch, *shape).contiguous(memory_format=memory_format(args.channels_last))
    target_shape = (batch,) if entry.task == "classification" else (batch, *shape[1:])
    targets = torch.randint(0, info.num_classes, target_shape)
    options = inductor_options(args.inductor) or None
    custom = options is not None or args.compile_mode is not None
    steps = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans)
        place_model(model, CPU, args.channels_last)
        compiled = name == "compiled"
        if args.mode == "train":
            config = TrainConfig(
                model=args.model, schedule="none", batch_size=batch, compile=compiled,
                channels_last=args.channels_last,
            )  # fmt: skip
            trainer = make_trainer(config, model, device=CPU, precision=FP32, steps_per_epoch=1)
            if compiled and custom:
                trainer.step_model = torch.compile(model, mode=args.compile_mode, options=options)
            steps[name] = lambda trainer=trainer: train_step(trainer, images, targets)
            continue
        runner = model.eval()
        if compiled:
            runner = (
                torch.compile(model, mode=args.compile_mode, options=options)
                if custom
                else compile_model(model, frozen=True)
            )

        @torch.inference_mode()
        def infer(runner=runner):
            runner(images)

        steps[name] = infer
    return steps


def timed(step, count: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process's, all its threads) of `count` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        step()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    entry = get_model_entry(args.model)
    info = get_dataset_info(entry.dataset)
    batch = args.batch_size or TASK_DEFAULTS[entry.task]["batch_size"]
    side = (args.img_size,) * 2 if args.img_size else info.image_size
    shape = (info.in_chans, *side)
    layout = "channels_last" if args.channels_last else "contiguous"
    print(
        f"{args.model} {args.mode}, batch {batch}, {'x'.join(map(str, shape))}, fp32, {layout}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {cpu_model()}",
        flush=True,
    )
    with reporting(Console(stderr=True)):
        steps = build_steps(args, batch, shape)
        with phase("compiling: the compiled model's first step"):
            compile_seconds, _ = timed(steps["compiled"], 1)
        with phase("warm-up", total=2 * args.warmup, unit="steps") as advance:
            for _ in range(args.warmup):
                for step in steps.values():
                    step()
                    advance()
        seconds = {name: [] for name in steps}
        cpu_seconds = {name: [] for name in steps}
        with phase("timing, interleaved", total=args.rounds, unit="rounds") as advance:
            for _ in range(args.rounds):
                for name, step in steps.items():
                    wall, cpu = timed(step, args.steps)
                    seconds[name].append(wall)
                    cpu_seconds[name].append(cpu)
                advance()
    rate = {name: [batch * args.steps / s for s in times] for name, times in seconds.items()}
    ratios = [c / e for c, e in zip(rate["compiled"], rate["eager"], strict=True)]
    for name, rates in rate.items():
        print(f"{name:9} {statistics.median(rates):9,.1f} img/s (median of {args.rounds} rounds)")
    print(
        f"compiled / eager: {statistics.median(ratios):.2f}x "
        f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
    )
    cpu_ratios = [e / c for c, e in zip(cpu_seconds["compiled"], cpu_seconds["eager"], strict=True)]
    print(
        f"compiled / eager in CPU time: {statistics.median(cpu_ratios):.2f}x "
        f"(rounds {min(cpu_ratios):.2f}-{max(cpu_ratios):.2f})"
    )
    aot, inductor = counters["aot_autograd"], counters["inductor"]
    hits = aot["autograd_cache_hit"] + inductor["fxgraph_cache_hit"]
    misses = aot["autograd_cache_miss"] + inductor["fxgraph_cache_miss"]
    print(
        f"compiling: {compile_seconds:.1f} s (the first compiled step), not in the above; "
        f"torch.compile's on-disk caches: {hits} hits, {misses} misses"
    )


if __name__ == "__main__":
    main()
