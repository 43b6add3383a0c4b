"""The "image statistics" baseline: hand-made per-band features every leaderboard shows.

A method whose features a probe cannot beat with per-band mean, std and percentiles has learnt
nothing beyond the colour histogram. Features are computed on the device in batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_PERCENTILES: tuple[float, ...] = (5, 25, 50, 75, 95)


def image_statistics_features(
    images: Tensor | np.ndarray,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    device: torch.device | str | None = None,
    max_elements: int = 1 << 24,
) -> Tensor:
    """N x (C * k) float32 features of N x C x H x W images (uint or float), k = 2 + len(percentiles).

    Per band, in this order: mean, std (population, ddof=0), then the percentiles (linear
    interpolation, numpy's default), so column c * k + j is statistic j of band c. Raw pixel
    values are used: the probe standardises features itself. Runs on `device` (default: the
    images' device) over chunks of images holding at most `max_elements` pixel values, which
    bounds the float copy and the sort `torch.quantile` makes.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    device = torch.device(device) if device is not None else images.device
    n, c = images.shape[:2]
    q = torch.tensor([p / 100 for p in percentiles], dtype=torch.float32, device=device)
    if q.numel() and (q.min() < 0 or q.max() > 1):
        raise ValueError(f"percentiles must lie in [0, 100], got {tuple(percentiles)}")
    chunk = max(1, max_elements // max(1, images[0].numel()))
    parts = []
    for start in range(0, n, chunk):
        pixels = images[start : start + chunk].to(device).flatten(2).float()  # b x C x HW
        std, mean = torch.std_mean(pixels, dim=2, correction=0)
        stats = [mean[..., None], std[..., None]]
        if q.numel():
            stats.append(torch.quantile(pixels, q, dim=2).permute(1, 2, 0))  # b x C x len(q)
        parts.append(torch.cat(stats, dim=2).flatten(1))
    if not parts:
        return torch.empty(0, c * (2 + q.numel()), device=device)
    return torch.cat(parts)
