"""Training and evaluation as plain functions: `fit(config)` trains a model, writes its run record.

fit  ->  train_one_epoch (per epoch)  ->  evaluate (val, per epoch)  ->  final val + test metrics
"""

from __future__ import annotations

import contextlib
import math
import signal
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from zoo import results
from zoo.config import TrainConfig
from zoo.data.base import DatasetInfo, Split, iterate_batches, load_dataset, num_batches
from zoo.data.transforms import joint_augmentation, random_crop_flip
from zoo.errors import ZooError
from zoo.registry import create_model, get_model_entry

LOG_EVERY = 25  # steps between host syncs (progress update + finiteness check)


class Diverged(Exception):
    """The training loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C during training, caught at a step boundary."""


@dataclass
class RunResult:
    run_dir: Path
    status: str  # completed | interrupted | diverged
    message: str
    metrics: dict


@dataclass
class Precision:
    autocast_dtype: torch.dtype | None  # None = fp32
    label: str  # what ran: fp32 | fp16 | bf16
    warning: str | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ZooError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(
            f"--device {name} asked for CUDA, but no CUDA GPU is visible; use --device cpu."
        )
    return device


def cpu_has_native_bf16() -> bool:
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def resolve_precision(device: torch.device, amp: bool, amp_dtype: str) -> Precision:
    """Which precision will actually run; falls back to fp32 with a warning, never silently."""
    if not amp:
        return Precision(None, "fp32")
    dtype = torch.float16 if amp_dtype == "float16" else torch.bfloat16
    label = "fp16" if dtype == torch.float16 else "bf16"
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return Precision(None, "fp32", "This GPU has no bf16 support; running fp32.")
        return Precision(dtype, label)
    if dtype == torch.bfloat16 and cpu_has_native_bf16():
        return Precision(dtype, label)
    reason = (
        "fp16 autocast is not used on CPU (use --amp-dtype bfloat16)"
        if dtype == torch.float16
        else "this CPU has no native bf16 support"
    )
    return Precision(None, "fp32", f"--amp ignored: {reason}; running fp32.")


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params, lr, wd = model.parameters(), config.lr, config.weight_decay
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=total_steps)
    return None


def compute_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0):
    """Cross-entropy for (B, C) logits and (B, C, H, W) per-pixel logits alike."""
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)


class StopOnInterrupt:
    """Turn the first Ctrl-C into a flag checked between steps; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def _handler(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)  # the next Ctrl-C raises KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def autocast(device: torch.device, precision: Precision):
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


@dataclass
class Trainer:
    """Everything an optimisation step needs, built once by `make_trainer`."""

    model: torch.nn.Module  # the module whose weights are checkpointed
    step_model: torch.nn.Module  # `model`, or its torch.compile wrapper, which runs the steps
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: Precision
    label_smoothing: float = 0.0


def make_trainer(
    config: TrainConfig, model, device: torch.device, precision: Precision, steps_per_epoch: int
) -> Trainer:
    optimizer = build_optimizer(config, model)
    use_scaler = device.type == "cuda" and precision.autocast_dtype == torch.float16
    return Trainer(
        model=model,
        step_model=torch.compile(model) if config.compile else model,
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, config.epochs * steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        device=device,
        precision=precision,
        label_smoothing=config.label_smoothing,
    )


def train_one_epoch(trainer: Trainer, batches, *, epoch: int = 1, on_log=None, stop=None) -> dict:
    """One pass over `batches`; returns the epoch's loss, accuracy, images and seconds.

    Losses stay on the device and are checked every LOG_EVERY steps, so a GPU is not synced
    after each step; a NaN or inf names the first step where it appeared. `stop.requested`
    (see StopOnInterrupt) ends the epoch between two steps by raising Interrupted.
    """
    model, device = trainer.step_model, trainer.device
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    pending: list[torch.Tensor] = []  # per-step losses since the last check
    images_seen = targets_seen = step = 0
    start = time.perf_counter()
    for step, (images, targets) in enumerate(batches, start=1):
        with autocast(device, trainer.precision):
            logits = model(images)
        loss = compute_loss(logits, targets, trainer.label_smoothing)
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.scaler.scale(loss).backward()
        trainer.scaler.step(trainer.optimizer)
        trainer.scaler.update()
        if trainer.scheduler is not None:
            trainer.scheduler.step()
        loss_sum += loss.detach() * len(images)
        correct += (logits.detach().argmax(1) == targets).sum()
        pending.append(loss.detach())
        images_seen += len(images)
        targets_seen += targets.numel()
        stopping = stop is not None and stop.requested
        if step % LOG_EVERY == 0 or stopping:
            check_finite(pending, epoch, step)
            pending.clear()
            if on_log is not None:
                on_log(
                    step, loss_sum.item() / images_seen, correct.item() / targets_seen, images_seen
                )
        if stopping:
            raise Interrupted(f"epoch {epoch}, step {step}")
    check_finite(pending, epoch, step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {
        "loss": loss_sum.item() / max(images_seen, 1),
        "accuracy": correct.item() / max(targets_seen, 1),
        "images": images_seen,
        "seconds": seconds,
    }


def check_finite(losses: list[torch.Tensor], epoch: int, last_step: int) -> None:
    if not losses:
        return
    values = torch.stack(losses)
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        index = bad[0].item()
        step = last_step - len(losses) + 1 + index
        raise Diverged(
            f"the training loss became {values[index].item()} at epoch {epoch}, step {step}"
        )


@torch.inference_mode()
def predict(
    model, split: Split, info: DatasetInfo, device, precision, batch_size: int, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(softmax scores on CPU, targets on CPU, mean loss) over a whole split."""
    model.eval()
    scores, loss_sum = [], 0.0
    for images, targets in iterate_batches(
        split, info, batch_size, device=device, channels_last=channels_last
    ):
        with autocast(device, precision):
            logits = model(images)
        loss_sum += compute_loss(logits, targets).item() * len(images)
        scores.append(logits.float().softmax(1).cpu())
    return torch.cat(scores), split.targets.long().cpu(), loss_sum / len(split)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def build_model(
    config: TrainConfig, info: DatasetInfo, device: torch.device, *, start_weights: bool = True
) -> torch.nn.Module:
    """The run's model on `device`; `start_weights` loads --pretrained / --weights (training only:
    evaluation loads a checkpoint over them anyway)."""
    model = create_model(
        config.model,
        num_classes=info.num_classes,
        in_chans=info.in_chans,
        pretrained=config.pretrained and start_weights,
        weights=config.weights if start_weights else None,
    )
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    return model.to(device, memory_format=memory_format)


