"""Colorization (Zhang et al., ECCV 2016, as a regression), one of the pretext signals of Tao et
al. 2020: bands are hidden and a dense network predicts them at every pixel from what is left
(`rsssl.methods.pixel_reconstruction`), in standardised units.

- RGB tiles (exactly the red, green and blue bands): the network sees the luminance (BT.601
  weights on the standardised bands) in all three bands and predicts the colour, all three bands.
- Multispectral tiles: the `held_out` bands (by name; by default the red, green and blue bands)
  are set to their means (0) and predicted from the other bands, e.g. colour from NIR and SWIR.

A single band has neither colour nor other bands to predict it from: the method refuses it,
naming the methods that do work there, as it refuses data whose RGB bands are unknown unless
`held_out` names the bands to predict.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rsssl.data.bands import find_band
from rsssl.data.views import rgb_band_indices
from rsssl.methods.pixel_reconstruction import Corruption, PixelReconstruction
from rsssl.models.backbones import ConfigError

LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, red, green, blue


def hidden_bands(
    bands: Sequence[str], held_out: Sequence[str] | None, rgb: Sequence[int] | None
) -> list[int]:
    """Positions of the bands to predict (clear errors when none can be chosen)."""
    if len(bands) < 2:
        raise ConfigError(
            f"colorization needs colour or several bands: the 1-band data ({bands[0]}) has nothing to "
            "predict from; use method=inpainting, rotation or jigsaw"
        )
    if held_out is None:
        if rgb is None:
            raise ConfigError(
                f"colorization: no red, green and blue bands are known among ({', '.join(bands)}): name them "
                "with data.rgb_bands=[<red>,<green>,<blue>], or choose the bands to predict with "
                "method.held_out=[<band>, ...]"
            )
        return list(rgb)
    positions = [find_band(bands, name) for name in held_out]
    missing = [name for name, at in zip(held_out, positions, strict=True) if at is None]
    if missing:
        raise ConfigError(
            f"colorization: method.held_out names {missing}, not among the bands ({', '.join(bands)})"
        )
    if not positions or len(set(positions)) == len(bands):
        raise ConfigError(
            f"colorization: method.held_out={list(held_out)} leaves no band to predict from; hold out "
            "fewer bands"
        )
    return sorted(set(positions))


class Colorization(PixelReconstruction):
    """Predict the colour of RGB tiles from their luminance, or held-out bands from the others."""

    def __init__(self, held_out: Sequence[str] | None = None, **base) -> None:
        bands = tuple(base["bands"])
        hidden = hidden_bands(bands, held_out, rgb_band_indices(bands, base.get("rgb_bands")))
        super().__init__(predicted_bands=len(hidden), **base)
        self.from_luminance = len(bands) == 3 and len(hidden) == 3
        self.register_buffer("hidden", torch.tensor(hidden), persistent=False)
        weights = torch.zeros(len(bands))
        weights[self.hidden] = torch.tensor(LUMINANCE) if self.from_luminance else 0.0
        self.register_buffer("luminance", weights, persistent=False)

    def corrupt(self, images: Tensor) -> Corruption:
        targets = images[:, self.hidden]
        if self.from_luminance:  # grey: the luminance in every band
            grey = torch.einsum("bchw,c->bhw", images, self.luminance.to(images.dtype))
            inputs = grey[:, None].expand_as(images).contiguous()
        else:
            inputs = images.index_fill(1, self.hidden, 0.0)
        every = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=images.device)
        return Corruption(inputs=inputs, targets=targets, hidden=every)
