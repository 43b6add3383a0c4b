"""Scenes stored in a NumPy ``.npz`` file.

Layout of a file (always loaded with ``allow_pickle=False``; strings are unicode arrays):

Scene keys, each holding the pixels of one scene or of a stack of scenes:
  ``image``, ``image_<name>``, ``scene_<name>``. A key of this form that holds strings
  (e.g. ``image_names``) is metadata, not a scene.

Pixel layouts:
  H x W            one band.
  C x H x W        or H x W x C: the band axis is the small one (<= 32). When band names are
                   known (the ``band_names`` argument, else the file's ``band_names`` key) the
                   axis whose length equals their count is the band axis. If both axes could
                   be the band axis, loading fails and asks for band names.
  N x C x H x W    or N x H x W x C: a stack; item i becomes the scene ``<key>_<i>``.

Pixel dtypes: uint8 and uint16 are kept. Signed integers become uint16 when every value fits
in [0, 65535]. float16/32/64 become float32 when every value is finite. Anything else (bool,
uint32, NaN or Inf values, negative integers) is rejected with the fix in the message.

Companion keys (optional):
  ``valid_mask_<name>`` or ``valid_mask``  H x W (N x H x W for a stack), nonzero = data.
  ``mask_<name>`` or ``mask``              per-pixel class ids < 256, H x W (N x H x W).
  ``class_names``                          names of the mask's classes.
  ``transform``                            6 floats a, b, c, d, e, f (x = c + a*col + b*row,
                                           y = f + d*col + e*row).
  ``crs``                                  e.g. "EPSG:32618".
  ``band_names``                           one name per band.
  ``acquisition_date``                     ISO date of the scenes.
Every other key is ignored.

Scenes come back as `ArrayScene` with T x C x H x W C-contiguous pixels (T = 1): H x W x C
files are transposed once here, so every later read is a plain slice.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsssl.data.scene import ArrayScene, DataError

SCENE_KEY = re.compile(r"^(?:image|image_(?P<image>.+)|scene_(?P<scene>.+))$")
EXPECTED_KEYS = "'image', 'image_<name>' or 'scene_<name>'"
MAX_BAND_AXIS = 32
UINT16_MAX = int(np.iinfo(np.uint16).max)


@dataclass(frozen=True)
class _FileMeta:
    """File-wide metadata shared by every scene of one npz."""

    bands: tuple[str, ...] | None
    transform: tuple[float, ...] | None
    crs: str | None
    dates: tuple[str, ...] | None
    class_names: tuple[str, ...] | None


def load_npz_scenes(path: str | Path, band_names: Sequence[str] | None = None) -> list[ArrayScene]:
    """Every scene of an npz file (layout in the module docstring), ready to be tiled.

    `band_names` overrides the file's ``band_names`` key and decides the band axis.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; check the path given to the npz data source")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path} holds one .npy array, not an .npz; save it with np.savez(path, image=...)"
            )
        with archive:
            return _scenes(path, archive, band_names)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(
            f"cannot read {path} ({type(err).__name__}: {err}): the file is unreadable or truncated; "
            "re-export it with np.savez / np.savez_compressed (strings as unicode arrays, no object arrays)"
        ) from err


def _scenes(path: Path, archive: np.lib.npyio.NpzFile, band_names: Sequence[str] | None) -> list[ArrayScene]:
    """Build the scenes of an open archive, in key order."""
    keys = list(archive.files)
    meta = _file_meta(path, archive, band_names)
    scenes: list[ArrayScene] = []
    for key in keys:
        match = SCENE_KEY.match(key)
        if match is None:
            continue
        array = archive[key]
        if array.dtype.kind in "US":
            continue
        suffix = match.group("image") or match.group("scene")
        images, stacked = _to_nchw(_pixels(array, key, path), meta.bands, key, path)
        valid = _companion(archive, "valid_mask", suffix)
        mask = _companion(archive, "mask", suffix)
        scenes += _split(path, key, images, stacked, valid, mask, meta)
    if not scenes:
        raise DataError(
            f"{path} holds no scene: keys found {keys}; store pixels under {EXPECTED_KEYS} "
            "(H x W, C x H x W, H x W x C or an N x ... stack of them)"
        )
    return scenes


