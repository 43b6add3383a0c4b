"""Scenes larger than memory: per-band files on one grid, resampled coarse bands, the cached index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling

from rsssl.data.geotiff import load_geotiff_folder
from rsssl.data.scene import DataError, Window
from rsssl.data.sources import GeoTiffSource
from rsssl.data.tiles import build_tile_index
from tests.data.test_geotiff_source import TRANSFORM, random_pixels, with_collar, write_tif

LANDSAT = "LC08_L1TP_224078_20200518_20200518_01_RT"
SENTINEL = "T18SUJ_20200101T154811"


def smooth(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth uint16 field (bilinear resampling of it is well defined to within rounding)."""
    rows, cols = np.mgrid[0:height, 0:width]
    phase = np.random.default_rng(seed).uniform(0, 6, 2)
    field = 20_000 + 8_000 * np.sin(cols / 3.0 + phase[0]) + 6_000 * np.cos(rows / 4.0 + phase[1])
    return field.astype(np.uint16)[None]


def scaled(transform: Affine, factor: float) -> Affine:
    """The same origin with pixels `factor` times larger."""
    return transform @ Affine.scale(factor)


def write_band_files(folder: Path, scene: str, pixels: np.ndarray, bands: list[str]) -> list[Path]:
    """One single-band file per band: <scene>_<band>.TIF."""
    return [write_tif(folder / f"{scene}_{band}.TIF", pixels[i : i + 1]) for i, band in enumerate(bands)]


def test_per_band_files_equal_the_same_data_in_one_multiband_file(tmp_path: Path) -> None:
    pixels, expected_valid = with_collar(random_pixels(4))
    bands = ["B2", "B3", "B4", "B5"]
    write_band_files(tmp_path / "bands", LANDSAT, pixels, bands)
    write_tif(tmp_path / "stack" / f"{LANDSAT}.TIF", pixels, descriptions=tuple(bands))
    (per_band,) = load_geotiff_folder(tmp_path / "bands")
    (stacked,) = load_geotiff_folder(tmp_path / "stack")
    assert per_band.name == stacked.name == LANDSAT
    assert len(per_band.paths) == 4 and len(stacked.paths) == 1
    for attribute in ("bands", "height", "width", "dtype", "transform", "crs", "nodata", "dates"):
        assert getattr(per_band, attribute) == getattr(stacked, attribute), attribute
    # the LC08_ product id names Landsat-8's band numbers, with no preset
    assert per_band.bands == ("blue", "green", "red", "nir") and per_band.dates == ("2020-05-18",)
    full = np.concatenate([rasterio.open(p).read() for p in per_band.paths])
    # one file holds data where any of its bands does; a scene of per-band files where every band
    # file does, so the pixel whose band B2 alone is 0 is data only in the multi-band file
    every_band_valid = expected_valid.copy()
    every_band_valid[20, 10] = False
    for row, col, height, width in [(0, 0, 48, 40), (3, 7, 20, 11), (30, 25, 18, 15), (47, 39, 1, 1)]:
        window = Window(row, col, height, width)
        tile = per_band.read(window)
        np.testing.assert_array_equal(tile, full[:, row : row + height, col : col + width])
        np.testing.assert_array_equal(tile, stacked.read(window))
        rows, cols = slice(row, row + height), slice(col, col + width)
        np.testing.assert_array_equal(per_band.read_valid(window), every_band_valid[rows, cols])
        np.testing.assert_array_equal(stacked.read_valid(window), expected_valid[rows, cols])
    np.testing.assert_array_equal(per_band.valid_overview(4), expected_valid[::4, ::4])
    np.testing.assert_array_equal(per_band.valid_overview(7), stacked.valid_overview(7))
    named = GeoTiffSource(str(tmp_path / "bands"), band_preset="landsat8").load()[0]
    assert named.bands == ("blue", "green", "red", "nir")


