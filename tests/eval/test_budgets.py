"""Label budgets: exact per-class counts, seeded reproducibility, stratified fractions, honest shortfalls."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rsssl.eval.budgets import DEFAULT_BUDGETS, class_ranks, format_budget, select_budget

# 10 classes of unequal size (120 .. 300 samples), shuffled.
COUNTS = np.arange(10) * 20 + 120
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(10), COUNTS))


def per_class(selection, labels=LABELS, num_classes=10) -> np.ndarray:
    return np.bincount(labels[selection.indices.numpy()], minlength=num_classes)


@pytest.mark.parametrize("budget", [5, 20, 50, 100])
def test_int_budget_takes_exactly_n_per_class(budget):
    selection = select_budget(LABELS, budget, seed=0)
    np.testing.assert_array_equal(per_class(selection), np.full(10, budget))
    assert selection.per_class_count == [budget] * 10 and selection.warnings == []
    assert selection.requested == budget and selection.label == f"{budget}/class"
    assert len(np.unique(selection.indices.numpy())) == 10 * budget
    assert torch.equal(selection.indices, selection.indices.sort().values)


def test_same_seed_same_subset_other_seed_other_subset():
    first = select_budget(LABELS, 20, seed=7)
    again = select_budget(torch.from_numpy(LABELS), 20, seed=7)  # tensor input, same draw
    assert torch.equal(first.indices, again.indices)
    others = [select_budget(LABELS, 20, seed=s).indices for s in (8, 9)]
    for other in others:
        overlap = np.intersect1d(first.indices.numpy(), other.numpy()).size
        assert overlap < len(first.indices) // 2  # ~20/210 of each class is shared by chance, not most


def test_budgets_of_one_seed_are_nested():
    small, large = select_budget(LABELS, 5, seed=3), select_budget(LABELS, 50, seed=3)
    assert np.isin(small.indices.numpy(), large.indices.numpy()).all()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_fraction_is_stratified(fraction):
    selection = select_budget(LABELS, fraction, seed=1)
    expected = np.maximum(np.floor(COUNTS * fraction + 0.5), 1).astype(int)
    np.testing.assert_array_equal(per_class(selection), expected)
    assert selection.per_class_count == expected.tolist()
    assert abs(len(selection.indices) - fraction * len(LABELS)) <= 10  # rounding, at most one per class
    assert selection.warnings == []
    if fraction == 1.0:
        np.testing.assert_array_equal(selection.indices.numpy(), np.arange(len(LABELS)))


def test_tiny_fraction_still_gives_every_class_one_sample():
    selection = select_budget(LABELS, 0.001, seed=0)
    np.testing.assert_array_equal(per_class(selection), np.ones(10, dtype=int))


def test_budget_beyond_a_class_uses_what_exists_and_says_so(caplog):
    labels = np.repeat(np.arange(4), [30, 7, 25, 2])
    with caplog.at_level(logging.WARNING):
        selection = select_budget(labels, 20, seed=0)
    assert selection.per_class_requested == [20, 20, 20, 20]
    assert selection.per_class_count == [20, 7, 20, 2]
    np.testing.assert_array_equal(per_class(selection, labels, 4), [20, 7, 20, 2])
    assert selection.warnings == [
        "class 1 has 7 samples, fewer than the 20 per class asked for: using 7",
        "class 3 has 2 samples, fewer than the 20 per class asked for: using 2",
    ]
    assert "class 1 has 7 samples" in caplog.text


@pytest.mark.parametrize("budget", [5, 0.1])
def test_empty_class_is_named(budget):
    labels = np.repeat([0, 1, 3], 40)  # class 2 missing in between, class 4 missing at the end
    selection = select_budget(labels, budget, seed=0, num_classes=5)
    assert selection.per_class_count[2] == selection.per_class_count[4] == 0
    assert len(selection.warnings) == 2
    assert selection.warnings[0].startswith("class 2 has no samples in the pool")
    assert selection.warnings[1].startswith("class 4 has no samples in the pool")


def test_class_ranks_are_a_permutation_inside_each_class():
    ranks = class_ranks(LABELS, seed=5)
    for c, count in enumerate(COUNTS):
        np.testing.assert_array_equal(np.sort(ranks[c == LABELS]), np.arange(count))


def test_default_budgets_and_labels():
    assert DEFAULT_BUDGETS == (5, 20, 50, 100, 0.01, 0.1, 1.0)
    assert [format_budget(b) for b in DEFAULT_BUDGETS] == [
        "5/class",
        "20/class",
        "50/class",
        "100/class",
        "1%",
        "10%",
        "100%",
    ]


@pytest.mark.parametrize("budget", [0, -3, 0.0, 1.5, True, "5"])
def test_rejects_bad_budgets(budget):
    with pytest.raises((ValueError, TypeError)):
        select_budget(LABELS, budget, seed=0)
