"""What zoo reports, as a thin layer over torchmetrics, keeping class names up to the table."""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_average_precision,
    multiclass_confusion_matrix,
)


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined score (e.g. AP of a class absent from the split) is null."""
    return value if math.isfinite(value) else None


def classification_metrics(
    probs: torch.Tensor, targets: torch.Tensor, class_names: tuple[str, ...]
) -> dict:
    """Accuracy, per-class accuracy, per-class AP (one-vs-rest, exact) and the confusion matrix.

    `probs` is (N, C) softmax scores, `targets` (N,) class ids.
    """
    num_classes = len(class_names)
    probs, targets = probs.float().cpu(), targets.long().cpu()
    per_class_accuracy = multiclass_accuracy(probs, targets, num_classes, average="none")
    per_class_ap = multiclass_average_precision(probs, targets, num_classes, average="none")
    confusion = multiclass_confusion_matrix(probs, targets, num_classes)
    return {
        "num_samples": len(targets),
        "accuracy": multiclass_accuracy(probs, targets, num_classes, average="micro").item(),
        "mean_ap": finite_or_none(per_class_ap.nanmean().item()),
        "per_class": {
            name: {"accuracy": acc.item(), "ap": finite_or_none(ap.item())}
            for name, acc, ap in zip(class_names, per_class_accuracy, per_class_ap, strict=True)
        },
        "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted
    }
