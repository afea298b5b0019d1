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


def test_per_image_mean_iou():
    targets = torch.tensor([[[0, 0], [1, 1]], [[0, 1], [0, 1]]])
    predictions = torch.tensor([[[0, 0], [1, 1]], [[1, 0], [1, 0]]])
    torch.testing.assert_close(
        per_image_mean_iou(predictions, targets, 2), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )
