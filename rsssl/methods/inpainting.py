"""Inpainting (the context encoder of Pathak et al., CVPR 2016), one of the pretext signals of
Tao et al. 2020: a square region of each tile is hidden (set to the band means, 0 in standardised
units) and a dense network predicts every band inside it from the context around it; the loss is
the squared error on the hidden pixels only (`rsssl.methods.pixel_reconstruction`).

`mask_size` is the region's side as a fraction of the tile's (the paper's central region: half
the side, a quarter of the area); `mask_position` is `center` (the paper's) or `random` (a region
anywhere inside the tile, drawn per tile), any band count.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rsssl.data import draws
from rsssl.methods.pixel_reconstruction import Corruption, PixelReconstruction
from rsssl.models.backbones import ConfigError

POSITIONS = ("center", "random")


def square_masks(batch: int, height: int, width: int, side: int, random: bool, device) -> Tensor:
    """B x 1 x H x W booleans, True inside each tile's `side` px square (centred, or at a random
    position per tile)."""
    if random:
        top = draws.randint(0, height - side + 1, batch, 1, 1, device=device)
        left = draws.randint(0, width - side + 1, batch, 1, 1, device=device)
    else:
        top = torch.full((batch, 1, 1), (height - side) // 2, device=device)
        left = torch.full((batch, 1, 1), (width - side) // 2, device=device)
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return inside[:, None]


class Inpainting(PixelReconstruction):
    """Predict a hidden square of each tile from its surroundings."""

    def __init__(self, mask_size: float = 0.5, mask_position: str = "center", **base) -> None:
        super().__init__(predicted_bands=base["in_chans"], **base)
        if not 0.0 < mask_size < 1.0:
            raise ConfigError(f"inpainting: mask_size={mask_size} must lie strictly between 0 and 1")
        if mask_position not in POSITIONS:
            raise ConfigError(
                f"inpainting: mask_position={mask_position!r} is unknown; use one of {list(POSITIONS)}"
            )
        self.mask_size, self.mask_position = mask_size, mask_position

    def corrupt(self, images: Tensor) -> Corruption:
        batch, _, height, width = images.shape
        side = round(self.mask_size * min(height, width))
        if side < 1:
            raise ConfigError(
                f"inpainting: mask_size={self.mask_size} of a {min(height, width)} px tile hides no pixel; "
                "raise method.mask_size or data.tile_size"
            )
        hidden = square_masks(batch, height, width, side, self.mask_position == "random", images.device)
        return Corruption(inputs=images.masked_fill(hidden, 0.0), targets=images, hidden=hidden)
