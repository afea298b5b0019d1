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


# Exact AP sorts every pixel's score once per class; above this many (pixel, class) scores the
# sort no longer fits comfortably in memory and AP is computed from binned scores instead.
EXACT_AP_MAX_SCORES = 400_000_000
AP_BINS = 1000


def confusion_from_labels(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int):
    """(C, C) pixel counts, rows: true class, columns: predicted, from integer label maps."""
    index = targets.reshape(-1).long() * num_classes + predictions.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: torch.Tensor) -> torch.Tensor:
    """Per-class intersection over union, tp / (tp + fp + fn); NaN where a class never occurs."""
    confusion = confusion.double()
    tp = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - tp
    return tp / union  # 0/0 = NaN: absent from both prediction and truth


def per_image_mean_iou(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int):
    """(N,) mean IoU of each image over the classes present in its prediction or truth."""
    n = len(targets)
    index = (
        torch.arange(n).view(n, 1) * num_classes**2
        + targets.reshape(n, -1).long() * num_classes
        + predictions.reshape(n, -1).long()
    )
    confusion = torch.bincount(index.reshape(-1), minlength=n * num_classes**2)
    confusion = confusion.reshape(n, num_classes, num_classes).double()
    tp = confusion.diagonal(dim1=1, dim2=2)
    union = confusion.sum(1) + confusion.sum(2) - tp
    return (tp / union).nanmean(1)


def segmentation_metrics(
    probs: torch.Tensor, targets: torch.Tensor, class_names: tuple[str, ...]
) -> dict:
    """Per-class AP (one-vs-rest over all pixels, from softmax scores), IoU and pixel accuracy,
    with their means, as dataset-level scores: IoU comes from the confusion matrix accumulated
    over every pixel of the split, not from an average of per-image scores.

    `probs` is (N, C, H, W) softmax scores, `targets` (N, H, W) class ids. AP is exact (equal to
    scikit-learn's `average_precision_score`) unless the split has more than
    EXACT_AP_MAX_SCORES scores, where it is binned and `ap_method` says so.
    """
    num_classes = len(class_names)
    targets = targets.long().cpu()
    flat_probs = probs.float().cpu().permute(0, 2, 3, 1).reshape(-1, num_classes)
    flat_targets = targets.reshape(-1)
    exact = flat_probs.numel() <= EXACT_AP_MAX_SCORES
    per_class_ap = multiclass_average_precision(
        flat_probs, flat_targets, num_classes, average="none", thresholds=None if exact else AP_BINS
    )
    confusion = confusion_from_labels(flat_probs.argmax(1), flat_targets, num_classes)
    iou = iou_from_confusion(confusion)
    class_accuracy = confusion.diagonal().double() / confusion.sum(1).double()
    return {
        "num_images": len(targets),
        "num_pixels": flat_targets.numel(),
        "pixel_accuracy": (confusion.diagonal().sum() / confusion.sum()).item(),
        "mean_ap": finite_or_none(per_class_ap.nanmean().item()),
        "mean_iou": finite_or_none(iou.nanmean().item()),
        "ap_method": "exact" if exact else f"binned ({AP_BINS} thresholds)",
        "per_class": {
            name: {
                "ap": finite_or_none(ap.item()),
                "iou": finite_or_none(class_iou.item()),
                "accuracy": finite_or_none(acc.item()),
            }
            for name, ap, class_iou, acc in zip(
                class_names, per_class_ap, iou, class_accuracy, strict=True
            )
        },
        "confusion_matrix": confusion.tolist(),  # pixels; rows: true class, columns: predicted
    }
