"""Coarse per-band files on the fine grid: validity per band at its own resolution, no nodata leak.

The scene below is Sentinel-2 style: a 10 m band B02 (8 x 8 px) and a 20 m band B05 (4 x 4 px)
over one footprint. B05's values depend on the column only, so every expected value is a
one-dimensional hand computation: fine column j has its centre at coarse position (j + 0.5) / 2;
bilinear weights the two coarse columns around it, nearest takes the column it falls in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from rsssl.data.geotiff import load_geotiff_folder
from rsssl.data.scene import DataError, Window
from rsssl.data.sources import GeoTiffSource
from tests.data.test_geotiff_source import TRANSFORM, write_tif

SENTINEL = "T18SUJ_20200101T154811"
COARSE_COLUMNS = [0, 100, 200, 300]  # B05 per 20 m column; column 0 is the nodata collar
FULL = Window(0, 0, 8, 8)


def write_scene(folder: Path, dtype: type, nodata: float | None, fill: float) -> None:
    """B02: collar (`fill`) in columns 0-2 of rows 0-3 and column 0 of rows 4-7, else 1000.
    B05: `fill` in its column 0 (fine columns 0-1), else COARSE_COLUMNS."""
    fine = np.full((1, 8, 8), 1000, dtype)
    fine[0, :4, :3] = fill
    fine[0, 4:, :1] = fill
    coarse = np.tile(np.array(COARSE_COLUMNS, dtype), (1, 4, 1))
    coarse[0, :, 0] = fill
    write_tif(folder / f"{SENTINEL}_B02.tif", fine, nodata=nodata)
    write_tif(folder / f"{SENTINEL}_B05.tif", coarse, nodata=nodata, transform=TRANSFORM @ Affine.scale(2))


# fine columns 0..7: a pixel is data only where B02 and B05 (at 20 m) both hold data
EXPECTED_VALID = np.array([[False] * 3 + [True] * 5] * 4 + [[False] * 2 + [True] * 6] * 4)
# bilinear over the valid coarse columns only: column 2 lies 1/4 into collar column 0 and 3/4
# into column 1 (100, not 0.25 * 0 + 0.75 * 100 = 75); 3..6 blend two data columns; column 7
# lies 1/4 past the file's edge (300). Columns 0-1 have no data neighbour: the nearest (nodata).
BILINEAR_ROW = [0, 0, 100, 125, 175, 225, 275, 300]
NEAREST_ROW = [0, 0, 100, 100, 200, 200, 300, 300]


@pytest.mark.parametrize("nodata", [0, None])  # the nodata tag, and the default 0 of unsigned pixels
def test_validity_is_every_band_at_its_own_resolution(tmp_path: Path, nodata: int | None) -> None:
    write_scene(tmp_path, np.uint16, nodata, 0)
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("blue", "rededge071")
    np.testing.assert_array_equal(scene.read_valid(FULL), EXPECTED_VALID)
    np.testing.assert_array_equal(scene.read_valid(Window(2, 1, 4, 5)), EXPECTED_VALID[2:6, 1:6])
    np.testing.assert_array_equal(scene.valid_overview(1), EXPECTED_VALID)
    np.testing.assert_array_equal(scene.valid_overview(2), EXPECTED_VALID[1::2, 1::2])


@pytest.mark.parametrize("nodata", [0, None])
def test_bilinear_never_blends_nodata_into_data(tmp_path: Path, nodata: int | None) -> None:
    write_scene(tmp_path, np.uint16, nodata, 0)
    (scene,) = load_geotiff_folder(tmp_path)
    pixels = scene.read(FULL)
    np.testing.assert_array_equal(pixels[1], np.tile(BILINEAR_ROW, (8, 1)))
    np.testing.assert_array_equal(scene.read(Window(2, 1, 4, 5))[1], np.tile(BILINEAR_ROW[1:6], (4, 1)))


def test_nan_collar_of_float_files_does_not_spread(tmp_path: Path) -> None:
    write_scene(tmp_path, np.float32, None, np.nan)
    (scene,) = load_geotiff_folder(tmp_path)
    valid = scene.read_valid(FULL)
    np.testing.assert_array_equal(valid, EXPECTED_VALID)
    pixels = scene.read(FULL)
    assert not np.isnan(pixels[:, valid]).any()
    np.testing.assert_array_equal(pixels[1][valid], np.tile(BILINEAR_ROW, (8, 1))[valid])


def test_nearest_resampling_setting(tmp_path: Path) -> None:
    write_scene(tmp_path, np.uint16, 0, 0)
    (scene,) = GeoTiffSource(str(tmp_path), resampling="nearest").load()
    np.testing.assert_array_equal(scene.read(FULL)[1], np.tile(NEAREST_ROW, (8, 1)))
    np.testing.assert_array_equal(scene.read_valid(FULL), EXPECTED_VALID)
    assert GeoTiffSource(str(tmp_path), resampling="nearest").describe()["resampling"] == "nearest"
    with pytest.raises(
        DataError, match=r"data\.resampling='cubic' is not a resampling method: choose bilinear"
    ):
        GeoTiffSource(str(tmp_path), resampling="cubic").load()
