"""Classification, segmentation and multi-label metrics from a confusion matrix.

Every single-label metric is read off one confusion matrix built with `torch.bincount`
(rows = target, columns = prediction, scikit-learn's convention), so the metrics run on the
device of the predictions and a whole test set can be streamed: sum the per-batch matrices of
`confusion_matrix` and call `*_from_confusion` once. Conventions follow scikit-learn:

- average accuracy (AA) is the mean recall over the classes present in the targets;
- macro F1 and mIoU average over the classes present in the targets *or* the predictions; a
  class absent from both carries no information, so it is left out of the mean and its
  per-class entry is NaN;
- Cohen's kappa is (p_o - p_e) / (1 - p_e), NaN when undefined (p_e = 1: one class everywhere).
"""

from __future__ import annotations

import torch
from torch import Tensor

Metrics = dict[str, float | list[float]]


def _labels(preds: Tensor, targets: Tensor) -> Tensor:
    """Predicted labels: argmax over dim 1 when `preds` holds scores (one more dim than targets)."""
    if preds.ndim == targets.ndim + 1:
        return preds.argmax(dim=1)
    if preds.shape != targets.shape:
        raise ValueError(f"preds {tuple(preds.shape)} and targets {tuple(targets.shape)} do not match")
    return preds


def confusion_matrix(
    preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int | None = None
) -> Tensor:
    """num_classes x num_classes int64 counts, [target, prediction]; `ignore_index` targets are skipped.

    `preds` holds labels shaped like `targets`, or scores with an extra class dim at dim 1
    (N x C for classification, B x C x H x W for segmentation).
    """
    preds = _labels(preds, targets).reshape(-1).long()
    targets = targets.reshape(-1).long().to(preds.device)
    if ignore_index is not None:
        keep = targets != ignore_index
        preds, targets = preds[keep], targets[keep]
    if targets.numel() and (
        min(targets.min(), preds.min()) < 0 or max(targets.max(), preds.max()) >= num_classes
    ):
        raise ValueError(f"labels must lie in [0, {num_classes}) (or equal ignore_index in the targets)")
    return torch.bincount(targets * num_classes + preds, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _kappa(cm: Tensor, total: Tensor) -> float:
    observed = cm.diagonal().sum() / total
    expected = (cm.sum(0) * cm.sum(1)).sum() / total**2
    return ((observed - expected) / (1 - expected)).item() if expected < 1 else float("nan")


def _nan_mean(values: Tensor) -> float:
    """Mean over the non-NaN entries (NaN when there are none)."""
    kept = values[~values.isnan()]
    return kept.mean().item() if kept.numel() else float("nan")


def classification_metrics_from_confusion(cm: Tensor) -> Metrics:
    """OA, AA, kappa, macro F1 and the per-class recall / F1 (NaN where undefined) of a confusion matrix."""
    cm = cm.double()
    total = cm.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty")
    tp, support, predicted = cm.diagonal(), cm.sum(1), cm.sum(0)
    recall = torch.where(support > 0, tp / support, float("nan"))
    seen = support + predicted
    f1 = torch.where(seen > 0, 2 * tp / seen, float("nan"))
    return {
        "oa": (tp.sum() / total).item(),
        "aa": _nan_mean(recall),
        "kappa": _kappa(cm, total),
        "f1_macro": _nan_mean(f1),
        "per_class_accuracy": recall.tolist(),
        "per_class_f1": f1.tolist(),
    }


def classification_metrics(preds: Tensor, targets: Tensor, num_classes: int) -> Metrics:
    """Single-label classification metrics; `preds` are labels (N) or scores (N x C)."""
    return classification_metrics_from_confusion(confusion_matrix(preds, targets, num_classes))


def segmentation_metrics_from_confusion(cm: Tensor) -> Metrics:
    """OA, mIoU, kappa and per-class IoU (NaN for a class absent from targets and predictions)."""
    cm = cm.double()
    total = cm.sum()
    if total == 0:
        raise ValueError("the confusion matrix is empty (every pixel ignored?)")
    tp = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union, float("nan"))
    return {
        "oa": (tp.sum() / total).item(),
        "miou": _nan_mean(iou),
        "kappa": _kappa(cm, total),
        "per_class_iou": iou.tolist(),
    }


def segmentation_metrics(
    preds: Tensor, targets: Tensor, num_classes: int, ignore_index: int | None = 255
) -> Metrics:
    """Per-pixel metrics over label maps (or B x C x H x W scores); `ignore_index` pixels are skipped."""
    return segmentation_metrics_from_confusion(confusion_matrix(preds, targets, num_classes, ignore_index))


def average_precision(scores: Tensor, targets: Tensor) -> Tensor:
    """Per-class average precision (N x L scores and {0, 1} targets) -> L values, NaN without positives.

    scikit-learn's definition: sum over distinct score thresholds of (R_n - R_{n-1}) * P_n, tied
    scores forming a single threshold. Vectorised over classes with one sort per column.
    """
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and targets must both be N x L, got {tuple(scores.shape)}, {tuple(targets.shape)}"
        )
    n = scores.shape[0]
    sorted_scores, order = scores.double().sort(dim=0, descending=True)
    hits = targets.to(scores.device).double().gather(0, order)
    precision = hits.cumsum(0) / torch.arange(1, n + 1, device=scores.device, dtype=torch.float64)[:, None]
    # Each rank takes the precision at the last rank of its tie group (its threshold's precision).
    group_end = sorted_scores[1:] != sorted_scores[:-1]
    group_end = torch.cat([group_end, torch.ones_like(group_end[:1])])
    positions = torch.arange(n, device=scores.device)[:, None].expand_as(hits)
    end_index = torch.where(group_end, positions, n).flip(0).cummin(0).values.flip(0)
    positives = hits.sum(0)
    ap = (hits * precision.gather(0, end_index)).sum(0) / positives
    return torch.where(positives > 0, ap, float("nan"))


def multilabel_metrics(scores: Tensor, targets: Tensor, threshold: float = 0.5) -> Metrics:
    """mAP (mean per-class AP over classes with a positive) and micro-F1 of `scores > threshold`.

    `scores` are N x L probabilities (apply a sigmoid to logits first); `targets` N x L in {0, 1}.
    """
    ap = average_precision(scores, targets)
    num_labels = targets.shape[1]
    decided = (scores > threshold).long()
    truth = targets.to(scores.device).long()
    # Per-class 2 x 2 confusion matrices [class, target, prediction] in one bincount.
    column = torch.arange(num_labels, device=scores.device).expand_as(truth)
    cm = torch.bincount((column * 4 + truth * 2 + decided).reshape(-1), minlength=4 * num_labels)
    tn_fp_fn_tp = cm.reshape(num_labels, 4).sum(0).double()
    tp, fp, fn = tn_fp_fn_tp[3], tn_fp_fn_tp[1], tn_fp_fn_tp[2]
    denominator = 2 * tp + fp + fn
    return {
        "map": _nan_mean(ap),
        "micro_f1": (2 * tp / denominator).item() if denominator > 0 else float("nan"),
        "per_class_ap": ap.tolist(),
    }
