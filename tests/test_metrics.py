import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, confusion_matrix

from zoo.metrics import classification_metrics

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


def test_perfect_scores():
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    probs = torch.nn.functional.one_hot(targets, 4).float()
    metrics = classification_metrics(probs, targets, NAMES)
    assert metrics["accuracy"] == 1 and metrics["mean_ap"] == pytest.approx(1)
