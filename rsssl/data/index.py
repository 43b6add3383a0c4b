"""The index of a folder of GeoTIFF scenes: built once, cached, never the pixels.

Indexing opens every file once for its header (size, georeference, bands, dtype, nodata,
masks, date) and groups the files into scenes: a scene is one multi-band file, or one
single-band file per band named ``<scene id>_B<n>`` the way Landsat and Sentinel-2 are distributed
(``LC08_..._B4.TIF``, Collection-2 ``LC08_..._SR_B4.TIF`` / ``..._ST_B10.TIF``, Sentinel-2
``T33UUP_..._B8A.jp2`` and L2A ``R10m/T33UUP_..._B04_10m.jp2``; the ``R10m``/``R20m``/``R60m``
folders of one product are one scene, a band given at several resolutions is read from its
finest file). Other files of such a scene (``_QA_PIXEL``, ``_SCL_20m``, ``_TCI``, angle bands)
are left out, with a warning that lists them. Bands of one scene at different resolutions share
one pixel grid: the finest resolution over the footprint all of them cover.

Alpha bands (colour interpretation alpha, as in an RGBA orthomosaic) and a GDAL per-dataset
mask (internal, or a ``.msk`` sidecar) are validity, never data bands: a file's bands are its
other bands, so an RGBA file has three, and reads judge a pixel valid only where the alpha
band and the mask are non-zero (`rsssl.data.geotiff`).

The index is cached as JSON in the cache dir under a key made of the index version and the
identity (path, size, modification time) of every file of the folder and of its sidecars
(``.msk`` masks, ``.aux.xml`` metadata), so a later run builds its scenes without opening a
file, and adding, removing or rewriting a file or a sidecar gives a new key. Paths are stored
absolute, under the resolved root, so a run from another working directory reads the same
files. Validity overviews, which decode every block of a scene, are cached next to it as
compressed arrays.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from rsssl.data.cache import read_cached, write_atomic
from rsssl.data.scene import DataError, UnreadableFile

# 2: Landsat C2 / Sentinel-2 L2A band files, left-out files; 3: absolute paths; 4: alpha bands and
# GDAL masks are validity, not bands
INDEX_VERSION = 4
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2")
SIDECARS = (".msk", ".aux.xml")  # GDAL reads a file's mask and metadata from these, appended to its name
NATIVE_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
# <scene id>_[SR_|ST_]B<n>[A][_<resolution>m]: Landsat (C1, C2 SR/ST) and Sentinel-2 (L1C, L2A) band files
BAND_FILE = re.compile(r"^(?P<scene>.+?)_(?:(?:SR|ST)_)?(?P<band>B\d{1,2}A?)(?:_\d+m)?$", re.IGNORECASE)
RESOLUTION_FOLDER = re.compile(r"^R\d+m$", re.IGNORECASE)  # Sentinel-2 L2A IMG_DATA/R10m, R20m, R60m
DATE = re.compile(r"(?<!\d)(\d{4})([-:]?)(\d{2})\2(\d{2})(?!\d)")
YEARS = range(1900, 2101)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
MAX_LISTED = 10

log = logging.getLogger(__name__)

Transform = tuple[float, float, float, float, float, float]
Bounds = tuple[float, float, float, float]


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


def listing(paths: list[str]) -> str:
    """Comma-separated paths, the first MAX_LISTED of them."""
    more = f" (+{len(paths) - MAX_LISTED} more)" if len(paths) > MAX_LISTED else ""
    return ", ".join(paths[:MAX_LISTED]) + more


def open_raster(path: str | Path) -> rasterio.DatasetReader:
    """Open read-only; a raster without georeference is fine (pixel coordinates are used)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def pixel_dtype(where: str, dtypes: tuple[str, ...]) -> np.dtype:
    """The dtype reads return: uint8/uint16 as stored, any float as float32."""
    if len(set(dtypes)) > 1:
        raise DataError(
            f"{where}: bands have different dtypes {sorted(set(dtypes))}; re-export it with one dtype "
            "(e.g. gdal_translate -ot UInt16)"
        )
    dtype = np.dtype(dtypes[0])
    if dtype in NATIVE_DTYPES:
        return dtype
    if dtype.kind == "f":
        return np.dtype(np.float32)
    raise DataError(
        f"{where}: pixels are {dtype}; rsssl reads uint8, uint16 or float GeoTIFFs. Convert it, e.g. "
        "gdal_translate -ot UInt16 (offset negative values first) or -ot Float32"
    )


