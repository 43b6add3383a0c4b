"""Linear probe: same objective and accuracy as scikit-learn, and a sensible l2 choice.

Speed against scikit-learn is a benchmark: tests/bench/test_probe_speed.py (`make slow`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from rsssl.eval.linear import (
    DEFAULT_L2_GRID,
    LINEAR_SOLVERS,
    fit_linear_probe,
    fit_logistic_regression,
    fit_logistic_regressions,
    restandardised,
    sklearn_c,
    split_train_val,
    standardisation,
)
from tests.helpers.problems import NUM_CLASSES, overlapping_blobs

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, ...]:
    return overlapping_blobs(5000, 2000)


@pytest.fixture(scope="module", params=LINEAR_SOLVERS)
def probe(blobs, request):
    train_x, train_y, _, _ = blobs
    train_idx, val_idx = split_train_val(train_y, 0.2, seed=0)
    return fit_linear_probe(
        train_x[train_idx],
        train_y[train_idx],
        train_x[val_idx],
        train_y[val_idx],
        NUM_CLASSES,
        solver=request.param,
    )


def objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float) -> float:
    return (F.cross_entropy(x @ weight.T + bias, y) + 0.5 * l2 * weight.square().sum()).item()


def test_same_solution_as_sklearn_at_the_mapped_c(blobs):
    train_x, train_y, _, _ = blobs
    x = train_x.double()
    mean, std = standardisation(x)
    x = (x - mean) / std
    l2 = 1e-2
    weight, bias = fit_logistic_regression(x, train_y, NUM_CLASSES, l2, max_iter=500, tol=1e-6)
    sk = LogisticRegression(C=sklearn_c(l2, len(x)), tol=1e-6, max_iter=500).fit(x.numpy(), train_y.numpy())
    sk_weight, sk_bias = torch.from_numpy(sk.coef_), torch.from_numpy(sk.intercept_)
    # Same minimiser: the C mapping is right (a wrong C moves the weights by far more than this).
    torch.testing.assert_close(weight, sk_weight, atol=1e-4, rtol=0)
    assert abs(objective(x, train_y, weight, bias, l2) - objective(x, train_y, sk_weight, sk_bias, l2)) < 1e-8
    # The bias is unpenalised and the softmax is shift-invariant: compare centred biases.
    torch.testing.assert_close(bias - bias.mean(), sk_bias - sk_bias.mean(), atol=1e-4, rtol=0)


def test_probe_accuracy_matches_sklearn(blobs, probe):
    train_x, train_y, test_x, test_y = blobs
    # The probe's final fit is on train+val standardised with their statistics: give sklearn the same.
    x = ((train_x - probe.mean) / probe.std).numpy()
    sk = LogisticRegression(C=sklearn_c(probe.l2, len(x)), max_iter=200).fit(x, train_y.numpy())
    acc_sk = sk.score(((test_x - probe.mean) / probe.std).numpy(), test_y.numpy())
    acc_ours = (probe.predict(test_x) == test_y).float().mean().item()
    print(
        f"linear probe: l2={probe.l2:g} (C={sklearn_c(probe.l2, len(x)):g}), test accuracy ours "
        f"{acc_ours:.4f}, sklearn {acc_sk:.4f}; val accuracy per l2 "
        + ", ".join(f"{l2:g}:{a:.3f}" for l2, a in zip(probe.l2_grid, probe.val_accuracy, strict=True))
    )
    assert abs(acc_ours - acc_sk) <= 0.01
    assert acc_ours > 0.75


def test_probe_records_the_grid_and_scores_raw_features(probe, blobs):
    _, _, test_x, _ = blobs
    assert probe.l2_grid == sorted(DEFAULT_L2_GRID, reverse=True)
    assert len(probe.val_accuracy) == len(probe.val_loss) == len(DEFAULT_L2_GRID)
    assert probe.l2 in probe.l2_grid
    best = max(probe.val_accuracy)
    assert probe.val_accuracy[probe.l2_grid.index(probe.l2)] == best
    scores = probe.predict_scores(test_x)
    assert scores.shape == (len(test_x), NUM_CLASSES) and torch.isfinite(scores).all()


@pytest.mark.parametrize("solver", LINEAR_SOLVERS)
def test_l2_choice_strong_on_tiny_noisy_weak_on_large_clean(solver):
    g = torch.Generator().manual_seed(0)
    # Tiny and noisy: 20 samples per class in 300-d, one weakly informative feature.
    y = torch.arange(40) % 2
    x = torch.randn(40, 300, generator=g)
    x[:, 0] += 2.0 * y - 1.0
    train, val = split_train_val(y, 0.5, seed=0)
    tiny = fit_linear_probe(x[train], y[train], x[val], y[val], 2, solver=solver)
    # Large and clean: labels are the argmax of a linear teacher, no noise.
    teacher = torch.randn(4, 16, generator=g)
    x = torch.randn(4000, 16, generator=g)
    y = (x @ teacher.T).argmax(1)
    train, val = split_train_val(y, 0.25, seed=0)
    large = fit_linear_probe(x[train], y[train], x[val], y[val], 4, solver=solver)
    print(f"chosen l2: tiny noisy {tiny.l2:g}, large clean {large.l2:g}")
    assert tiny.l2 >= 1.0
    assert large.l2 <= 1e-4
    assert max(large.val_accuracy) > 0.98


def test_split_is_stratified_and_reproducible():
    labels = np.repeat(np.arange(4), [50, 10, 2, 1])
    train, val = split_train_val(labels, 0.2, seed=3)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[val.numpy()], minlength=4), [10, 2, 1, 0])
    np.testing.assert_array_equal(np.bincount(labels[train.numpy()], minlength=4), [40, 8, 1, 1])
    again_train, again_val = split_train_val(torch.from_numpy(labels), 0.2, seed=3)
    assert torch.equal(again_val, val) and torch.equal(again_train, train)
    assert not torch.equal(split_train_val(labels, 0.2, seed=4)[1], val)


def test_rejects_empty_validation():
    with pytest.raises(ValueError, match="validation split is empty"):
        fit_linear_probe(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), torch.randn(0, 3), torch.zeros(0), 2)


def test_the_batched_grid_reaches_each_lone_fit(blobs):
    """Every l2 of one batched fit lands on the minimiser the lone fit reaches (both run to a tight
    tolerance in float64): the problems share the product with x, nothing else."""
    train_x, train_y, _, _ = blobs
    x = train_x[:2000].double()
    mean, std = standardisation(x)
    x, y = (x - mean) / std, train_y[:2000]
    grid = [1.0, 1e-2, 1e-3]
    weights, biases = fit_logistic_regressions(x, y, NUM_CLASSES, grid, max_iter=1000, tol=1e-9)
    for l2, weight, bias in zip(grid, weights, biases, strict=True):
        lone_weight, lone_bias = fit_logistic_regression(x, y, NUM_CLASSES, l2, max_iter=1000, tol=1e-9)
        # Both stop at a loss change of 1e-12 before the gradient test: agreement to what that allows
        # (the weights at l2 = 1e-2 and 1e-3 differ by 0.7).
        torch.testing.assert_close(weight, lone_weight, atol=1e-4, rtol=0)
        torch.testing.assert_close(bias - bias.mean(), lone_bias - lone_bias.mean(), atol=1e-4, rtol=0)
        assert abs(objective(x, y, weight, bias, l2) - objective(x, y, lone_weight, lone_bias, l2)) < 1e-9


def test_restandardised_weights_give_the_same_logits():
    g = torch.Generator().manual_seed(0)
    raw = 3.0 * torch.randn(50, 6, generator=g, dtype=torch.float64) + 2.0
    weight, bias = (
        torch.randn(4, 6, generator=g, dtype=torch.float64),
        torch.randn(4, generator=g, dtype=torch.float64),
    )
    old, new = standardisation(raw[:30]), standardisation(raw)
    moved_weight, moved_bias = restandardised(weight, bias, old, new)
    assert moved_weight.shape == (1, 4, 6) and moved_bias.shape == (1, 4)
    before = ((raw - old[0]) / old[1]) @ weight.T + bias
    after = ((raw - new[0]) / new[1]) @ moved_weight[0].T + moved_bias[0]
    torch.testing.assert_close(after, before, atol=1e-12, rtol=0)


def test_rejects_an_unknown_solver():
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    with pytest.raises(ValueError, match="unknown linear-probe solver 'newton': use one of path, batched"):
        fit_linear_probe(x, y, x, y, 2, solver="newton")
