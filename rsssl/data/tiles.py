"""Tile positions over scenes and the dataset that cuts them.

`TileIndex` lists every tile (scene, row, col) on a regular grid whose valid fraction is high
enough, found from each scene's cheap validity overview so a large GeoTIFF is never loaded
whole. `TileDataset` turns an index entry into a dict of uint tensors (plus the neighbour and
other-date tiles of `rsssl.data.sampling` when a method needs them): workers only slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from rsssl.data.sampling import PairSampling, draw_dates, neighbour_offset, read_reflect
from rsssl.data.scene import DataError, Scene, Window


@dataclass(frozen=True)
class TileIndex:
    """Grid tiles kept for sampling; arrays are aligned, one entry per tile."""

    scene: np.ndarray  # int32 scene number
    row: np.ndarray  # int32 top-left row
    col: np.ndarray  # int32 top-left col
    label: np.ndarray  # int64 majority class, -1 when the scene is unlabelled
    tile_size: int
    # validity of each scene at 1/overview_factor (what tiles were chosen from); empty = unknown
    overviews: tuple[np.ndarray, ...] = ()
    overview_factor: int = 1

    def __len__(self) -> int:
        return len(self.scene)

    def valid_fraction(self, scene: int, row: int, col: int) -> float:
        """Valid fraction of the tile at (row, col) of `scene`, from the overview (1.0 if unknown).

        The part of a window outside the scene (reflect-padded when read) is not counted.
        """
        if not self.overviews:
            return 1.0
        overview, factor = self.overviews[scene], self.overview_factor
        r0, c0 = max(row, 0) // factor, max(col, 0) // factor
        r1, c1 = -(-(row + self.tile_size) // factor), -(-(col + self.tile_size) // factor)
        cells = overview[r0:r1, c0:c1]
        return float(cells.mean()) if cells.size else 0.0

    @property
    def labelled(self) -> bool:
        return bool(len(self.label)) and bool((self.label >= 0).all())


def _grid(extent: int, tile_size: int, stride: int) -> np.ndarray:
    """Top-left offsets covering [0, extent) with the last tile flush with the edge."""
    starts = np.arange(0, extent - tile_size + 1, stride)
    if starts[-1] != extent - tile_size:
        starts = np.append(starts, extent - tile_size)
    return starts


def _valid_fraction(overview: np.ndarray, factor: int, rows: np.ndarray, cols: np.ndarray, size: int):
    """Fraction of valid overview cells inside each tile, by a summed-area table."""
    table = np.zeros((overview.shape[0] + 1, overview.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = overview.astype(np.int64).cumsum(0).cumsum(1)
    r0, c0 = rows // factor, cols // factor
    r1 = np.minimum(-(-(rows + size) // factor), overview.shape[0])
    c1 = np.minimum(-(-(cols + size) // factor), overview.shape[1])
    total = table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]
    return total / np.maximum((r1 - r0) * (c1 - c0), 1)


def _majority_label(scene: Scene, row: int, col: int, size: int) -> int:
    mask = scene.read_mask(Window(row, col, size, size))
    return int(np.bincount(mask.ravel()).argmax())


def build_tile_index(
    scenes: Sequence[Scene], tile_size: int, stride: int | None = None, min_valid: float = 0.9
) -> TileIndex:
    """Index every grid tile with at least `min_valid` valid pixels, across all scenes."""
    if not scenes:
        raise DataError("no scenes to cut tiles from: check the data source (path, folder, file)")
    stride = stride or tile_size
    factor = max(1, min(stride, tile_size) // 4)
    parts: list[tuple[np.ndarray, ...]] = []
    overviews = []
    for number, scene in enumerate(scenes):
        if scene.height < tile_size or scene.width < tile_size:
            raise DataError(
                f"scene {scene.name!r} is {scene.height}x{scene.width} px, smaller than the tile size "
                f"{tile_size}: lower data.tile_size to at most {min(scene.height, scene.width)} "
                "or remove the scene"
            )
        rows, cols = np.meshgrid(
            _grid(scene.height, tile_size, stride), _grid(scene.width, tile_size, stride), indexing="ij"
        )
        rows, cols = rows.ravel(), cols.ravel()
        overviews.append(scene.valid_overview(factor))
        keep = _valid_fraction(overviews[-1], factor, rows, cols, tile_size) >= min_valid
        if not keep.any():
            raise DataError(
                f"scene {scene.name!r} has no {tile_size}px tile with at least {min_valid:.0%} valid "
                "pixels (is it all nodata?): remove it from the source, set data.nodata to the right "
                "value, or lower data.min_valid"
            )
        rows, cols = rows[keep], cols[keep]
        if scene.class_names is None:
            labels = np.full(len(rows), -1, dtype=np.int64)
        else:
            labels = np.array([_majority_label(scene, r, c, tile_size) for r, c in zip(rows, cols)])
        parts.append((np.full(len(rows), number, dtype=np.int32), rows, cols, labels))
    scene_ids, rows, cols, labels = (np.concatenate(p) for p in zip(*parts))
    rows, cols = rows.astype(np.int32), cols.astype(np.int32)
    return TileIndex(scene_ids, rows, cols, labels, tile_size, tuple(overviews), factor)


NEIGHBOUR_TRIES = 10  # redraws of a neighbour that falls on nodata before keeping the best


class TileDataset(Dataset):
    """Cuts indexed tiles: image (uint, C x T x T) plus label, position, scene and date.

    `with_mask` adds the per-pixel class mask. `sampling` adds a spatial neighbour
    (`neighbor`, `neighbor_offset` (dy, dx) px, `neighbor_pos`) and/or the same window at
    another date (`other_time`, `other_time_index`; `time` is then a random anchor date).
    An item is an index or an (index, epoch) pair from `EpochSampler`; the extras are drawn
    from (seed, epoch, index). No float work happens here.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        index: TileIndex,
        with_mask: bool = False,
        sampling: PairSampling | None = None,
    ) -> None:
        self.scenes = list(scenes)
        self.index = index
        self.with_mask = with_mask
        self.sampling = sampling

    def __len__(self) -> int:
        return len(self.index)

    def read_tile(self, scene: Scene, row: int, col: int, date: int = 0) -> torch.Tensor:
        """The tile at top-left (row, col), reflect-padded where it leaves the scene."""
        pixels = read_reflect(scene, row, col, self.index.tile_size, date)
        return torch.from_numpy(np.ascontiguousarray(pixels))

    def _extras(self, number: int, row: int, col: int, epoch: int, i: int) -> tuple[int, dict]:
        """The anchor's date and the neighbour / other-date entries of one sample."""
        scene, size, sampling = self.scenes[number], self.index.tile_size, self.sampling
        rng = sampling.rng(epoch, i)
        date, extras = 0, {}
        if sampling.other_time:
            date, other = draw_dates(rng, len(scene.dates))
            extras["other_time"] = self.read_tile(scene, row, col, other)
            extras["other_time_index"] = torch.tensor(other)
        if sampling.radii is not None:
            dy, dx = self._valid_neighbour_offset(rng, number, row, col)
            extras["neighbor"] = self.read_tile(scene, row + dy, col + dx, date)
            extras["neighbor_offset"] = torch.tensor((dy, dx), dtype=torch.int64)
            centre = (row + dy + size / 2, col + dx + size / 2)
            extras["neighbor_pos"] = torch.tensor(scene.pixel_to_map(*centre), dtype=torch.float64)
        return date, extras

    def _valid_neighbour_offset(
        self, rng: np.random.Generator, number: int, row: int, col: int
    ) -> tuple[int, int]:
        """A neighbour offset uniform over the ±D square, redrawn while the neighbour would be
        mostly nodata (under `sampling.min_valid`); after `NEIGHBOUR_TRIES` the most valid draw."""
        scene, size, sampling = self.scenes[number], self.index.tile_size, self.sampling
        best, best_valid = (0, 0), -1.0
        for _ in range(NEIGHBOUR_TRIES):
            dy, dx = neighbour_offset(rng, row, col, size, scene.height, scene.width, sampling.radii[number])
            valid = self.index.valid_fraction(number, row + dy, col + dx)
            if valid >= sampling.min_valid:
                return dy, dx
            if valid > best_valid:
                best, best_valid = (dy, dx), valid
        return best

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, epoch = item if isinstance(item, tuple) else (item, 0)
        number, row, col = int(self.index.scene[i]), int(self.index.row[i]), int(self.index.col[i])
        scene = self.scenes[number]
        size = self.index.tile_size
        date, sample = self._extras(number, row, col, epoch, i) if self.sampling is not None else (0, {})
        sample.update(
            image=self.read_tile(scene, row, col, date),
            pos=torch.tensor(scene.pixel_to_map(row + size / 2, col + size / 2), dtype=torch.float64),
            pixel=torch.tensor((row, col), dtype=torch.int64),
            scene=torch.tensor(number),
            time=torch.tensor(date),
            index=torch.tensor(i),
        )
        if self.index.label[i] >= 0:
            sample["label"] = torch.tensor(int(self.index.label[i]))
        if self.with_mask:
            mask = scene.read_mask(Window(row, col, size, size))
            sample["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        return sample
