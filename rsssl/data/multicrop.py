"""Multi-crop views (Caron et al. 2020, as DINO and LaST use them): G global and L local crops.

Each image of a normalised batch gets `num_global` large crops (`global_scale` of its area,
resized to `global_size`) and `num_local` small ones (`local_scale`, `local_size`: by default half
the global side, as DINO's 96 of 224 px, so small tiles get small locals too), every crop
with its own random geometry and colour from the shared view layer (`rsssl.data.views`), so the
crops work for any band count. The crops come back grouped by size, each group one view-major
tensor (crop 0 of every image, then crop 1, ...): one batched forward per group, and a global
crop never shares a tensor with a local one, so a teacher can be given the globals alone.

DINO's asymmetric recipes are the defaults: the first global crop is always blurred, the second
rarely and sometimes solarized, local crops blurred half the time (`global_blur_p`,
`global_solarize_p`, `local_blur_p`); the colour jitter and grayscale come from the method's
`views` recipe. `num_spectral` adds crops of the global size and scale that also get a spectral
view (`rsssl.data.spectral_views`: Zhang & Han's "novel spectral views"); they are student crops,
so they come after the global ones in the global-size group, which stays one batched forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor

from rsssl.data.scene import DataError
from rsssl.data.spectral_views import SpectralRecipe, SpectralViewMaker
from rsssl.data.views import ViewMaker, ViewRecipe


@dataclass
class MultiCropRecipe:
    """How many crops of which size and scale; sizes in output pixels (None: the tile's side)."""

    num_global: int = 2
    num_local: int = 6
    num_spectral: int = 0
    global_size: int | None = None
    local_size: int | None = None  # None: half the global side
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    global_blur_p: Sequence[float] = field(default_factory=lambda: (1.0, 0.1))
    global_solarize_p: Sequence[float] = field(default_factory=lambda: (0.0, 0.2))
    local_blur_p: float = 0.5

    def __post_init__(self) -> None:
        self.global_scale = tuple(float(v) for v in self.global_scale)
        self.local_scale = tuple(float(v) for v in self.local_scale)
        self.global_blur_p = tuple(float(p) for p in self.global_blur_p)
        self.global_solarize_p = tuple(float(p) for p in self.global_solarize_p)
        if self.num_global < 1 or self.num_local < 0 or self.num_spectral < 0:
            raise ValueError(
                f"multicrop: num_global={self.num_global}, num_local={self.num_local}, num_spectral="
                f"{self.num_spectral}: at least one global crop (the teacher's input), no negative counts"
            )
        for name in ("global_blur_p", "global_solarize_p"):
            given = len(getattr(self, name))
            if given != self.num_global:
                raise ValueError(
                    f"multicrop.{name} has {given} entries for num_global={self.num_global}: give one "
                    "probability per global crop"
                )


class MultiCrop(NamedTuple):
    """The crops of a batch of B images, view-major: `globals_` (G*B x C x Sg x Sg), `spectral_`
    (S*B, the global size, None without spectral crops) and `locals_` (L*B x C x Sl x Sl, None
    without local crops)."""

    globals_: Tensor
    locals_: Tensor | None
    num_global: int
    num_local: int
    spectral_: Tensor | None = None

    def groups(self) -> list[Tensor]:
        """The student's crop tensors by size, the teacher's global crops first: one batched
        forward each (spectral crops share the global crops' size, so their forward)."""
        first = self.globals_ if self.spectral_ is None else torch.cat([self.globals_, self.spectral_])
        return [first] + ([self.locals_] if self.locals_ is not None else [])


class MultiCropViewMaker(torch.nn.Module):
    """G global and L local crops of a normalised batch, on its device, in G + 1 batched calls."""

    def __init__(
        self,
        recipe: MultiCropRecipe,
        colour: ViewRecipe,
        bands: Sequence[str],
        rgb_bands: Sequence[str] | None = None,
        spectral: SpectralRecipe | None = None,
    ) -> None:
        super().__init__()
        self.recipe = recipe
        if recipe.num_spectral and spectral is None:
            raise ValueError(f"multicrop: num_spectral={recipe.num_spectral} needs a spectral view recipe")
        self.spectral = SpectralViewMaker(spectral, len(bands)) if recipe.num_spectral else None
        crop = replace(colour, crop_scale=recipe.global_scale, crop_size=recipe.global_size)
        self.global_makers = torch.nn.ModuleList(
            ViewMaker(replace(crop, blur_p=blur, solarize_p=solarize), bands, rgb_bands)
            for blur, solarize in zip(recipe.global_blur_p, recipe.global_solarize_p, strict=True)
        )
        local = replace(
            colour,
            crop_scale=recipe.local_scale,
            crop_size=recipe.local_size,
            blur_p=recipe.local_blur_p,
            solarize_p=0.0,
        )
        self.local_maker = ViewMaker(local, bands, rgb_bands)

    def forward(self, x: Tensor) -> MultiCrop:
        r = self.recipe
        side = min(x.shape[-2:])
        local_side = r.local_size or (r.global_size or side) // 2
        too_large = [s for s in (r.global_size, local_side if r.num_local else None) if s and s > side]
        if too_large:
            raise DataError(
                f"multicrop: a crop of {max(too_large)} px is larger than the {side} px tiles: lower "
                "method.multicrop.global_size / local_size or raise data.tile_size"
            )
        globals_ = torch.cat([maker(x) for maker in self.global_makers])
        locals_ = self.local_maker(x.repeat(r.num_local, 1, 1, 1), side=local_side) if r.num_local else None
        spectral = None
        if self.spectral is not None:  # the first global recipe's crops, then a spectral view each
            spectral = self.spectral(self.global_makers[0](x.repeat(r.num_spectral, 1, 1, 1)))
        return MultiCrop(globals_, locals_, r.num_global, r.num_local, spectral)
