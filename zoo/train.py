"""The training loop and nothing else: `fit` runs epochs of optimisation steps, validates after
each, and tells its callbacks what happened. It touches no file and prints nothing; its callers
(zoo/run.py for `zoo train`, the sweep, the benchmarks) decide what is written, through callbacks:

    fit -> on_fit_start -> [on_epoch_start -> train_one_epoch (on_log every LOG_EVERY steps)
        -> validation -> on_epoch_end] x epochs -> on_fit_end

A callback may ask the loop to stop after an epoch (`Loop.request_stop`): early stopping, a
sweep's pruning. With several processes (zoo/distributed.py), each trains on its shard of every
epoch's permutation, and the loop reduces the epoch statistics, the validation counts, the
divergence check and Ctrl-C across them, so every process sees the same history.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from zoo.config import TrainConfig
from zoo.data.base import DatasetInfo
from zoo.data.splits import Splits, iterate_batches, num_batches
from zoo.data.transforms import joint_augmentation, random_crop_flip, random_resized_crop_flip
from zoo.distributed import ONE_PROCESS, Ranks
from zoo.errors import ZooError
from zoo.evaluate import validation_counts, validation_scores
from zoo.results import TASK_METRICS
from zoo.runtime import Precision, autocast, synchronize, wrap_for_training

LOG_EVERY = 25  # steps between host syncs (progress, finiteness check, Ctrl-C across processes)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C during training, caught at a step boundary."""


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of `config`, fused: one kernel updates every parameter, where torch's
    default on a CPU is a Python loop of elementwise ops per parameter (Adam's step took 4.9% of
    a baseline-cnn step on the CPU, fused 1.9%; docs/benchmarks.md). The arithmetic is the same."""
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, fused=True)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd, fused=True)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total_steps)
    return None


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0):
    """Cross-entropy in fp32 for (B, C) logits and (B, C, H, W) per-pixel logits alike."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


@dataclass
class Trainer:
    """Everything an optimisation step needs, built once by `make_trainer`."""

    model: torch.nn.Module  # the plain module: checkpointed, and what validates
    step_model: torch.nn.Module  # what runs the steps: model, in DDP and/or torch.compile
    compiled_batch_size: int | None  # the batch torch.compile runs (None: not compiled)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: Precision
    label_smoothing: float = 0.0


def make_trainer(
    config: TrainConfig,
    model: torch.nn.Module,
    *,
    device: torch.device,
    precision: Precision,
    steps_per_epoch: int,
    ranks: Ranks = ONE_PROCESS,
) -> Trainer:
    """Optimizer, per-step schedule over `config.epochs`, GradScaler (fp16 on CUDA) and the
    wrapped models of `model`, which must already be on `device`."""
    if steps_per_epoch < 1:  # OneCycleLR would raise, cosine and none would train nothing
        raise ZooError(
            f"The run has no training step to schedule ({steps_per_epoch} per epoch): its "
            "training split is empty."
        )
    if ranks.distributed and config.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(config, model)
    step_model = wrap_for_training(
        model, compile=config.compile, ddp_device=device if ranks.distributed else None
    )
    return Trainer(
        model=model,
        step_model=step_model,
        compiled_batch_size=config.batch_size // ranks.world_size if config.compile else None,
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, config.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(
            device.type, enabled=device.type == "cuda" and precision.needs_grad_scaler
        ),
        device=device,
        precision=precision,
        label_smoothing=config.label_smoothing,
    )


