"""torchgeo raster datasets as an rsssl source, so torchgeo users keep their data layout.

`TorchGeoSource` builds a torchgeo `RasterDataset` (any subclass: Sentinel2, Landsat8, ... or a
plain `RasterDataset` with `filename_glob`) over files already on disk, never downloading, and
exposes its index as rsssl scenes, so the tile index, statistics, datamodule and methods work
unchanged.

Scenes: the index rows (one per file, or per first-band file when bands are separate files)
are grouped by footprint on the dataset's CRS/resolution grid. Each footprint is one scene
whose dates are the time intervals of its rows (a Sentinel-2 tile seen twice is one scene at
two dates); `group_dates=False` makes each row its own one-date scene instead. A window read
is a torchgeo bounding-box query (`dataset[x, y, t]`), so torchgeo's reprojection,
resampling, per-band files and mosaicking of overlapping files all apply.

Bands: the dataset's `bands` (else the first file's band descriptions, else b1..bN), named
canonically through `rsssl.data.bands` like every scene (Sentinel-2 `B04` is `red`, a sensor's
ambiguous names such as Landsat `B4` through `band_preset`), so `data.bands` selects by those
names while `dataset_bands` tells torchgeo which bands (files) to read.

Pixels: torchgeo casts images to its `dtype`, float32, and so resamples them bilinearly. The
dataset is therefore built as a subclass of the chosen class whose `dtype` is the files' own
(uint16 travels as int32: torch has little uint16 support), so reads are the native
uint8/uint16 (float files stay float32) with no float work, and torchgeo resamples with
nearest neighbour: values are never interpolated, and a coarse query (`valid_overview`) picks
pixels like the GeoTIFF source's. Files of different dtypes are all read in the widest of
them (uint8 and uint16 files as uint16; with a float file, float32), with a warning; a file of
a narrower dtype is read through a `FileView` that casts it to the wide one, so a mosaic whose
first file is narrower cannot wrap the others' values. A pixel holds data when any band differs
from the nodata value of the file read at that date (0 when untagged: torchgeo fills areas
without files with it); the band files of one index row must share it. A multi-date scene is
valid where every date holds data.

Alpha bands and masks, as in the GeoTIFF source: alpha bands (colour interpretation alpha) and a
GDAL per-dataset mask (internal or ``.msk``) are validity, never data bands, so an RGBA file
has three bands, and a pixel holds data only where they are non-zero. torchgeo's mosaic
(rasterio.merge) copies only the pixels GDAL's masks let through and leaves the others at the
nodata value, so they are invalid. GDAL's masks hold the per-dataset mask, but the alpha only of
RGBA and gray+alpha files without a nodata tag or mask, so a `FileView` adds every alpha band.
A file in another CRS than the dataset's (or on a rotated grid) is warped by GDAL's warper,
which honours only one of alpha, nodata and mask: such a file with an alpha band and a nodata
tag or mask is refused, with the fix.

Workers: scenes share one `TorchGeoReader`, which pickles with its dataset and drops
torchgeo's cached file handles in a forked worker (an inherited GDAL handle must not be shared
by processes).

Not mapped: label datasets (`is_image=False`), Intersection/Union datasets, XarrayDataset and
VectorDataset, per-sample `transforms` (views happen on the device instead), roi/toi limits,
RandomBatchGeoSampler/PreChippedGeoSampler, and time of day (dates are days).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import rasterio
import torch
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.enums import Resampling
from rasterio.errors import NodataShadowWarning, RasterioError
from rasterio.vrt import WarpedVRT
from torchgeo.datasets import DatasetNotFoundError, RasterDataset
from torchgeo.samplers import GridGeoSampler, RandomGeoSampler

from rsssl.data.bands import name_bands
from rsssl.data.geotiff import _validity
from rsssl.data.index import (
    SIDECARS,
    alpha_bands,
    data_bands,
    differing_values,
    file_identity,
    has_dataset_mask,
    pixel_dtype,
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
from rsssl.data.sources import Source
from rsssl.data.tiles import TileIndex

#: How torchgeo hands over pixels of each native dtype (its array_to_tensor turns uint16 to int32).
TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.uint16): torch.int32,
    np.dtype(np.float32): torch.float32,
}
EXAMPLES = "torchgeo.datasets.Sentinel2, torchgeo.datasets.Landsat8 or torchgeo.datasets.RasterDataset"

Bounds = tuple[float, float, float, float]
Interval = tuple[pd.Timestamp, pd.Timestamp]

log = logging.getLogger(__name__)


def raster_dataset_class(path: str) -> type[RasterDataset]:
    """The RasterDataset subclass named by a dotted path (a bare name is looked up in torchgeo.datasets)."""
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "torchgeo.datasets"), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise DataError(
            f"data.dataset_class={path!r} cannot be imported ({err}); give e.g. {EXAMPLES}"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, RasterDataset)):
        raise DataError(
            f"data.dataset_class={path!r} is not a torchgeo RasterDataset: this source reads raster "
            f"scenes ({EXAMPLES}); for chip datasets such as EuroSAT use data=torchgeo"
        )
    if not cls.is_image:
        raise DataError(
            f"{path} holds labels (is_image=False), not imagery: pretrain on an image dataset such as "
            "torchgeo.datasets.Sentinel2"
        )
    return cls


def _check_bands(dataset: RasterDataset, bands: Sequence[str] | None) -> None:
    """DataError for band names the class does not know (torchgeo only asserts)."""
    if not bands:
        return
    if not dataset.all_bands and not dataset.separate_files:
        raise DataError(
            f"data.dataset_bands={list(bands)} needs band names for {type(dataset).__name__} files: "
            "name the bands of the files in order with data.all_bands=[...]"
        )
    unknown = [b for b in bands if b not in dataset.all_bands]
    if dataset.all_bands and unknown:
        raise DataError(
            f"{type(dataset).__name__} has no band {', '.join(map(repr, unknown))}; its bands are "
            f"{', '.join(dataset.all_bands)}: fix data.dataset_bands"
        )


def _not_found(dataset: RasterDataset, paths: list[str]) -> DataError:
    """What was searched where, and which names the class accepts."""
    where = ", ".join(f"{p} ({'exists' if Path(p).exists() else 'missing'})" for p in paths)
    matched = len(dataset.files)
    return DataError(
        f"no {type(dataset).__name__} raster found in {where}: searched each folder recursively for "
        f"{dataset.filename_glob!r} ({matched} matched) and kept readable files whose names match "
        f"filename_regex '{' '.join(dataset.filename_regex.split())}'; place the files there, or point "
        "data.paths at them (data.filename_glob / data.filename_regex change the expected names)"
    )


@functools.cache
def native_class(cls: type[RasterDataset]) -> type[RasterDataset]:
    """`cls` handing pixels over in its instance's `native_dtype` (a numpy dtype), not float32,
    with alpha bands as validity (`headers`: path -> FileHeader, set by `TorchGeoReader`).

    A file of another dtype, or with alpha bands, is read through a `FileView`: rasterio's
    mosaic takes its dtype from the first file, which must not be a narrower one."""

    def reduce(self: RasterDataset) -> tuple:
        return _rebuild, (cls, self.__dict__)

    def load_warp_file(self: RasterDataset, filepath: str) -> rasterio.io.DatasetReader | FileView:
        handle = cls._load_warp_file(self, filepath)
        header = self.headers[filepath]
        if isinstance(handle, WarpedVRT) and not header.warp_keeps_validity:
            handle.close()
            raise _lossy_warp(self, filepath, header)
        if header.alpha or np.dtype(handle.dtypes[0]) != self.native_dtype:
            return FileView(handle, header, self.native_dtype)
        return handle

    members = {
        "dtype": property(lambda self: TORCH_DTYPES[self.native_dtype]),
        "_load_warp_file": load_warp_file,
        "__reduce__": reduce,
    }
    return type(cls.__name__, (cls,), members)


def _rebuild(cls: type[RasterDataset], state: dict) -> RasterDataset:
    """Unpickle a `native_class(cls)` instance (the class itself is made at run time)."""
    dataset = native_class(cls).__new__(native_class(cls))
    dataset.__dict__.update(state)
    return dataset


def build_raster_dataset(
    dataset_class: str,
    paths: Sequence[str],
    bands: Sequence[str] | None = None,
    res: float | tuple[float, float] | None = None,
    crs: str | None = None,
    attrs: dict | None = None,
) -> RasterDataset:
    """Construct the dataset without downloading; `attrs` set class attributes such as filename_glob."""
    cls = native_class(raster_dataset_class(dataset_class))
    if crs is not None:
        try:
            crs = CRS.from_user_input(crs)
        except CRSError as err:
            raise DataError(f"data.crs={crs!r} is not a CRS ({err}); give e.g. EPSG:32618") from err
    dataset = cls.__new__(cls)  # attributes first: __init__ searches the files with them
    for key, value in (attrs or {}).items():
        setattr(dataset, key, tuple(value) if key == "all_bands" else value)
    _check_bands(dataset, bands)
    kwargs = {"paths": list(paths), "crs": crs, "bands": list(bands) if bands else None}
    if res is not None:
        kwargs["res"] = res
    if "download" in inspect.signature(cls.__init__).parameters:
        kwargs["download"] = False
    try:
        dataset.__init__(**kwargs)
    except DatasetNotFoundError as err:
        raise _not_found(dataset, list(paths)) from err
    return dataset


def read_files(dataset: RasterDataset, filepath: str) -> list[str]:
    """The files a read of the index row `filepath` opens: itself, or one per band when the
    bands are separate files (found the way torchgeo finds them)."""
    if not dataset.separate_files:
        return [filepath]
    return [dataset._update_filepath(band, filepath) for band in dataset.bands]


class FileHeader(NamedTuple):
    """What the reader needs of one file: the dtype reads return, nodata, the descriptions of
    the data bands read (`bands`, 1-based), its alpha bands and whether it has a GDAL
    per-dataset mask (both validity, not data)."""

    dtype: np.dtype
    nodata: float | None
    descriptions: tuple[str | None, ...]
    bands: tuple[int, ...]
    alpha: tuple[int, ...]
    masked: bool

    @property
    def warp_keeps_validity(self) -> bool:
        """Whether GDAL's warper keeps all of the file's validity: it honours one of an alpha
        band, a nodata value and a mask only."""
        return not (self.alpha and (self.nodata is not None or self.masked))


def read_header(path: str, band_indexes: Sequence[int] | None, all_bands: Sequence[str] = ()) -> FileHeader:
    """The header of the bands `band_indexes` (1-based, as torchgeo picks them from `all_bands`;
    every band but the alpha bands when None) of `path`; DataError when they name an alpha band
    or the file has no other band."""
    with rasterio.open(path) as src:
        alpha = alpha_bands(src.colorinterp)
        bands = tuple(band_indexes or data_bands(path, src.colorinterp, "data.paths"))
        named_alpha = [i for i in bands if i in alpha]
        if named_alpha:
            data_names = ", ".join(n for i, n in enumerate(all_bands, 1) if i not in alpha)
            raise DataError(
                f"data.all_bands names band {named_alpha[0]} of {path} ({all_bands[named_alpha[0] - 1]!r}), "
                f"but it is its alpha band: validity, not data; name its data bands only "
                f"(data.all_bands=[{data_names}])"
            )
        return FileHeader(
            dtype=pixel_dtype(path, tuple(src.dtypes[i - 1] for i in bands)),
            nodata=src.nodata,
            descriptions=tuple(src.descriptions[i - 1] for i in bands),
            bands=bands,
            alpha=alpha,
            masked=has_dataset_mask(src.mask_flag_enums[bands[0] - 1]),
        )


class FileView:
    """A file's handle as torchgeo's mosaic (rasterio.merge) should read it: its data bands
    (`header.bands`) only, cast to `dtype`, and in masked reads masked where any alpha band is 0
    as well as where GDAL masks them (nodata, or the per-dataset mask), since GDAL makes a mask
    of the alpha of RGBA and gray+alpha files only, and only without a nodata tag or mask."""

    def __init__(self, handle: rasterio.io.DatasetReader | WarpedVRT, header: FileHeader, dtype: np.dtype):
        self.handle = handle
        self.header = header
        self.dtype = dtype

    def __getattr__(self, name: str) -> object:
        """What the mosaic reads besides bands and pixels (bounds, transform, crs, nodatavals)."""
        return getattr(self.handle, name)

    @property
    def count(self) -> int:
        return len(self.header.bands)

    @property
    def dtypes(self) -> tuple[str, ...]:
        return (self.dtype.name,) * self.count

    def read(
        self,
        indexes: Sequence[int] | None = None,
        masked: bool = False,
        window: rasterio.windows.Window | None = None,
        out_shape: tuple[int, int, int] | None = None,
        resampling: Resampling = Resampling.nearest,
    ) -> np.ndarray:
        """Bands `indexes` (the data bands when None) as rasterio reads them, in `dtype`."""
        indexes = list(indexes or self.header.bands)
        with warnings.catch_warnings():  # "nodata shadows the alpha band": the alpha is added below
            warnings.simplefilter("ignore", NodataShadowWarning)
            data = self.handle.read(
                indexes, masked=masked, window=window, out_shape=out_shape, resampling=resampling
            )
        data = data.astype(self.dtype, copy=False)
        if not (masked and self.header.alpha):
            return data
        shape = (len(self.header.alpha), *data.shape[1:])
        alpha = self.handle.read(
            list(self.header.alpha), window=window, out_shape=shape, resampling=Resampling.nearest
        )
        return np.ma.array(data, mask=np.ma.getmaskarray(data) | (alpha == 0).any(axis=0))


def _lossy_warp(dataset: RasterDataset, path: str, header: FileHeader) -> DataError:
    """The refusal of a file torchgeo must warp although it has an alpha band and a nodata tag or
    a mask, of which GDAL's warper (torchgeo's WarpedVRT) honours one only."""
    sidecar = Path(f"{path}.msk")
    if header.nodata is not None:
        other, fix = "nodata value", f"drop the nodata tag (gdal_edit.py -unsetnodata {path})"
    elif sidecar.exists():
        other, fix = "GDAL mask", f"delete {sidecar}"
    else:
        other, fix = "GDAL mask", f"re-export it without the mask (gdal_translate -mask none {path} OUT.tif)"
    return DataError(
        f"{path}: torchgeo must warp it to the dataset CRS ({dataset.crs.to_string()}) to read it, but it "
        f"has an alpha band and a {other}, and torchgeo's warp honours only one of them: {fix} so the "
        "alpha alone marks the data, or read the folder with data=geotiff, which reads every file in "
        "its own CRS"
    )


def widest_dtype(dtypes: Iterable[np.dtype]) -> np.dtype:
    """The dtype that holds every value of all `dtypes` (a warning when they differ: files of
    different dtypes are usually different products, whose values are on different scales)."""
    counts = Counter(dtype.name for dtype in dtypes)
    widest = np.result_type(*counts)
    if len(counts) > 1:
        mix = ", ".join(f"{name}: {n} file{'s' * (n > 1)}" for name, n in sorted(counts.items()))
        log.warning(
            "the torchgeo files have different dtypes (%s); read as %s: if they are different "
            "products, their values are on different scales",
            mix,
            widest.name,
        )
    return widest


def row_nodata(filepath: str, nodata: dict[str, float | None]) -> float:
    """The nodata value of the index row `filepath` read from the files of `nodata` (path ->
    tag): the tag they share, 0 when untagged (torchgeo's fill)."""
    values = differing_values((value, [path]) for path, value in nodata.items())
    if values:
        raise DataError(
            f"the band files of {Path(filepath).name} have different nodata values ({values}); "
            "set one nodata value (gdal_edit.py -a_nodata)"
        )
    value = next(iter(nodata.values()))
    return float(value) if value is not None else 0.0


class TorchGeoReader:
    """Bounding-box queries of one torchgeo dataset as native-dtype arrays; shared by its scenes.

    `dtype` is the widest of all files' dtypes; `nodata` maps each index row to its files' nodata.
    """

    def __init__(self, dataset: RasterDataset, band_preset: str | None = None) -> None:
        """`dataset` from `build_raster_dataset`; every file's header is read here, once."""
        self.dataset = dataset
        rows = list(dataset.index.filepath)
        files = {row: read_files(dataset, row) for row in rows}
        indexes = getattr(dataset, "band_indexes", None)
        headers = {
            path: read_header(path, indexes, dataset.all_bands) for paths in files.values() for path in paths
        }
        self.dtype = widest_dtype(header.dtype for header in headers.values())
        self.nodata = {row: row_nodata(row, {p: headers[p].nodata for p in files[row]}) for row in rows}
        raw = tuple(dataset.bands) or headers[rows[0]].descriptions
        self.bands = name_bands(raw, band_preset, rows[0])
        self.files = tuple(headers)
        dataset.native_dtype = self.dtype
        dataset.headers = headers
        for path, header in headers.items():  # refuse now, not in a worker, what a warp would lose
            if not header.warp_keeps_validity:
                dataset._load_warp_file(path).close()
        self._pid = os.getpid()

    def query(self, bounds: Bounds, res: tuple[float, float], interval: Interval) -> np.ndarray:
        """C x h x w pixels of `bounds` (xmin, ymin, xmax, ymax) at `res` during `interval`."""
        if self._pid != os.getpid():  # forked worker: open our own file handles
            type(self.dataset)._cached_load_warp_file.cache_clear()
            self._pid = os.getpid()
        xmin, ymin, xmax, ymax = bounds
        query = (slice(xmin, xmax, res[0]), slice(ymin, ymax, res[1]), slice(*interval))
        return self.dataset[query]["image"].numpy().astype(self.dtype, copy=False)


def _iso(interval: Interval) -> str:
    """The acquisition day of an index interval; "" for files without a date."""
    return "" if interval[0] <= pd.Timestamp.min else interval[0].date().isoformat()


class TorchGeoScene(Scene):
    """One footprint of a torchgeo dataset on its grid, at one or more index time intervals."""

    def __init__(
        self,
        reader: TorchGeoReader,
        name: str,
        bounds: Bounds,
        intervals: Sequence[Interval],
        nodata: Sequence[float],
    ) -> None:
        """`nodata`: per interval, the nodata value of the file read then."""
        dataset = reader.dataset
        self.reader = reader
        self.name = name
        self.res = (float(dataset.res[0]), float(dataset.res[1]))
        xmin, ymin, xmax, ymax = bounds
        self.left, self.top = float(xmin), float(ymax)
        self.width = math.floor((xmax - xmin) / self.res[0] + 1e-6)
        self.height = math.floor((ymax - ymin) / self.res[1] + 1e-6)
        self.bands = reader.bands
        self.dtype = reader.dtype
        self.intervals = tuple(intervals)
        self.nodata = tuple(nodata)
        self.dates = tuple(_iso(i) for i in self.intervals)
        self.transform = (self.res[0], 0.0, self.left, 0.0, -self.res[1], self.top)
        self.crs = dataset.crs.to_string()

    def _query(self, window: Window, shape: tuple[int, int], date: int) -> np.ndarray:
        """Pixels of `window` at `date`, resampled to `shape` (rows, cols) cells."""
        w = window
        x0, y1 = self.left + w.col * self.res[0], self.top - w.row * self.res[1]
        x1, y0 = x0 + w.width * self.res[0], y1 - w.height * self.res[1]
        res = ((x1 - x0) / shape[1], (y1 - y0) / shape[0])
        try:
            return self.reader.query((x0, y0, x1, y1), res, self.intervals[date])
        except RasterioError as err:
            cause = str(err.__cause__ or err)
            raise UnreadableFile(
                f"reading scene {self.name!r} failed ({cause}): one of its files looks truncated or "
                "corrupt; re-export it (e.g. gdal_translate) or remove it from data.paths, or set "
                "data.unreadable=skip to train without it",
                self.name,
                cause,
            ) from err

    def read(self, window: Window, date: int = 0) -> np.ndarray:
        return self._query(window, (window.height, window.width), date)

    def read_valid(self, window: Window) -> np.ndarray:
        return self._valid(lambda date: self.read(window, date))

    def valid_overview(self, factor: int) -> np.ndarray:
        """Validity from one coarse query per date: cells of about `factor` pixels, nearest pixel."""
        if factor < 1:
            raise ValueError(f"overview factor must be >= 1, got {factor}")
        whole = Window(0, 0, self.height, self.width)
        shape = (-(-self.height // factor), -(-self.width // factor))
        return self._valid(lambda date: self._query(whole, shape, date))

    def _valid(self, read: Callable[[int], np.ndarray]) -> np.ndarray:
        """Where every date holds data (each date judged by its own file's nodata)."""
        valid = _validity(read(0), self.nodata[0])
        for date in range(1, len(self.dates)):
            valid &= _validity(read(date), self.nodata[date])
        return valid


def index_scenes(reader: TorchGeoReader, group_dates: bool = True) -> list[TorchGeoScene]:
    """One scene per footprint (snapped to whole pixels) of the index, or per footprint and date."""
    index = reader.dataset.index
    xres, yres = reader.dataset.res
    groups: dict[tuple, list[int]] = {}
    for number, (interval, geometry) in enumerate(zip(index.index, index.geometry)):
        xmin, ymin, xmax, ymax = geometry.bounds
        key = (round(xmin / xres), round(ymin / yres), round(xmax / xres), round(ymax / yres))
        if not group_dates:
            key += (interval.left, interval.right)
        groups.setdefault(key, []).append(number)
    scenes = []
    for key in sorted(groups):
        rows = groups[key]
        first_row: dict[Interval, int] = {}  # a date's first file: torchgeo fills with its nodata
        for row in rows:
            first_row.setdefault((index.index[row].left, index.index[row].right), row)
        intervals = sorted(first_row)
        nodata = [reader.nodata[index.filepath.iloc[first_row[i]]] for i in intervals]
        name = Path(index.filepath.iloc[rows[0]]).stem
        bounds = index.geometry.iloc[rows[0]].bounds
        scenes.append(TorchGeoScene(reader, name, bounds, intervals, nodata))
    return scenes


class TorchGeoSource(Source):
    """Imagery a torchgeo RasterDataset class reads from disk (never downloaded), as scenes."""

    name = "torchgeo_raster"

    def __init__(
        self,
        dataset_class: str,
        paths: str | Sequence[str],
        bands: Sequence[str] | None = None,
        res: float | Sequence[float] | None = None,
        crs: str | None = None,
        group_dates: bool = True,
        band_preset: str | None = None,
        filename_glob: str | None = None,
        filename_regex: str | None = None,
        date_format: str | None = None,
        all_bands: Sequence[str] | None = None,
        separate_files: bool | None = None,
        unreadable: str = "fail",
    ) -> None:
        if not paths:
            raise DataError(
                "data.paths is empty: give the folder(s) of the torchgeo dataset, e.g. data.paths=/data/s2"
            )
        self.dataset_class = dataset_class
        self.paths = [str(Path(p).expanduser()) for p in ([paths] if isinstance(paths, str) else paths)]
        self.bands = list(bands) if bands else None
        self.res = res if res is None or isinstance(res, int | float) else tuple(float(r) for r in res)
        self.crs = crs
        self.group_dates = group_dates
        self.band_preset = band_preset
        given = dict(
            filename_glob=filename_glob,
            filename_regex=filename_regex,
            date_format=date_format,
            all_bands=list(all_bands) if all_bands else None,
            separate_files=separate_files,
        )
        self.attrs = {k: v for k, v in given.items() if v is not None}
        self._reader: TorchGeoReader | None = None
        self.unreadable = check_unreadable_policy(unreadable)

    @property
    def reader(self) -> TorchGeoReader:
        """The dataset (built once, when first needed) and its reader."""
        if self._reader is None:
            dataset = build_raster_dataset(
                self.dataset_class, self.paths, self.bands, self.res, self.crs, self.attrs
            )
            self._reader = TorchGeoReader(dataset, self.band_preset)
        return self._reader

    def load(self) -> list[Scene]:
        """The scenes; with `unreadable` skip, those whose files read in full (one warning for
        the others; fail finds a damaged file when its tiles are indexed, naming it)."""
        scenes: list[Scene] = list(index_scenes(self.reader, self.group_dates))
        if self.unreadable == "skip":
            kept, failures = readable_scenes(scenes)
            report_unreadable(", ".join(self.paths), failures, len(scenes), self.unreadable)
            scenes = kept
        return scenes

    def _sidecars(self) -> list[Path]:
        """The ``.msk`` masks and ``.aux.xml`` metadata GDAL reads beside the files (a new mask
        changes validity, so the statistics too)."""
        paths = (Path(f"{p}{suffix}") for p in self.reader.files for suffix in SIDECARS)
        return [p for p in paths if p.is_file()]

    def describe(self) -> dict:
        dataset = self.reader.dataset
        return {
            "torchgeo": self.dataset_class,
            "files": [file_identity(Path(p)) for p in self.reader.files],
            "sidecars": [file_identity(p) for p in self._sidecars()],
            "bands": list(self.reader.bands),
            "res": list(dataset.res),
            "crs": dataset.crs.to_string(),
            "attrs": self.attrs,
            "group_dates": self.group_dates,
        }


def torchgeo_tile_index(
    scenes: Sequence[TorchGeoScene],
    sampler: str = "random",
    size: int = 64,
    length: int | None = None,
    stride: int | None = None,
    seed: int = 0,
) -> TileIndex:
    """Tile positions drawn by torchgeo's RandomGeoSampler or GridGeoSampler, for `TileDataset`.

    For users who want torchgeo's own chips (e.g. to evaluate on exactly the GridGeoSampler
    grid). `RSDataModule` keeps building its own index because torchgeo samplers do not skip
    nodata (ours keeps tiles with at least `min_valid` data, which the statistics rely on), a
    RandomGeoSampler redraws chips every epoch while a fixed index plus shuffling covers the
    same ground, and labels, neighbours and other dates are looked up on our index. A query is
    mapped to the scene (of one TorchGeoSource) holding its footprint and date, rounded to that
    scene's pixel grid and kept inside it. The date itself is dropped (TileDataset reads a
    scene's first date, or a random one for `other_time`), so with several dates per scene the
    mapping is exact only with `group_dates=False`.
    """
    dataset = scenes[0].reader.dataset
    if sampler == "random":
        generator = torch.Generator().manual_seed(seed)
        queries = RandomGeoSampler(dataset, size, length, generator=generator)
    elif sampler == "grid":
        queries = GridGeoSampler(dataset, size, stride)
    else:
        raise ValueError(f"sampler={sampler!r}: choose random or grid")
    by_start: dict[pd.Timestamp, list[int]] = {}
    for number, scene in enumerate(scenes):
        for start, _ in scene.intervals:
            by_start.setdefault(start, []).append(number)
    positions = []
    for x, y, t in queries:
        cx, cy = (x.start + x.stop) / 2, (y.start + y.stop) / 2
        number = next(
            n
            for n in by_start[t.start]
            if 0 <= cx - scenes[n].left <= scenes[n].width * scenes[n].res[0]
            and 0 <= scenes[n].top - cy <= scenes[n].height * scenes[n].res[1]
        )
        scene = scenes[number]
        row = min(max(round((scene.top - y.stop) / scene.res[1]), 0), scene.height - size)
        col = min(max(round((x.start - scene.left) / scene.res[0]), 0), scene.width - size)
        positions.append((number, row, col))
    if not positions:
        raise DataError(f"no {size}px chip fits in any file footprint: lower the chip size")
    number, row, col = (np.array(p, dtype=np.int32).reshape(-1) for p in zip(*positions))
    return TileIndex(number, row, col, np.full(len(number), -1, dtype=np.int64), size)
