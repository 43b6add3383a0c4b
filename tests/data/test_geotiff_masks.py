"""Alpha bands and GDAL masks of GeoTIFFs are validity, never data bands.

An RGBA orthomosaic has three data bands; its alpha band (colour interpretation alpha) and a
GDAL per-dataset mask (internal, or a ``.msk`` sidecar) say where the data is: a pixel is valid
only where they are non-zero, on top of the nodata rule. The data in the collars below is
non-zero on purpose (white 250 / garbage 9999), so only the alpha band or mask can tell it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp

from rsssl.data.datamodule import RSDataModule
from rsssl.data.geotiff import GeoTiffScene, load_geotiff_folder
from rsssl.data.scene import DataError, Window
from rsssl.data.sources import GeoTiffSource
from tests.data.test_geotiff_resampling import BILINEAR_ROW, EXPECTED_VALID, FULL, SENTINEL
from tests.data.test_geotiff_source import TRANSFORM, random_pixels, write_tif

RGBA = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
WHOLE = Window(0, 0, 48, 40)


def collar() -> np.ndarray:
    """48 x 40 validity: False in the top 8 rows and the right 4 columns."""
    valid = np.ones((48, 40), bool)
    valid[:8] = False
    valid[:, -4:] = False
    return valid


def write_rgba(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> Path:
    """An RGBA GeoTIFF: the three bands of `rgb`, then `alpha` tagged as the alpha band."""
    write_tif(path, np.concatenate([rgb, alpha[None].astype(rgb.dtype)]))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = RGBA
    return path


def add_mask(path: Path, valid: np.ndarray, internal: bool) -> Path:
    """Give `path` a GDAL per-dataset mask (255 where `valid`), inside the file or as `.msk`."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=internal), rasterio.open(path, "r+") as ds:
        ds.write_mask(np.where(valid, 255, 0).astype(np.uint8))
    return path


def test_rgba_alpha_is_validity_not_a_band(tmp_path: Path) -> None:
    rgb = random_pixels(3, dtype=np.uint8)
    valid = collar()
    rgb[:, ~valid] = 250  # the white collar of an orthomosaic: data values, but no data
    alpha = np.where(valid, 255, 0)
    alpha[30, 5] = 1  # any non-zero alpha is valid
    path = write_rgba(tmp_path / "ortho.tif", rgb, alpha)
    scene = GeoTiffScene.from_file(path, band_preset="rgb")
    assert scene.bands == ("red", "green", "blue")
    assert scene.layers == ((0, 1), (0, 2), (0, 3))
    np.testing.assert_array_equal(scene.read(WHOLE), rgb)
    np.testing.assert_array_equal(scene.read(Window(3, 7, 20, 11)), rgb[:, 3:23, 7:18])
    np.testing.assert_array_equal(scene.read_valid(WHOLE), valid)
    np.testing.assert_array_equal(scene.read_valid(Window(4, 30, 10, 10)), valid[4:14, 30:40])
    np.testing.assert_array_equal(scene.valid_overview(4), valid[::4, ::4])
    with pytest.raises(
        DataError, match=r"band preset 'rgbn' names 4 bands .* but it has 3; .*sentinel2_rgb, rgb\)"
    ):
        GeoTiffScene.from_file(path, band_preset="rgbn")


def test_alpha_combines_with_nodata(tmp_path: Path) -> None:
    """Valid where alpha is non-zero and some band is not nodata (0 for unsigned pixels)."""
    rgb = random_pixels(3, dtype=np.uint8)
    valid = collar()
    rgb[:, 20, 10] = 0  # alpha says data, every band says nodata
    path = write_rgba(tmp_path / "ortho.tif", rgb, np.where(valid, 255, 0))
    expected = valid.copy()
    expected[20, 10] = False
    np.testing.assert_array_equal(GeoTiffScene.from_file(path).read_valid(WHOLE), expected)


def test_16_bit_alpha_is_valid_wherever_non_zero(tmp_path: Path) -> None:
    """Any non-zero alpha of a 16-bit file is data, however far below full opacity (65535)."""
    alpha = np.tile(np.array([0, 1, 255, 65535], np.uint16), (48, 10))
    path = write_rgba(tmp_path / "ortho16.tif", random_pixels(3), alpha)
    np.testing.assert_array_equal(GeoTiffScene.from_file(path).read_valid(WHOLE), alpha != 0)


def test_a_file_of_alpha_bands_only_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "alpha.tif", random_pixels(1))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha]
    with pytest.raises(DataError, match=f"^{path}: every band is an alpha band, so it holds no data; fix"):
        load_geotiff_folder(tmp_path)