def fit(config: TrainConfig, console: Console | None = None) -> RunResult:
    """Train `config.model`, keep the best (by val accuracy; segmentation: by val mean IoU) and
    last checkpoints, evaluate the best one on val and test, and write the run record and figures.

    Segmentation selects by mean IoU rather than mean AP because IoU comes from the confusion
    matrix in one pass, while exact AP sorts every validation pixel once per class per epoch.

    Ctrl-C and a diverging loss do not raise: the result's status says what happened, and the
    record on disk says the same, with the checkpoints of the last good state kept.
    """
    console = console or Console(stderr=True)
    entry = get_model_entry(config.model)
    config.dataset = config.dataset or entry.dataset
    device = resolve_device(config.device)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    if precision.warning:
        console.print(f"[yellow]Warning:[/yellow] {precision.warning}", highlight=False)
    data = load_dataset(
        config.dataset,
        config.data_dir,
        val_fraction=config.val_fraction,
        split_seed=config.split_seed,
        limit_train=config.limit_train,
        skip_bad=config.skip_bad,
    )
    if data.info.task != entry.task:
        raise ZooError(
            f"{config.model} is a {entry.task} model but {config.dataset} is a {data.info.task} "
            f"dataset; pick a {entry.task} dataset (`zoo datasets`)."
        )
    side = min(data.train.images.shape[-2:])
    if config.crop_size is not None and config.crop_size > side:
        raise ZooError(
            f"--crop-size {config.crop_size} is larger than {config.dataset}'s {side}-pixel "
            f"training images; pass --crop-size {side} or less."
        )
    if device.type == "cuda":
        data = data.to(device)
    torch.manual_seed(config.seed)
    model = build_model(config, data.info, device)
    steps_per_epoch = num_batches(data.train, config.batch_size)
    trainer = make_trainer(config, model, device, precision, steps_per_epoch)

    run_dir = results.new_run_dir(config.out, config.dataset, config.model)
    env = results.environment(device)
    results.write_json(
        run_dir / results.CONFIG,
        {"config": config.to_dict(), "precision": precision.label, "environment": env},
    )
    record = {
        "schema_version": results.SCHEMA_VERSION,
        "model": config.model,
        "dataset": config.dataset,
        "task": data.info.task,
        "precision": precision.label,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "status": "running",
        "message": "",
        "epochs_completed": 0,
        "best_epoch": None,
    }
    if data.skipped:
        record["skipped_samples"] = list(data.skipped)
        console.print(
            f"[yellow]Warning:[/yellow] left out {len(data.skipped)} bad samples "
            f"(listed in {run_dir / results.METRICS}), e.g. {data.skipped[0]}",
            highlight=False,
        )
    results.write_json(run_dir / results.METRICS, record)
    console.print(
        f"Training [bold]{config.model}[/bold] on {config.dataset} ({len(data.train)} train / "
        f"{len(data.val)} val / {len(data.test)} test) on {env['device_name']} ({device}), "
        f"{precision.label} -> {run_dir}",
        highlight=False,
        soft_wrap=True,
    )

    history: list[dict] = []
    with StopOnInterrupt() as stop:
        try:
            train_epochs(trainer, data, config, run_dir, record, history, console, stop)
            status, message = "completed", ""
        except Interrupted as where:
            # Stopped between two steps, so the weights are consistent: keep them as "last".
            meta = checkpoint_metadata(config, data.info, len(history))
            meta["interrupted_at"] = str(where)
            results.save_checkpoint(run_dir / results.LAST, model, meta)
            status = "interrupted"
            message = (
                f"Interrupted by Ctrl-C at {where}; weights saved to {run_dir / results.LAST}."
            )
        except KeyboardInterrupt:
            status = "interrupted"
            message = "Interrupted by Ctrl-C; the last complete epoch's weights are kept."
        except Diverged as error:
            status = "diverged"
            kept = (
                f"the last good checkpoint {run_dir / results.LAST} is kept"
                if history
                else "no epoch completed, so no checkpoint was written"
            )
            message = f"Training stopped: {error}; {kept}. Try a lower --lr."
    if history:
        record["train_images_per_second"] = statistics.median(
            row["train_images_per_second"] for row in history
        )
        results.write_json(run_dir / results.METRICS, record)  # evaluate_run reads it back
    if status == "completed":
        try:
            final = evaluate_run(
                run_dir, console=console, model=model, data=data, device=device, status=status
            )
            return RunResult(run_dir, status, message, final)
        except KeyboardInterrupt:
            status, message = "interrupted", "Interrupted by Ctrl-C during the final evaluation."
    if (run_dir / results.BEST).exists():
        message += f" Run `zoo eval {run_dir}` to evaluate the best checkpoint so far."
    elif (run_dir / results.LAST).exists():
        message += f" Run `zoo eval {run_dir} --checkpoint last` to evaluate the saved weights."
    record |= {"status": status, "message": message}
    results.write_json(run_dir / results.METRICS, record)
    return RunResult(run_dir, status, message, record)