def grid_bounds(transform: Transform, height: int, width: int) -> Bounds:
    """left, bottom, right, top of a height x width grid."""
    a, b, c, d, e, f = transform
    corners = [(col, row) for col in (0, width) for row in (0, height)]
    xs = [c + a * col + b * row for col, row in corners]
    ys = [f + d * col + e * row for col, row in corners]
    return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class FileInfo:
    """The header of one GeoTIFF file (and its modification time, which tells a rewritten file).

    `bands` are the 1-based indexes of its data bands, and `dtypes` and `descriptions` theirs;
    `alpha` the indexes of its alpha bands and `masked` whether it has a GDAL per-dataset mask,
    both validity, not data.
    """

    path: str
    height: int
    width: int
    bands: tuple[int, ...]
    dtypes: tuple[str, ...]
    descriptions: tuple[str | None, ...]
    alpha: tuple[int, ...]
    masked: bool
    crs: str | None
    transform: Transform
    nodata: float | None
    datetime: str
    mtime_ns: int

    @property
    def bounds(self) -> Bounds:
        return grid_bounds(self.transform, self.height, self.width)

    @property
    def date(self) -> str:
        """The date in the file name, else in the TIFFTAG_DATETIME tag, ISO ("" when neither has one)."""
        return parse_date(Path(self.path).name) or parse_date(self.datetime)


def alpha_bands(colorinterp: Sequence[ColorInterp]) -> tuple[int, ...]:
    """1-based indexes of the bands whose colour interpretation is alpha."""
    return tuple(i + 1 for i, interp in enumerate(colorinterp) if interp == ColorInterp.alpha)


def data_bands(path: str | Path, colorinterp: Sequence[ColorInterp], remove_from: str) -> tuple[int, ...]:
    """1-based indexes of a raster's bands that are not alpha; DataError naming the file and the
    fix when every band is alpha (`remove_from` says where the user would remove it from)."""
    alpha = alpha_bands(colorinterp)
    bands = tuple(i for i in range(1, len(colorinterp) + 1) if i not in alpha)
    if not bands:
        raise DataError(
            f"{path}: every band is an alpha band, so it holds no data; fix its colour interpretation "
            f"(gdal_edit.py -colorinterp_1 gray FILE) or remove it from {remove_from}"
        )
    return bands


def has_dataset_mask(flags: Sequence[MaskFlags]) -> bool:
    """Whether a data band's GDAL mask flags name a per-dataset mask of its own (internal or
    ``.msk``); one derived from an alpha band is not, as the alpha band is read directly."""
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags


def read_file_info(path: str | Path) -> FileInfo:
    """Open `path` once and read its header; DataError naming the file when it is no raster."""
    try:
        with open_raster(path) as ds:
            alpha = alpha_bands(ds.colorinterp)
            bands = data_bands(path, ds.colorinterp, "the folder")
            return FileInfo(
                path=str(path),
                height=ds.height,
                width=ds.width,
                bands=bands,
                dtypes=tuple(ds.dtypes[i - 1] for i in bands),
                descriptions=tuple(ds.descriptions[i - 1] for i in bands),
                alpha=alpha,
                masked=has_dataset_mask(ds.mask_flag_enums[bands[0] - 1]),
                crs=ds.crs.to_string() if ds.crs else None,
                transform=tuple(float(v) for v in tuple(ds.transform)[:6]),
                nodata=ds.nodata,
                datetime=ds.tags().get("TIFFTAG_DATETIME", ""),
                mtime_ns=Path(path).stat().st_mtime_ns,
            )
    except RasterioError as err:
        raise UnreadableFile(
            f"cannot open {path} as a GeoTIFF ({err}); re-export it as a GeoTIFF "
            "(e.g. gdal_translate) or remove it from the folder, or set data.unreadable=skip to train "
            "without it",
            path,
            str(err),
        ) from err