@pytest.mark.parametrize("internal", [True, False], ids=["internal", "msk-sidecar"])
def test_per_dataset_mask_is_validity(tmp_path: Path, internal: bool) -> None:
    pixels = random_pixels(3)
    valid = collar()
    pixels[:, ~valid] = 9999
    pixels[:, 20, 10] = 0  # inside the mask, but nodata
    path = add_mask(write_tif(tmp_path / "masked.tif", pixels), valid, internal)
    assert (tmp_path / "masked.tif.msk").exists() == (not internal)
    scene = GeoTiffScene.from_file(path)
    assert scene.bands == ("b1", "b2", "b3")
    expected = valid.copy()
    expected[20, 10] = False
    np.testing.assert_array_equal(scene.read_valid(WHOLE), expected)
    np.testing.assert_array_equal(scene.read_valid(Window(5, 33, 6, 7)), expected[5:11, 33:40])
    np.testing.assert_array_equal(scene.valid_overview(4), expected[::4, ::4])
    np.testing.assert_array_equal(scene.read(WHOLE), pixels)


def test_masked_coarse_band_never_blends_into_data(tmp_path: Path) -> None:
    """The resampling scene of test_geotiff_resampling, its 20 m collar masked instead of nodata:
    the garbage under the mask (9999) gets no bilinear weight, as nodata would not."""
    fine = np.full((1, 8, 8), 1000, np.uint16)
    fine[0, :4, :3] = 0
    fine[0, 4:, :1] = 0
    coarse = np.tile(np.array([9999, 100, 200, 300], np.uint16), (1, 4, 1))
    write_tif(tmp_path / f"{SENTINEL}_B02.tif", fine)
    path = write_tif(tmp_path / f"{SENTINEL}_B05.tif", coarse, transform=TRANSFORM @ Affine.scale(2))
    add_mask(path, np.tile([False, True, True, True], (4, 1)), internal=True)
    (scene,) = load_geotiff_folder(tmp_path)
    np.testing.assert_array_equal(scene.read_valid(FULL), EXPECTED_VALID)
    np.testing.assert_array_equal(scene.valid_overview(2), EXPECTED_VALID[1::2, 1::2])
    np.testing.assert_array_equal(scene.read(FULL)[1][:, 2:], np.tile(BILINEAR_ROW[2:], (8, 1)))


def test_cached_index_records_alpha_and_a_new_msk_sidecar(tmp_path: Path) -> None:
    folder, cache = tmp_path / "scenes", tmp_path / "cache"
    valid = collar()
    write_rgba(folder / "ortho.tif", random_pixels(3, dtype=np.uint8), np.where(valid, 255, 0))
    plain = write_tif(folder / "plain.tif", random_pixels(3, dtype=np.uint8, seed=1))
    first = GeoTiffSource(str(folder), cache_dir=str(cache)).load()
    cached = GeoTiffSource(str(folder), cache_dir=str(cache)).load()
    assert len(list(cache.glob("geotiff-index-*.json"))) == 1  # the second load read the cache
    for scenes in (first, cached):
        assert [s.num_bands for s in scenes] == [3, 3]
        np.testing.assert_array_equal(scenes[0].read_valid(WHOLE), valid)
        np.testing.assert_array_equal(scenes[0].valid_overview(4), valid[::4, ::4])
    assert cached[1].valid_overview(4).all()
    add_mask(plain, valid, internal=False)  # a sidecar: plain.tif itself is unchanged
    masked = GeoTiffSource(str(folder), cache_dir=str(cache)).load()
    assert len(list(cache.glob("geotiff-index-*.json"))) == 2
    np.testing.assert_array_equal(masked[1].read_valid(WHOLE), valid)
    np.testing.assert_array_equal(masked[1].valid_overview(4), valid[::4, ::4])


def test_statistics_see_the_data_bands_inside_the_alpha_only(tmp_path: Path) -> None:
    valid = collar()
    rgb = np.stack([np.where(valid, value, 250) for value in (10, 20, 30)]).astype(np.uint8)
    write_rgba(tmp_path / "ortho.tif", rgb, np.where(valid, 255, 0))
    dm = RSDataModule(
        GeoTiffSource(str(tmp_path), band_preset="rgb"),
        tile_size=16,
        batch_size=2,
        num_workers=0,
        stats_cache_dir=None,
    )
    dm.prepare()
    assert dm.stats.mean == (10.0, 20.0, 30.0)
    assert dm.stats.std == (1.0, 1.0, 1.0)  # constant bands are left unscaled
