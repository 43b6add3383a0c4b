"""GeoTIFF scenes read by window with rasterio, so a scene is never loaded whole.

`GeoTiffScene` reads its metadata once at construction and keeps no open file: the rasterio
handle is opened on first read and re-opened in a forked DataLoader worker (GDAL handles must
not be shared across processes), and it is dropped when the scene is pickled.

Validity: a pixel holds data when any band differs from the nodata value (and, for float
pixels, is not NaN). The nodata value is the file's nodata tag, else the `nodata` argument,
else 0 for unsigned integer pixels (the usual collar of Landsat/Sentinel scenes).
"""

from __future__ import annotations

import datetime
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window as RioWindow

from rsssl.data.scene import DataError, Scene, Window

GEOTIFF_SUFFIXES = (".tif", ".tiff")
NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
DATE = re.compile(r"(?<!\d)(\d{4})([-:]?)(\d{2})\2(\d{2})(?!\d)")
YEARS = range(1900, 2101)
MAX_LISTED = 10


def parse_date(text: str) -> str:
    """First valid calendar date written as YYYYMMDD, YYYY-MM-DD or YYYY:MM:DD in `text`, ISO; "" if none."""
    for match in DATE.finditer(text):
        year, month, day = int(match.group(1)), int(match.group(3)), int(match.group(4))
        if year not in YEARS:
            continue
        try:
            return datetime.date(year, month, day).isoformat()
        except ValueError:
            continue
    return ""


def _open(path: Path) -> rasterio.DatasetReader:
    """Open read-only; a raster without georeference is fine (pixel coordinates are used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _pixel_dtype(path: Path, dtypes: tuple[str, ...]) -> np.dtype:
    """The dtype reads return: uint8/uint16 as stored, any float as float32."""
    if len(set(dtypes)) > 1:
        raise DataError(
            f"{path}: bands have different dtypes {sorted(set(dtypes))}; re-export it with one dtype "
            "(e.g. gdal_translate -ot UInt16)"
        )
    dtype = np.dtype(dtypes[0])
    if dtype in NATIVE_DTYPES:
        return dtype
    if dtype.kind == "f":
        return np.dtype(np.float32)
    raise DataError(
        f"{path}: pixels are {dtype}; rsssl reads uint8, uint16 or float GeoTIFFs. Convert it, e.g. "
        "gdal_translate -ot UInt16 (offset negative values first) or -ot Float32"
    )


def _validity(pixels: np.ndarray, nodata: float | None) -> np.ndarray:
    """h x w: True where any band of C x h x w `pixels` holds data."""
    holds = np.ones(pixels.shape, dtype=bool)
    if nodata is not None and not np.isnan(nodata):
        holds &= pixels != nodata
    if pixels.dtype.kind == "f":
        holds &= ~np.isnan(pixels)
    return holds.any(axis=0)


class GeoTiffScene(Scene):
    """One GeoTIFF file as a scene at one date, read by window."""

    def __init__(self, path: str | Path, nodata: float | None = None, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name if name is not None else self.path.stem
        try:
            with _open(self.path) as ds:
                self._read_metadata(ds, nodata)
        except RasterioError as err:
            raise DataError(
                f"cannot open {self.path} as a GeoTIFF ({err}); re-export it as a GeoTIFF "
                "(e.g. gdal_translate) or remove it from the folder"
            ) from err
        self._ds: rasterio.DatasetReader | None = None
        self._pid: int | None = None

    def _read_metadata(self, ds: rasterio.DatasetReader, nodata: float | None) -> None:
        self.height, self.width = ds.height, ds.width
        self.dtype = _pixel_dtype(self.path, ds.dtypes)
        self.bands = tuple(desc or f"b{i + 1}" for i, desc in enumerate(ds.descriptions))
        self.crs = ds.crs.to_string() if ds.crs else None
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        self.transform = tuple(float(v) for v in tuple(ds.transform)[:6]) if georeferenced else None
        if ds.nodata is not None:
            nodata = ds.nodata
        elif nodata is None and self.dtype.kind == "u":
            nodata = 0
        self.nodata = float(nodata) if nodata is not None else None
        date = parse_date(self.path.name) or parse_date(ds.tags().get("TIFFTAG_DATETIME", ""))
        self.dates = (date,)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ds"] = None
        state["_pid"] = None
        return state

    def _dataset(self) -> rasterio.DatasetReader:
        """The open handle of this process (opened now on first use or after a fork)."""
        if self._ds is None or self._pid != os.getpid():
            self._ds = _open(self.path)
            self._pid = os.getpid()
        return self._ds

    def _read(self, **kwargs: Any) -> np.ndarray:
        """`DatasetReader.read` with rasterio failures turned into a DataError naming the file."""
        try:
            return self._dataset().read(**kwargs)
        except RasterioError as err:
            cause = err.__cause__ or err
            raise DataError(
                f"reading {self.path} failed ({cause}): the file looks truncated or corrupt; "
                "re-export it (e.g. gdal_translate) or remove it from the folder"
            ) from err

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
        rio_window = RioWindow(window.col, window.row, window.width, window.height)
        return self._read(window=rio_window, out_dtype=self.dtype)

    def read_valid(self, window: Window) -> np.ndarray:
        return _validity(self.read(window), self.nodata)

    def valid_overview(self, factor: int) -> np.ndarray:
        """Validity on every `factor`-th pixel (nearest), one band at a time to keep memory small."""
        if factor < 1:
            raise ValueError(f"overview factor must be >= 1, got {factor}")
        shape = (-(-self.height // factor), -(-self.width // factor))
        valid = np.zeros(shape, dtype=bool)
        for index in range(1, self.num_bands + 1):
            band = self._read(indexes=[index], out_shape=(1, *shape), resampling=Resampling.nearest)
            valid |= _validity(band, self.nodata)
        return valid


def _check_same(
    scenes: list[GeoTiffScene], key: Callable[[GeoTiffScene], object], what: str, fix: str
) -> None:
    """DataError listing each file's value of `key` when the scenes disagree on it."""
    groups: dict[str, list[str]] = {}
    for scene in scenes:
        groups.setdefault(str(key(scene)), []).append(str(scene.path))
    if len(groups) < 2:
        return
    listing = "; ".join(
        f"{value}: {', '.join(paths[:MAX_LISTED])}"
        + (f" (+{len(paths) - MAX_LISTED} more)" if len(paths) > MAX_LISTED else "")
        for value, paths in groups.items()
    )
    raise DataError(f"GeoTIFF scenes have different {what} ({listing}); {fix}")


def load_geotiff_folder(root: str | Path, nodata: float | None = None) -> list[GeoTiffScene]:
    """Every GeoTIFF under `root` (recursive, sorted), checked to share band count and dtype."""
    root = Path(root)
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"GeoTIFF root {root} {state}; point data.root at a folder of GeoTIFF scenes")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in GEOTIFF_SUFFIXES)
    if not paths:
        raise DataError(
            f"no GeoTIFF under {root} (looked for {', '.join(GEOTIFF_SUFFIXES)} in any letter case, "
            "recursively); point data.root at a folder of scenes"
        )
    scenes = [GeoTiffScene(p, nodata, name=p.relative_to(root).with_suffix("").as_posix()) for p in paths]
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
