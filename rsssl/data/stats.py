"""Per-band normalisation statistics computed from the data itself, cached on disk.

Multispectral data must never be normalised with ImageNet RGB statistics: each band gets its
own mean and std, estimated once from a random sample of tiles (valid pixels only) at every
date of multi-date scenes (training reads any of them) and stored as JSON keyed by a
fingerprint of the source, so later runs reuse it. Concurrent writers (DDP ranks) are safe and
a corrupt entry is recomputed (`rsssl.data.cache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rsssl.data.cache import read_cached, write_atomic
from rsssl.data.scene import DataError, Scene, Window
from rsssl.data.tiles import TileIndex

#: What `compute_band_stats` samples, for cache descriptions (2: tiles at every date, not the first).
STATS_VERSION = 2


def standardise(pixels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint or float pixels -> float32, standardised per band (`mean`, `std` broadcast over them).

    Non-finite float pixels are no data (`rsssl.data.geotiff`), yet a kept tile may hold some
    (up to 1 - min_valid of it): they become 0, the band mean, so no NaN or Inf reaches a network."""
    out = (pixels.float() - mean) / std
    if pixels.is_floating_point():
        out = torch.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out


@dataclass(frozen=True)
class BandStats:
    """Mean and std per band, in the data's own units (DN, reflectance x 10000, ...)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, value: dict) -> BandStats:
        return cls(tuple(float(v) for v in value["mean"]), tuple(float(v) for v in value["std"]))


def compute_band_stats(
    scenes: Sequence[Scene],
    index: TileIndex,
    max_tiles: int = 256,
    seed: int = 0,
) -> BandStats:
    """Mean/std per band over the valid pixels of up to `max_tiles` random (tile, date) pairs.

    Every date of a multi-date scene is a candidate, so the statistics describe all the pixels
    training may read, not the first date's. A non-finite float value is no data in its band
    (where other bands hold data the pixel stays valid): each band counts its finite values."""
    rng = np.random.default_rng(seed)
    tiles, dates = tile_dates(scenes, index)
    chosen = rng.choice(len(tiles), size=min(max_tiles, len(tiles)), replace=False)
    size = index.tile_size
    total = total_sq = count = 0.0
    for i, date in zip(tiles[chosen], dates[chosen], strict=True):
        scene = scenes[int(index.scene[i])]
        window = Window(int(index.row[i]), int(index.col[i]), size, size)
        values = scene.read(window, int(date))[:, scene.read_valid(window)].astype(np.float64)
        finite = np.isfinite(values)
        values = np.where(finite, values, 0.0)
        total = total + values.sum(1)
        total_sq = total_sq + (values**2).sum(1)
        count = count + finite.sum(1)
    if np.max(count) == 0:
        raise DataError("no valid pixel found to compute band statistics: the data is all nodata")
    if np.min(count) == 0:
        empty = [int(b) for b in np.flatnonzero(count == 0)]
        raise DataError(
            f"band(s) {empty} (0-based) hold no finite value in {len(chosen)} sampled tiles: every value "
            "is NaN or Inf; drop the band (data.bands=[...]) or fix the files"
        )
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # constant bands: leave them centred, do not blow them up
    return BandStats(tuple(mean.tolist()), tuple(std.tolist()))


def tile_dates(scenes: Sequence[Scene], index: TileIndex) -> tuple[np.ndarray, np.ndarray]:
    """Every (tile, date) pair of `index`: the tile number and the date number of each pair."""
    counts = np.array([len(scene.dates) for scene in scenes])[index.scene]
    tiles = np.repeat(np.arange(len(index)), counts)
    dates = np.arange(len(tiles)) - np.repeat(np.cumsum(counts) - counts, counts)
    return tiles, dates


def stats_fingerprint(description: dict) -> str:
    """Stable short hash of whatever identifies the data and the sampling of the statistics."""
    return hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_band_stats(
    cache_dir: str | Path | None, description: dict, compute: Callable[[], BandStats]
) -> BandStats:
    """Read the statistics for `description` from the cache, or compute and store them."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"stats-{stats_fingerprint(description)}.json"
    cached = read_cached(path, lambda p: BandStats.from_dict(json.loads(p.read_text())["stats"]))
    if cached is not None:
        return cached
    stats = compute()
    content = {"source": description, "stats": stats.to_dict()}
    write_atomic(path, lambda stream: json.dump(content, stream, indent=1, default=str))
    return stats
