"""Segmentation metrics against scikit-learn on a small case, and their edge cases."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix, jaccard_score

from zoo import metrics
from zoo.metrics import per_image_mean_iou, segmentation_metrics

NAMES = ("others", "facade", "pillar", "window")


def random_maps(n=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, len(NAMES), (n, size, size), generator=generator)
    logits = torch.randn(n, len(NAMES), size, size, generator=generator)
    logits.scatter_add_(1, targets[:, None], torch.full((n, 1, size, size), 1.5))
    return logits.softmax(1), targets


def test_ap_iou_and_pixel_accuracy_match_scikit_learn():
    probs, targets = random_maps()
    result = segmentation_metrics(probs, targets, NAMES)
    y = targets.reshape(-1).numpy()
    p = probs.permute(0, 2, 3, 1).reshape(-1, len(NAMES)).numpy()
    predicted = p.argmax(1)
    ious = jaccard_score(y, predicted, average=None)
    for c, name in enumerate(NAMES):
        assert result["per_class"][name]["ap"] == pytest.approx(
            average_precision_score(y == c, p[:, c]), abs=1e-4
        )
        assert result["per_class"][name]["iou"] == pytest.approx(ious[c])
        assert result["per_class"][name]["accuracy"] == pytest.approx(
            (predicted[y == c] == c).mean()
        )
    assert result["mean_ap"] == pytest.approx(
        np.mean([average_precision_score(y == c, p[:, c]) for c in range(len(NAMES))]), abs=1e-4
    )
    assert result["mean_iou"] == pytest.approx(ious.mean())
    assert result["pixel_accuracy"] == pytest.approx((predicted == y).mean())
    np.testing.assert_array_equal(result["confusion_matrix"], confusion_matrix(y, predicted))
    assert result["ap_method"] == "exact" and result["num_pixels"] == y.size
    assert result["num_images"] == len(targets)


def test_a_class_absent_everywhere_is_null_not_nan():
    probs, targets = random_maps()
    targets[targets == 2] = 0
    probs[:, 2] = 0  # never predicted either
    result = segmentation_metrics(probs, targets, NAMES)
    assert result["per_class"]["pillar"]["iou"] is None
    assert result["per_class"]["pillar"]["accuracy"] is None
    assert result["mean_iou"] is not None


def test_too_many_pixels_fall_back_to_binned_ap_and_say_so(monkeypatch):
    probs, targets = random_maps()
    monkeypatch.setattr(metrics, "EXACT_AP_MAX_SCORES", 10)
    result = segmentation_metrics(probs, targets, NAMES)
    assert result["ap_method"] == "binned (1000 thresholds)"
    y = targets.reshape(-1).numpy()
    p = probs.permute(0, 2, 3, 1).reshape(-1, len(NAMES)).numpy()
    exact = [average_precision_score(y == c, p[:, c]) for c in range(len(NAMES))]
    # 1,000 thresholds come within 0.0011 of the exact AP on these scores; 100 are 0.004 off and
    # 25 are 0.019 off.
    for c, name in enumerate(NAMES):
        assert result["per_class"][name]["ap"] == pytest.approx(exact[c], abs=0.0025), name
    assert result["mean_ap"] == pytest.approx(np.mean(exact), abs=0.0025)
    # ... and are binned: the exact AP in float32 is within 1e-7 of scikit-learn's, binned within
    # 2e-4 to 1e-3 here.
    error = [abs(result["per_class"][name]["ap"] - exact[c]) for c, name in enumerate(NAMES)]
    assert min(error) > 1e-5, "the scores were sorted, not binned"


def test_ap_is_exact_up_to_the_limit_and_binned_above_it(monkeypatch):
    probs, targets = random_maps()
    monkeypatch.setattr(metrics, "EXACT_AP_MAX_SCORES", probs.numel())
    assert segmentation_metrics(probs, targets, NAMES)["ap_method"] == "exact"
    monkeypatch.setattr(metrics, "EXACT_AP_MAX_SCORES", probs.numel() - 1)
    assert segmentation_metrics(probs, targets, NAMES)["ap_method"].startswith("binned")


def test_the_confusion_matrix_has_a_row_and_column_for_a_class_never_seen():
    targets = torch.tensor([0, 1, 2, 2, 1])  # class 3 neither occurs nor is predicted
    predictions = torch.tensor([0, 2, 2, 1, 1])
    np.testing.assert_array_equal(
        metrics.confusion_from_labels(predictions, targets, 4),
        confusion_matrix(targets, predictions, labels=range(4)),
    )


def test_per_image_mean_iou():
    targets = torch.tensor([[[0, 0], [1, 1]], [[0, 1], [0, 1]]])
    predictions = torch.tensor([[[0, 0], [1, 1]], [[1, 0], [1, 0]]])
    torch.testing.assert_close(
        per_image_mean_iou(predictions, targets, 2), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )


def test_per_image_mean_iou_keeps_images_apart_over_the_classes_each_one_has():
    """Three images, three classes, errors one way only (the confusion is not symmetric), and
    class 2 absent from the last image: each image's mean over its own classes."""
    targets = torch.tensor([[[0, 1], [2, 2]], [[0, 0], [1, 1]], [[1, 1], [0, 0]]])
    predictions = torch.tensor([[[0, 1], [2, 1]], [[0, 1], [1, 1]], [[1, 0], [0, 0]]])
    expected = []
    for truth, predicted in zip(targets, predictions, strict=True):
        present = torch.unique(torch.cat([truth.flatten(), predicted.flatten()]))
        ious = jaccard_score(truth.flatten(), predicted.flatten(), labels=present, average=None)
        expected.append(ious.mean())
    assert expected == pytest.approx([2 / 3, 7 / 12, 7 / 12])
    torch.testing.assert_close(
        per_image_mean_iou(predictions, targets, 3), torch.tensor(expected, dtype=torch.float64)
    )
