"""Training throughput of unet-small on Mini Facade at 256x256, and how long steps wait for data.

Runs exactly what `zoo train unet-small --augment` runs (cached uint8 dataset in memory,
`iterate_batches` with the joint albumentations augmentation, a channels-last fp32 model, Adam
1e-3, batch 8, `train_one_epoch`) for `--steps` timed steps after `--warmup` untimed ones, and
reports:

* training images/s (target >= 6 on a 2-core CPU);
* the share of step time spent waiting for the next batch (slicing, augmentation, conversion,
  normalisation), measured around the batch iterator (target <= 5%).

    ZOO_DATA=/path/to/data .venv/bin/python benchmarks/facade_train.py
    .venv/bin/python benchmarks/facade_train.py --steps 5 --warmup 1 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator

BATCH, LR = 8, 1e-3
TARGETS = {  # name -> (figure, comparison, bound)
    "train images/s": ("train_images_per_second", ">=", 6.0),
    "data wait share": ("data_wait_share", "<=", 0.05),
}


class TimedBatches:
    """Wrap a batch iterator and add up the seconds spent waiting for each next batch."""

    def __init__(self, batches: Iterator):
        self.batches = batches
        self.wait_seconds = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.wait_seconds += time.perf_counter() - start


def measure(steps: int, warmup: int, data_dir: str | None, augment: bool) -> dict:
    import torch

    import zoo
    from zoo.config import TrainConfig
    from zoo.data import iterate_batches, load_dataset
    from zoo.runtime import place_model, resolve_precision
    from zoo.train import batch_transform, make_trainer, train_one_epoch

    data = load_dataset("mini-facade", data_dir)
    config = TrainConfig(
        model="unet-small", batch_size=BATCH, lr=LR, schedule="none", device="cpu", augment=augment
    )
    device = torch.device("cpu")
    precision = resolve_precision(device, amp=False, amp_dtype="float16")
    torch.manual_seed(0)
    model = place_model(zoo.create_model(config.model), device, channels_last=True)
    trainer = make_trainer(
        config, model, device=device, precision=precision, steps_per_epoch=steps + warmup
    )
    generator = torch.Generator().manual_seed(0)
    transform = batch_transform(config, data.info)

    def batches(count: int) -> TimedBatches:
        epochs = itertools.chain.from_iterable(
            iterate_batches(
                data.train,
                data.info,
                BATCH,
                device=device,
                shuffle=True,
                generator=generator,
                transform=transform,
                channels_last=True,
            )
            for _ in itertools.count()
        )
        return TimedBatches(itertools.islice(epochs, count))

    train_one_epoch(trainer, batches(warmup))
    timed = batches(steps)
    result = train_one_epoch(trainer, timed)
    return {
        "steps": steps,
        "batch_size": BATCH,
        "image_size": list(data.info.image_size),
        "augment": augment,
        "torch_threads": torch.get_num_threads(),
        "train_images_per_second": result["images"] / result["seconds"],
        "data_wait_share": timed.wait_seconds / result["seconds"],
        "step_seconds": result["seconds"] / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--data-dir", default=None, help="data root (default: $ZOO_DATA)")
    parser.add_argument("--no-augment", action="store_true", help="time without augmentation")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    figures = measure(args.steps, args.warmup, args.data_dir, augment=not args.no_augment)
    print(
        f"unet-small, mini-facade {figures['image_size'][0]}x{figures['image_size'][1]}, "
        f"batch {BATCH}, fp32, channels-last, {figures['torch_threads']} threads, "
        f"augment={figures['augment']}, {args.steps} steps"
    )
    for name, (key, comparison, bound) in TARGETS.items():
        value = figures[key]
        verdict = "PASS" if (value >= bound if comparison == ">=" else value <= bound) else "FAIL"
        print(f"  {name:<16} {value:8.3f}   target {comparison} {bound:g}   {verdict}")
    print(f"  step seconds     {figures['step_seconds']:8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
