"""Spatial and temporal sampling: the extra tiles a training sample carries, and its randomness.

Neighbours follow SauMoCo's official data generator (seed-methods.md §1): the neighbour's
centre is drawn per coordinate uniformly from the integers in [c - D, c + D] around the anchor
centre c, restricted so that it stays inside the scene, and the tile is reflect-padded where it
leaves the scene (at most half a tile). Temporal pairs are the same window at another date.

Randomness never depends on which worker reads a sample: the sampler tags every index with its
epoch and each sample draws from a generator seeded by (seed, epoch, index). Workers only draw
integers and slice; there is no float work on the pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from rsssl.data.scene import DataError, Scene, Window, pixel_sizes

UNITS = ("px", "m")
# fixes for metres that do not convert, besides giving the setting in pixels
GEOREFERENCE_FIX = "use georeferenced scenes"
CRS_FIX = "give it a projected CRS (a GeoTIFF: gdal_edit.py -a_srs EPSG:<code> FILE)"
REPROJECT_FIX = "reproject it to a projected CRS in metres or feet (gdalwarp -t_srs EPSG:<code>)"
SQUARE_FIX = "resample it to square pixels (gdalwarp -tr <size> <size>)"


@dataclass(frozen=True)
class PairSampling:
    """What extras each training sample gets: a neighbour (radius in pixels, one per scene,
    redrawn when less than `min_valid` of it is data) and/or the same window at another date,
    drawn from `seed`."""

    seed: int
    radii: tuple[int, ...] | None = None
    other_time: bool = False
    min_valid: float = 0.0

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        """The generator of one sample at one epoch: the same on any worker, new every epoch."""
        return np.random.default_rng((self.seed, epoch, index))


class EpochSampler(Sampler[tuple[int, int]]):
    """Shuffled `(index, epoch)` pairs; the permutation is seeded by (seed, epoch).

    `epoch` reads the current epoch (the trainer's, so a resumed run continues where it
    stopped); without it every pass over the sampler counts as one epoch. `weights` reads
    per-index weights (a sampling strategy's, `rsssl.data.balance`) at the start of each pass:
    when it gives some, the pass draws `size` indices with replacement in proportion to them, from
    the same (seed, epoch) generator. Under torch.distributed each process takes its share of
    the epoch's order, as torch's DistributedSampler does (the order padded with its own start to
    a multiple of the processes, then every world-size-th entry from the process's rank), so the
    trainer runs without a sampler of its own (`use_distributed_sampler=False`). `resume_at`
    makes the next pass over a given epoch leave out the first entries of this process's share
    (a run resumed mid-epoch: their tiles are never read).
    """

    def __init__(
        self,
        size: int,
        seed: int,
        epoch: Callable[[], int] | None = None,
        weights: Callable[[], np.ndarray | None] | None = None,
    ) -> None:
        self.size = size
        self.seed = seed
        self.epoch = epoch
        self.weights = weights
        self.passes = 0
        self._resume: tuple[int, int] | None = None

    @staticmethod
    def _processes() -> tuple[int, int]:
        """(rank, world size) of this process: (0, 1) outside torch.distributed."""
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        return math.ceil(self.size / self._processes()[1])

    def resume_at(self, epoch: int, skip: int) -> None:
        """Leave out the first `skip` entries of this process's share in the next pass, if it is
        over `epoch`."""
        self._resume = (epoch, skip)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch() if self.epoch is not None else self.passes
        self.passes += 1
        rng = np.random.default_rng((self.seed, epoch))
        weights = self.weights() if self.weights is not None else None
        if weights is None:
            order = rng.permutation(self.size)
        else:
            order = rng.choice(self.size, size=self.size, replace=True, p=weights / weights.sum())
        rank, world = self._processes()
        if world > 1:
            padded = np.resize(order, len(self) * world)  # repeats the order's start, as torch pads
            order = padded[rank::world]
        resume, self._resume = self._resume, None
        if resume is not None and resume[0] == epoch:
            order = order[resume[1] :]
        return iter([(int(i), epoch) for i in order])


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch through Lightning's stateful-loader interface:
    its state is the training loop's position, `position()` = (epoch, batches done in it), which
    Lightning stores in the checkpoint and gives back on resume, where the `EpochSampler` leaves
    out the batches already done."""

    def __init__(self, *args, position: Callable[[], tuple[int, int]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict:
        epoch, batches = self.position() if self.position is not None else (0, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batches"):
            self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)


# ---- reading ---------------------------------------------------------------------------------
def _span(start: int, size: int, extent: int) -> tuple[int, int, int, int, int]:
    """Along one axis: the scene range [lo, hi) to read for pixels [start, start + size) with
    reflect padding, the padding (before, after) and where the tile starts in the padded read.

    The range also covers the pixels the reflection mirrors, so np.pad on it equals np.pad on
    the whole scene."""
    before, after = max(0, -start), max(0, start + size - extent)
    lo = max(0, min(start, extent - 1 - after))
    hi = min(extent, max(start + size, before + 1))
    return lo, hi, before, after, start - lo + before


def read_reflect(scene: Scene, row: int, col: int, size: int, date: int = 0) -> np.ndarray:
    """C x size x size pixels at top-left (row, col), reflect-padded where the window leaves
    the scene; only the window (and what it mirrors) is read."""
    r0, r1, top, bottom, r_off = _span(row, size, scene.height)
    c0, c1, left, right, c_off = _span(col, size, scene.width)
    pixels = scene.read(Window(r0, c0, r1 - r0, c1 - c0), date)
    if top or bottom or left or right:
        pixels = np.pad(pixels, ((0, 0), (top, bottom), (left, right)), mode="reflect")
    return pixels[:, r_off : r_off + size, c_off : c_off + size]


# ---- drawing ---------------------------------------------------------------------------------
def neighbour_offset(
    rng: np.random.Generator, row: int, col: int, size: int, height: int, width: int, radius: int
) -> tuple[int, int]:
    """(dy, dx) in pixels, each uniform over [-radius, radius] restricted so that the
    neighbour's centre stays inside the scene (the tile then overhangs by at most half)."""
    half = size // 2

    def draw(start: int, extent: int) -> int:
        low = max(-radius, -half - start)
        high = min(radius, extent - size + half - start)
        return int(rng.integers(low, high + 1))

    return draw(row, height), draw(col, width)


def draw_dates(rng: np.random.Generator, count: int) -> tuple[int, int]:
    """An anchor date and a different other date, each uniform."""
    anchor = int(rng.integers(count))
    other = int(rng.integers(count - 1))
    return anchor, other + (other >= anchor)


# ---- settings -> pixels ----------------------------------------------------------------------
def _check_units(units: str, key: str) -> None:
    if units not in UNITS:
        raise DataError(f"{key}={units!r}: choose px (pixels) or m (metres)")


def _refusal(scene: Scene, key: str, units_key: str, problem: str, fix: str) -> DataError:
    """The DataError for `key` in metres on a scene whose pixels have no size in metres: it names
    the scene (and its files) and the fixes, pixels or `fix`."""
    paths = getattr(scene, "paths", ())
    files = f" ({', '.join(paths)})" if paths else ""
    return DataError(
        f"{key} is in metres but scene {scene.name!r}{files} {problem}: give {key} in pixels "
        f"({units_key}=px) or {fix}"
    )


def _metres_per_unit(crs: str) -> float | None:
    """Metres per map unit of a projected CRS (1 for metres, 0.3048006096 for US survey feet);
    None for a geographic CRS, one without a linear unit, or one rasterio cannot read."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return float(CRS.from_string(crs).linear_units_factor[1])
    except CRSError:
        return None


def _is_geographic(crs: str) -> bool:
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return bool(CRS.from_string(crs).is_geographic)
    except CRSError:
        return False


def _metres_per_pixel(scene: Scene, key: str, units_key: str) -> float:
    """The side of the scene's pixels in metres: their true size in map units (`pixel_sizes`, a
    rotated grid's too) times the CRS's metres per unit. DataError naming the scene and the fix
    when the pixels have no size in metres, or are not square (tiles and radii are square)."""
    if scene.transform is None:
        problem = "has no georeference, so its pixel size is unknown"
        raise _refusal(scene, key, units_key, problem, GEOREFERENCE_FIX)
    width, height = pixel_sizes(scene.transform)
    if scene.crs is None:
        problem = f"has no CRS, so the unit of its pixel size {width:g} is unknown"
        raise _refusal(scene, key, units_key, problem, CRS_FIX)
    metres = _metres_per_unit(scene.crs)
    if metres is None:
        problem = (
            f"is in a geographic CRS ({scene.crs}), its pixel size {width:g} is in degrees"
            if _is_geographic(scene.crs)
            else f"has a CRS without a linear unit ({scene.crs})"
        )
        raise _refusal(scene, key, units_key, problem, REPROJECT_FIX)
    if not math.isclose(width, height, rel_tol=1e-6):
        problem = (
            f"has non-square pixels ({width * metres:g} x {height * metres:g} m), but tiles and the "
            "neighbourhood are square in pixels"
        )
        raise _refusal(scene, key, units_key, problem, SQUARE_FIX)
    return width * metres


def neighbour_radii(scenes: Sequence[Scene], radius: float, units: str) -> tuple[int, ...]:
    """The neighbourhood D in whole pixels for each scene (rounded down, so a neighbour is never
    further than D); metres are converted with each scene's pixel size in metres."""
    _check_units(units, "data.neighbor_units")
    radii = []
    for scene in scenes:
        pixel = 1.0
        if units == "m":
            pixel = _metres_per_pixel(scene, "data.neighbor_radius", "data.neighbor_units")
        pixels = radius / pixel
        if pixels < 1:
            where = f" on scene {scene.name!r} ({pixel:g} m pixels)" if units == "m" else ""
            raise DataError(
                f"data.neighbor_radius={radius:g} {units} is less than one pixel{where}: the neighbour "
                f"could only be the anchor itself; set data.neighbor_radius to at least "
                f"{pixel:g} {units} (SauMoCo uses 100 px)"
            )
        radii.append(math.floor(pixels + 1e-9))
    return tuple(radii)


def tile_pixels(scenes: Sequence[Scene], value: int | float, units: str, key: str) -> int:
    """A tile size or stride in pixels: the same for every scene, since tiles must stack; metres
    are converted with each scene's pixel size in metres and rounded to the nearest pixel."""
    _check_units(units, "data.tile_units")
    if units == "px":
        return int(value)
    sizes = {scene.name: round(value / _metres_per_pixel(scene, key, "data.tile_units")) for scene in scenes}
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{name}: {px} px" for name, px in sizes.items())
        raise DataError(
            f"{key}={value:g} m gives different pixel sizes per scene ({listing}); tiles must stack "
            "in a batch: resample the scenes to one resolution or give the size in pixels "
            "(data.tile_units=px)"
        )
    return next(iter(sizes.values()))


def check_multi_date(scenes: Sequence[Scene]) -> None:
    """DataError when a scene has a single date and so no other date to pair with."""
    single = [scene.name for scene in scenes if len(scene.dates) < 2]
    if single:
        listed = ", ".join(map(repr, single[:5])) + (f" (+{len(single) - 5} more)" if len(single) > 5 else "")
        raise DataError(
            f"this data has a single date per scene: {listed}; the method needs other_time (the same "
            "place at another date): use scenes with several dates (synthetic data with "
            "data.source.num_dates>=2, or aligned multi-date scenes) or a method without other_time"
        )
