"""Where one step of a model spends its time, by operator: torch.profiler over a few of zoo's own
steps (`zoo.train.train_step` for training, the bench's forward under `inference_mode` for
inference) on a synthetic batch at the model's dataset size, as `zoo bench` runs them.

Prints the step's wall time unprofiled and profiled, the top operators by self CPU time (by self
device time on a GPU), and the step's time by kind: the optimizer's step and zero_grad, dtype
casts (`aten::_to_copy` to another dtype: what autocast inserts), layout conversions
(`aten::_to_copy` to another memory format, `aten::clone` behind `contiguous`, oneDNN's
`to_dense`/`to_mkldnn`/weight reorders), convolution, matmul, pooling, normalisation,
activations, the loss, and the rest; with the casts and copies per step. Each
operator's self time goes to the innermost kind on its way up the call tree (an `aten::copy_`
under `aten::_to_copy` is a cast, under `aten::clone` a layout conversion), except that all of
the optimizer's time is the optimizer's. oneDNN's own reorders inside a convolution are part of
the convolution's time; `ONEDNN_VERBOSE=1` in the environment lists them.

`--dtype bf16` runs `torch.autocast(dtype=torch.bfloat16)` whatever the machine: unlike `zoo
train` and `zoo bench`, which run fp32 on a CPU without native bf16, this script profiles the
bf16 step anyway, so that its structure (which casts and conversions autocast adds) can be seen
there too. On such a CPU the bf16 kernels are emulated and their times say nothing about a CPU
with native bf16; the script says so. Timings on a shared machine move by 2x: compare shares,
and step times measured in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/profile_step.py baseline-cnn
    PYTHONPATH=. .venv/bin/python benchmarks/profile_step.py timm/efficientnet_b0 --mode infer \
        --dtype bf16 --steps 3 --json profile.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

# Regions: all the time under one is its own, whatever the operators (an optimizer step's
# elementwise ops are the optimizer's). Optimizer.step/zero_grad label themselves; DATA is the
# label a benchmark gives to the making of a batch (record_function), e.g. fashion_mnist_train.py.
OPTIMIZER, DATA = "optimizer", "data"
CAST, LAYOUT = "cast", "layout conversion"
LAYOUT_OPS = {"aten::clone", "aten::to_dense", "aten::_to_dense", "aten::to_mkldnn"}
LAYOUT_PATTERN = r"mkldnn_reorder|_mkldnn_transpose"
PLUMBING = {"aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone", "aten::copy_"}
KINDS = (  # kind -> pattern on the lower-cased operator name
    ("convolution", r"conv"),
    ("matmul", r"addmm|aten::mm|bmm|matmul|linear"),
    ("pooling", r"pool"),
    ("normalisation", r"norm"),
    ("activation", r"relu|threshold|hardswish|hardsigmoid|silu|sigmoid|gelu|elu|hardtanh"),
    ("loss", r"cross_entropy|nll_loss|log_softmax|logsoftmax"),
)


def kind_of(event) -> str | None:
    """The kind of one operator by its own name (and, for `aten::_to_copy`, its arguments), or
    None: it takes its caller's."""
    name = event.name
    if name.startswith("Optimizer."):
        return OPTIMIZER
    if name == DATA:
        return DATA
    if name == "aten::_to_copy":  # what aten::to runs when something changes
        arguments = getattr(event, "concrete_inputs", None) or []
        # (self, dtype, layout, device, pin_memory, non_blocking, memory_format): no dtype given
        # is a change of memory format (or device), e.g. a weight made channels-last
        return LAYOUT if len(arguments) > 1 and arguments[1] is None else CAST
    if name in LAYOUT_OPS or re.search(LAYOUT_PATTERN, name):
        return LAYOUT
    lowered = name.lower()
    return next((kind for kind, pattern in KINDS if re.search(pattern, lowered)), None)


def classify(events) -> tuple[dict[str, float], dict[tuple[str, str], int]]:
    """Self CPU microseconds per kind over `events` (torch.profiler's FunctionEvents, with their
    cpu_parent links); and the casts and layout copies that ran outside the regions (an
    optimizer's own scalar casts are its business), counted by (kind, the operator that asked
    for them: the first caller that is not itself a `to`, `contiguous` or copy)."""
    seconds: dict[str, float] = {}
    calls: dict[tuple[str, str], int] = {}
    for event in events:
        chain, node = [], event
        while node is not None:
            chain.append(node)
            node = node.cpu_parent
        kinds = [kind_of(e) for e in chain]
        regions = [k for k in kinds if k in (OPTIMIZER, DATA)]
        kind = regions[-1] if regions else next((k for k in kinds if k), "other")
        seconds[kind] = seconds.get(kind, 0.0) + event.self_cpu_time_total
        own = kinds[0]
        if own in (CAST, LAYOUT) and not regions and own not in kinds[1:]:  # the outermost
            caller = next((e.name for e in chain[1:] if e.name not in PLUMBING), "the step")
            calls[own, caller] = calls.get((own, caller), 0) + 1
    return seconds, calls


