"""Confidence intervals: Student's t over seeds, percentile bootstrap over test samples.

The t quantile is computed here (no scipy at run time, scipy is only a test dependency) from the
closed form of the t distribution's CDF for integer degrees of freedom (Abramowitz & Stegun
26.7.3-4), inverted by bisection to machine precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _t_central_probability(theta: float, dof: int) -> float:
    """P(|T| <= sqrt(dof) * tan(theta)) for Student's t with `dof` degrees of freedom (A&S 26.7.3-4)."""
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if dof % 2 == 0:  # sin(t) * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(dof-2))
        term, total = 1.0, 1.0
        for j in range(1, dof // 2):
            term *= cos2 * (2 * j - 1) / (2 * j)
            total += term
        return sin * total
    # odd: 2/pi * (theta + sin * (cos + 2/3 cos^3 + 2*4/(3*5) cos^5 + ... up to cos^(dof-2)))
    if dof == 1:
        return 2 * theta / math.pi
    cos = math.sqrt(cos2)
    term, total = cos, cos
    for j in range(1, (dof - 1) // 2):
        term *= cos2 * (2 * j) / (2 * j + 1)
        total += term
    return 2 / math.pi * (theta + sin * total)


def t_quantile(confidence: float, dof: int) -> float:
    """The t value with P(|T| <= t) = confidence (the two-sided critical value) for `dof` >= 1."""
    if not 0.0 < confidence < 1.0 or dof < 1:
        raise ValueError(f"need 0 < confidence < 1 and dof >= 1, got {confidence}, {dof}")
    low, high = 0.0, math.pi / 2  # the central probability is increasing in theta
    for _ in range(100):
        middle = (low + high) / 2
        if _t_central_probability(middle, dof) < confidence:
            low = middle
        else:
            high = middle
    return math.sqrt(dof) * math.tan((low + high) / 2)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of the Student's t interval over runs (e.g. the seeds of a budget).

    Uses the sample standard deviation (ddof=1). With a single value the spread is unknown, so
    the half-width is NaN (never 0, which would claim certainty); no value at all raises.
    """
    n = len(values)
    if n == 0:
        raise ValueError("no values to average")
    mean = math.fsum(values) / n
    if n == 1:
        return mean, float("nan")
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile(confidence, n - 1) * std / math.sqrt(n)


def bootstrap_interval(
    metric: Callable[[Tensor, Tensor], float],
    preds: Tensor,
    targets: Tensor,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high): the metric on all samples and its percentile bootstrap interval.

    Test samples (dim 0 of `preds` and `targets`) are drawn with replacement; the resample
    indices come from a seeded CPU generator, so the interval is the same on every device.
    """
    if not 0.0 < confidence < 1.0 or num_resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and num_resamples >= 1, got {confidence}, {num_resamples}")
    n = targets.shape[0]
    generator = torch.Generator().manual_seed(seed)
    values = torch.empty(num_resamples, dtype=torch.float64)
    for b in range(num_resamples):  # one index vector at a time: memory stays O(n)
        idx = torch.randint(0, n, (n,), generator=generator).to(targets.device)
        values[b] = metric(preds[idx], targets[idx])
    alpha = (1 - confidence) / 2
    low, high = torch.quantile(values, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return metric(preds, targets), low, high
