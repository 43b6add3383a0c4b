"""Spectral views: batched, per-sample random transformations along the band axis, any band count.

RGB colour jitter means little for 13 or 150 bands; these are the spectral counterparts (Zhang &
Han, Remote Sens. 2023: "novel spectral views"). Input is a normalised B x C x H x W batch (zero
mean, unit std per band) on any device; the output keeps its shape, dtype and band order, so a
spectral view goes wherever a view goes (every band-count contract holds). Per sample, each with
its own probability:

- band subset: keep a random fraction (`subset_fraction`) of the bands, zero (the band mean) the rest;
- band dropout: zero each band independently with probability `dropout`;
- gain / offset: x_c ↦ g_c · x_c + o_c per band, g in [1 − gain, 1 + gain], o in [−offset, offset];
- group shuffle: permute the bands within each group (`groups`: lists of band indices, e.g. the
  visible, red-edge, NIR and SWIR bands of Sentinel-2; None: adjacent groups of `group_size`);
- spectral smoothing: a Gaussian along the band axis (sigma in bands), renormalised at the ends,
  for sensors whose bands are ordered by wavelength.

All draws use torch's global RNG (so `torch.manual_seed` reproduces a view), with no Python loop
over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from rsssl.data import draws


@dataclass
class SpectralRecipe:
    """Probabilities and strengths of the spectral transformations (0 = off); see the module docstring."""

    subset_p: float = 0.0
    subset_fraction: tuple[float, float] = (0.5, 1.0)
    dropout_p: float = 0.0
    dropout: float = 0.2
    gain_p: float = 0.0
    gain: float = 0.2
    offset: float = 0.2
    shuffle_p: float = 0.0
    groups: Sequence[Sequence[int]] | None = None
    group_size: int = 3
    smooth_p: float = 0.0
    smooth_sigma: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        self.subset_fraction = tuple(float(v) for v in self.subset_fraction)
        self.smooth_sigma = tuple(float(v) for v in self.smooth_sigma)
        for name in ("subset_p", "dropout_p", "gain_p", "shuffle_p", "smooth_p", "dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"spectral views: {name}={getattr(self, name)} must be a probability")
        low, high = self.subset_fraction
        if not 0.0 < low <= high <= 1.0:
            raise ValueError(
                f"spectral views: subset_fraction={self.subset_fraction} must be (min, max) in (0, 1]"
            )
        if self.group_size < 1 or self.smooth_sigma[0] <= 0 or self.smooth_sigma[0] > self.smooth_sigma[1]:
            raise ValueError("spectral views: group_size must be >= 1 and smooth_sigma a (min, max) above 0")


def band_groups(num_bands: int, recipe: SpectralRecipe) -> Tensor:
    """The group of every band (C), from `recipe.groups` (bands in no group keep their place:
    groups of one) or adjacent runs of `group_size`."""
    if recipe.groups is None:
        return torch.arange(num_bands) // recipe.group_size
    group = torch.arange(num_bands) + len(recipe.groups)  # ungrouped bands: a group of their own
    for index, members in enumerate(recipe.groups):
        members = [int(m) for m in members]
        if any(not 0 <= m < num_bands for m in members):
            raise ValueError(f"spectral views: group {members} names a band outside 0..{num_bands - 1}")
        if (group[members] < len(recipe.groups)).any():
            raise ValueError(f"spectral views: a band of group {members} is already in another group")
        group[members] = index
    return group


class SpectralViewMaker(torch.nn.Module):
    """One random spectral view of a normalised batch; composes with the spatial view makers."""

    def __init__(self, recipe: SpectralRecipe, num_bands: int) -> None:
        super().__init__()
        self.recipe = recipe
        self.num_bands = num_bands
        self.register_buffer("groups", band_groups(num_bands, recipe), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels = x.shape[:2]
        if channels != self.num_bands:
            raise ValueError(f"spectral views: expected {self.num_bands} bands, got {channels}")
        r, device = self.recipe, x.device
        view = x.float()
        keep = torch.ones(batch, channels, device=device)
        if r.subset_p > 0:
            fraction = draws.uniform(batch, 1, bounds=r.subset_fraction, device=device)
            count = (fraction * channels).ceil().clamp(1, channels)
            rank = draws.rand(batch, channels, device=device).argsort(dim=1).argsort(dim=1)  # random ranks
            subset = (rank < count).float()
            keep = torch.where(draws.chance(batch, r.subset_p, device)[:, None], subset, keep)
        if r.dropout_p > 0:
            survive = (draws.rand(batch, channels, device=device) >= r.dropout).float()
            keep = keep * torch.where(
                draws.chance(batch, r.dropout_p, device)[:, None], survive, torch.ones_like(survive)
            )
        view = view * keep[:, :, None, None]
        if r.gain_p > 0:
            on = draws.chance(batch, r.gain_p, device)[:, None]
            gain = draws.uniform(batch, channels, bounds=(1 - r.gain, 1 + r.gain), device=device)
            offset = draws.uniform(batch, channels, bounds=(-r.offset, r.offset), device=device)
            gain, offset = torch.where(on, gain, 1.0), torch.where(on, offset, 0.0)
            view = view * gain[:, :, None, None] + offset[:, :, None, None] * keep[:, :, None, None]
        if r.shuffle_p > 0:
            view = self._shuffle(view, draws.chance(batch, r.shuffle_p, device))
        if r.smooth_p > 0:
            view = self._smooth(view, draws.chance(batch, r.smooth_p, device))
        return view.to(x.dtype)

    def _shuffle(self, x: Tensor, on: Tensor) -> Tensor:
        """Permute the bands within their groups: slot k of the group-sorted order takes the band
        at position k of a random order that is also sorted by group."""
        batch, channels = x.shape[:2]
        groups = self.groups.to(x.device).float()
        slots = (groups * channels + torch.arange(channels, device=x.device)).argsort()  # C
        keys = groups * 2 + draws.rand(batch, channels, device=x.device)  # random within a group
        source = keys.argsort(dim=1)  # B x C
        permutation = torch.empty_like(source)
        permutation[:, slots] = source  # output band slots[k] <- input band source[:, k]
        permutation = torch.where(on[:, None], permutation, torch.arange(channels, device=x.device))
        return x.gather(1, permutation[:, :, None, None].expand_as(x))

    def _smooth(self, x: Tensor, on: Tensor) -> Tensor:
        """Gaussian smoothing along the band axis with a per-sample sigma, rows renormalised."""
        batch, channels = x.shape[:2]
        sigma = draws.uniform(batch, 1, 1, bounds=self.recipe.smooth_sigma, device=x.device)
        bands = torch.arange(channels, device=x.device, dtype=x.dtype)
        weights = torch.exp(-((bands[:, None] - bands[None, :]) ** 2) / (2 * sigma**2))  # B x C x C
        weights = weights / weights.sum(dim=2, keepdim=True)
        weights = torch.where(on[:, None, None], weights, torch.eye(channels, device=x.device, dtype=x.dtype))
        return torch.einsum("bij,bjhw->bihw", weights, x)
