"""Reading ordinary image files (png/jpg through Pillow, tif through rasterio) as C x H x W uint
pixels: what image-folder evaluation sets and photo-folder pretraining sources share."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rasterio.errors import RasterioError

from rsssl.data.index import data_bands
from rsssl.data.scene import DataError, UnreadableFile

PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg")
RASTERIO_SUFFIXES = (".tif", ".tiff")
RGB = ("red", "green", "blue")
_PILLOW_BANDS = {"L": 1, "I;16": 1, "RGB": 3}  # decoded mode -> band count


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """UnreadableFile naming `path` for what a reader raises on a truncated or corrupt file."""
    try:
        yield
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, RasterioError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise UnreadableFile(
            f"cannot decode {path} ({reason}): the file looks truncated or corrupt; save it again or "
            "remove it from its folder",
            path,
            reason,
        ) from err


def image_header(path: Path) -> tuple[int, int, int, np.dtype, tuple[str, ...] | None]:
    """(bands, height, width, dtype, band descriptions or None) of an image, from its header only."""
    with _decoding(path):
        return _header(path)


def _header(path: Path) -> tuple[int, int, int, np.dtype, tuple[str, ...] | None]:
    if path.suffix.lower() in RASTERIO_SUFFIXES:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                bands = _tif_bands(src, path)
                dtypes = {src.dtypes[i - 1] for i in bands}
                if len(dtypes) != 1 or not dtypes <= {"uint8", "uint16"}:
                    raise DataError(
                        f"{path} has pixel type {', '.join(sorted(dtypes))}: image folders hold uint8 or "
                        "uint16 images; rescale it (e.g. gdal_translate -ot UInt16 -scale) or remove it"
                    )
                descriptions = tuple(src.descriptions[i - 1] for i in bands)
                names = descriptions if all(descriptions) else None
                return len(bands), src.height, src.width, np.dtype(dtypes.pop()), names
    from PIL import Image

    with Image.open(path) as img:
        mode = _pillow_mode(img.mode, path)
        dtype = np.dtype(np.uint16 if mode == "I;16" else np.uint8)
        return _PILLOW_BANDS[mode], img.height, img.width, dtype, RGB if mode == "RGB" else None


def _tif_bands(src, path: Path) -> list[int]:
    """The 1-based indexes of a tif's bands but its alpha bands (colour interpretation alpha)."""
    return list(data_bands(path, src.colorinterp, "its folder"))


def _pillow_mode(mode: str, path: Path) -> str:
    """The mode an image is decoded in: its own when it maps to uint pixels, else RGB / L, with
    alpha dropped (LA is decoded as L, RGBA and PA as RGB)."""
    if mode in ("L", "RGB") or mode.startswith("I;16"):
        return "I;16" if mode.startswith("I;16") else mode
    if mode in ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
        return "RGB"
    if mode in ("1", "LA"):
        return "L"
    raise DataError(f"{path} has Pillow mode {mode!r} (not 8- or 16-bit unsigned): save it as uint8/uint16")


def read_image_pixels(path: Path) -> np.ndarray:
    """C x H x W uint pixels of one image (the full decode)."""
    with _decoding(path):
        return _pixels(path)


def _pixels(path: Path) -> np.ndarray:
    if path.suffix.lower() in RASTERIO_SUFFIXES:
        import rasterio

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read(_tif_bands(src, path))
    from PIL import Image

    with Image.open(path) as img:
        mode = _pillow_mode(img.mode, path)
        if mode == "I;16":
            return np.asarray(img, dtype=np.uint16)[None]  # Pillow reports I;16 big/little as I;16x
        pixels = np.asarray(img.convert(mode) if img.mode != mode else img)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
