"""Tracked views: where each pixel of a view came from, and patches seen by two views (GLCNet).

GLCNet's local matching (Li et al., TGRS 2022) contrasts small patches that show the same ground
in two augmented views of one tile. Two pieces make that possible, both batched on any device:

`source_coordinates(params, height, width)` replays a batch of views' geometry (`ViewParams`:
crop box, h-flip, v-flip, rot90, in that order) on an int64 index map of the H×W source tile with
`apply_geometry(..., mode="nearest")` and returns, for every output pixel, the (row, col) of the
source pixel nearest to its centre. Exact at any tile size (integer gather, no float rounding of
the indices). Colour ops, blur and solarize never move pixels, so only the geometry matters.

`matched_patches(coords_a, coords_b, patch_size, num_patches)` samples, per image, source pixels
that are interior in both views and returns the P×P boxes around them in each view, as
(x1, y1, x2, y2) pixel edges: the convention of `ViewParams.boxes` and of
`torchvision.ops.roi_align(..., aligned=True)`. Boxes are P×P in each view's own pixels, centred
on the same source pixel: a view cropped at another scale shows more or less ground in its box,
and a flipped/rotated view shows it flipped/rotated. GLCNet ignores both (it pools each patch).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rsssl.data import draws
from rsssl.data.views import ViewMaker, ViewParams, apply_geometry

# crop_resize locates output pixel centres in float32 pixel-edge coordinates: beyond 2**24 a
# float32 no longer holds every integer, so the nearest source pixel could be off by one.
MAX_SIDE = 2**24
_ABSENT = -1  # key of a view-B pixel that cannot be matched (not interior, or no source pixel)


class TrackedPair(NamedTuple):
    """Two views of one batch, their geometry and their source coordinates (B×2×h×w)."""

    view_a: Tensor
    view_b: Tensor
    params_a: ViewParams
    params_b: ViewParams
    coords_a: Tensor
    coords_b: Tensor


def source_coordinates(params: ViewParams, height: int, width: int) -> Tensor:
    """B×2×h×w int64 map: (row, col) in the H×W source tile of the pixel each view pixel came from.

    "Came from" means the source pixel nearest to the output pixel's centre (ties go to the
    lower-right pixel), which is the pixel `apply_geometry(..., mode="nearest")` copies and the
    centre of what the bilinear view averages. `h×w` is `params.size`. Raises ValueError when a
    crop box leaves the tile (the tile size does not match the params; this check reads the boxes
    back once) or when a side exceeds `MAX_SIDE`.
    """
    if height < 1 or width < 1:
        raise ValueError(f"the source tile must be at least 1×1, got {height}×{width}")
    if max(height, width) > MAX_SIDE:
        raise ValueError(
            f"source tile {height}×{width} is too large for exact pixel tracking: crop boxes are float32, "
            f"exact for sides up to {MAX_SIDE} pixels"
        )
    boxes = params.boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"params.boxes must be B×4 (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(1)
    outside = (x1 < 0) | (y1 < 0) | (x2 > width) | (y2 > height) | (x2 <= x1) | (y2 <= y1)
    if bool(outside.any()):
        raise ValueError(
            f"a crop box leaves the {height}×{width} source tile (or is empty): pass the height and width "
            "of the tile the views were made from"
        )
    batch = boxes.shape[0]
    index = torch.arange(height * width, device=boxes.device).view(1, 1, height, width)
    tracked = apply_geometry(index.expand(batch, 1, height, width), params, mode="nearest")
    return torch.cat([tracked // width, tracked % width], dim=1)


def make_tracked_pair(view_maker: ViewMaker, x: Tensor, second_maker: ViewMaker | None = None) -> TrackedPair:
    """Two views of x (B×C×H×W), by `view_maker` (and `second_maker` for view B, if given), with
    their `ViewParams` and `source_coordinates`."""
    height, width = x.shape[-2:]
    view_a, params_a = view_maker(x, return_params=True)
    view_b, params_b = (second_maker or view_maker)(x, return_params=True)
    coords_a = source_coordinates(params_a, height, width)
    coords_b = source_coordinates(params_b, height, width)
    return TrackedPair(view_a, view_b, params_a, params_b, coords_a, coords_b)


def _interior(height: int, width: int, patch_size: int, device: torch.device) -> Tensor:
    """(h·w,) bool, raster order: pixels that can centre a P×P box lying fully inside the view.

    The box around centre pixel (r, c) spans rows r − P//2 .. r − P//2 + P − 1 (the centre is the
    middle pixel for odd P, the lower-right of the middle four for even P).
    """
    half = patch_size // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    row_ok = (rows >= half) & (rows <= height - patch_size + half)
    col_ok = (cols >= half) & (cols <= width - patch_size + half)
    return (row_ok[:, None] & col_ok[None, :]).flatten()


def _keys(coords: Tensor, usable: Tensor) -> Tensor:
    """B×(h·w) int64 key row·2³² + col per pixel (one per source pixel), `_ABSENT` where not usable."""
    rows, cols = coords.flatten(2).unbind(1)
    present = (rows >= 0) & (cols >= 0)
    return torch.where(usable[None, :] & present, (rows << 32) + cols, _ABSENT)


def matched_patches(
    coords_a: Tensor,
    coords_b: Tensor,
    patch_size: int,
    num_patches: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sample `num_patches` P×P patches per image that show the same source pixel in both views.

    coords_a, coords_b: B×2×h×w (row, col) source coordinates of two views of the same tiles
        (`source_coordinates`); the views may differ in size. Negative coordinates mark pixels
        with no source and are never matched.
    Returns boxes_a, boxes_b: B×n×4 float32 (x1, y1, x2, y2) in each view's pixel edges (pixel i
    spans [i, i+1), x = column): ready for `roi_align(view, list(boxes_a), P, aligned=True)`
    (for `roi_pool`, whose x2/y2 are inclusive, subtract 1 from them). valid: B×n bool, False
    where an image had fewer than n usable locations; those boxes are the top-left P×P box of
    each view (in bounds, meaningless).

    Sampling, per image and all images at once: the candidates are the pixels of view A whose
    P×P box lies inside view A and whose source pixel also centres a P×P box inside view B (where
    several view-B pixels share it, as when B is up-sampled, the middle one in raster order). One
    `torch.rand((B, h_a·w_a), generator=generator)` draw ranks them; each of the n rounds takes
    the best-ranked remaining candidate (ties: the first in raster order) and then drops the
    candidates inside its view-A box, as GLCNet does, so the patches of one image overlap less.
    Image i's patches depend only on its own coordinates and row i of that draw. The generator
    must be on the coordinates' device; None draws from `rsssl.data.draws` (the same patches for
    an image on one process or many).
    """
    if coords_a.ndim != 4 or coords_b.ndim != 4 or coords_a.shape[1] != 2 or coords_b.shape[1] != 2:
        raise ValueError(
            f"coords_a and coords_b must be B×2×h×w maps, got {tuple(coords_a.shape)} and "
            f"{tuple(coords_b.shape)}"
        )
    if coords_a.shape[0] != coords_b.shape[0]:
        raise ValueError(f"coords_a has {coords_a.shape[0]} images but coords_b has {coords_b.shape[0]}")
    if num_patches < 1:
        raise ValueError(f"num_patches must be at least 1, got {num_patches}")
    batch, _, height_a, width_a = coords_a.shape
    height_b, width_b = coords_b.shape[-2:]
    smallest = min(height_a, width_a, height_b, width_b)
    if not 1 <= patch_size <= smallest:
        raise ValueError(
            f"patch_size must be between 1 and the smallest view side ({smallest}; views are "
            f"{height_a}×{width_a} and {height_b}×{width_b}), got {patch_size}"
        )
    device = coords_a.device
    coords_a, coords_b = coords_a.long(), coords_b.long().to(device)
    key_a = _keys(coords_a, _interior(height_a, width_a, patch_size, device))
    key_b = _keys(coords_b, _interior(height_b, width_b, patch_size, device))

    # Inverse lookup without an H·W table: view B's keys sorted (stable: equal keys stay in raster
    # order), then each view-A key's run of equal keys in it.
    sorted_b, order_b = torch.sort(key_b, dim=1, stable=True)
    first = torch.searchsorted(sorted_b, key_a)
    count = torch.searchsorted(sorted_b, key_a, right=True) - first
    available = (key_a != _ABSENT) & (count > 0)
    middle = (first + count // 2).clamp(max=key_b.shape[1] - 1)
    where_b = order_b.gather(1, middle)  # B×(h_a·w_a): flat view-B pixel of each view-A pixel's source

    if generator is None:
        scores = draws.rand(batch, key_a.shape[1], device=device)
    else:
        scores = torch.rand((batch, key_a.shape[1]), generator=generator, device=device)
    rows_a = torch.arange(height_a, device=device).repeat_interleave(width_a)
    cols_a = torch.arange(width_a, device=device).repeat(height_a)
    half = patch_size // 2
    tops_a, tops_b, valid = [], [], []
    for _ in range(num_patches):
        best = torch.where(available, scores, -1.0).argmax(dim=1, keepdim=True)
        found = available.gather(1, best).squeeze(1)
        pixel_b = where_b.gather(1, best).squeeze(1)
        best = best.squeeze(1)
        top_a = torch.stack([best // width_a, best % width_a], dim=1) - half  # (row, col)
        top_b = torch.stack([pixel_b // width_b, pixel_b % width_b], dim=1) - half
        top_a = torch.where(found[:, None], top_a, 0)
        top_b = torch.where(found[:, None], top_b, 0)
        covered = (
            (rows_a[None, :] >= top_a[:, :1])
            & (rows_a[None, :] < top_a[:, :1] + patch_size)
            & (cols_a[None, :] >= top_a[:, 1:])
            & (cols_a[None, :] < top_a[:, 1:] + patch_size)
        )
        available = available & ~(covered & found[:, None])
        tops_a.append(top_a)
        tops_b.append(top_b)
        valid.append(found)
    boxes_a = _boxes(torch.stack(tops_a, dim=1), patch_size)
    boxes_b = _boxes(torch.stack(tops_b, dim=1), patch_size)
    return boxes_a, boxes_b, torch.stack(valid, dim=1)


def _boxes(tops: Tensor, patch_size: int) -> Tensor:
    """B×n×2 top-left (row, col) → B×n×4 float32 boxes (x1, y1, x2, y2)."""
    y1, x1 = tops.float().unbind(-1)
    return torch.stack([x1, y1, x1 + patch_size, y1 + patch_size], dim=-1)
