"""GeoTIFF scenes read by window with rasterio, so a scene is never loaded whole.

Scenes come from the folder index (`rsssl.data.index`): one multi-band file, or one file per
band whose coarse bands are resampled to the finest grid on every windowed read, so a window of
the fine grid reads the matching window of each coarse band. Resampling (`data.resampling`) is
bilinear over a coarse band's valid pixels only (nodata and NaN get no weight, so they never
blend into data), or nearest. Building a scene opens no file.

Memory does not grow with the folder: each process (a forked DataLoader worker too: GDAL
handles must not be shared across processes) keeps only the few files it read last open
(MAX_OPEN_FILES, or a scene's band files), since an open file holds buffers of a few blocks;
reopening costs ~0.6 ms against ~7 ms to decode a tile's block. GDAL's block cache is capped
at GDAL_CACHE_MB unless the environment sets GDAL_CACHEMAX: GDAL's default (5 % of RAM per
process) would fill with the blocks of every scene read.

Validity: a pixel of a file holds data when any of its bands differs from the nodata value
(and, for float pixels, is not NaN) and its alpha bands and GDAL per-dataset mask (internal or
``.msk``), where it has them, are non-zero there; alpha and mask bands are never data bands
(an RGBA file has three bands). A pixel of a scene, when every one of its files holds data
there, each judged at its own resolution (a coarse band's collar pixel makes the fine pixels in
it invalid). The nodata value is the files' nodata tag, else the `nodata` argument, else 0 for
unsigned integer pixels (the usual collar of Landsat/Sentinel scenes).

Band names (`rsssl.data.bands`): the files' own names (descriptions, ``_B<n>`` suffixes),
else those of the band preset, else b1..bN, always canonical (``red``, ``nir``, ...). Band
numbers are read through the preset, else through the sensor the file names identify
(``LC08_...``, ``T33UUP_...``); of an unknown sensor they stay as written.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.env import set_gdal_config
from rasterio.errors import RasterioError
from rasterio.windows import Window as RioWindow

from rsssl.data.bands import band_positions, name_bands, sensor_preset
from rsssl.data.index import (
    IDENTITY,
    FileInfo,
    SceneRecord,
    cached_array,
    differing_values,
    file_record,
    finest_common_grid,
    grid_bounds,
    index_folder,
    listing,
    open_raster,
    parse_date,
    read_file_info,
)
from rsssl.data.scene import (
    DataError,
    Scene,
    UnreadableFile,
    Window,
    check_unreadable_policy,
    readable_scenes,
    report_unreadable,
)

MAX_OPEN_FILES = 4  # per process, at least; each open file holds ~8 MB of buffers (512^2-px 4-band blocks)
GDAL_CACHE_MB = 64
OVERVIEW_STRIP = 512  # rows per read of a validity overview
VALIDITY_VERSION = 4  # of cached validity overviews; 2: every file must hold data; 3: alpha, masks; 4: Inf
RESAMPLING = ("bilinear", "nearest")  # data.resampling: how bands coarser than the scene grid are read
_handles: OrderedDict[tuple[str, int, tuple[int, ...], bool], rasterio.DatasetReader] = OrderedDict()
_handles_pid: int | None = None


def _dataset(info: FileInfo, keep: int) -> rasterio.DatasetReader:
    """This process's open handle of a file; the least recently used beyond `keep` handles close.

    Handles are keyed by path, modification time and masks, so a rewritten file, or one given a
    ``.msk`` mask since, is opened anew.
    """
    global _handles_pid
    if _handles_pid != os.getpid():  # first read of this process, e.g. of a forked worker
        _handles.clear()  # the parent's handles
        _handles_pid = os.getpid()
        if "GDAL_CACHEMAX" not in os.environ:
            set_gdal_config("GDAL_CACHEMAX", GDAL_CACHE_MB * 2**20)
    key = (info.path, info.mtime_ns, info.alpha, info.masked)
    handle = _handles.pop(key, None)
    _handles[key] = handle if handle is not None else open_raster(info.path)
    while len(_handles) > keep:
        _handles.popitem(last=False)[1].close()
    return _handles[key]


@functools.lru_cache(maxsize=16)
def _date_regex(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise DataError(f"data.date_pattern {pattern!r} is not a regular expression ({err}); fix it") from err


def _scene_date(record: SceneRecord, pattern: str | None) -> str:
    """The record's date; with `pattern`, the date its group 'date' (else its match) finds in the name."""
    if pattern is None:
        return record.date
    regex = _date_regex(pattern)
    file_name = Path(record.files[0].path).name
    match = regex.search(file_name)
    text = "" if match is None else match.group("date" if "date" in regex.groupindex else 0)
    date = parse_date(text)
    if not date:
        raise DataError(
            f"{record.files[0].path}: data.date_pattern {pattern!r} finds no date in the file name "
            f"{file_name!r}; rename the file, or fix data.date_pattern (a regular expression whose group "
            "'date', else whole match, is YYYYMMDD, YYYY-MM-DD or YYYY:MM:DD)"
        )
    return date


