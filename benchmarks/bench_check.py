"""Check `zoo bench` against an independent measurement of the same model, batch and precision.

For each model and mode, `zoo bench MODEL --mode M` runs (its own processes, its own timing
loop) and, in a separate process, torch.utils.benchmark.Timer times a plain forward
(inference_mode) or a plain training step (forward, cross-entropy, backward, Adam step) written
here, on the same synthetic batch, memory format and precision. Both figures are sustained
throughput, images over elapsed time: zoo's the median of its 3 repeats, the Timer's its mean
over `blocked_autorange` (its median would be of single iterations for a slow model and of
block means for a fast one). The two images/s must agree within 10%. The two alternate
`--repeats` times, which one goes first alternating too (single measurements on a shared
machine move by 20% and more), and the medians are compared; the table also says in how many
of the pairs zoo read higher, which shows a bias that the medians hide.

    .venv/bin/python benchmarks/bench_check.py
    .venv/bin/python benchmarks/bench_check.py --models baseline-cnn --repeats 1 --budget 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TOLERANCE = 0.10


def zoo_bench(model: str, mode: str, args: argparse.Namespace) -> float:
    """images/s from `zoo bench`'s own row."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "zoo", "bench", model, "--mode", mode, "--out", out]
        command += ["--budget", str(args.budget), "--device", args.device]
        command += ["--amp", "--amp-dtype", args.amp_dtype] if args.amp else []
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"zoo bench failed:\n{proc.stderr}")
        from zoo.benchfiles import load_bench_rows

        (row,), _ = load_bench_rows(out)
    if row["error"]:
        sys.exit(f"zoo bench {model} {mode}: {row['error']}")
    return row["images_per_second"]


def reference(model_name: str, mode: str, budget: float, device: str, amp: bool, dtype: str):
    """Sustained images/s of a plain step written here, timed by torch.utils.benchmark.Timer."""
    import torch
    import torch.nn.functional as F
    from torch.utils.benchmark import Timer

    import zoo
    from zoo.data import get_dataset_info
    from zoo.registry import get_model_entry

    entry = get_model_entry(model_name)
    info = get_dataset_info(entry.dataset)
    batch = 128 if entry.task == "classification" else 8
    device = torch.device(device if device != "auto" else "cpu")
    torch.manual_seed(0)
    model = zoo.create_model(model_name).to(device, memory_format=torch.channels_last)
    images = torch.randn(batch, info.in_chans, *info.image_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    shape = (batch,) if entry.task == "classification" else (batch, *info.image_size)
    targets = torch.randint(0, info.num_classes, shape, device=device)
    autocast_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def forward():
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=amp):
            return model(images)

    def infer():
        with torch.inference_mode():
            forward()

    def train():
        loss = F.cross_entropy(forward().float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train(mode == "train")
    step = train if mode == "train" else infer
    for _ in range(3):  # warm-up, as zoo bench does
        step()
    sync = "torch.cuda.synchronize()" if device.type == "cuda" else "pass"
    timer = Timer(  # Timer runs on 1 thread unless told otherwise; zoo bench uses torch's default
        stmt=f"step(); {sync}", globals={"step": step, "torch": torch},
        num_threads=torch.get_num_threads(),
    )  # fmt: skip
    measurement = timer.blocked_autorange(min_run_time=budget)
    return batch / measurement.mean


def child(args: argparse.Namespace) -> None:
    rate = reference(args.model, args.mode, args.budget, args.device, args.amp, args.amp_dtype)
    print(json.dumps({"images_per_second": rate}))


def reference_in_process(model: str, mode: str, args: argparse.Namespace) -> float:
    command = [sys.executable, __file__, "--child", "--model", model, "--mode", mode]
    command += [
        "--budget",
        str(args.budget),
        "--device",
        args.device,
        "--amp-dtype",
        args.amp_dtype,
    ]
    command += ["--amp"] if args.amp else []
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"reference failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=["baseline-cnn", "timm/resnet18", "unet-small"]
    )
    parser.add_argument("--modes", nargs="+", default=["infer", "train"])
    parser.add_argument("--repeats", type=int, default=4, help="alternations of the two")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timing each")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--amp-dtype", default="bfloat16")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.child:
        return child(args)
    precision = f"amp {args.amp_dtype}" if args.amp else "fp32"
    print(f"zoo bench vs torch.utils.benchmark.Timer, {args.device}, {precision}, channels-last")
    header = f"{'model':<16} {'mode':<6} {'zoo img/s':>11} {'Timer img/s':>12} {'ratio':>7}"
    print(f"{header} {'zoo higher':>10}  result")
    results, failed = [], False
    for model in args.models:
        for mode in args.modes:
            ours, theirs = [], []
            for repeat in range(args.repeats):
                if repeat % 2:  # the Timer first every other time, so order cannot bias it
                    theirs.append(reference_in_process(model, mode, args))
                    ours.append(zoo_bench(model, mode, args))
                else:
                    ours.append(zoo_bench(model, mode, args))
                    theirs.append(reference_in_process(model, mode, args))
            a, b = statistics.median(ours), statistics.median(theirs)
            higher = f"{sum(x > y for x, y in zip(ours, theirs, strict=True))}/{args.repeats}"
            ratio = a / b
            ok = abs(ratio - 1) <= TOLERANCE
            failed |= not ok
            results.append(
                {"model": model, "mode": mode, "zoo": ours, "timer": theirs, "ratio": ratio}
            )
            verdict = "PASS" if ok else "FAIL"
            figures = f"{model:<16} {mode:<6} {a:>11,.1f} {b:>12,.1f} {ratio:>7.3f}"
            print(f"{figures} {higher:>10}  {verdict}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