@dataclass(frozen=True)
class SceneRecord:
    """One scene of the index: its files, pixel grid, georeference, bands, dtype, nodata, date.

    `layers` gives, per band, the file (number in `files`) and the 1-based band index in it.
    `band_names` are the files' own names (descriptions, or the ``_B<n>`` suffix), None where
    a band has none. `nodata` is the files' nodata tag; `date` is the first file's date.
    """

    name: str
    files: tuple[FileInfo, ...]
    layers: tuple[tuple[int, int], ...]
    band_names: tuple[str | None, ...]
    height: int
    width: int
    transform: Transform
    bounds: Bounds
    crs: str | None
    dtype: str
    nodata: float | None
    date: str

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(f.path for f in self.files)


def file_record(info: FileInfo, name: str) -> SceneRecord:
    """A scene made of one (multi-band) file."""
    return SceneRecord(
        name=name,
        files=(info,),
        layers=tuple((0, i) for i in info.bands),
        band_names=info.descriptions,
        height=info.height,
        width=info.width,
        transform=info.transform,
        bounds=info.bounds,
        crs=info.crs,
        dtype=pixel_dtype(info.path, info.dtypes).name,
        nodata=info.nodata,
        date=info.date,
    )


def _band_order(band: str) -> tuple[int, str]:
    """B2 < B8 < B8A < B10."""
    return int(band[1:].rstrip("Aa")), band.upper()


def differing_values(items: Iterable[tuple[object, Iterable[str]]]) -> str | None:
    """`value: paths; value: paths` of (value, paths) items when they hold more than one value, else None."""
    groups: dict[str, list[str]] = {}
    for value, paths in items:
        groups.setdefault(str(value), []).extend(paths)
    if len(groups) < 2:
        return None
    return "; ".join(f"{value}: {listing(paths)}" for value, paths in groups.items())


def _same(name: str, infos: list[FileInfo], key: Callable[[FileInfo], object], what: str, fix: str) -> None:
    """DataError listing each file's value of `key` when the band files of a scene disagree on it."""
    values = differing_values((key(info), [info.path]) for info in infos)
    if values:
        raise DataError(f"the per-band files of scene {name!r} have different {what} ({values}); {fix}")


def _finest_per_band(where: str, bands: list[tuple[str, FileInfo]]) -> list[tuple[str, FileInfo]]:
    """One file per band: of a band given at several resolutions (Sentinel-2 L2A), the finest."""
    by_band: dict[str, list[FileInfo]] = {}
    for band, info in bands:
        by_band.setdefault(band.upper(), []).append(info)
    chosen = []
    for band, infos in by_band.items():
        infos = sorted(infos, key=lambda i: abs(i.transform[0]))
        if len(infos) > 1 and abs(infos[0].transform[0]) == abs(infos[1].transform[0]):
            raise DataError(
                f"{where} has two files for band {band} at one resolution ({infos[0].path}, "
                f"{infos[1].path}); keep one file per band"
            )
        chosen.append((band, infos[0]))
    return chosen


def band_files_record(name: str, bands: list[tuple[str, FileInfo]]) -> SceneRecord:
    """A scene made of single-band files, resampled to the finest grid they all cover."""
    where = f"scene {name!r} ({listing([i.path for _, i in bands])})"
    bands = sorted(_finest_per_band(where, bands), key=lambda item: _band_order(item[0]))
    infos = [info for _, info in bands]
    names = [band for band, _ in bands]
    _same(name, infos, lambda i: i.crs, "CRSs", "reproject them to one CRS (gdalwarp -t_srs EPSG:<code>)")
    _same(name, infos, lambda i: i.nodata, "nodata values", "set one nodata value (gdal_edit.py -a_nodata)")
    if any(i.transform[1] or i.transform[3] for i in infos):
        raise DataError(f"{where}: per-band files with rotated grids; warp them north-up (gdalwarp)")
    coarsest = max(abs(i.transform[0]) for i in infos)
    reference = infos[0]
    off = [
        i for i in infos if max(abs(a - b) for a, b in zip(i.bounds, reference.bounds)) >= 0.999 * coarsest
    ]
    if off:
        covers = "; ".join(
            f"{i.path} covers {tuple(round(v, 3) for v in i.bounds)}" for i in [reference, *off]
        )
        raise DataError(
            f"the per-band files of scene {name!r} have different footprints (left, bottom, right, top: "
            f"{covers}); give every band of a scene the same footprint (gdalwarp -te), or rename the "
            "files so that different scenes have different ids"
        )
    fine = min(infos, key=lambda i: abs(i.transform[0]))
    transform, height, width = finest_common_grid(infos)
    return SceneRecord(
        name=name,
        files=tuple(infos),
        layers=tuple((i, info.bands[0]) for i, info in enumerate(infos)),
        band_names=tuple(names),
        height=height,
        width=width,
        transform=transform,
        bounds=grid_bounds(transform, height, width),
        crs=fine.crs,
        dtype=pixel_dtype(where, tuple(d for i in infos for d in i.dtypes)).name,
        nodata=fine.nodata,
        date=infos[0].date,
    )


