"""Linear probe on frozen features: multinomial logistic regression fitted with full-batch L-BFGS.

Objective (per fit, X standardised with the mean/std of the fitting set):

    mean_i CE(W x_i + b, y_i) + l2 / 2 * ||W||^2        (the bias is not penalised)

which is scikit-learn's `LogisticRegression(C=C)` objective, C * sum_i CE + 1/2 ||W||^2, divided by
C * N: the two have the same minimiser when **C = 1 / (l2 * N)** (`sklearn_c`). The mean form keeps
one l2 value meaning the same regularisation per sample when the fit is redone on train+val.

`l2` is chosen on a validation split over a log grid, fitted either all at once as one batched
problem (`fit_logistic_regressions`, solver "batched") or walked from strong to weak regularisation,
each fit warm-started from the previous one (the regularisation path, solver "path"); the best
validation accuracy wins, ties going to the lower validation cross-entropy. The probe is then
refitted on train+val with that l2. Everything runs on the device of the features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rsssl.eval.budgets import class_ranks, labels_to_numpy
from rsssl.eval.lbfgs import batched_lbfgs

DEFAULT_L2_GRID: tuple[float, ...] = tuple(float(v) for v in np.logspace(-6, 1, 8))
LINEAR_SOLVERS = ("path", "batched")


def sklearn_c(l2: float, num_samples: int) -> float:
    """scikit-learn's C for the same objective as `l2` on `num_samples` training samples."""
    return 1.0 / (l2 * num_samples)


@dataclass
class LinearProbe:
    """A fitted probe: standardisation, weights, and the record of the l2 selection.

    weight: num_classes x D, bias: num_classes, acting on (x - mean) / std.
    l2_grid / val_accuracy / val_loss: the grid walked and the validation scores at each point.
    """

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor
    l2: float
    l2_grid: list[float]
    val_accuracy: list[float]
    val_loss: list[float]

    def predict_scores(self, x: Tensor) -> Tensor:
        """Logits (N x num_classes) for raw (unstandardised) features."""
        x = x.to(device=self.weight.device, dtype=self.weight.dtype)
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """Predicted class per row."""
        return self.predict_scores(x).argmax(dim=1)