def test_band_files_sort_by_band_number_and_group_by_scene(tmp_path: Path) -> None:
    bands = ["B10", "B8A", "B2", "B8"]
    write_band_files(tmp_path, "sceneA", random_pixels(4, seed=1), bands)
    write_band_files(tmp_path, "sceneB", random_pixels(4, seed=2), bands)
    write_tif(tmp_path / "stack_B2.tif", random_pixels(4), descriptions=tuple(bands))  # its own scene
    scenes = load_geotiff_folder(tmp_path, band_preset="sentinel2")
    assert [s.name for s in scenes] == ["sceneA", "sceneB", "stack_B2"]
    assert [Path(p).stem for p in scenes[0].paths] == ["sceneA_B2", "sceneA_B8", "sceneA_B8A", "sceneA_B10"]
    assert scenes[0].bands == ("blue", "nir", "nir08", "cirrus")


def test_coarse_bands_are_resampled_to_the_finest_grid(tmp_path: Path) -> None:
    """Sentinel-2 style: 10 m and 20 m bands of one footprint read on the 10 m grid."""
    fine = np.concatenate([smooth(64, 48, seed) for seed in range(2)])
    coarse = np.concatenate([smooth(32, 24, seed) for seed in range(2, 4)])
    coarse_transform = scaled(TRANSFORM, 2)
    for i, band in enumerate(["B02", "B04"]):
        write_tif(tmp_path / f"{SENTINEL}_{band}.tif", fine[i : i + 1])
    paths = [
        write_tif(tmp_path / f"{SENTINEL}_{band}.tif", coarse[i : i + 1], transform=coarse_transform)
        for i, band in enumerate(["B05", "B11"])
    ]
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("blue", "red", "rededge071", "swir16")
    assert (scene.height, scene.width, scene.transform) == (64, 48, tuple(TRANSFORM)[:6])
    resampled = np.concatenate(
        [rasterio.open(p).read(out_shape=(1, 64, 48), resampling=Resampling.bilinear) for p in paths]
    )
    for row, col, height, width in [(0, 0, 64, 48), (5, 3, 16, 16), (17, 30, 31, 18), (63, 47, 1, 1)]:
        tile = scene.read(Window(row, col, height, width)).astype(np.int64)
        np.testing.assert_array_equal(tile[:2], fine[:, row : row + height, col : col + width])
        expected = resampled[:, row : row + height, col : col + width].astype(np.int64)
        assert np.abs(tile[2:] - expected).max() <= 1


def test_a_smaller_pan_band_sets_the_grid(tmp_path: Path) -> None:
    """Landsat style: the 15 m pan band (2N-1 pixels) covers less than the 30 m bands."""
    multispectral = smooth(20, 16, seed=0)
    pan = smooth(39, 31, seed=1)
    ms_path = write_tif(tmp_path / f"{LANDSAT}_B4.TIF", multispectral, transform=scaled(TRANSFORM, 3))
    write_tif(tmp_path / f"{LANDSAT}_B8.TIF", pan, transform=scaled(TRANSFORM, 1.5))
    (scene,) = load_geotiff_folder(tmp_path, band_preset="landsat8")
    assert scene.bands == ("red", "pan")
    assert (scene.height, scene.width, scene.pixel_size) == (39, 31, 15.0)
    tile = scene.read(Window(0, 0, 39, 31)).astype(np.int64)
    np.testing.assert_array_equal(tile[1], pan[0])
    full = rasterio.open(ms_path).read(1, out_shape=(40, 32), resampling=Resampling.bilinear)
    assert np.abs(tile[0] - full[:39, :31]).max() <= 1
    assert scene.valid_overview(4).all()


def test_band_files_of_one_scene_must_share_crs_and_footprint(tmp_path: Path) -> None:
    pixels = random_pixels(2)
    write_tif(tmp_path / "crs" / "scene_B2.tif", pixels[:1])
    write_tif(tmp_path / "crs" / "scene_B3.tif", pixels[1:], crs="EPSG:32619")
    with pytest.raises(
        DataError,
        match=r"per-band files of scene 'scene' have different CRSs \(EPSG:32618: .*scene_B2\.tif; "
        r"EPSG:32619: .*scene_B3\.tif\); reproject",
    ):
        load_geotiff_folder(tmp_path / "crs")
    write_tif(tmp_path / "shift" / "scene_B2.tif", pixels[:1])
    write_tif(tmp_path / "shift" / "scene_B3.tif", pixels[1:], transform=TRANSFORM @ Affine.translation(6, 0))
    with pytest.raises(
        DataError,
        match=r"scene 'scene' have different footprints .*scene_B2\.tif.*scene_B3\.tif.*gdalwarp -te",
    ):
        load_geotiff_folder(tmp_path / "shift")