def train_step(
    trainer: Trainer, images: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step: forward under autocast, fp32 loss, (scaled) backward, optimizer
    and schedule step. Returns (loss, logits), still on the device.

    Under --compile, a smaller batch (an epoch's last) runs eagerly: compiling its shape would
    cost more than the one step it serves.
    """
    compiled = trainer.compiled_batch_size
    smaller = compiled is not None and len(images) < compiled
    eager = torch.compiler.set_stance("force_eager") if smaller else contextlib.nullcontext()
    with autocast(trainer.device, trainer.precision), eager:
        logits = trainer.step_model(images)
    loss = compute_loss(logits, targets, trainer.label_smoothing)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    if trainer.scheduler is not None:
        trainer.scheduler.step()
    return loss, logits


def check_finite(losses: list[torch.Tensor], epoch: int, last_step: int, ranks: Ranks) -> None:
    """Raise Diverged, on every process, if any process saw a NaN or inf loss among `losses`
    (the per-step losses of steps last_step - len(losses) + 1 .. last_step)."""
    first_bad, value = math.inf, None
    if losses:
        values = torch.stack(losses)
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            first_bad = bad[0].item()
            value = values[first_bad].item()
    first_bad = ranks.min(first_bad)
    if math.isfinite(first_bad):
        step = last_step - len(losses) + 1 + int(first_bad)
        became = value if value is not None and not ranks.distributed else "non-finite"
        raise Diverged(f"the training loss became {became} at epoch {epoch}, step {step}")


def train_one_epoch(
    trainer: Trainer,
    batches,
    *,
    epoch: int = 1,
    on_log=None,
    stop=None,
    ranks: Ranks = ONE_PROCESS,
) -> dict:
    """One pass over `batches`; returns the epoch's loss, accuracy, images, steps and seconds
    (summed over the processes).

    Losses stay on the device and are checked every LOG_EVERY steps, so a GPU is not synced
    after each step; a NaN or inf names the first step where it appeared. `stop.requested`
    (see StopOnInterrupt) ends the epoch between two steps by raising Interrupted; with several
    processes it is agreed on at the LOG_EVERY steps, so all stop at the same one.
    """
    trainer.step_model.train()
    device = trainer.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    pending: list[torch.Tensor] = []  # per-step losses since the last check
    images_seen = targets_seen = step = 0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches, start=1):
        loss, logits = train_step(trainer, images, targets)
        loss_sum += loss.detach() * len(images)
        correct += (logits.detach().argmax(1) == targets).sum()
        pending.append(loss.detach())
        images_seen += len(images)
        targets_seen += targets.numel()
        requested = stop is not None and stop.requested
        if ranks.distributed:
            requested = step % LOG_EVERY == 0 and ranks.any(requested)
        if step % LOG_EVERY == 0 or requested:
            check_finite(pending, epoch, step, ranks)
            pending.clear()
            if on_log is not None:
                on_log(
                    step, loss_sum.item() / images_seen, correct.item() / targets_seen, images_seen
                )
        if requested:
            raise Interrupted(f"epoch {epoch}, step {step}")
    check_finite(pending, epoch, step, ranks)
    synchronize(device)
    seconds = time.perf_counter() - start
    if ranks.distributed:
        totals = ranks.sum(
            {
                "loss_sum": loss_sum.detach().cpu().double(),
                "correct": correct.cpu().double(),
                "images": torch.tensor(images_seen, dtype=torch.float64),
                "targets": torch.tensor(targets_seen, dtype=torch.float64),
            }
        )
        loss_sum, correct = totals["loss_sum"], totals["correct"]
        images_seen, targets_seen = int(totals["images"].item()), int(totals["targets"].item())
    return {
        "loss": loss_sum.item() / max(images_seen, 1),
        "accuracy": correct.item() / max(targets_seen, 1),
        "images": images_seen,
        "steps": step,
        "seconds": seconds,
    }


class StopOnInterrupt:
    """Turn the first Ctrl-C, or SIGTERM (what `kill` and batch schedulers send), into a flag
    checked between steps; a second signal stops at once."""

    SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}

    def __init__(self):
        self.requested = False
        self.by = ""  # which signal asked: "Ctrl-C" or "SIGTERM"
        self.previous: dict = {}

    def _handler(self, signum, frame):
        self.requested, self.by = True, self.SIGNALS[signum]
        for number, handler in self.previous.items():  # the next signal acts as it used to
            signal.signal(number, handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {
                number: signal.signal(number, self._handler) for number in self.SIGNALS
            }
        return self

    def __exit__(self, *exc):
        for number, handler in self.previous.items():
            signal.signal(number, handler)


class Callback:
    """What happens around the loop; override any of these (they do nothing by default)."""

    def on_fit_start(self, loop: Loop) -> None: ...

    def on_epoch_start(self, loop: Loop) -> None: ...

    def on_log(self, loop: Loop, step: int, loss: float, accuracy: float, images: int) -> None: ...

    def on_epoch_end(self, loop: Loop, row: dict) -> None: ...

    def on_fit_end(self, loop: Loop) -> None: ...


@dataclass
class Loop:
    """The loop's state, what callbacks see, and (through `progress`) what a training state
    saves. `epoch` counts completed epochs; `step` completed optimisation steps."""

    config: TrainConfig
    info: DatasetInfo
    trainer: Trainer
    ranks: Ranks
    generator: torch.Generator  # shuffling and augmentation, seeded by config.seed
    steps_per_epoch: int
    batch_size: int  # per process: the global config.batch_size / world size
    epoch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    best_score: float | None = None
    best_epoch: int | None = None
    improved: bool = False  # the last epoch set a new best score
    status: str = "running"  # completed | interrupted | diverged | what request_stop says
    reason: str = ""  # diverged: what and where; stopped by a callback: its message
    interrupted_at: str | None = None  # Ctrl-C between steps: "epoch E, step S"
    interrupted_by: str = "Ctrl-C"  # or "SIGTERM"
    stop_request: tuple[str, str] | None = None

    def request_stop(self, status: str, message: str) -> None:
        """End the run after this epoch with `status` ("completed" still evaluates it)."""
        self.stop_request = (status, message)

    def progress(self) -> dict:
        """The JSON-ready part of a training state."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
        }

    def restore(self, progress: dict) -> None:
        self.epoch, self.step = progress["epoch"], progress["step"]
        self.history = progress["history"]
        self.best_score, self.best_epoch = progress["best_score"], progress["best_epoch"]


def batch_transform(config: TrainConfig, info: DatasetInfo):
    """The training batches' augmentation of `config`, or None."""
    if info.task == "segmentation" and (config.augment or config.crop_size):
        return joint_augmentation(
            flip=config.augment,
            scale=(config.augment_scale, 1.0) if config.augment else (1.0, 1.0),
            brightness_contrast=config.augment_color if config.augment else 0.0,
            crop=config.crop_size,
        )
    if not config.augment:
        return None
    return random_resized_crop_flip() if info.augment == "resized-crop-flip" else random_crop_flip()


def fit(
    config: TrainConfig,
    model: torch.nn.Module,
    data: Splits,
    *,
    device: torch.device,
    precision: Precision,
    callbacks: list[Callback] = (),
    ranks: Ranks = ONE_PROCESS,
) -> Loop:
    """Train `model` (on `device`, seeded by the caller) on `data` for `config.epochs`.

    Ctrl-C and a diverging loss do not raise: the returned loop's `status` says what happened,
    after every callback's `on_fit_end` has seen it.
    """
    batch_size = config.batch_size // ranks.world_size
    shard = -(-len(data.train) // ranks.world_size)
    steps_per_epoch = num_batches(shard, batch_size)
    trainer = make_trainer(
        config, model, device=device, precision=precision, steps_per_epoch=steps_per_epoch,
        ranks=ranks,
    )  # fmt: skip
    loop = Loop(
        config=config,
        info=data.info,
        trainer=trainer,
        ranks=ranks,
        generator=torch.Generator().manual_seed(config.seed),
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
    )
    with StopOnInterrupt() as stop:
        try:
            for callback in callbacks:
                callback.on_fit_start(loop)
            run_epochs(loop, data, callbacks, stop)
            loop.status, loop.reason = loop.stop_request or ("completed", "")
        except Interrupted as where:
            loop.status, loop.interrupted_at = "interrupted", str(where)
            loop.interrupted_by = stop.by
        except KeyboardInterrupt:
            loop.status = "interrupted"
        except Diverged as error:
            loop.status, loop.reason = "diverged", str(error)
        finally:  # also when an error (a failed write, ...) escapes: callbacks close up
            for callback in callbacks:
                callback.on_fit_end(loop)
    return loop


def run_epochs(loop: Loop, data: Splits, callbacks: list[Callback], stop: StopOnInterrupt):
    """From epoch `loop.epoch + 1` to `config.epochs`: train, validate, call back."""
    config, trainer, ranks, info = loop.config, loop.trainer, loop.ranks, loop.info
    transform = batch_transform(config, info)
    val_shard = data.val.subset(torch.arange(ranks.rank, len(data.val), ranks.world_size))
    selection = TASK_METRICS[info.task].selection
    while loop.epoch < config.epochs and loop.stop_request is None:
        epoch = loop.epoch + 1
        for callback in callbacks:
            callback.on_epoch_start(loop)

        def on_log(step, loss, accuracy, images):
            for callback in callbacks:
                callback.on_log(loop, step, loss, accuracy, images)

        batches = iterate_batches(
            data.train,
            info,
            loop.batch_size,
            device=trainer.device,
            shuffle=True,
            generator=loop.generator,
            transform=transform,
            channels_last=config.channels_last,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )
        lr = trainer.optimizer.param_groups[0]["lr"]
        train = train_one_epoch(
            trainer, batches, epoch=epoch, on_log=on_log, stop=stop, ranks=ranks
        )
        counts = validation_counts(
            trainer.model, val_shard if ranks.distributed else data.val, info,
            device=trainer.device, precision=trainer.precision,
            batch_size=config.eval_batch_size, channels_last=config.channels_last,
        )  # fmt: skip
        scores = validation_scores(ranks.sum(counts), info.task)
        row = {
            "epoch": epoch,
            "train_loss": train["loss"],
            "train_accuracy": train["accuracy"],
            "val_loss": scores["val_loss"],
            "val_accuracy": scores["val_accuracy"],
            "lr": lr,
            "epoch_seconds": train["seconds"],
            "train_images_per_second": train["images"] / train["seconds"],
            **{k: v for k, v in scores.items() if k not in ("val_loss", "val_accuracy")},
        }
        loop.history.append(row)
        loop.epoch, loop.step = epoch, loop.step + train["steps"]
        score = row[selection]
        loop.improved = score > (-math.inf if loop.best_score is None else loop.best_score)
        if loop.improved:
            loop.best_score, loop.best_epoch = score, epoch
        for callback in callbacks:
            callback.on_epoch_end(loop, row)
        if ranks.any(stop.requested):  # Ctrl-C during validation: this epoch is saved, stop
            raise Interrupted(f"the end of epoch {epoch}")
