"""Real-imagery tiles as the methods see them: cut from one scene, each band standardised over it."""

from __future__ import annotations

import numpy as np
import torch


def standardised_tiles(scene: np.ndarray, count: int, tile: int = 64, seed: int = 0) -> torch.Tensor:
    """`count` random `tile`-px tiles (count x C x tile x tile) of a C x H x W scene."""
    pixels = torch.from_numpy(scene.astype(np.float32))
    pixels = (pixels - pixels.mean((1, 2), keepdim=True)) / pixels.std((1, 2), keepdim=True)
    rows, cols = pixels.shape[1] // tile, pixels.shape[2] // tile
    grid = pixels[:, : rows * tile, : cols * tile].unfold(1, tile, tile).unfold(2, tile, tile)
    tiles = grid.permute(1, 2, 0, 3, 4).reshape(-1, pixels.shape[0], tile, tile)
    order = torch.randperm(len(tiles), generator=torch.Generator().manual_seed(seed))
    return tiles[order[:count]].contiguous()
