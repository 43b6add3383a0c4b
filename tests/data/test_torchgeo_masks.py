"""Alpha bands and GDAL masks of files read through a torchgeo RasterDataset are validity, not bands.

As for the GeoTIFF source (tests/data/test_geotiff_masks.py): an RGBA file has three data
bands, and a pixel is valid only where its alpha bands and GDAL per-dataset mask are non-zero,
on top of the nodata rule. torchgeo mosaics what it reads, so the pixels it hides read as the
nodata value (0 when untagged). The collars below hold data values (250 / 9999), so only the
alpha band or mask can tell them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, Resampling
from rasterio.warp import reproject

from rsssl.data.datamodule import RSDataModule
from rsssl.data.scene import DataError, Window
from rsssl.data.stats import stats_fingerprint
from rsssl.data.torchgeo_source import TorchGeoSource
from tests.data.test_geotiff_masks import WHOLE, add_mask, collar, write_rgba
from tests.data.test_geotiff_source import random_pixels, write_tif


def source(folder: Path, **kwargs) -> TorchGeoSource:
    """A plain RasterDataset over the folder's .tif files."""
    return TorchGeoSource("RasterDataset", str(folder), filename_glob="*.tif", **kwargs)


def ortho(folder: Path, nodata: float | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
    """An RGBA uint8 file whose alpha is 0 in the collar (where the bands hold white, 250) and 1,
    still valid, at one pixel; with `nodata` tagged. Returns the path, its RGB and the alpha's validity."""
    rgb = random_pixels(3, dtype=np.uint8)
    valid = collar()
    rgb[:, ~valid] = 250
    alpha = np.where(valid, 255, 0)
    alpha[30, 5] = 1
    path = write_rgba(folder / "ortho.tif", rgb, alpha)
    if nodata is not None:
        with rasterio.open(path, "r+") as ds:
            ds.nodata = nodata
    return path, rgb, valid


def test_rgba_alpha_is_validity_not_a_band(tmp_path: Path) -> None:
    _, rgb, valid = ortho(tmp_path)
    (scene,) = source(tmp_path, band_preset="rgb").load()
    assert (scene.bands, scene.dtype) == (("red", "green", "blue"), np.uint8)
    expected = np.where(valid, rgb, 0)  # what alpha hides reads as torchgeo's fill, 0
    np.testing.assert_array_equal(scene.read(WHOLE), expected)
    np.testing.assert_array_equal(scene.read(Window(3, 7, 20, 11)), expected[:, 3:23, 7:18])
    np.testing.assert_array_equal(scene.read_valid(WHOLE), valid)
    np.testing.assert_array_equal(scene.valid_overview(4), valid[::4, ::4])
    assert source(tmp_path).load()[0].bands == ("b1", "b2", "b3")


def test_alpha_counts_beside_a_nodata_tag(tmp_path: Path) -> None:
    """GDAL masks a nodata-tagged file by its nodata value only; the alpha must count as well."""
    path, rgb, valid = ortho(tmp_path, nodata=7)
    with rasterio.open(path, "r+") as ds:
        ds.write(np.full((3, 1, 1), 7, np.uint8), indexes=[1, 2, 3], window=((20, 21), (10, 11)))
    rgb[:, 20, 10] = 7  # inside the alpha, but nodata
    (scene,) = source(tmp_path).load()
    np.testing.assert_array_equal(scene.read(WHOLE), np.where(valid, rgb, 7))
    expected = valid.copy()
    expected[20, 10] = False
    np.testing.assert_array_equal(scene.read_valid(WHOLE), expected)
    np.testing.assert_array_equal(scene.valid_overview(4), expected[::4, ::4])


def test_alpha_of_a_five_band_file(tmp_path: Path) -> None:
    """GDAL makes a mask of the alpha of RGBA and gray-alpha files only; RGBN + alpha counts too."""
    rgbn = random_pixels(4)
    valid = collar()
    rgbn[:, ~valid] = 9999
    path = write_tif(
        tmp_path / "rgbna.tif", np.concatenate([rgbn, np.where(valid, 65535, 0).astype(np.uint16)[None]])
    )
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [
            ColorInterp.red,
            ColorInterp.green,
            ColorInterp.blue,
            ColorInterp.gray,
            ColorInterp.alpha,
        ]
    (scene,) = source(tmp_path).load()
    assert scene.bands == ("b1", "b2", "b3", "b4")
    np.testing.assert_array_equal(scene.read(WHOLE), np.where(valid, rgbn, 0))
    np.testing.assert_array_equal(scene.read_valid(WHOLE), valid)


def test_alpha_and_a_gdal_mask_both_count(tmp_path: Path) -> None:
    """GDAL masks a file with a per-dataset mask by that mask only; its alpha must count as well."""
    path, rgb, valid = ortho(tmp_path)
    inside_mask = np.ones_like(valid)
    inside_mask[20:22] = False
    add_mask(path, inside_mask, internal=True)
    (scene,) = source(tmp_path).load()
    expected = valid & inside_mask
    assert scene.bands == ("b1", "b2", "b3")
    np.testing.assert_array_equal(scene.read(WHOLE), np.where(expected, rgb, 0))
    np.testing.assert_array_equal(scene.read_valid(WHOLE), expected)


@pytest.mark.parametrize("internal", [True, False], ids=["internal", "msk-sidecar"])
def test_per_dataset_mask_is_validity(tmp_path: Path, internal: bool) -> None:
    pixels = random_pixels(3)
    valid = collar()
    pixels[:, ~valid] = 9999
    add_mask(write_tif(tmp_path / "masked.tif", pixels), valid, internal)
    (scene,) = source(tmp_path).load()
    assert scene.bands == ("b1", "b2", "b3")
    np.testing.assert_array_equal(scene.read(WHOLE), np.where(valid, pixels, 0))
    np.testing.assert_array_equal(scene.read_valid(WHOLE), valid)
    np.testing.assert_array_equal(scene.valid_overview(4), valid[::4, ::4])


def test_rgba_read_at_a_finer_resolution(tmp_path: Path) -> None:
    """data.res=5 makes torchgeo read the 10 m file at 5 m; its alpha still says where the data is."""
    _, rgb, valid = ortho(tmp_path)
    (scene,) = source(tmp_path, res=5.0).load()
    fine = valid.repeat(2, axis=0).repeat(2, axis=1)
    assert (scene.bands, scene.height, scene.width) == (("b1", "b2", "b3"), 96, 80)
    expected = np.where(fine, rgb.repeat(2, axis=1).repeat(2, axis=2), 0)
    np.testing.assert_array_equal(scene.read(Window(0, 0, 96, 80)), expected)
    np.testing.assert_array_equal(scene.read_valid(Window(0, 0, 96, 80)), fine)


def test_rgba_reprojected_by_torchgeo(tmp_path: Path) -> None:
    """data.crs makes torchgeo warp the file (a WarpedVRT); pixels and validity are those of GDAL
    reprojecting its bands and alpha (nearest) onto the scene grid."""
    path, _, _ = ortho(tmp_path)
    (scene,) = source(tmp_path, crs="EPSG:32617").load()
    assert (scene.bands, scene.height, scene.width) == (("b1", "b2", "b3"), 50, 43)
    reprojected = np.zeros((4, 50, 43), np.uint8)
    with rasterio.open(path) as ds:
        reproject(
            ds.read(),
            reprojected,
            src_transform=ds.transform,
            src_crs=ds.crs,
            dst_transform=Affine(*scene.transform),
            dst_crs=scene.crs,
            resampling=Resampling.nearest,
        )
    valid = reprojected[3] != 0
    whole = Window(0, 0, 50, 43)
    np.testing.assert_array_equal(scene.read(whole), np.where(valid, reprojected[:3], 0))
    np.testing.assert_array_equal(scene.read_valid(whole), valid)


def test_what_alpha_hides_is_filled_from_the_next_file_in_the_wider_dtype(tmp_path: Path) -> None:
    """An RGBA uint8 file and a uint16 file over the same footprint: the mosaic is uint16, the
    RGBA file (first) wins inside its alpha and the other file fills its collar."""
    _, rgb, valid = ortho(tmp_path)
    wide = random_pixels(3, seed=1)
    write_tif(tmp_path / "wide.tif", wide)
    (scene,) = source(tmp_path).load()
    assert (scene.dtype, scene.bands) == (np.uint16, ("b1", "b2", "b3"))
    np.testing.assert_array_equal(scene.read(WHOLE), np.where(valid, rgb, wide))
    assert scene.read_valid(WHOLE).all()


@pytest.mark.parametrize(
    ("other", "fix"),
    [
        ("nodata", "gdal_edit.py -unsetnodata"),
        ("msk", r"delete .*ortho\.tif\.msk"),
        ("internal", r"re-export it without the mask \(gdal_translate -mask none"),
    ],
)
def test_warping_a_file_with_alpha_and_another_validity_is_refused(
    tmp_path: Path, other: str, fix: str
) -> None:
    """torchgeo's warp (GDAL's warper) honours one of them only, so the file is refused."""
    path, _, valid = ortho(tmp_path, nodata=7 if other == "nodata" else None)
    if other != "nodata":
        add_mask(path, valid, internal=other == "internal")
    with pytest.raises(
        DataError,
        match=rf"^{path}: torchgeo must warp it to the dataset CRS \(EPSG:32617\) to read it, but it "
        rf"has an alpha band and a {'nodata value' if other == 'nodata' else 'GDAL mask'}.*{fix}.*"
        "data=geotiff",
    ):
        source(tmp_path, crs="EPSG:32617").load()
    np.testing.assert_array_equal(source(tmp_path).load()[0].read_valid(WHOLE), valid)  # in its own CRS


def test_band_names_for_the_data_bands_only(tmp_path: Path) -> None:
    path, rgb, valid = ortho(tmp_path)
    named = source(tmp_path, all_bands=["red", "green", "blue"], bands=["blue", "red"]).load()[0]
    assert named.bands == ("blue", "red")
    np.testing.assert_array_equal(named.read(WHOLE), np.where(valid, rgb[[2, 0]], 0))
    with pytest.raises(
        DataError,
        match=rf"data\.all_bands names band 4 of {path} \('alpha'\), but it is its alpha band: validity, "
        r"not data; name its data bands only \(data\.all_bands=\[red, green, blue\]\)",
    ):
        source(tmp_path, all_bands=["red", "green", "blue", "alpha"]).load()


def test_a_file_of_alpha_bands_only_is_refused(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "alpha.tif", random_pixels(1))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha]
    with pytest.raises(DataError, match=f"^{path}: every band is an alpha band, so it holds no data; fix"):
        source(tmp_path).load()


def test_statistics_see_the_data_bands_inside_the_alpha_only(tmp_path: Path) -> None:
    valid = collar()
    rgb = np.stack([np.where(valid, value, 250) for value in (10, 20, 30)]).astype(np.uint8)
    write_rgba(tmp_path / "ortho.tif", rgb, np.where(valid, 255, 0))
    dm = RSDataModule(source(tmp_path), tile_size=16, batch_size=2, num_workers=0, stats_cache_dir=None)
    dm.prepare()
    assert dm.stats.mean == (10.0, 20.0, 30.0)
    assert dm.stats.std == (1.0, 1.0, 1.0)  # constant bands are left unscaled


def test_statistics_fingerprint_covers_a_new_msk_sidecar(tmp_path: Path) -> None:
    plain = write_tif(tmp_path / "plain.tif", random_pixels(3))
    before = source(tmp_path).describe()
    add_mask(plain, collar(), internal=False)  # a sidecar: plain.tif itself is unchanged
    after = source(tmp_path).describe()
    assert after["files"] == before["files"]
    assert [Path(f["path"]).name for f in after["sidecars"]] == ["plain.tif.msk"]
    assert stats_fingerprint(after) != stats_fingerprint(before)