class OpenCounter:
    """Counts rasterio.open calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = rasterio.open

        def counting(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(rasterio, "open", counting)


def test_index_and_overviews_are_cached_and_invalidated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, cache = tmp_path / "scenes", tmp_path / "cache"
    write_band_files(folder, LANDSAT, random_pixels(2, seed=1), ["B2", "B3"])
    write_tif(folder / "other.tif", random_pixels(2, seed=2), descriptions=("B4", "B5"))
    opens = OpenCounter(monkeypatch)

    def load_and_index() -> list:
        scenes = GeoTiffSource(str(folder), cache_dir=str(cache)).load()
        build_tile_index(scenes, tile_size=16)
        return scenes

    first = load_and_index()
    assert opens.count >= 3  # every file's header, then the pixels for the overviews
    assert len(list(cache.glob("geotiff-index-*.json"))) == 1
    assert len(list(cache.glob("geotiff-index-*/*.npz"))) == 2
    opens.count = 0
    second = load_and_index()
    assert opens.count == 0  # no header, no pixel read
    assert [(s.name, s.bands, s.dates, s.transform) for s in second] == [
        (s.name, s.bands, s.dates, s.transform) for s in first
    ]
    named = GeoTiffSource(str(folder), band_preset="landsat8", cache_dir=str(cache)).load()
    assert opens.count == 0  # options apply to the cached index
    assert [s.bands for s in named] == [("blue", "green"), ("red", "nir")]
    changed = random_pixels(2, seed=3)
    write_tif(folder / "other.tif", changed, descriptions=("B4", "B5"))  # same size, new pixels, new time
    os.utime(folder / "other.tif", ns=(0, 10**18))
    opens.count = 0
    third = load_and_index()
    assert opens.count == 3 + 1  # the three headers again, and the changed file's pixels
    assert len(list(cache.glob("geotiff-index-*.json"))) == 2
    np.testing.assert_array_equal(third[1].read(Window(0, 0, 48, 40)), changed)


def test_cached_index_from_another_working_directory_reads_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data.root=data` from project/, then `data.root=../data` from project/sub/ (which has a
    data/x.tif of its own): one folder, one cache entry, and both runs read project/data/x.tif."""
    project, cache = tmp_path / "project", tmp_path / "cache"
    right, other = random_pixels(2, seed=1), random_pixels(2, seed=2)
    write_tif(project / "data" / "x.tif", right)
    write_tif(project / "sub" / "data" / "x.tif", other)
    monkeypatch.chdir(project)
    (first,) = GeoTiffSource("data", cache_dir=str(cache)).load()
    monkeypatch.chdir(project / "sub")
    (second,) = GeoTiffSource("../data", cache_dir=str(cache)).load()
    assert len(list(cache.glob("geotiff-index-*.json"))) == 1  # the second run used the cached index
    np.testing.assert_array_equal(second.read(Window(0, 0, 48, 40)), right)
    assert first.paths == second.paths == (str((project / "data" / "x.tif").resolve()),)


def write_jp2(path: Path, pixels: np.ndarray, transform: Affine = TRANSFORM) -> Path:
    """A lossless JPEG 2000 file (the Sentinel-2 distribution format) holding C x H x W `pixels`."""
    count, height, width = pixels.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(width=width, height=height, count=count, dtype=pixels.dtype.name, crs="EPSG:32618")
    with rasterio.open(
        path, "w", driver="JP2OpenJPEG", transform=transform, REVERSIBLE="YES", QUALITY=100, **profile
    ) as ds:
        ds.write(pixels)
    return path