def _validity(pixels: np.ndarray, nodata: float | None) -> np.ndarray:
    """h x w: True where any band of C x h x w `pixels` holds data (not nodata, finite)."""
    holds = np.ones(pixels.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        holds &= pixels != nodata
    if pixels.dtype.kind == "f":
        holds &= np.isfinite(pixels)  # NaN and ±Inf are no data
    return holds.any(axis=0)


def _bilinear_taps(positions: np.ndarray, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two pixels bilinear weights at each of `positions` along an axis of `size` pixels
    (pixel i spans [i, i + 1)), as (index, weight); a pixel past the edge weighs 0."""
    below = np.floor(positions - 0.5).astype(np.int64)
    fraction = positions - 0.5 - below
    taps = []
    for index, weight in ((below, 1.0 - fraction), (below + 1, fraction)):
        inside = (index >= 0) & (index < size)
        taps.append((np.clip(index, 0, size - 1), np.where(inside, weight, 0.0)))
    return taps


def masked_bilinear(pixels: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """C x len(rows) x len(cols) float64 values of C x H x W `pixels` at the fractional `rows`
    and `cols` (pixel i spans [i, i + 1)), bilinear over the neighbours where `valid` (H x W).

    Nodata and NaN never enter a value: their weight is 0 and the others are renormalised. A
    position in an invalid pixel takes that pixel's value, so the collar stays nodata.
    """
    total = np.zeros((len(rows), len(cols)))
    weighted = np.zeros((pixels.shape[0], len(rows), len(cols)))
    data = np.where(valid, pixels, 0).astype(np.float64)
    for row_index, row_weight in _bilinear_taps(rows, pixels.shape[1]):
        for col_index, col_weight in _bilinear_taps(cols, pixels.shape[2]):
            weight = np.outer(row_weight, col_weight) * valid[np.ix_(row_index, col_index)]
            weighted += weight * data[:, row_index][:, :, col_index]
            total += weight
    nearest = np.ix_(_nearest(rows, pixels.shape[1]), _nearest(cols, pixels.shape[2]))
    inside = valid[nearest]  # the pixel a position falls in weighs at least 1/4, so total > 0
    return np.where(inside, weighted / np.where(inside, total, 1.0), pixels[:, nearest[0], nearest[1]])


def _nearest(positions: np.ndarray, size: int) -> np.ndarray:
    """The pixel each of `positions` falls in, along an axis of `size` pixels."""
    return np.clip(np.floor(positions).astype(np.int64), 0, size - 1)


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """`values` as `dtype`, rounded to the nearest integer for integer pixels."""
    return (np.rint(values) if dtype.kind in "iu" else values).astype(dtype)


def _support(positions: np.ndarray, size: int) -> tuple[int, int]:
    """The pixels [start, stop) that bilinear weights at `positions` along an axis of `size`."""
    return max(int(np.floor(positions.min() - 0.5)), 0), min(int(np.floor(positions.max() - 0.5)) + 2, size)


def _centres(start: float, length: float, count: int) -> np.ndarray:
    """Centres of `count` equal cells that split [start, start + length)."""
    return start + (np.arange(count) + 0.5) * (length / count)


def _check_resampling(method: str) -> str:
    if method not in RESAMPLING:
        raise DataError(
            f"data.resampling={method!r} is not a resampling method: choose {' or '.join(RESAMPLING)} "
            "(how bands coarser than the scene grid are read onto it)"
        )
    return method


class GeoTiffScene(Scene):
    """One indexed scene at one date, read by window; opens no file until the first read."""

    def __init__(
        self,
        record: SceneRecord,
        nodata: float | None = None,
        band_preset: str | None = None,
        date_pattern: str | None = None,
        overview_dir: Path | None = None,
        resampling: str = "bilinear",
    ) -> None:
        self.record = record
        self.resampling = _check_resampling(resampling)
        self.name = record.name
        self.height, self.width = record.height, record.width
        self.dtype = np.dtype(record.dtype)
        self.crs = record.crs
        georeferenced = record.crs is not None or record.transform != IDENTITY
        self.transform = record.transform if georeferenced else None
        if record.nodata is not None:
            nodata = record.nodata
        elif nodata is None and self.dtype.kind == "u":
            nodata = 0
        self.nodata = float(nodata) if nodata is not None else None
        where = f"scene {record.name!r} ({listing(list(record.paths))})"
        sensor = sensor_preset(Path(path).name for path in record.paths)
        self.bands = name_bands(record.band_names, band_preset, where, sensor)
        self.naming = band_preset or sensor  # reads band numbers such as B4 in data.bands
        self.layers = record.layers
        self.dates = (_scene_date(record, date_pattern),)
        self.overview_dir = overview_dir

    @classmethod
    def from_file(
        cls, path: str | Path, nodata: float | None = None, name: str | None = None, **kwargs: Any
    ) -> GeoTiffScene:
        """One GeoTIFF file as a scene (opens it once for its header)."""
        return cls(file_record(read_file_info(path), name or Path(path).stem), nodata, **kwargs)

    @property
    def paths(self) -> tuple[str, ...]:
        """The files the scene's bands are read from."""
        return tuple(dict.fromkeys(self.record.files[f].path for f, _ in self.layers))

    def select(self, positions: Sequence[int], names: Sequence[str]) -> GeoTiffScene:
        """The same scene with only the bands at `positions`, in that order, named `names`."""
        selected = copy.copy(self)
        selected.layers = tuple(self.layers[p] for p in positions)
        selected.bands = tuple(names)
        files = sorted({number for number, _ in selected.layers})
        if len(files) < len(self.record.files):  # per-band files: the grid of the kept bands only
            transform, height, width = finest_common_grid([self.record.files[f] for f in files])
            bounds = grid_bounds(transform, height, width)
            selected.record = dataclasses.replace(
                self.record, transform=transform, height=height, width=width, bounds=bounds
            )
            selected.height, selected.width = height, width
            selected.transform = transform if self.transform is not None else None
        return selected

    def _reading(self, info: FileInfo, read: Callable[[rasterio.DatasetReader], np.ndarray]) -> np.ndarray:
        """`read` of the file's open handle; DataError naming the file when GDAL cannot read it."""
        try:
            return read(_dataset(info, max(MAX_OPEN_FILES, len(self.record.files))))
        except RasterioError as err:
            cause = err.__cause__ or err
            raise UnreadableFile(
                f"reading {info.path} failed ({cause}): the file looks truncated or corrupt; "
                "re-export it (e.g. gdal_translate) or remove it from the folder, or set "
                "data.unreadable=skip to train without it",
                info.path,
                str(cause),
            ) from err

    def _read(
        self,
        info: FileInfo,
        indexes: list[int],
        window: RioWindow,
        shape: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Bands `indexes` of a file over `window` of its pixels (as len(indexes) x `shape`, nearest)."""
        shape = shape or (round(window.height), round(window.width))
        return self._reading(
            info,
            lambda ds: ds.read(
                indexes=indexes,
                window=window,
                out_shape=(len(indexes), *shape),
                out_dtype=self.dtype,
                resampling=Resampling.nearest,
            ),
        )

    def _read_mask(self, info: FileInfo, window: RioWindow, shape: tuple[int, int]) -> np.ndarray:
        """The file's GDAL per-dataset mask (0 where it has no data) over `window` as `shape`, nearest."""
        return self._reading(
            info,
            lambda ds: ds.read_masks(
                info.bands[0], window=window, out_shape=shape, resampling=Resampling.nearest
            ),
        )

    def _read_with_validity(
        self, info: FileInfo, indexes: list[int], window: RioWindow, shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bands `indexes` of a file over `window` (as `_read`) and, h x w, where the file holds
        data there: some band is not nodata, every alpha band is non-zero (read with the bands, so
        each block is decoded once) and so is the per-dataset mask when the file has one."""
        pixels = self._read(info, [*indexes, *info.alpha], window, shape)
        data, alpha = pixels[: len(indexes)], pixels[len(indexes) :]
        valid = _validity(data, self.nodata) & (alpha != 0).all(axis=0)
        if info.masked:
            valid &= self._read_mask(info, window, data.shape[1:]) != 0
        return data, valid

    def _source_window(self, info: FileInfo, window: Window) -> RioWindow:
        """`window` of the scene grid in the pixels of `info` (fractional for a coarser file)."""
        w = window
        if info.transform == self.record.transform:
            return RioWindow(w.col, w.row, w.width, w.height)
        ga, _, gc, _, ge, gf = self.record.transform
        fa, _, fc, _, fe, ff = info.transform
        col = max((gc + ga * w.col - fc) / fa, 0.0)
        row = max((gf + ge * w.row - ff) / fe, 0.0)
        width = min(w.width * ga / fa, info.width - col)
        height = min(w.height * ge / fe, info.height - row)
        return RioWindow(col, row, width, height)

    def _files(self) -> dict[int, list[tuple[int, int]]]:
        """Per file number, the (position in the scene, band index in the file) of its bands."""
        by_file: dict[int, list[tuple[int, int]]] = {}
        for position, (number, index) in enumerate(self.layers):
            by_file.setdefault(number, []).append((position, index))
        return by_file

    def _read_file(self, number: int, indexes: list[int], window: Window) -> np.ndarray:
        """Bands `indexes` of file `number` over `window` of the scene grid, resampled onto it.

        A file on the scene grid is read as is. A coarser one is read with `self.resampling`:
        nearest, or bilinear over its valid pixels only (`masked_bilinear`), so its nodata and
        NaN never blend into data.
        """
        info = self.record.files[number]
        source = self._source_window(info, window)
        shape = (window.height, window.width)
        if info.transform == self.record.transform or self.resampling == "nearest":
            return self._read(info, indexes, source, shape)
        rows = _centres(source.row_off, source.height, shape[0])
        cols = _centres(source.col_off, source.width, shape[1])
        row0, row1 = _support(rows, info.height)
        col0, col1 = _support(cols, info.width)
        pixels, valid = self._read_with_validity(
            info, indexes, RioWindow(col0, row0, col1 - col0, row1 - row0)
        )
        values = masked_bilinear(pixels, valid, rows - row0, cols - col0)
        return _cast(values, self.dtype)

    def _valid(self, window: Window, shape: tuple[int, int]) -> np.ndarray:
        """Validity over `window` of the scene grid as `shape` (nearest): a pixel holds data only
        where every file does at its own resolution (a file: where any of its bands does, inside
        its alpha and mask)."""
        valid = np.ones(shape, dtype=bool)
        for number, items in self._files().items():
            info = self.record.files[number]
            source = self._source_window(info, window)
            valid &= self._read_with_validity(info, [i for _, i in items], source, shape)[1]
        return valid

    def _check(self, window: Window) -> None:
        """ValueError for a window that is empty or not fully inside the scene (a caller bug)."""
        w = window
        rows_ok = w.row >= 0 and w.height > 0 and w.row + w.height <= self.height
        cols_ok = w.col >= 0 and w.width > 0 and w.col + w.width <= self.width
        if not (rows_ok and cols_ok):
            raise ValueError(
                f"window {w} is outside scene {self.name!r} of {self.height} x {self.width} pixels"
            )

    def read(self, window: Window, date: int = 0) -> np.ndarray:
        if date != 0:
            raise IndexError(f"scene {self.name!r} has one date; got date index {date}")
        self._check(window)
        files = self._files()
        if len(files) == 1:
            ((number, items),) = files.items()
            return self._read_file(number, [i for _, i in items], window)
        out = np.empty((len(self.layers), window.height, window.width), dtype=self.dtype)
        for number, items in files.items():
            out[[p for p, _ in items]] = self._read_file(number, [i for _, i in items], window)
        return out

    def read_valid(self, window: Window) -> np.ndarray:
        self._check(window)
        return self._valid(window, (window.height, window.width))

    def check_readable(self) -> None:
        """Decode every band of every file once, in strips of rows: UnreadableFile naming the first
        file that fails. Remembered beside the folder index (the same files pass again unread)."""

        def compute() -> np.ndarray:
            for number, items in self._files().items():
                info = self.record.files[number]
                for row in range(0, info.height, OVERVIEW_STRIP):
                    strip = RioWindow(0, row, info.width, min(OVERVIEW_STRIP, info.height - row))
                    self._read(info, [i for _, i in items], strip)
            return np.ones(1, dtype=bool)

        if self.overview_dir is None:
            compute()
            return
        key = repr(("readable", self.record.paths, self.layers)).encode()
        cached_array(self.overview_dir / f"readable-{hashlib.sha256(key).hexdigest()[:16]}.npz", compute)

    def valid_overview(self, factor: int) -> np.ndarray:
        """Validity on every `factor`-th pixel (nearest), read in strips of rows to keep memory small.

        A strip reads all bands of a file at once, so each compressed block is decoded once.
        Cached next to the folder index when the scene has an overview dir.
        """
        if factor < 1:
            raise ValueError(f"overview factor must be >= 1, got {factor}")
        strip = factor * max(1, OVERVIEW_STRIP // factor)
        width = -(-self.width // factor)

        def compute() -> np.ndarray:
            parts = []
            for row in range(0, self.height, strip):
                height = min(strip, self.height - row)
                parts.append(self._valid(Window(row, 0, height, self.width), (-(-height // factor), width)))
            return np.concatenate(parts)

        if self.overview_dir is None:
            return compute()
        key = repr((VALIDITY_VERSION, self.record.paths, self.layers, factor, self.nodata)).encode()
        return cached_array(self.overview_dir / f"{hashlib.sha256(key).hexdigest()[:16]}.npz", compute)


def _check_same(
    scenes: list[GeoTiffScene], key: Callable[[GeoTiffScene], object], what: str, fix: str
) -> None:
    """DataError listing each scene's files by value of `key` when the scenes disagree on it."""
    values = differing_values((key(scene), scene.paths) for scene in scenes)
    if values:
        raise DataError(f"GeoTIFF scenes have different {what} ({values}); {fix}")


def load_geotiff_folder(
    root: str | Path,
    nodata: float | None = None,
    band_preset: str | None = None,
    date_pattern: str | None = None,
    cache_dir: str | Path | None = None,
    resampling: str = "bilinear",
    unreadable: str = "fail",
) -> list[GeoTiffScene]:
    """Every scene under `root` (recursive, sorted), checked to share band count and dtype.

    With `cache_dir` the folder's index and validity overviews are cached there. `resampling`
    (bilinear | nearest) reads bands coarser than a scene's grid. `unreadable` says what a scene
    with a file that cannot be read does: fail (the default) names every such file whose header
    is broken, and a file damaged further in fails when the tiles are indexed; skip decodes every
    file once (remembered with the cache) and leaves out, with one warning, the scenes that fail.
    """
    check_unreadable_policy(unreadable)
    index = index_folder(root, cache_dir)
    scenes = [
        GeoTiffScene(r, nodata, band_preset, date_pattern, index.overview_dir, resampling)
        for r in index.scenes
    ]
    failures = [
        UnreadableFile(f"cannot open {path} as a GeoTIFF ({reason})", path, reason)
        for _, path, reason in index.unreadable
    ]
    if unreadable == "skip":
        scenes, damaged = readable_scenes(scenes)
        failures += damaged
    report_unreadable(str(root), failures, len(scenes) + len(failures), unreadable)
    _check_same(
        scenes,
        lambda s: s.num_bands,
        "band counts",
        "give one sensor per folder, or select bands by name with data.bands=[...]",
    )
    _check_same(
        scenes,
        lambda s: s.dtype,
        "dtypes",
        "give one sensor/product per folder, or convert the files to one dtype (gdal_translate -ot UInt16)",
    )
    return scenes


def _check_georeference(scenes: list[GeoTiffScene]) -> None:
    """DataError naming the CRS-less files when others are georeferenced (their positions cannot mix)."""
    bare = [p for s in scenes if s.crs is None for p in s.paths]
    if bare and len(bare) < sum(len(s.paths) for s in scenes):
        raise DataError(
            f"{listing(bare)}: no CRS, but the other GeoTIFF scenes are georeferenced; georeference it "
            "(gdal_edit.py -a_srs EPSG:<code> -a_ullr <ulx> <uly> <lrx> <lry> FILE) or move it to a folder "
            "of its own and use that as a separate data source"
        )


def load_geotiff_folders(
    roots: Sequence[str | Path],
    nodata: float | None = None,
    band_preset: str | Sequence[str | None] | None = None,
    date_pattern: str | None = None,
    cache_dir: str | Path | None = None,
    bands: Sequence[str] | None = None,
    resampling: str = "bilinear",
    unreadable: str = "fail",
) -> list[GeoTiffScene]:
    """The scenes of several folders (named ``<folder>/<scene>`` when there are several).

    `band_preset` is one preset for every folder or a list aligned with `roots`. `bands` keeps
    only those bands, matched by canonical name (``red`` finds Landsat-8 ``B4``), in that order
    and under those names, so folders of different sensors share their common bands. Pixels of
    folders with different dtypes are read as the wider one (uint8 and uint16 as uint16).
    """
    roots = [Path(r) for r in roots]
    single = band_preset is None or isinstance(band_preset, str)
    presets = [band_preset] * len(roots) if single else list(band_preset)
    if len(presets) != len(roots):
        raise DataError(
            f"data.band_preset lists {len(presets)} presets for {len(roots)} folders in data.root; "
            "give one preset per folder (null for none), or a single preset for all"
        )
    prefixes = (
        [r.name for r in roots] if len({r.name for r in roots}) == len(roots) else list(map(str, roots))
    )
    scenes: list[GeoTiffScene] = []
    for root, preset, prefix in zip(roots, presets, prefixes):
        folder = load_geotiff_folder(root, nodata, preset, date_pattern, cache_dir, resampling, unreadable)
        for scene in folder:
            if len(roots) > 1:
                scene.name = f"{prefix}/{scene.name}"
            if bands:
                where = f"scene {scene.name!r} ({listing(list(scene.paths))})"
                scene = scene.select(band_positions(scene.bands, bands, scene.naming, where), bands)
            scenes.append(scene)
    _check_georeference(scenes)
    dtype = np.result_type(*{s.dtype for s in scenes})
    for scene in scenes:
        scene.dtype = dtype
    return scenes
