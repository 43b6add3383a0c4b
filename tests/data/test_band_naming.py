"""Canonical band names never come from another sensor: unpadded B1..B12 only through a preset
or a file name that identifies the sensor (Landsat 8/9 product ids, Sentinel-2 tile ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsssl.data import bands as band_names
from rsssl.data.bands import canonical_band_name
from rsssl.data.geotiff import load_geotiff_folder
from rsssl.data.scene import DataError, Window
from rsssl.data.sources import GeoTiffSource
from tests.data.test_geotiff_source import random_pixels, write_tif

LANDSAT8 = "LC08_L1TP_224078_20200518_20200518_01_RT"
LANDSAT9_C2 = "LC09_L2SP_224078_20220520_20220522_02_T1"
SENTINEL2 = "T18SUJ_20200101T154811"


def write_band_files(folder: Path, scene: str, bands: list[str], seed: int = 0) -> np.ndarray:
    """<scene>_<band>.TIF per band; returns the pixels, one band per file in `bands` order."""
    pixels = random_pixels(len(bands), seed=seed)
    for i, band in enumerate(bands):
        write_tif(folder / f"{scene}_{band}.TIF", pixels[i : i + 1])
    return pixels


@pytest.mark.parametrize(
    ("name", "preset", "canonical"),
    [
        ("B10", None, "B10"),  # Landsat 8/9 thermal, Sentinel-2 cirrus: ambiguous
        ("B11", None, "B11"),
        ("B12", None, "B12"),
        ("B4", None, "B4"),
        ("B04", None, "red"),  # zero-padded: only Sentinel-2 writes it
        ("B8A", None, "nir08"),
        ("B10", "landsat8_sr", "lwir11"),  # a band of the preset's sensor outside the preset
        ("B10", "landsat8", "lwir11"),
        ("B10", "sentinel2", "cirrus"),
        ("B11", "sentinel2_10m", "swir16"),
        ("B10", "rgbn", "B10"),  # a generic preset names no sensor's bands
    ],
)
def test_canonical_names_never_cross_sensors(name: str, preset: str | None, canonical: str) -> None:
    assert canonical_band_name(name, preset) == canonical


@pytest.mark.parametrize(
    ("file_name", "sensor"),
    [
        (f"{LANDSAT8}_B4.TIF", "landsat8"),
        (f"{LANDSAT9_C2}_SR_B4.TIF", "landsat8"),
        ("LO08_L1GT_224078_20200518_20200518_01_RT_B5.TIF", "landsat8"),
        (f"{SENTINEL2}_B04.jp2", "sentinel2"),
        (f"{SENTINEL2}_B04_10m.jp2", "sentinel2"),
        ("LE07_L1TP_224078_20200518_20200518_01_T1_B4.TIF", None),  # Landsat 7: other band numbers
        ("scene_B4.tif", None),
        ("T18_20220131.tif", None),
    ],
)
def test_sensor_from_file_name(file_name: str, sensor: str | None) -> None:
    assert band_names.sensor_preset([file_name]) == sensor


def test_landsat_band_files_without_a_preset(tmp_path: Path) -> None:
    pixels = write_band_files(tmp_path, LANDSAT8, ["B2", "B3", "B4", "B10", "B11"])
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("blue", "green", "red", "lwir11", "lwir12")
    (rgb,) = GeoTiffSource(str(tmp_path), bands=["red", "green", "blue"]).load()
    assert rgb.bands == ("red", "green", "blue")
    np.testing.assert_array_equal(rgb.read(Window(0, 0, 48, 40)), pixels[[2, 1, 0]])
    (by_number,) = GeoTiffSource(str(tmp_path), bands=["B4", "B10"]).load()  # the file's own names
    np.testing.assert_array_equal(by_number.read(Window(0, 0, 48, 40)), pixels[[2, 3]])


def test_landsat_collection2_thermal_band_with_the_sr_preset(tmp_path: Path) -> None:
    write_band_files(tmp_path, LANDSAT9_C2, ["SR_B2", "SR_B3", "SR_B4", "ST_B10"])
    (scene,) = load_geotiff_folder(tmp_path, band_preset="landsat8_sr")
    assert scene.bands == ("blue", "green", "red", "lwir11")
    (unnamed,) = load_geotiff_folder(tmp_path)
    assert unnamed.bands == ("blue", "green", "red", "lwir11")


def test_sentinel2_band_files_without_a_preset(tmp_path: Path) -> None:
    write_band_files(tmp_path, SENTINEL2, ["B02", "B10", "B11", "B12"])
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("blue", "cirrus", "swir16", "swir22")


def test_a_multiband_landsat_file_named_by_its_descriptions(tmp_path: Path) -> None:
    write_tif(tmp_path / f"{LANDSAT8}.TIF", random_pixels(3), descriptions=("B2", "B3", "B10"))
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("blue", "green", "lwir11")


def test_band_numbers_of_an_unknown_sensor_stay_as_written(tmp_path: Path) -> None:
    write_band_files(tmp_path, "scene", ["B4", "B10", "B11"])
    (scene,) = load_geotiff_folder(tmp_path)
    assert scene.bands == ("B4", "B10", "B11")
    with pytest.raises(
        DataError, match=r"has no band 'red'; its bands are B4, B10, B11: .*data\.band_preset"
    ):
        GeoTiffSource(str(tmp_path), bands=["red"]).load()