def finest_common_grid(infos: Sequence[FileInfo]) -> tuple[Transform, int, int]:
    """Transform, height and width of the finest of the files' grids over the part all cover."""
    a, _, c, _, e, f = min(infos, key=lambda i: abs(i.transform[0])).transform
    left, bottom, right, top = (
        max(i.bounds[0] for i in infos),
        max(i.bounds[1] for i in infos),
        min(i.bounds[2] for i in infos),
        min(i.bounds[3] for i in infos),
    )
    col0, row0 = math.ceil((left - c) / a - 1e-6), math.ceil((top - f) / e - 1e-6)
    col1, row1 = math.floor((right - c) / a + 1e-6), math.floor((bottom - f) / e + 1e-6)
    return (a, 0.0, c + col0 * a, 0.0, e, f + row0 * e), row1 - row0, col1 - col0


def geotiff_paths(root: Path) -> list[Path]:
    """Every GeoTIFF under `root` (recursive, sorted); DataError when there is none."""
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise DataError(f"GeoTIFF root {root} {state}; point data.root at a folder of GeoTIFF scenes")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES)
    if not paths:
        raise DataError(
            f"no GeoTIFF under {root} (looked for {', '.join(RASTER_SUFFIXES)} in any letter case, "
            "recursively); point data.root at a folder of scenes"
        )
    return paths


def _scene_key(relative: Path, scene_id: str) -> str:
    """The scene a band file belongs to: its folder (an L2A resolution folder counts as its
    parent, so R10m/R20m/R60m make one scene) and its scene id."""
    parent = relative.parent
    if RESOLUTION_FOLDER.match(parent.name):
        parent = parent.parent
    return (parent / scene_id).as_posix()


def build_records(
    root: Path, paths: list[Path]
) -> tuple[list[SceneRecord], list[str], list[tuple[str, str, str]]]:
    """Read every file's header and group the files into scenes (sorted by name).

    Returns the scenes, the files left out (those named after a band-file scene that are not
    one of its bands: quality masks, classification, preview and angle layers) and the scenes
    left out because a file's header cannot be read, as (scene, file, reason): a band-file
    scene goes with any of its files. What happens to those is `data.unreadable`'s choice.
    """
    groups: dict[str, list[tuple[str, FileInfo]]] = {}
    others: list[tuple[Path, FileInfo]] = []
    unreadable: dict[str, tuple[str, str, str]] = {}
    for path in paths:
        relative = path.relative_to(root).with_suffix("")
        match = BAND_FILE.match(relative.name)
        try:
            info = read_file_info(path)
        except UnreadableFile as err:
            scene = _scene_key(relative, match.group("scene")) if match else relative.as_posix()
            unreadable.setdefault(scene, (scene, err.path, err.reason))
            continue
        if match and len(info.dtypes) == 1:
            groups.setdefault(_scene_key(relative, match.group("scene")), []).append(
                (match.group("band"), info)
            )
        else:
            others.append((relative, info))

    def named_after_a_band_file_scene(relative: Path) -> bool:
        return any(_scene_key(relative, relative.name).startswith(f"{key}_") for key in groups)

    left_out = [info.path for relative, info in others if named_after_a_band_file_scene(relative)]
    skipped = set(left_out)
    records = [file_record(info, rel.as_posix()) for rel, info in others if info.path not in skipped]
    records += [band_files_record(name, bands) for name, bands in groups.items() if name not in unreadable]
    for scene, path, _ in list(unreadable.values()):  # a layer that would be left out anyway
        if scene not in groups and named_after_a_band_file_scene(Path(scene)):
            left_out.append(path)
            del unreadable[scene]
    return sorted(records, key=lambda r: r.name), left_out, sorted(unreadable.values())


