import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix

from zoo.metrics import classification_metrics
from zoo.plots import plot_per_class

NAMES = ("a", "b", "c", "d")


def random_scores(n=500, seed=0):
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, len(NAMES), (n,), generator=generator)
    logits = torch.randn(n, len(NAMES), generator=generator)
    logits[torch.arange(n), targets] += 1.0  # better than chance, not perfect
    return logits.softmax(1), targets


def test_ap_accuracy_and_confusion_match_scikit_learn():
    probs, targets = random_scores()
    metrics = classification_metrics(probs, targets, NAMES)
    y, p = targets.numpy(), probs.numpy()
    for c, name in enumerate(NAMES):
        expected_ap = average_precision_score(y == c, p[:, c])
        assert metrics["per_class"][name]["ap"] == pytest.approx(expected_ap, abs=1e-6)
        expected_recall = ((p.argmax(1) == c) & (y == c)).sum() / (y == c).sum()
        assert metrics["per_class"][name]["accuracy"] == pytest.approx(expected_recall)
    assert metrics["accuracy"] == pytest.approx((p.argmax(1) == y).mean())
    assert metrics["mean_ap"] == pytest.approx(
        np.mean([average_precision_score(y == c, p[:, c]) for c in range(len(NAMES))]), abs=1e-6
    )
    np.testing.assert_array_equal(metrics["confusion_matrix"], confusion_matrix(y, p.argmax(1)))
    assert metrics["num_samples"] == len(y)


def test_absent_class_has_no_ap_and_is_left_out_of_the_mean():
    targets = torch.tensor([0, 1, 2, 0, 1, 2])  # class "d" never occurs
    probs = torch.nn.functional.one_hot(targets, 4).float() * 0.7 + 0.075
    metrics = classification_metrics(probs, targets, NAMES)
    assert metrics["per_class"]["d"]["ap"] is None  # JSON has no NaN
    assert metrics["mean_ap"] == pytest.approx(1)
    json.dumps(metrics, allow_nan=False)  # strict JSON
    plt.close(plot_per_class({"test": {n: v["ap"] for n, v in metrics["per_class"].items()}}, "AP"))


def test_perfect_scores():
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    probs = torch.nn.functional.one_hot(targets, 4).float()
    metrics = classification_metrics(probs, targets, NAMES)
    assert metrics["accuracy"] == 1 and metrics["mean_ap"] == pytest.approx(1)
