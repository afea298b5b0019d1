"""Evaluation: a model on a split, with no run folder; and `evaluate_run` on top of it.

predict          softmax scores, targets and mean loss over a whole split
evaluate         those scores -> the task's metrics (zoo/metrics.py), with class names
validate         the per-epoch validation scores, from counts that add up across processes
score_run        val + test metrics of a model into a run record
evaluate_run     `zoo eval`: a run folder's checkpoint -> metrics.json and figures again
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console

from zoo import results
from zoo.checkpoint import BEST
from zoo.data.base import DatasetInfo, run_data_options
from zoo.data.splits import Split, Splits, iterate_batches, load_dataset
from zoo.metrics import (
    VAL_AP_BINS,
    binned_average_precision,
    classification_metrics,
    confusion_from_labels,
    iou_from_confusion,
    predicted_labels,
    score_histogram,
    segmentation_metrics,
)
from zoo.progress import phase, reporting
from zoo.runtime import Precision, autocast, resolve_device, resolve_precision
from zoo.weights import load_run_model


@dataclass
class Predictions:
    probs: torch.Tensor  # softmax scores on the CPU: (N, C) or (N, C, H, W)
    targets: torch.Tensor  # class ids on the CPU: (N,) or (N, H, W)
    loss: float  # mean cross-entropy per sample


def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32, for (B, C) logits and (B, C, H, W) per-pixel logits alike."""
    return F.cross_entropy(logits.float(), targets)


def forward_batches(
    model: torch.nn.Module,
    split: Split,
    info: DatasetInfo,
    *,
    device: torch.device,
    precision: Precision,
    batch_size: int,
    channels_last: bool,
):
    """Yield (logits, targets) of `model`, in eval mode, over `split` in order."""
    model.eval()
    for images, targets in iterate_batches(
        split, info, batch_size, device=device, channels_last=channels_last
    ):
        with autocast(device, precision):
            logits = model(images)
        yield logits, targets  # outside autocast: the caller's loss and softmax run in fp32


@torch.inference_mode()
def predict(
    model: torch.nn.Module, split: Split, info: DatasetInfo, *, name: str = "", **run
) -> Predictions:
    """Softmax scores, targets and mean loss of `model` over `split` (`name`: val, test, as
    its progress shows it); `run` is forward_batches' device, precision, batch_size and
    channels_last."""
    scores, labels, loss_sum = [], [], 0.0
    with phase(f"{name} inference".lstrip(), total=len(split), unit="images") as advance:
        for logits, targets in forward_batches(model, split, info, **run):
            loss_sum += loss_of(logits, targets).item() * len(targets)
            scores.append(logits.float().softmax(1).cpu())
            labels.append(targets.cpu())  # a streamed split's masks come with its batches
            advance(len(targets))
    return Predictions(torch.cat(scores), torch.cat(labels), loss_sum / len(split))


def metrics_of(predictions: Predictions, info: DatasetInfo) -> dict:
    """The task's metrics of one split (see zoo/metrics.py), its mean loss first."""
    score = segmentation_metrics if info.task == "segmentation" else classification_metrics
    return {
        "loss": predictions.loss,
        **score(predictions.probs, predictions.targets, info.class_names),
    }


def evaluate(
    model: torch.nn.Module, split: Split, info: DatasetInfo, *, name: str = "", **run
) -> tuple[dict, Predictions]:
    """(metrics, predictions) of `model` on `split` (`name`: val, test, for the progress):
    what a run records, without a run folder. `run` is forward_batches' device, precision,
    batch_size and channels_last."""
    predictions = predict(model, split, info, name=name, **run)
    with phase(f"{name} metrics".lstrip()):  # exact AP sorts every (pixel, class) score
        metrics = metrics_of(predictions, info)
    return metrics, predictions


