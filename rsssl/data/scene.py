"""The scene contract every data source implements.

A scene is one raster (possibly at several dates) that tiles are cut from. Sources differ in
where the pixels live (in memory for npz and synthetic data, on disk for GeoTIFF), but the
sampler and the datamodule only ever call the methods below, so every method sees the same
data whatever the source. Reads return the native unsigned integer dtype: no float work on
the CPU side.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the problem and how to fix it."""


class UnreadableFile(DataError):
    """A file whose bytes cannot be decoded (truncated, corrupt, not the format its name says).

    `path` names the file and `reason` is what the reader said; the message adds the fix."""

    def __init__(self, message: str, path: str | Path, reason: str) -> None:
        super().__init__(message)
        self.path, self.reason = str(path), reason


#: `data.unreadable`: what a folder source does with a scene whose files cannot be read
UNREADABLE_POLICIES = ("fail", "skip")
READ_STRIP = 512  # rows per read of `Scene.check_readable`
log = logging.getLogger(__name__)


def check_unreadable_policy(policy: str) -> str:
    """`policy` when it is one of `UNREADABLE_POLICIES`, else DataError naming them."""
    if policy not in UNREADABLE_POLICIES:
        raise DataError(f"data.unreadable={policy!r}: give one of {', '.join(UNREADABLE_POLICIES)}")
    return policy


def readable_scenes(scenes: Sequence[Scene]) -> tuple[list[Scene], list[UnreadableFile]]:
    """The scenes that read in full (`Scene.check_readable`), and the failure of each other one."""
    kept, failures = [], []
    for scene in scenes:
        try:
            scene.check_readable()
        except UnreadableFile as err:
            failures.append(err)
        else:
            kept.append(scene)
    return kept, failures


def report_unreadable(where: str, failures: Sequence[UnreadableFile], scenes: int, policy: str) -> None:
    """What `policy` does with the scenes of `where` that cannot be read (one failure each, of
    `scenes` in all): fail names every file and the fixes; skip warns once, with the count."""
    if not failures:
        return
    files = "; ".join(f"{f.path} ({f.reason})" for f in failures)
    if policy == "fail":
        raise DataError(
            f"{where}: {len(failures)} of {scenes} scenes cannot be read, the files look truncated or "
            f"corrupt: {files}. Re-export them (e.g. gdal_translate) or remove them from the folder, or "
            "set data.unreadable=skip to train on the others"
        )
    if len(failures) == scenes:
        raise DataError(f"{where}: every scene ({scenes}) cannot be read: {files}; re-export the files")
    log.warning(
        "%s: data.unreadable=skip: skipped %d of %d scenes that cannot be read: %s",
        where,
        len(failures),
        scenes,
        files,
    )


@dataclass(frozen=True)
class Window:
    """A pixel window: top-left (row, col) and size (height, width)."""

    row: int
    col: int
    height: int
    width: int


def pixel_sizes(transform: Sequence[float]) -> tuple[float, float]:
    """Width and height of a pixel of affine `transform` (a, b, c, d, e, f) in map units: the
    lengths of its column step (a, d) and row step (b, e), so a rotated grid's pixels keep their
    true size (|a| alone shrinks them by the cosine of the rotation)."""
    a, b, _, d, e, _ = transform
    return math.hypot(a, d), math.hypot(b, e)


class Scene(ABC):
    """One raster scene, readable by window, at one or more acquisition dates.

    Attributes every implementation sets:
      name: unique id of the scene inside its source.
      bands: band names, one per channel.
      height, width: pixel size.
      dtype: numpy dtype of the pixels (uint8 or uint16; float32 where a source allows it).
      dates: acquisition dates as ISO strings ("" when unknown); len(dates) >= 1.
      transform: affine (a, b, c, d, e, f) with x = c + a*col + b*row, y = f + d*col + e*row,
        or None when the scene has no georeference.
      crs: CRS string (e.g. "EPSG:32618") or None.
      class_names: names of the classes of the per-pixel mask, or None when unlabelled.
    """

    name: str
    bands: tuple[str, ...]
    height: int
    width: int
    dtype: np.dtype
    dates: tuple[str, ...] = ("",)
    transform: tuple[float, float, float, float, float, float] | None = None
    crs: str | None = None
    class_names: tuple[str, ...] | None = None

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @abstractmethod
    def read(self, window: Window, date: int = 0) -> np.ndarray:
        """Pixels of `window` at acquisition `date`: C x h x w, native dtype."""

    @abstractmethod
    def read_valid(self, window: Window) -> np.ndarray:
        """Boolean h x w: True where the pixel holds data (not nodata / collar)."""

    def read_mask(self, window: Window) -> np.ndarray | None:
        """Per-pixel class ids (uint8, h x w) or None when the scene is unlabelled."""
        return None

    @abstractmethod
    def valid_overview(self, factor: int) -> np.ndarray:
        """Boolean ceil(H/factor) x ceil(W/factor) map of valid data, cheap to compute.

        Used to choose tile positions without loading the whole scene.
        """

    def check_readable(self) -> None:
        """Read every pixel of every date once, in strips of rows: UnreadableFile where a file
        of the scene cannot be decoded (`data.unreadable=skip` leaves such scenes out)."""
        for date in range(len(self.dates)):
            for row in range(0, self.height, READ_STRIP):
                self.read(Window(row, 0, min(READ_STRIP, self.height - row), self.width), date)

    def pixel_to_map(self, row: float, col: float) -> tuple[float, float]:
        """Map coordinates (x, y) of a pixel position; pixel (col, row) when not georeferenced."""
        if self.transform is None:
            return float(col), float(row)
        a, b, c, d, e, f = self.transform
        return c + a * col + b * row, f + d * col + e * row

    @property
    def pixel_size(self) -> float | None:
        """Width of one pixel in map units (the CRS's: metres, US feet, degrees; see
        `pixel_sizes`), or None without a georeference."""
        if self.transform is None:
            return None
        return pixel_sizes(self.transform)[0]