def standardisation(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and std of `x`; constant features get std 1 so they stay finite."""
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    return mean, torch.where(std > 1e-12, std, torch.ones_like(std))


def fit_logistic_regression(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    max_iter: int = 200,
    tol: float = 1e-4,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Minimise mean CE + l2/2 ||W||^2 over (W, b) on already-standardised `x`; return (W, b).

    Full-batch L-BFGS with a strong-Wolfe line search; stops when the largest gradient entry
    falls below `tol` (scikit-learn's criterion) or after `max_iter` iterations.
    """
    if l2 <= 0:
        raise ValueError(f"l2 must be > 0, got {l2}")
    y = y.to(device=x.device, dtype=torch.long)
    if init is None:
        weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
        bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        weight, bias = (t.detach().clone().to(device=x.device, dtype=x.dtype) for t in init)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    targets = y[None]
    minus_one = torch.full((1, x.shape[0]), -1.0 / x.shape[0], dtype=x.dtype, device=x.device)

    # Loss and gradient by hand, classes on dim 0 (C x N) so the softmax runs along the long axis,
    # and no autograd graph: about 4x faster than autograd through F.cross_entropy on the CPU.
    @torch.no_grad()
    def closure() -> Tensor:
        log_probs = torch.addmm(bias[:, None], weight, x.T).log_softmax(dim=0)
        loss = -log_probs.gather(0, targets).mean() + 0.5 * l2 * weight.square().sum()
        # d(mean CE)/d(logits) = (softmax - onehot) / N
        residual = log_probs.exp_().div_(x.shape[0]).scatter_add_(0, targets, minus_one)
        weight.grad = torch.addmm(weight, residual, x, beta=l2)
        bias.grad = residual.sum(dim=1)
        return loss

    optimizer.step(closure)
    weight.grad = bias.grad = None
    return weight, bias


def fit_logistic_regressions(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2_values: Sequence[float],
    max_iter: int = 200,
    tol: float = 1e-4,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The problem of `fit_logistic_regression` at every value of `l2_values` at once, by one
    `batched_lbfgs` run whose objective evaluates all of them in one product with `x`; returns
    (W: G x C x D, b: G x C), G = len(l2_values). `init` (G x C x D, G x C) warm-starts each problem.

    Each problem is solved to the same stopping test as alone; only the line search differs from
    `fit_logistic_regression` (backtracking Armijo, not strong Wolfe), so the two agree to within
    the tolerance, not bit for bit.
    """
    if not l2_values or min(l2_values) <= 0:
        raise ValueError(f"every l2 must be > 0, got {list(l2_values)}")
    count, n, dim = len(l2_values), x.shape[0], x.shape[1]
    with_ones = torch.cat([x, x.new_ones(n, 1)], dim=1)  # the bias as a last, unpenalised column
    l2 = torch.tensor(list(l2_values), dtype=x.dtype, device=x.device)
    targets = y.to(device=x.device, dtype=torch.long)[None, None].expand(count, 1, n)
    minus_one = x.new_full((count, 1, n), -1.0 / n)

    @torch.no_grad()
    def objective(theta: Tensor, problems: Tensor) -> tuple[Tensor, Tensor]:
        running = len(problems)
        params = theta.view(running, num_classes, dim + 1)
        log_probs = (theta.view(running * num_classes, dim + 1) @ with_ones.T).view(running, num_classes, n)
        log_probs = log_probs.log_softmax(dim=1)
        weight, penalty = params[..., :dim], l2[problems]
        loss = -log_probs.gather(1, targets[:running]).mean(dim=(1, 2))
        loss = loss + 0.5 * penalty * weight.square().sum(dim=(1, 2))
        residual = log_probs.exp_().div_(n).scatter_add_(1, targets[:running], minus_one[:running])
        grad = (residual.view(running * num_classes, n) @ with_ones).view(running, num_classes, dim + 1)
        grad[..., :dim] += penalty[:, None, None] * weight
        return loss, grad.view(running, -1)

    start = x.new_zeros(count, num_classes, dim + 1)
    if init is not None:
        start[..., :dim], start[..., dim] = (t.detach().to(device=x.device, dtype=x.dtype) for t in init)
    theta = batched_lbfgs(objective, start.view(count, -1), max_iter=max_iter, tol=tol).theta
    theta = theta.view(count, num_classes, dim + 1)
    return theta[..., :dim].contiguous(), theta[..., dim].contiguous()


def split_train_val(labels: Tensor | np.ndarray, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified (train_indices, val_indices), both sorted CPU int64 tensors.

    Each class gives round(val_fraction * count) samples to validation, at least one when it has
    two or more (so the selection sees every class) and never all of them (each class keeps at
    least one training sample). Reproducible from `seed` on any device.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    y = labels_to_numpy(labels)
    counts = np.bincount(y, minlength=1)
    n_val = np.clip(np.floor(counts * val_fraction + 0.5).astype(np.int64), 1, None)
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0))
    is_val = class_ranks(y, seed) < n_val[y]
    return torch.from_numpy(np.flatnonzero(~is_val)), torch.from_numpy(np.flatnonzero(is_val))


def fit_linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    val_x: Tensor,
    val_y: Tensor,
    num_classes: int,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    max_iter: int = 200,
    tol: float = 1e-4,
    solver: str = "path",
) -> LinearProbe:
    """Choose l2 on (val_x, val_y) over `l2_grid`, then refit on train+val with it.

    `solver`: "path" fits the grid one value after another, each warm-started from the last
    (`fit_logistic_regression`); "batched" fits the whole grid as one problem
    (`fit_logistic_regressions`) and refits from the chosen fit moved to the new standardisation.
    The two reach the same minimisers within the tolerance, so a near-tie in validation accuracy can
    go either way: the solver is part of the protocol (`eval.classification.linear_solver`).
    Features are cast to at least float32 on the device of `train_x`. See the module docstring
    for the objective and the selection rule.
    """
    if not l2_grid:
        raise ValueError("l2_grid is empty")
    if solver not in LINEAR_SOLVERS:
        raise ValueError(f"unknown linear-probe solver {solver!r}: use one of {', '.join(LINEAR_SOLVERS)}")
    dtype = torch.promote_types(train_x.dtype, torch.float32)
    device = train_x.device
    train_x = train_x.to(dtype)
    val_x = val_x.to(device=device, dtype=dtype)
    train_y = train_y.to(device=device, dtype=torch.long)
    val_y = val_y.to(device=device, dtype=torch.long)
    if val_y.numel() == 0:
        raise ValueError("the validation split is empty: l2 cannot be chosen")

    mean, std = standardisation(train_x)
    xs_train, xs_val = (train_x - mean) / std, (val_x - mean) / std
    grid = sorted((float(v) for v in l2_grid), reverse=True)  # strong -> weak regularisation
    if solver == "path":
        fits, params = [], None
        for l2 in grid:
            params = fit_logistic_regression(xs_train, train_y, num_classes, l2, max_iter, tol, init=params)
            fits.append(params)
    else:
        fits = list(zip(*fit_logistic_regressions(xs_train, train_y, num_classes, grid, max_iter, tol)))
    accuracies, losses = [], []
    for weight, bias in fits:
        logits = xs_val @ weight.T + bias
        accuracies.append((logits.argmax(dim=1) == val_y).float().mean().item())
        losses.append(F.cross_entropy(logits, val_y).item())
    best = max(range(len(grid)), key=lambda i: (accuracies[i], -losses[i]))

    all_x, all_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    all_mean, all_std = standardisation(all_x)
    xs_all = (all_x - all_mean) / all_std
    if solver == "path":
        weight, bias = fit_logistic_regression(
            xs_all, all_y, num_classes, grid[best], max_iter, tol, init=fits[best]
        )
    else:
        start = restandardised(*fits[best], (mean, std), (all_mean, all_std))
        weight, bias = (
            t[0]
            for t in fit_logistic_regressions(xs_all, all_y, num_classes, [grid[best]], max_iter, tol, start)
        )
    return LinearProbe(weight, bias, all_mean, all_std, grid[best], grid, accuracies, losses)


def restandardised(
    weight: Tensor, bias: Tensor, old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """The (W, b) that gives the same logits on features standardised with `new` (mean, std) as
    (weight, bias) on features standardised with `old`; each stacked with a leading axis of 1."""
    (old_mean, old_std), (new_mean, new_std) = old, new
    raw_weight = weight / old_std  # acting on raw features
    moved_bias = bias + raw_weight @ (new_mean - old_mean)
    return (raw_weight * new_std)[None], moved_bias[None]
