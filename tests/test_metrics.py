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
    assert metrics["per_class"]["d"]["accuracy"] == 0.0, "the docstring's rule for an absent class"
    assert metrics["mean_ap"] == pytest.approx(1)
    json.dumps(metrics, allow_nan=False)  # strict JSON
    plt.close(plot_per_class({"test": {n: v["ap"] for n, v in metrics["per_class"].items()}}, "AP"))


def test_perfect_scores():
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    probs = torch.nn.functional.one_hot(targets, 4).float()
    metrics = classification_metrics(probs, targets, NAMES)
    assert metrics["accuracy"] == 1 and metrics["mean_ap"] == pytest.approx(1)


def test_binned_ap_from_summed_histograms_is_torchmetrics_binned_ap_and_near_the_exact():
    """The history's val_mean_ap: histograms of batches (or processes) add up, and their AP is
    torchmetrics' with thresholds=VAL_AP_BINS; a class without samples is NaN, as in the exact AP
    (torchmetrics says 0 and warns)."""
    from torchmetrics.functional.classification import multiclass_average_precision

    from zoo.metrics import (
        VAL_AP_BINS,
        binned_average_precision,
        per_class_average_precision,
        score_histogram,
    )

    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 3, (6, 16, 16), generator=generator)  # class 3 never occurs
    logits = torch.randn(6, 4, 16, 16, generator=generator)
    logits += 2.0 * torch.nn.functional.one_hot(targets, 4).movedim(-1, 1)
    probs = logits.softmax(1)
    histogram = score_histogram(probs[:4], targets[:4]) + score_histogram(probs[4:], targets[4:])
    assert histogram.shape == (4, 2, VAL_AP_BINS) and histogram.sum() == 4 * probs[:, 0].numel()
    binned = binned_average_precision(histogram)
    expected = multiclass_average_precision(
        probs.movedim(1, -1).reshape(-1, 4), targets.reshape(-1), 4, average="none",
        thresholds=VAL_AP_BINS,
    )  # fmt: skip
    assert torch.isnan(binned[3])
    torch.testing.assert_close(binned[:3], expected[:3].double(), atol=1e-6, rtol=0)
    exact = per_class_average_precision(probs, targets, 4)
    assert torch.isnan(exact[3])
    torch.testing.assert_close(binned[:3], exact[:3], atol=2e-3, rtol=0)
    assert not torch.allclose(binned[:3], exact[:3], atol=1e-9, rtol=0)  # binned, not exact


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_the_ap_of_a_single_positive_is_the_precision_at_its_rank(rank):
    from zoo.metrics import average_precision

    scores = torch.tensor([0.9, 0.6, 0.3])
    positives = torch.arange(3) == rank - 1
    assert average_precision(scores, positives) == pytest.approx(1 / rank)
    assert average_precision(scores, positives) == pytest.approx(
        average_precision_score(positives.numpy(), scores.numpy())
    )


def test_binned_ap_keeps_a_score_of_1_apart_from_the_bin_below():
    """Bin k holds the scores of at least k / (bins - 1), so the top bin holds scores of 1 only:
    a positive scored 1 ranks above a negative scored 0.99995, as in the exact AP."""
    from zoo.metrics import binned_average_precision, score_histogram

    probs = torch.tensor([[0.0, 1.0], [0.00005, 0.99995]])
    targets = torch.tensor([1, 0])
    assert binned_average_precision(score_histogram(probs, targets, bins=10_000))[1] == 1.0