def checkpoint_metadata(config: TrainConfig, info: DatasetInfo, epoch: int) -> dict[str, str]:
    return {
        "model": config.model,
        "dataset": config.dataset,
        "num_classes": str(info.num_classes),
        "in_chans": str(info.in_chans),
        "epoch": str(epoch),
    }


def train_epochs(trainer, data, config, run_dir, record, history, console, stop) -> None:
    """The epoch loop: train, validate, checkpoint, append to the history, update the record."""
    info = data.info
    generator = torch.Generator().manual_seed(config.seed)
    segmentation = info.task == "segmentation"
    transform = None
    if segmentation and (config.augment or config.crop_size):
        transform = joint_augmentation(
            flip=config.augment,
            scale=(config.augment_scale, 1.0) if config.augment else (1.0, 1.0),
            brightness_contrast=config.augment_color if config.augment else 0.0,
            crop=config.crop_size,
        )
    elif config.augment:
        transform = random_crop_flip()
    steps_per_epoch = num_batches(data.train, config.batch_size)
    best_score = -math.inf
    with make_progress(console) as progress:
        for epoch in range(1, config.epochs + 1):
            task = progress.add_task(
                f"epoch {epoch}/{config.epochs}", total=steps_per_epoch, stats=""
            )

            started = time.perf_counter()

            def on_log(step, loss, accuracy, images, task=task, started=started):
                rate = images / (time.perf_counter() - started)
                stats = f"loss {loss:.4f}  acc {accuracy:.4f}  {rate:,.0f} img/s"
                progress.update(task, completed=step, stats=stats)

            batches = iterate_batches(
                data.train,
                info,
                config.batch_size,
                device=trainer.device,
                shuffle=True,
                generator=generator,
                transform=transform,
                channels_last=config.channels_last,
            )
            lr = trainer.optimizer.param_groups[0]["lr"]
            train = train_one_epoch(trainer, batches, epoch=epoch, on_log=on_log, stop=stop)
            progress.remove_task(task)
            val_probs, val_targets, val_loss = predict(
                trainer.step_model, data.val, info, trainer.device, trainer.precision,
                config.eval_batch_size, config.channels_last,
            )  # fmt: skip
            val_predictions = val_probs.argmax(1)
            del val_probs
            val_accuracy = (val_predictions == val_targets).float().mean().item()  # per pixel
            row = {
                "epoch": epoch,
                "train_loss": train["loss"],
                "train_accuracy": train["accuracy"],
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "lr": lr,
                "epoch_seconds": train["seconds"],
                "train_images_per_second": train["images"] / train["seconds"],
            }
            score = val_accuracy
            if segmentation:
                from zoo.metrics import confusion_from_labels, iou_from_confusion

                confusion = confusion_from_labels(val_predictions, val_targets, info.num_classes)
                row["val_mean_iou"] = score = iou_from_confusion(confusion).nanmean().item()
            history.append(row)
            meta = checkpoint_metadata(config, info, epoch)
            results.save_checkpoint(run_dir / results.LAST, trainer.model, meta)
            if score > best_score:
                best_score = score
                record["best_epoch"] = epoch
                results.save_checkpoint(run_dir / results.BEST, trainer.model, meta)
            record["epochs_completed"] = epoch
            results.write_history(run_dir / results.HISTORY, history)
            results.write_json(run_dir / results.METRICS, record)
            miou = f" mIoU {row['val_mean_iou']:.4f}" if segmentation else ""
            rate = train["images"] / train["seconds"]
            rate_text = f"{rate:,.1f}" if rate < 100 else f"{rate:,.0f}"  # unet-small: ~5 img/s
            console.print(
                f"epoch {epoch:>3}/{config.epochs}  train loss {train['loss']:.4f} "
                f"acc {train['accuracy']:.4f} | val loss {val_loss:.4f} acc {val_accuracy:.4f}"
                f"{miou} | {rate_text} img/s, {train['seconds']:.1f}s",
                highlight=False,
                soft_wrap=True,
            )
            if stop.requested:  # Ctrl-C during validation: this epoch is saved, stop here
                raise Interrupted(f"the end of epoch {epoch}")


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = results.BEST,
    device: torch.device | None = None,
    data_dir: str | None = None,
    console: Console | None = None,
    model: torch.nn.Module | None = None,
    data=None,
    status: str | None = None,
) -> dict:
    """Evaluate a run's checkpoint on val and test; update metrics.json and redraw the figures.

    `model` and `data` skip rebuilding them when the caller (fit) already has them; `status`
    replaces the record's status in the same write as the metrics.
    """
    from zoo import plots
    from zoo.metrics import classification_metrics, segmentation_metrics

    run_dir = Path(run_dir)
    console = console or Console(stderr=True)
    saved, record = results.load_run(run_dir)
    config = TrainConfig.from_dict(saved["config"])
    device = device or resolve_device(config.device)
    if data is None:
        data = load_dataset(
            config.dataset,
            data_dir or config.data_dir,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            skip_bad=config.skip_bad,
        )
        if device.type == "cuda":
            data = data.to(device)
    info = data.info
    if model is None:
        model = build_model(config, info, device, start_weights=False)
    results.load_checkpoint(run_dir / checkpoint, model)
    precision = resolve_precision(device, config.amp, config.amp_dtype)
    if precision.label != saved["precision"]:
        console.print(
            f"[yellow]Warning:[/yellow] trained in {saved['precision']}, evaluating in "
            f"{precision.label} on {device}.",
            highlight=False,
            soft_wrap=True,
        )

    split_metrics, test_probs = {}, None
    for name, split in (("val", data.val), ("test", data.test)):
        probs, targets, loss = predict(
            model, split, info, device, precision, config.eval_batch_size, config.channels_last
        )
        score = segmentation_metrics if info.task == "segmentation" else classification_metrics
        split_metrics[name] = {"loss": loss, **score(probs, targets, info.class_names)}
        if name == "test":
            test_probs = probs
        del probs
    record |= {
        "checkpoint": checkpoint,
        "eval_precision": precision.label,
        "class_names": list(info.class_names),
        **split_metrics,
    }
    if status is not None:
        record["status"] = status

    history_path = run_dir / results.HISTORY
    history = results.read_history(history_path) if history_path.exists() else []
    save_figures = (
        plots.save_segmentation_figures
        if info.task == "segmentation"
        else plots.save_classification_figures
    )
    test_split = data.test.to(torch.device("cpu"))  # a no-op unless the data lives on a GPU
    save_figures(run_dir / results.FIGURES, history, record, model, test_split, test_probs, info)
    results.write_json(run_dir / results.METRICS, record)
    return record