def test_landsat_collection2_files_make_one_scene_without_its_quality_layers(tmp_path: Path, caplog) -> None:
    scene_id = "LC08_L2SP_224078_20200518_20200527_02_T1"
    pixels = random_pixels(5)
    write_band_files(tmp_path, scene_id, pixels[:4], ["SR_B2", "SR_B3", "SR_B4", "SR_B5"])
    write_band_files(tmp_path, scene_id, pixels[4:], ["ST_B10"])
    for layer in ("QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL"):
        write_tif(tmp_path / f"{scene_id}_{layer}.TIF", random_pixels(1))
    (tmp_path / f"{scene_id}_MTL.txt").write_text("metadata, not a raster")
    with caplog.at_level("WARNING"):
        (scene,) = load_geotiff_folder(tmp_path, band_preset="landsat8")
    assert scene.name == scene_id and scene.dates == ("2020-05-18",)
    assert scene.bands == ("blue", "green", "red", "nir", "lwir11")
    np.testing.assert_array_equal(scene.read(Window(0, 0, 48, 40)), pixels)
    assert "left out 3 files" in caplog.text
    assert all(
        f"{scene_id}_{layer}.TIF" in caplog.text for layer in ("QA_PIXEL", "QA_RADSAT", "SR_QA_AEROSOL")
    )


def test_sentinel2_l2a_resolution_folders_make_one_scene_read_from_the_finest_files(
    tmp_path: Path, caplog
) -> None:
    img_data = tmp_path / "S2A_MSIL2A.SAFE" / "GRANULE" / "L2A_T18SUJ" / "IMG_DATA"
    fine = random_pixels(2, 48, 40, seed=1)
    coarse = np.concatenate([smooth(24, 20, seed) for seed in range(3)])
    for i, band in enumerate(["B02", "B04"]):
        write_jp2(img_data / "R10m" / f"{SENTINEL}_{band}_10m.jp2", fine[i : i + 1])
    write_jp2(img_data / "R10m" / f"{SENTINEL}_TCI_10m.jp2", random_pixels(3, dtype=np.uint8))
    for i, band in enumerate(["B02", "B04", "B05"]):  # B02 and B04 again at 20 m: the 10 m files win
        write_jp2(img_data / "R20m" / f"{SENTINEL}_{band}_20m.jp2", coarse[i : i + 1], scaled(TRANSFORM, 2))
    write_jp2(
        img_data / "R20m" / f"{SENTINEL}_SCL_20m.jp2",
        random_pixels(1, 24, 20, dtype=np.uint8),
        scaled(TRANSFORM, 2),
    )
    with caplog.at_level("WARNING"):
        (scene,) = load_geotiff_folder(tmp_path)
    assert scene.name == f"S2A_MSIL2A.SAFE/GRANULE/L2A_T18SUJ/IMG_DATA/{SENTINEL}"
    assert scene.bands == ("blue", "red", "rededge071")
    assert (scene.height, scene.width, scene.pixel_size) == (48, 40, 10.0)
    tile = scene.read(Window(4, 8, 16, 16))
    np.testing.assert_array_equal(tile[:2], fine[:, 4:20, 8:24])
    assert "left out 2 files" in caplog.text and "TCI_10m" in caplog.text and "SCL_20m" in caplog.text


def test_selecting_bands_of_band_files_keeps_their_own_grid(tmp_path: Path) -> None:
    """Landsat Level-1 with its 15 m pan band: selecting the 30 m bands reads them at 30 m."""
    multispectral = smooth(20, 16, seed=0)
    write_tif(tmp_path / f"{LANDSAT}_B4.TIF", multispectral, transform=scaled(TRANSFORM, 3))
    write_tif(tmp_path / f"{LANDSAT}_B8.TIF", smooth(39, 31, seed=1), transform=scaled(TRANSFORM, 1.5))
    (scene,) = GeoTiffSource(str(tmp_path), band_preset="landsat8", bands=["red"]).load()
    assert (scene.height, scene.width, scene.pixel_size) == (20, 16, 30.0)
    np.testing.assert_array_equal(scene.read(Window(0, 0, 20, 16)), multispectral)
    assert scene.valid_overview(4).shape == (5, 4)


def test_two_files_for_one_band_at_one_resolution_are_refused(tmp_path: Path) -> None:
    pixels = random_pixels(1)
    write_tif(tmp_path / "R10m" / f"{SENTINEL}_B02_10m.tif", pixels)
    write_tif(tmp_path / "R10m" / f"{SENTINEL}_B02.tif", pixels)
    with pytest.raises(DataError, match=r"two files for band B02 at one resolution .*B02_10m\.tif.*keep one"):
        load_geotiff_folder(tmp_path)