def _file_meta(path: Path, archive: np.lib.npyio.NpzFile, band_names: Sequence[str] | None) -> _FileMeta:
    """Read the file-wide companion keys that are present."""
    keys = archive.files
    if band_names is None and "band_names" in keys:
        band_names = _strings(archive["band_names"], "band_names", path)
    date = (
        _string(archive["acquisition_date"], "acquisition_date", path) if "acquisition_date" in keys else None
    )
    return _FileMeta(
        bands=tuple(str(b) for b in band_names) if band_names is not None else None,
        transform=_transform(archive["transform"], path) if "transform" in keys else None,
        crs=_string(archive["crs"], "crs", path) if "crs" in keys else None,
        dates=(date,) if date is not None else None,
        class_names=_strings(archive["class_names"], "class_names", path) if "class_names" in keys else None,
    )


def _companion(archive: np.lib.npyio.NpzFile, base: str, suffix: str | None) -> np.ndarray | None:
    """The scene's own companion (``<base>_<suffix>``), else the file-wide ``<base>``, else None."""
    for key in ([f"{base}_{suffix}"] if suffix else []) + [base]:
        if key in archive.files:
            return archive[key]
    return None


def _pixels(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """The array in an accepted pixel dtype (uint8, uint16 or float32), or DataError saying why not."""
    kind = array.dtype.kind
    if array.dtype in (np.uint8, np.uint16):
        return array
    if kind == "f":
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(
                f"{path}: key {key!r} has {bad} non-finite values (NaN/Inf); fill them (e.g. with 0), "
                "or mark them 0 in 'valid_mask' and store the image as uint16"
            )
        return array.astype(np.float32, copy=False)
    if kind == "i":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= 0 and high <= UINT16_MAX:
            return array.astype(np.uint16)
        raise DataError(
            f"{path}: key {key!r} is {array.dtype} with values in [{low}, {high}], outside uint16; "
            "offset/rescale it into [0, 65535] and store it as uint16 (or as float32)"
        )
    raise DataError(
        f"{path}: key {key!r} has dtype {array.dtype}, which is not pixel data; "
        "store pixels as uint8, uint16 or finite float32"
    )


def _to_nchw(
    array: np.ndarray, bands: tuple[str, ...] | None, key: str, path: Path
) -> tuple[np.ndarray, bool]:
    """N x C x H x W C-contiguous pixels, and whether the key held a stack (N x ...)."""
    if array.ndim == 2:
        if bands is not None and len(bands) != 1:
            raise DataError(
                f"{path}: key {key!r} is a single-band H x W image but {len(bands)} band names were given "
                f"({list(bands)}); give one band name"
            )
        images, stacked = array[None, None], False
    elif array.ndim in (3, 4):
        stacked = array.ndim == 4
        images = array if stacked else array[None]
        if _band_axis(images.shape[1], images.shape[3], bands, key, path) == 3:
            images = images.transpose(0, 3, 1, 2)
    else:
        raise DataError(
            f"{path}: key {key!r} has shape {array.shape}; store H x W, C x H x W, H x W x C, "
            "N x C x H x W or N x H x W x C pixels"
        )
    if 0 in images.shape:
        raise DataError(
            f"{path}: key {key!r} is empty (shape {array.shape}); remove it or store pixels in it"
        )
    return np.ascontiguousarray(images), stacked


def _band_axis(first: int, last: int, bands: tuple[str, ...] | None, key: str, path: Path) -> int:
    """Which of the candidate axes holds the bands: 1 (C x H x W order) or 3 (H x W x C order)."""
    if bands is not None:
        fits = [axis for axis, size in ((1, first), (3, last)) if size == len(bands)]
        if not fits:
            raise DataError(
                f"{path}: {len(bands)} band names {list(bands)} but key {key!r} has {first} bands "
                f"(C x H x W) or {last} (H x W x C); give one name per band"
            )
    else:
        fits = [axis for axis, size in ((1, first), (3, last)) if size <= MAX_BAND_AXIS]
        if not fits:
            raise DataError(
                f"{path}: key {key!r} has no band axis of at most {MAX_BAND_AXIS} (sizes {first} and "
                f"{last}); give band_names (argument or a 'band_names' key) to say how many bands it has"
            )
    if len(fits) > 1:
        raise DataError(
            f"{path}: cannot tell whether key {key!r} is C x H x W or H x W x C ({first} and {last} "
            "could both be the band count); give band_names (argument or a 'band_names' key)"
        )
    return fits[0]


def _split(
    path: Path,
    key: str,
    images: np.ndarray,
    stacked: bool,
    valid: np.ndarray | None,
    mask: np.ndarray | None,
    meta: _FileMeta,
) -> list[ArrayScene]:
    """One ArrayScene per item of N x C x H x W pixels (named ``<key>_<i>`` for a stack)."""
    count, _, height, width = images.shape
    scenes = []
    for i in range(count):
        item_mask = _item(mask, i, count, (height, width), "mask", key, path)
        scenes.append(
            ArrayScene(
                f"{key}_{i}" if stacked else key,
                images[i][None],
                bands=meta.bands,
                valid=_item(valid, i, count, (height, width), "valid_mask", key, path),
                mask=_class_ids(item_mask, key, path) if item_mask is not None else None,
                dates=meta.dates,
                transform=meta.transform,
                crs=meta.crs,
                class_names=meta.class_names if item_mask is not None else None,
            )
        )
    return scenes


def _item(
    array: np.ndarray | None, i: int, count: int, size: tuple[int, int], what: str, key: str, path: Path
) -> np.ndarray | None:
    """Item i of a per-pixel companion that is H x W (shared) or N x H x W (one per stack item)."""
    if array is None:
        return None
    if array.shape == size:
        return array
    if array.shape == (count, *size):
        return array[i]
    raise DataError(
        f"{path}: {what} for key {key!r} has shape {array.shape}, expected {size} "
        f"or {(count, *size)}; store one value per pixel of the scene"
    )


def _class_ids(mask: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Per-pixel class ids as uint8."""
    if mask.dtype == np.uint8:
        return mask
    if mask.dtype.kind in "iu" and (mask.size == 0 or (int(mask.min()) >= 0 and int(mask.max()) <= 255)):
        return mask.astype(np.uint8)
    raise DataError(
        f"{path}: mask for key {key!r} must hold integer class ids in [0, 255] (got {mask.dtype}); "
        "store it as uint8"
    )


def _transform(array: np.ndarray, path: Path) -> tuple[float, ...]:
    """The 6 affine coefficients a, b, c, d, e, f."""
    if array.shape != (6,) or array.dtype.kind not in "fiu" or not np.isfinite(array).all():
        raise DataError(
            f"{path}: 'transform' must be 6 finite numbers a, b, c, d, e, f (got shape {array.shape}, "
            f"dtype {array.dtype}); store tuple(dataset.transform)[:6] from rasterio"
        )
    return tuple(float(v) for v in array)


def _strings(array: np.ndarray, key: str, path: Path) -> tuple[str, ...]:
    """A 1-d string array as a tuple of str."""
    if array.dtype.kind not in "US" or array.ndim != 1:
        raise DataError(f"{path}: {key!r} must be a 1-d array of strings (got {array.dtype} {array.shape})")
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in array.tolist())


def _string(array: np.ndarray, key: str, path: Path) -> str:
    """A 0-d (or one-element) string array as str."""
    if array.dtype.kind not in "US" or array.size != 1:
        raise DataError(f"{path}: {key!r} must be a single string (got {array.dtype} {array.shape})")
    value = array.reshape(()).item()
    return value.decode() if isinstance(value, bytes) else str(value)