def build_step(args: argparse.Namespace):
    """(step(), device, label): one step of `args.model` on a fixed synthetic batch."""
    import torch

    from zoo.config import TASK_DEFAULTS, TrainConfig
    from zoo.data.base import get_dataset_info
    from zoo.registry import create_model, get_model_entry
    from zoo.runtime import Precision, autocast, place_model, resolve_device
    from zoo.train import make_trainer, train_step

    entry = get_model_entry(args.model)
    info = get_dataset_info(args.dataset or entry.dataset)
    device = resolve_device(args.device)
    height, width = (args.img_size,) * 2 if args.img_size else info.image_size
    batch = args.batch_size or TASK_DEFAULTS[entry.task]["batch_size"]
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    precision = Precision(dtype, args.dtype)  # as asked, even where zoo would fall back to fp32
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans)
    model = place_model(model, device, args.channels_last)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    images = torch.randn(batch, info.in_chans, height, width, device=device)
    images = images.contiguous(memory_format=layout)
    shape = (batch,) if entry.task == "classification" else (batch, height, width)
    targets = torch.randint(0, info.num_classes, shape, device=device)

    if args.mode == "infer":
        model.eval()

        @torch.inference_mode()
        def step():
            with autocast(device, precision):
                return model(images)

    else:
        config = TrainConfig(
            model=args.model, schedule="none", batch_size=batch, channels_last=args.channels_last
        )
        trainer = make_trainer(config, model, device=device, precision=precision, steps_per_epoch=1)

        def step():
            return train_step(trainer, images, targets)

    fmt = "nhwc" if args.channels_last else "nchw"
    label = f"{args.model} {args.mode} {args.dtype} {fmt}, batch {batch}, {height}x{width}"
    return step, device, label


def emulation_note(device, dtype: str) -> str | None:
    """Why this machine's times for `dtype` say nothing about the native case, or None."""
    import torch

    from zoo.runtime import cpu_has_native_bf16

    if device.type == "cpu" and dtype == "bf16" and not cpu_has_native_bf16():
        capability = torch.backends.cpu.get_cpu_capability()
        return (
            f"this CPU ({capability}) has no native bf16 (no AVX512_BF16 or AMX): the bf16 "
            "kernels are emulated, so their times say nothing about a CPU that has it; the "
            "casts and conversions autocast adds, and their count, are what carries over."
        )
    if device.type == "cpu" and dtype == "fp16":
        return "fp16 on a CPU: zoo never runs it (--amp falls back to fp32)."
    return None


def profile(args: argparse.Namespace) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from zoo.runtime import synchronize

    if args.threads:
        torch.set_num_threads(args.threads)
    step, device, label = build_step(args)
    for _ in range(args.warmup):
        step()
    plain = []
    for _ in range(args.steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        plain.append(time.perf_counter() - start)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=True) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        profiled = (time.perf_counter() - start) / args.steps
    events = prof.events()
    seconds, calls = classify(events)
    total = sum(seconds.values())
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort_by, row_limit=args.top, max_name_column_width=48)
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
    return {
        "setting": label,
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "note": emulation_note(device, args.dtype),
        "steps": args.steps,
        "step_ms": statistics.median(plain) * 1e3,
        "profiled_step_ms": profiled * 1e3,
        "self_cpu_ms_per_step": total / 1e3 / args.steps,
        "share": {kind: us / total for kind, us in sorted(seconds.items(), key=lambda x: -x[1])},
        "per_step": {
            kind: sum(n for (k, _), n in calls.items() if k == kind) / args.steps
            for kind in (CAST, LAYOUT)
        },
        "by_caller": [
            {"kind": kind, "caller": caller, "per_step": count / args.steps}
            for (kind, caller), count in sorted(calls.items(), key=lambda x: -x[1])
        ],
        "top": [
            {
                "name": e.key,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / args.steps,
                "share": e.self_cpu_time_total / total,
                "calls_per_step": e.count / args.steps,
            }
            for e in top
        ],  # fmt: skip
        "table": table,
    }


def report(result: dict) -> None:
    print(f"{result['setting']}; torch {result['torch']}, {result['cpu_capability']}, "
          f"{result['threads']} threads")  # fmt: skip
    if result["note"]:
        print(f"NOTE: {result['note']}")
    print(f"step: {result['step_ms']:.1f} ms unprofiled, {result['profiled_step_ms']:.1f} ms "
          f"profiled ({result['self_cpu_ms_per_step']:.1f} ms self CPU time), median of "
          f"{result['steps']} steps")  # fmt: skip
    print(result["table"])
    print("time by kind (self CPU time, share of the step):")
    for kind, share in result["share"].items():
        print(f"  {kind:<18} {share:6.1%}")
    per_step = result["per_step"]
    share = result["share"].get(CAST, 0) + result["share"].get(LAYOUT, 0)
    print(
        f"per step: {per_step[CAST]:g} dtype casts, {per_step[LAYOUT]:g} layout copies "
        f"(outside the optimizer); casts + layout conversions: {share:.1%} of the step"
    )
    for row in result["by_caller"][:8]:
        print(f"  {row['per_step']:8g} x {row['kind']:<17} asked for by {row['caller']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="registry name, e.g. baseline-cnn, timm/efficientnet_b0")
    parser.add_argument("--mode", choices=("train", "infer"), default="train")
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="autocast dtype (bf16/fp16 run even where zoo would refuse them)",
    )
    parser.add_argument("--steps", type=int, default=5, help="profiled steps (and timed ones)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, help="default: the task's (128, segm. 8)")
    parser.add_argument("--img-size", type=int, help="default: the dataset's")
    parser.add_argument("--dataset", help="default: the model's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--top", type=int, default=15, help="operators listed")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()  # fmt: skip
    if args.steps < 1:
        sys.exit("--steps must be at least 1.")
    result = profile(args)
    report(result)
    if args.json:
        figures = {k: v for k, v in result.items() if k != "table"}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