def file_identity(path: Path) -> dict[str, Any]:
    """What tells a file changed without reading it: absolute path, size, modification time.

    The path is absolute but its links are not resolved: it is the path reads use (a linked
    file keeps the name its band and date are parsed from)."""
    stat = path.stat()
    return {"path": str(path.absolute()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def index_identity(paths: Sequence[Path]) -> dict[str, Any]:
    """What the index of these files is built from: the index version and the identity of every
    file and of its sidecars, so a ``.msk`` added next to an unchanged file changes it too."""
    sidecars = [Path(f"{p}{suffix}") for p in paths for suffix in SIDECARS]
    return {
        "version": INDEX_VERSION,
        "files": [file_identity(p) for p in paths],
        "sidecars": [file_identity(p) for p in sidecars if p.is_file()],
    }


def folder_identity(root: Path) -> dict[str, Any]:
    """The index identity of a folder's GeoTIFFs (a new index version also gives a new one)."""
    return index_identity(geotiff_paths(root))


def _tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _record_from_json(value: dict[str, Any]) -> SceneRecord:
    files = tuple(FileInfo(**{k: _tuples(v) for k, v in f.items()}) for f in value["files"])
    return SceneRecord(**{k: _tuples(v) for k, v in value.items() if k != "files"}, files=files)


@dataclass(frozen=True)
class FolderIndex:
    """The scenes of one folder and, when cached, the JSON file they are cached in."""

    root: Path
    scenes: tuple[SceneRecord, ...]
    cache: Path | None
    left_out: tuple[str, ...] = ()
    #: (scene, file, reason) of the scenes a file's header of which cannot be read
    unreadable: tuple[tuple[str, str, str], ...] = ()

    @property
    def overview_dir(self) -> Path | None:
        """Where the validity overviews of these scenes are cached (None: not cached)."""
        return self.cache.with_suffix("") if self.cache is not None else None


def index_folder(root: str | Path, cache_dir: str | Path | None = None) -> FolderIndex:
    """The scenes of every GeoTIFF under `root`, from the cache in `cache_dir` when it has them.

    `root` is resolved first, so the files' paths are absolute: a cached index read from another
    working directory (`data.root=../data`) names the same files."""
    root = Path(root).expanduser().resolve()
    paths = geotiff_paths(root)
    index = _cached_index(root, paths, cache_dir)
    if index.left_out:
        log.warning(
            "%s: left out %d files that are not bands of their scenes (quality, classification, "
            "preview or angle layers): %s",
            root,
            len(index.left_out),
            listing(list(index.left_out)),
        )
    return index


def _cached_index(root: Path, paths: list[Path], cache_dir: str | Path | None) -> FolderIndex:
    """The folder's index from the cache in `cache_dir` when it has it, else built (and cached)."""
    if cache_dir is None:
        records, left_out, unreadable = build_records(root, paths)
        return FolderIndex(root, tuple(records), None, tuple(left_out), tuple(unreadable))
    identity = index_identity(paths)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    cache = Path(cache_dir).expanduser() / f"geotiff-index-{key}.json"
    cached = read_cached(cache, lambda path: _index_from_json(root, path))
    if cached is not None:
        return cached
    records, left_out, unreadable = build_records(root, paths)
    content = {**identity, "root": str(root), "scenes": [asdict(r) for r in records], "left_out": left_out}
    if unreadable:  # the key is new: an index without it keeps its bytes
        content["unreadable"] = unreadable
    write_atomic(cache, lambda stream: json.dump(content, stream))
    return FolderIndex(root, tuple(records), cache, tuple(left_out), tuple(unreadable))


def _index_from_json(root: Path, cache: Path) -> FolderIndex:
    """The index cached in `cache`."""
    content = json.loads(cache.read_text())
    scenes = tuple(_record_from_json(s) for s in content["scenes"])
    unreadable = tuple(tuple(u) for u in content.get("unreadable", ()))
    return FolderIndex(root, scenes, cache, tuple(content["left_out"]), unreadable)


def cached_array(path: Path | None, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()`, stored in (and later read from) a compressed array file at `path` when given."""
    if path is None:
        return compute()
    cached = read_cached(path, _load_array)
    if cached is not None:
        return cached
    array = compute()
    write_atomic(path, lambda stream: np.savez_compressed(stream, array=array), mode="wb")
    return array


def _load_array(path: Path) -> np.ndarray:
    """The array of a compressed array file."""
    with np.load(path, allow_pickle=False) as archive:
        return archive["array"]