@torch.inference_mode()
def validation_counts(
    model: torch.nn.Module, split: Split, info: DatasetInfo, **run
) -> dict[str, torch.Tensor]:
    """Loss sum, sample count, confusion matrix and score histogram (for a binned AP) of
    `split`: sums, so the counts of several processes' shards add up to those of the whole split
    (see `validation_scores`)."""
    loss_sum = 0.0
    confusion = torch.zeros(info.num_classes, info.num_classes, dtype=torch.long)
    histogram = torch.zeros(info.num_classes, 2, VAL_AP_BINS, dtype=torch.long)
    # The epoch's line says how validation went; a log needs no line of its own for it.
    with phase("validation", total=len(split), unit="images", log=False) as advance:
        for logits, targets in forward_batches(model, split, info, **run):
            loss_sum += loss_of(logits, targets).item() * len(targets)
            probs = logits.float().softmax(1)
            labels = predicted_labels(probs)  # as evaluate() labels them
            confusion += confusion_from_labels(labels.cpu(), targets.cpu(), info.num_classes)
            histogram += score_histogram(probs, targets)
            advance(len(targets))
    return {
        "loss_sum": torch.tensor(loss_sum, dtype=torch.float64),
        "samples": torch.tensor(len(split), dtype=torch.float64),
        "confusion": confusion,
        "histogram": histogram,
    }


def validation_scores(counts: dict[str, torch.Tensor], task: str) -> dict[str, float]:
    """The history's val_loss, val_accuracy (per pixel for segmentation), val_mean_ap (binned:
    VAL_AP_BINS thresholds, near the evaluation's exact AP) and, for segmentation,
    val_mean_iou, from `validation_counts` (summed over processes)."""
    confusion = counts["confusion"]
    # float32 division, as (predictions == targets).float().mean() computes it
    accuracy = confusion.trace().float() / confusion.sum().float()
    scores = {
        "val_loss": (counts["loss_sum"] / counts["samples"]).item(),
        "val_accuracy": accuracy.item(),
        "val_mean_ap": binned_average_precision(counts["histogram"]).nanmean().item(),
    }
    if task == "segmentation":
        scores["val_mean_iou"] = iou_from_confusion(confusion).nanmean().item()
    return scores


def score_run(
    record: results.RunRecord,
    model: torch.nn.Module,
    data: Splits,
    *,
    device: torch.device,
    precision: Precision,
    checkpoint: str,
) -> Predictions:
    """Evaluate `model` (holding `checkpoint`'s weights) on val and test into `record`; returns
    the test predictions, which the figures show."""
    config, info = record.config, data.info
    options = dict(
        device=device, precision=precision, batch_size=config.eval_batch_size,
        channels_last=config.channels_last,
    )  # fmt: skip
    record.val, _ = evaluate(model, data.val, info, name="val", **options)
    record.test, test_predictions = evaluate(model, data.test, info, name="test", **options)
    record.checkpoint = checkpoint
    record.eval_precision = precision.label
    record.class_names = list(info.class_names)
    return test_predictions


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = BEST,
    device: torch.device | None = None,
    data_dir: str | None = None,
    console: Console | None = None,
) -> results.RunRecord:
    """Evaluate a run's checkpoint on val and test; rewrite metrics.json and the figures.

    The record's status and training fields are kept: an interrupted run stays interrupted.
    """
    from zoo import plots

    console = console or Console(stderr=True)
    record = results.read_record(run_dir)
    config = record.config
    device = device or resolve_device(config.device)
    with reporting(console):
        with phase(f"loading {checkpoint}"):
            model, info = load_run_model(record, checkpoint, device)
        data = load_dataset(
            config.dataset,
            data_dir or config.data_dir,
            val_fraction=config.val_fraction,
            split_seed=config.split_seed,
            skip_bad=config.skip_bad_samples,
            options=run_data_options(config),
        )
        if device.type == "cuda":
            data = data.to(device)
        precision = resolve_precision(device, config.amp, config.amp_dtype)
        if precision.label != record.precision:
            console.print(
                f"[yellow]Warning:[/yellow] trained in {record.precision}, evaluating in "
                f"{precision.label} on {device}.",
                highlight=False,
                soft_wrap=True,
            )
        test_predictions = score_run(
            record, model, data, device=device, precision=precision, checkpoint=checkpoint
        )
        plots.save_run_figures(record, model, data.test.to(torch.device("cpu")), test_predictions)
    results.write_metrics(record)
    return record
