"""Metres to pixels: the CRS's linear unit and the true pixel size of an affine transform.

Hand computations: a US survey foot is 1200 / 3937 = 0.3048006096 m, so a 0.5 ftUS pixel is
0.1524003048 m; 100 m is then 656.17 px, rounded down to 656 for the neighbourhood radius (a
neighbour is never further than asked) and 10 m is 65.62 px, rounded to the nearest, 66, for a
tile side. A 10 m grid rotated by atan(6/8) has a = 8, d = 6: its pixel is sqrt(8² + 6²) = 10 m
wide, not |a| = 8.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from affine import Affine

from rsssl.data.datamodule import RSDataModule
from rsssl.data.geotiff import GeoTiffScene
from rsssl.data.sampling import neighbour_radii, tile_pixels
from rsssl.data.scene import DataError
from rsssl.data.sources import GeoTiffSource
from tests.data.test_geotiff_source import TRANSFORM, random_pixels, write_tif

US_FEET = Affine(0.5, 0.0, 6_000_000.0, 0.0, -0.5, 2_100_000.0)  # EPSG:2227, 0.5 ftUS pixels
ROTATED = Affine(8.0, 6.0, 500_000.0, 6.0, -8.0, 4_200_000.0)  # 10 m pixels, rotated


def scene_file(tmp_path: Path, transform: Affine, crs: str | None, size: int = 80) -> Path:
    return write_tif(tmp_path / "scene.tif", random_pixels(2, size, size), transform=transform, crs=crs)


def test_us_survey_feet_are_converted_to_metres(tmp_path: Path) -> None:
    scene = GeoTiffScene.from_file(scene_file(tmp_path, US_FEET, "EPSG:2227"))
    assert scene.pixel_size == 0.5  # map units: feet
    assert neighbour_radii([scene], 100, "m") == (656,)
    assert tile_pixels([scene], 10, "m", "data.tile_size") == 66


def test_rotated_pixel_is_its_true_size(tmp_path: Path) -> None:
    scene = GeoTiffScene.from_file(scene_file(tmp_path, ROTATED, "EPSG:32618"))
    assert scene.pixel_size == 10.0
    assert neighbour_radii([scene], 105, "m") == (10,)
    assert tile_pixels([scene], 160, "m", "data.tile_size") == 16


def test_positions_stay_in_the_crs_map_units(tmp_path: Path) -> None:
    """`pos` and `neighbor_pos` are coordinates of the scene's CRS (feet here), the radius and the
    tile side pixels converted from metres: 100 m -> 656 px, 10 m -> 66 px (tile centre 33)."""
    torch.manual_seed(0)
    dm = RSDataModule(
        GeoTiffSource(str(scene_file(tmp_path, US_FEET, "EPSG:2227").parent)),
        tile_size=10,
        tile_units="m",
        neighbor_radius=100,
        neighbor_units="m",
        batch_size=2,
        num_workers=0,
        stats_cache_dir=None,
    )
    dm.prepare()
    dm.require(["neighbor"])
    dataset = dm.train_dataloader().dataset
    assert (dm.tile_size, dataset.sampling.radii) == (66, (656,))
    sample = dataset[(0, 0)]
    row, col = sample["pixel"].tolist()
    dy, dx = sample["neighbor_offset"].tolist()
    assert sample["pos"].tolist() == [6_000_000 + 0.5 * (col + 33), 2_100_000 - 0.5 * (row + 33)]
    assert (sample["neighbor_pos"] - sample["pos"]).tolist() == [0.5 * dx, -0.5 * dy]


@pytest.mark.parametrize(
    ("transform", "crs", "problem", "fix"),
    [
        (
            Affine(1e-4, 0, -122.0, 0, -1e-4, 37.0),
            "EPSG:4326",
            "is in a geographic CRS (EPSG:4326), its pixel size 0.0001 is in degrees",
            "reproject it to a projected CRS in metres or feet (gdalwarp -t_srs EPSG:<code>)",
        ),
        (
            TRANSFORM,
            None,
            "has no CRS, so the unit of its pixel size 10 is unknown",
            "give it a projected CRS (a GeoTIFF: gdal_edit.py -a_srs EPSG:<code> FILE)",
        ),
        (
            Affine(10.0, 0, 500_000.0, 0, -20.0, 4_200_000.0),
            "EPSG:32618",
            "has non-square pixels (10 x 20 m), but tiles and the neighbourhood are square in pixels",
            "resample it to square pixels (gdalwarp -tr <size> <size>)",
        ),
    ],
    ids=["geographic", "no-crs", "non-square"],
)
@pytest.mark.parametrize(
    ("convert", "key", "units_key"),
    [
        (lambda scene: neighbour_radii([scene], 100, "m"), "data.neighbor_radius", "data.neighbor_units"),
        (lambda scene: tile_pixels([scene], 100, "m", "data.tile_size"), "data.tile_size", "data.tile_units"),
    ],
    ids=["neighbor", "tile"],
)
def test_metres_that_cannot_be_converted_are_refused(
    tmp_path: Path, transform, crs, problem, fix, convert, key, units_key
) -> None:
    path = scene_file(tmp_path, transform, crs)
    scene = GeoTiffScene.from_file(path)
    message = (
        f"{key} is in metres but scene 'scene' ({path}) {problem}: give {key} in pixels "
        f"({units_key}=px) or {fix}"
    )
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        convert(scene)
    assert neighbour_radii([scene], 100, "px") == (100,)  # pixels need no conversion
    assert tile_pixels([scene], 16, "px", "data.tile_size") == 16
