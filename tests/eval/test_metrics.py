"""Metrics against scikit-learn and torchmetrics on random inputs; intervals against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchmetrics.functional.classification as tmf
from scipy import stats
from sklearn import metrics as skm

from rsssl.eval.intervals import bootstrap_interval, mean_interval, t_quantile
from rsssl.eval.metrics import (
    average_precision,
    classification_metrics,
    confusion_matrix,
    multilabel_metrics,
    segmentation_metrics,
    segmentation_metrics_from_confusion,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def noisy_predictions(
    targets: torch.Tensor, num_classes: int, correct: float, g: torch.Generator
) -> torch.Tensor:
    """Copy `targets`, replacing a (1 - correct) share with uniform random labels."""
    random = torch.randint(0, num_classes, targets.shape, generator=g)
    keep = torch.rand(targets.shape, generator=g) < correct
    return torch.where(keep, targets, random)


@pytest.mark.parametrize("device", DEVICES)
def test_classification_matches_sklearn_and_torchmetrics(device):
    g = torch.Generator().manual_seed(0)
    num_classes = 7
    targets = torch.randint(0, num_classes, (2000,), generator=g)
    preds = noisy_predictions(targets, num_classes, 0.6, g)
    t, p = targets.numpy(), preds.numpy()
    ours = classification_metrics(preds.to(device), targets.to(device), num_classes)

    assert ours["oa"] == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    assert ours["aa"] == pytest.approx(skm.balanced_accuracy_score(t, p), abs=1e-12)
    assert ours["kappa"] == pytest.approx(skm.cohen_kappa_score(t, p), abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro"), abs=1e-12)
    np.testing.assert_allclose(ours["per_class_f1"], skm.f1_score(t, p, average=None), atol=1e-12)
    np.testing.assert_allclose(ours["per_class_accuracy"], skm.recall_score(t, p, average=None), atol=1e-12)
    np.testing.assert_array_equal(
        confusion_matrix(preds.to(device), targets.to(device), num_classes).cpu().numpy(),
        skm.confusion_matrix(t, p, labels=range(num_classes)),
    )

    kwargs = {"num_classes": num_classes}
    assert ours["oa"] == pytest.approx(
        tmf.multiclass_accuracy(preds, targets, average="micro", **kwargs).item(), abs=1e-6
    )
    assert ours["aa"] == pytest.approx(
        tmf.multiclass_accuracy(preds, targets, average="macro", **kwargs).item(), abs=1e-6
    )
    assert ours["kappa"] == pytest.approx(
        tmf.multiclass_cohen_kappa(preds, targets, **kwargs).item(), abs=1e-6
    )
    assert ours["f1_macro"] == pytest.approx(
        tmf.multiclass_f1_score(preds, targets, average="macro", **kwargs).item(), abs=1e-6
    )
    assert 0.5 < ours["kappa"] < ours["oa"] < 0.8  # a meaningful, imperfect prediction


def test_classes_missing_from_targets_follow_sklearn():
    g = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 4, (500,), generator=g)  # classes 0-3 present
    preds = noisy_predictions(targets, 4, 0.7, g)
    preds[:20] = 4  # class 4: predicted, never a target; class 5: absent from both
    t, p = targets.numpy(), preds.numpy()
    ours = classification_metrics(preds, targets, 6)
    with pytest.warns(UserWarning):  # sklearn warns that y_pred has a class missing from y_true
        balanced = skm.balanced_accuracy_score(t, p)
    assert ours["aa"] == pytest.approx(balanced, abs=1e-12)
    assert ours["f1_macro"] == pytest.approx(skm.f1_score(t, p, average="macro", zero_division=0), abs=1e-12)
    assert math.isnan(ours["per_class_accuracy"][4]) and ours["per_class_f1"][4] == 0.0
    assert math.isnan(ours["per_class_accuracy"][5]) and math.isnan(ours["per_class_f1"][5])


def test_scores_are_reduced_by_argmax():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(300, 5, generator=g)
    targets = torch.randint(0, 5, (300,), generator=g)
    assert classification_metrics(scores, targets, 5) == classification_metrics(scores.argmax(1), targets, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_segmentation_matches_sklearn_and_torchmetrics(device):
    g = torch.Generator().manual_seed(3)
    num_classes = 6  # class 5 appears in neither targets nor predictions
    targets = torch.randint(0, 5, (4, 64, 64), generator=g)
    preds = noisy_predictions(targets, 5, 0.7, g)
    targets[:, :8] = 255  # an ignored border
    ours = segmentation_metrics(preds.to(device), targets.to(device), num_classes, ignore_index=255)

    valid = (targets != 255).numpy()
    t, p = targets.numpy()[valid], preds.numpy()[valid]
    assert ours["oa"] == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    assert ours["kappa"] == pytest.approx(skm.cohen_kappa_score(t, p), abs=1e-12)
    assert ours["miou"] == pytest.approx(skm.jaccard_score(t, p, average="macro"), abs=1e-12)
    np.testing.assert_allclose(ours["per_class_iou"][:5], skm.jaccard_score(t, p, average=None), atol=1e-12)
    assert math.isnan(ours["per_class_iou"][5])  # absent class: NaN and out of the mean

    tm_iou = tmf.multiclass_jaccard_index(preds, targets, num_classes, average="macro", ignore_index=255)
    assert ours["miou"] == pytest.approx(tm_iou.item(), abs=1e-6)


def test_segmentation_from_scores_and_streamed_batches():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 4, 16, 16, generator=g)
    targets = torch.randint(0, 4, (6, 16, 16), generator=g)
    whole = segmentation_metrics(logits, targets, 4)
    assert whole == segmentation_metrics(logits.argmax(1), targets, 4)
    streamed = sum(confusion_matrix(logits[i : i + 2], targets[i : i + 2], 4) for i in range(0, 6, 2))
    assert segmentation_metrics_from_confusion(streamed) == whole


@pytest.mark.parametrize("device", DEVICES)
def test_multilabel_matches_sklearn_and_torchmetrics(device):
    g = torch.Generator().manual_seed(5)
    targets = (torch.rand(600, 6, generator=g) < 0.3).long()
    # Informative scores rounded to one decimal: many ties, which AP must treat as one threshold.
    scores = ((0.35 * targets + 0.65 * torch.rand(600, 6, generator=g)) * 10).round() / 10
    ours = multilabel_metrics(scores.to(device), targets.to(device), threshold=0.5)

    s, t = scores.numpy(), targets.numpy()
    np.testing.assert_allclose(
        ours["per_class_ap"], skm.average_precision_score(t, s, average=None), atol=1e-12
    )
    assert ours["map"] == pytest.approx(skm.average_precision_score(t, s, average="macro"), abs=1e-12)
    assert ours["micro_f1"] == pytest.approx(
        skm.f1_score(t, (s > 0.5).astype(int), average="micro"), abs=1e-12
    )

    tm_map = tmf.multilabel_average_precision(scores, targets, num_labels=6, average="macro")
    tm_f1 = tmf.multilabel_f1_score(scores, targets, num_labels=6, average="micro", threshold=0.5)
    assert ours["map"] == pytest.approx(tm_map.item(), abs=1e-6)
    assert ours["micro_f1"] == pytest.approx(tm_f1.item(), abs=1e-6)


def test_average_precision_without_positives_is_nan_and_left_out():
    scores = torch.tensor([[0.9, 0.2], [0.1, 0.8], [0.4, 0.3]])
    targets = torch.tensor([[1, 0], [0, 0], [1, 0]])
    ap = average_precision(scores, targets)
    assert ap[0].item() == pytest.approx(1.0) and math.isnan(ap[1].item())
    assert multilabel_metrics(scores, targets)["map"] == pytest.approx(1.0)


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


# --- intervals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_mean_interval_matches_scipy_t_interval(n, confidence):
    values = np.random.default_rng(n).normal(0.8, 0.03, size=n)
    mean, half = mean_interval(values.tolist(), confidence)
    low, high = stats.t.interval(confidence, n - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean(), abs=1e-12)
    assert mean - half == pytest.approx(low, abs=1e-10) and mean + half == pytest.approx(high, abs=1e-10)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 7, 8, 50, 51, 400])
def test_t_quantile_matches_scipy(dof):
    for confidence in (0.5, 0.9, 0.95, 0.99):
        assert t_quantile(confidence, dof) == pytest.approx(stats.t.ppf((1 + confidence) / 2, dof), rel=1e-10)


def test_mean_interval_single_value_and_empty():
    mean, half = mean_interval([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError):
        mean_interval([])


def test_bootstrap_interval_of_accuracy():
    g = torch.Generator().manual_seed(6)
    targets = torch.randint(0, 5, (2000,), generator=g)
    preds = noisy_predictions(targets, 5, 0.75, g)

    def accuracy(p: torch.Tensor, t: torch.Tensor) -> float:
        return (p == t).double().mean().item()

    estimate, low, high = bootstrap_interval(accuracy, preds, targets, num_resamples=400, seed=0)
    assert estimate == accuracy(preds, targets)
    assert low < estimate < high
    # The percentile bootstrap of a proportion approaches the normal interval 1.96 * sqrt(p(1-p)/n).
    normal_half = 1.96 * math.sqrt(estimate * (1 - estimate) / len(targets))
    assert (high - low) / 2 == pytest.approx(normal_half, rel=0.15)
    assert bootstrap_interval(accuracy, preds, targets, num_resamples=400, seed=0) == (estimate, low, high)
    assert bootstrap_interval(accuracy, preds, targets, num_resamples=400, seed=1) != (estimate, low, high)