class ArrayScene(Scene):
    """A scene held in memory: T x C x H x W unsigned integers (npz files, synthetic scenes).

    Workers share the arrays copy-on-write after fork and only slice them.
    """

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        bands: tuple[str, ...] | None = None,
        valid: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        dates: tuple[str, ...] | None = None,
        transform: tuple[float, ...] | None = None,
        crs: str | None = None,
        class_names: tuple[str, ...] | None = None,
    ) -> None:
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise DataError(f"scene {name!r}: expected T x C x H x W pixels, got shape {images.shape}")
        self.name = name
        self.images = images
        _, channels, self.height, self.width = images.shape
        self.bands = tuple(bands) if bands is not None else tuple(f"b{i + 1}" for i in range(channels))
        if len(self.bands) != channels:
            raise DataError(
                f"scene {name!r}: {len(self.bands)} band names for {channels} bands; give one name per band"
            )
        self.dtype = images.dtype
        self.valid = valid.astype(bool, copy=False) if valid is not None else None
        self.mask = mask
        self.dates = tuple(dates) if dates is not None else ("",) * images.shape[0]
        if len(self.dates) != images.shape[0]:
            raise DataError(f"scene {name!r}: {len(self.dates)} dates for {images.shape[0]} acquisitions")
        self.transform = tuple(float(v) for v in transform) if transform is not None else None
        self.crs = crs
        self.class_names = tuple(class_names) if class_names is not None else None

    def read(self, window: Window, date: int = 0) -> np.ndarray:
        w = window
        return self.images[date, :, w.row : w.row + w.height, w.col : w.col + w.width]

    def read_valid(self, window: Window) -> np.ndarray:
        w = window
        if self.valid is None:
            return np.ones((w.height, w.width), dtype=bool)
        return self.valid[w.row : w.row + w.height, w.col : w.col + w.width]

    def read_mask(self, window: Window) -> np.ndarray | None:
        if self.mask is None:
            return None
        w = window
        return self.mask[w.row : w.row + w.height, w.col : w.col + w.width]

    def valid_overview(self, factor: int) -> np.ndarray:
        if self.valid is None:
            return np.ones((-(-self.height // factor), -(-self.width // factor)), dtype=bool)
        return self.valid[::factor, ::factor]


class BandSubsetScene(Scene):
    """A view of `scene` with only the bands at `indices`, in that order (selection by name).

    Everything but the band axis is the underlying scene's; reads slice the selected planes, so
    scenes whose common bands sit at different positions still yield aligned tiles.
    """

    def __init__(self, scene: Scene, indices: Sequence[int]) -> None:
        self.source_scene = scene
        self.indices = list(indices)
        self.bands = tuple(scene.bands[i] for i in self.indices)
        for attr in ("name", "height", "width", "dtype", "dates", "transform", "crs", "class_names"):
            setattr(self, attr, getattr(scene, attr))

    def read(self, window: Window, date: int = 0) -> np.ndarray:
        return self.source_scene.read(window, date)[self.indices]

    def read_valid(self, window: Window) -> np.ndarray:
        return self.source_scene.read_valid(window)

    def read_mask(self, window: Window) -> np.ndarray | None:
        return self.source_scene.read_mask(window)

    def valid_overview(self, factor: int) -> np.ndarray:
        return self.source_scene.valid_overview(factor)
