"""What happens around the training loop, as callbacks (see `zoo.train.Callback`):

- `ConsoleProgress`: a rich progress bar per epoch and one line per finished epoch, on stderr;
- `RunWriter`: the run folder as training goes: checkpoints, training state, history, record;
- `ResumeFrom`: restore a saved training state before the first epoch (`zoo train --resume`).

With several processes only rank 0 gets the first two (zoo/run.py decides).
"""

from __future__ import annotations

import statistics
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from zoo import results
from zoo.checkpoint import BEST, LAST, STATE, load_training_state, save_training_state, save_weights
from zoo.train import Callback, Loop


class ConsoleProgress(Callback):
    """A transient progress bar during each epoch, then a line with the epoch's figures."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.task = None
        self.started = 0.0

    def on_fit_start(self, loop: Loop) -> None:
        self.progress = Progress(
            SpinnerColumn(),  # alive between the updates, every LOG_EVERY steps
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_interactive,  # a log gets the epoch lines only
        )
        self.progress.start()

    def on_epoch_start(self, loop: Loop) -> None:
        description = f"epoch {loop.epoch + 1}/{loop.config.epochs}"
        self.task = self.progress.add_task(description, total=loop.steps_per_epoch, stats="")
        self.started = time.perf_counter()

    def on_log(self, loop: Loop, step: int, loss: float, accuracy: float, images: int) -> None:
        rate = images / (time.perf_counter() - self.started)
        stats = f"loss {loss:.4f}  acc {accuracy:.4f}  {rate:,.0f} img/s"
        self.progress.update(self.task, completed=step, stats=stats)

    def on_epoch_end(self, loop: Loop, row: dict) -> None:
        self.progress.remove_task(self.task)
        scores = "".join(
            f" {label} {row[key]:.4f}"
            for key, label in (("val_mean_ap", "mAP"), ("val_mean_iou", "mIoU"))
            if row.get(key) is not None
        )
        rate = row["train_images_per_second"]
        rate_text = f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"  # unet-small: ~5 img/s
        self.console.print(
            f"epoch {row['epoch']:>3}/{loop.config.epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_accuracy']:.4f} | val loss {row['val_loss']:.4f} "
            f"acc {row['val_accuracy']:.4f}{scores} | {rate_text} img/s, "
            f"{row['epoch_seconds']:.1f}s",
            highlight=False,
            soft_wrap=True,
        )

    def on_fit_end(self, loop: Loop) -> None:
        if self.progress is not None:
            self.progress.stop()


def checkpoint_metadata(loop: Loop, epoch: int) -> dict[str, str]:
    """What a weights file says about itself (safetensors metadata: strings only)."""
    return {
        "model": loop.config.model,
        "dataset": loop.config.dataset,
        "num_classes": str(loop.info.num_classes),
        "in_chans": str(loop.info.in_chans),
        "epoch": str(epoch),
    }


class RunWriter(Callback):
    """Keeps the run folder up to date: after each epoch `last.safetensors` (and
    `best.safetensors` on a new best score), the training state `--resume` reads, history.csv
    and metrics.json; on Ctrl-C between steps, the weights of that moment as `last`."""

    def __init__(self, record: results.RunRecord):
        self.record = record

    def on_epoch_end(self, loop: Loop, row: dict) -> None:
        record, run_dir, trainer = self.record, self.record.run_dir, loop.trainer
        metadata = checkpoint_metadata(loop, loop.epoch)
        save_weights(run_dir / LAST, trainer.model, metadata)
        if loop.improved:
            save_weights(run_dir / BEST, trainer.model, metadata)
        save_training_state(run_dir / STATE, trainer, loop.generator, loop.progress())
        self.update(loop)
        results.write_history(record)
        results.write_metrics(record)

    def on_fit_end(self, loop: Loop) -> None:
        if loop.interrupted_at is not None:
            # Stopped between two steps, so the weights are consistent: keep them as "last".
            metadata = checkpoint_metadata(loop, loop.epoch)
            metadata["interrupted_at"] = loop.interrupted_at
            save_weights(self.record.run_dir / LAST, loop.trainer.model, metadata)
        self.update(loop)

    def update(self, loop: Loop) -> None:
        record = self.record
        record.history = list(loop.history)
        record.epochs_completed = loop.epoch
        record.best_epoch = loop.best_epoch
        if loop.history:
            record.train_images_per_second = statistics.median(
                row["train_images_per_second"] for row in loop.history
            )


class ResumeFrom(Callback):
    """Load a training state into the loop before its first epoch: weights, optimizer,
    scheduler, GradScaler, RNG states, the shuffle generator and the progress (epoch, step,
    history, best score), so the next epoch is the one the stopped run would have trained.

    When the run's `epochs` grew, the schedule is stretched to the new total number of steps
    from where it is (the state's own total is replaced by the freshly built scheduler's)."""

    def __init__(self, path):
        self.path = path

    def on_fit_start(self, loop: Loop) -> None:
        scheduler = loop.trainer.scheduler
        fresh = scheduler.state_dict() if scheduler is not None else {}
        progress = load_training_state(self.path, loop.trainer, loop.generator)
        for key in ("T_max", "total_steps", "_schedule_phases"):  # cosine, onecycle
            if key in fresh:
                setattr(scheduler, key, fresh[key])
        loop.restore(progress)
