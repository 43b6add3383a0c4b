"""Label budgets: reproducible, stratified labelled subsets of a training pool.

A budget is either an int, N labelled samples *per class* (the 5/20/50/100 protocol of TOV,
Tao-2020 and STICL), or a float in (0, 1], a fraction of the whole pool drawn per class (1 %,
10 %, 100 %). The type decides: 1 is one sample per class, 1.0 is the whole pool. The subset
depends only on the labels and the seed: the draw happens in numpy on the CPU, so the same seed
gives the same subset on every device. Budgets drawn with the same seed are nested (the 5/class
subset lies inside the 20/class one), so a curve over budgets compares like with like. A class
that cannot fill its share is used whole and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

DEFAULT_BUDGETS: tuple[int | float, ...] = (5, 20, 50, 100, 0.01, 0.1, 1.0)


def labels_to_numpy(labels: Tensor | np.ndarray) -> np.ndarray:
    """Labels as a 1-D int64 numpy array (copied off any device)."""
    array = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {array.shape}")
    if array.size and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0):
        raise ValueError("labels must be non-negative integers")
    return array.astype(np.int64, copy=False)


def class_ranks(labels: Tensor | np.ndarray, seed: int) -> np.ndarray:
    """For every sample, its position in a seeded random order of its own class (0, 1, 2, ...).

    Keeping the samples whose rank is below a per-class quota gives a stratified random subset;
    quotas that grow keep the earlier subsets (nesting).
    """
    y = labels_to_numpy(labels)
    order = np.random.default_rng(seed).permutation(y.size)
    order = order[np.argsort(y[order], kind="stable")]  # grouped by class, shuffled inside
    counts = np.bincount(y, minlength=1)
    starts = np.cumsum(counts) - counts
    ranks = np.empty(y.size, dtype=np.int64)
    ranks[order] = np.arange(y.size) - starts[y[order]]
    return ranks


def format_budget(budget: int | float) -> str:
    """Short label of a budget: 5 -> "5/class", 0.01 -> "1%", 1.0 -> "100%"."""
    _check_budget(budget)
    if isinstance(budget, int):
        return f"{budget}/class"
    return f"{budget * 100:g}%"


def _check_budget(budget: int | float) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise TypeError(f"a budget is an int (per class) or a float fraction, got {budget!r}")
    if isinstance(budget, int) and budget < 1:
        raise ValueError(f"a per-class budget must be >= 1, got {budget}")
    if isinstance(budget, float) and not 0.0 < budget <= 1.0:
        raise ValueError(f"a fractional budget must lie in (0, 1], got {budget}")


@dataclass
class BudgetSelection:
    """The labelled subset chosen for one budget and seed.

    indices: sorted positions into the pool (CPU int64 tensor).
    requested: the budget as asked for (int per class or float fraction).
    per_class_requested: how many each class should give (for a fraction, its stratified share).
    per_class_count: how many each class actually gives.
    warnings: one message per class that gave fewer than requested.
    """

    indices: Tensor
    requested: int | float
    seed: int
    per_class_requested: list[int]
    per_class_count: list[int]
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return format_budget(self.requested)


def select_budget(
    labels: Tensor | np.ndarray, budget: int | float, seed: int, num_classes: int | None = None
) -> BudgetSelection:
    """Draw the labelled subset of `labels` for `budget` (int: per class; float: fraction).

    A fraction gives every class round(fraction * count) samples, at least one, so the subset
    keeps the pool's class balance and every class is seen. Classes are 0 .. num_classes - 1
    (default: up to the largest label); a class short of its quota is used whole, and a class
    with no sample at all is named, both in `warnings` (also logged).
    """
    _check_budget(budget)
    y = labels_to_numpy(labels)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and y.max() >= num_classes:
        raise ValueError(f"label {int(y.max())} is out of range for num_classes={num_classes}")
    available = np.bincount(y, minlength=num_classes)
    if isinstance(budget, int):
        wanted = np.full(num_classes, budget, dtype=np.int64)
    else:
        wanted = np.maximum(np.floor(available * budget + 0.5).astype(np.int64), 1)
    taken = np.minimum(wanted, available)
    keep = class_ranks(y, seed) < taken[y]

    # A fraction never asks a non-empty class for more than it has, so only ints fall short.
    ask = (
        f"the {budget} per class asked for"
        if isinstance(budget, int)
        else f"its {format_budget(budget)} share"
    )
    warnings = [
        f"class {c} has no samples in the pool: it gets none of {ask}"
        if available[c] == 0
        else f"class {c} has {available[c]} samples, fewer than {ask}: using {available[c]}"
        for c in np.flatnonzero(taken < wanted)
    ]
    for message in warnings:
        log.warning("budget %s, seed %d: %s", format_budget(budget), seed, message)
    return BudgetSelection(
        indices=torch.from_numpy(np.flatnonzero(keep)),
        requested=budget,
        seed=seed,
        per_class_requested=wanted.tolist(),
        per_class_count=taken.tolist(),
        warnings=warnings,
    )
