"""torchgeo RasterDatasets as a source: scenes, exact window reads, batches, the CLI and errors.

The fake datasets are laid out on disk the way torchgeo's own tests do it: per-band Sentinel-2
GeoTIFFs named as `Sentinel2.filename_regex` expects, and multi-band files for a plain
RasterDataset.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torchgeo.samplers import GridGeoSampler

from rsssl.cli.pretrain import main
from rsssl.data.datamodule import RSDataModule
from rsssl.data.scene import DataError, Window
from rsssl.data.stats import stats_fingerprint
from rsssl.data.tiles import TileDataset
from rsssl.data.torchgeo_source import TorchGeoScene, TorchGeoSource, torchgeo_tile_index
from tests.data.test_geotiff_source import write_tif

S2 = "torchgeo.datasets.Sentinel2"
S2_BANDS = ["B04", "B03", "B02", "B08"]
CANONICAL = ("red", "green", "blue", "nir")
DATES = {"20200101T103021": "2020-01-01", "20200301T103021": "2020-03-01"}
# two Sentinel-2 tiles side by side, 10 m, UTM 18N
TILES = {
    "18SUJ": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
    "18SVJ": Affine(10.0, 0.0, 500_400.0, 0.0, -10.0, 4_200_000.0),
}
HEIGHT, WIDTH = 64, 40


def pixels(count: int, seed: int, dtype: type = np.uint16) -> np.ndarray:
    """Strictly positive random pixels, so only a written collar is nodata."""
    high = 250 if dtype == np.uint8 else 60_000
    return np.random.default_rng(seed).integers(1, high, (count, HEIGHT, WIDTH)).astype(dtype)


@pytest.fixture
def s2_dir(tmp_path: Path) -> Path:
    """T{tile}_{date}_{band}.tif for two tiles, two dates and four bands; a zero collar on one date."""
    root = tmp_path / "s2"
    for t, (tile, transform) in enumerate(TILES.items()):
        for d, date in enumerate(DATES):
            for b, band in enumerate(["B02", "B03", "B04", "B08"]):
                band_pixels = pixels(1, seed=100 * t + 10 * d + b)
                if tile == "18SUJ" and date.startswith("202003"):
                    band_pixels[:, :8] = 0  # top 8 rows empty on the second date
                write_tif(root / f"T{tile}_{date}_{band}.tif", band_pixels, transform=transform)
    return root


def band_file(root: Path, tile: str, date: str, band: str) -> np.ndarray:
    with rasterio.open(root / f"T{tile}_{date}_{band}.tif") as ds:
        return ds.read(1)


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    """Two 3-band uint8 files with dates in their names, and a file that is not a raster."""
    root = tmp_path / "plain"
    for i, name in enumerate(["field_20210601.tif", "field_20210901.tif"]):
        transform = Affine(5.0, 0.0, 600_000.0 + 400 * i, 0.0, -5.0, 4_100_000.0)
        write_tif(root / name, pixels(3, seed=i, dtype=np.uint8), transform=transform)
    (root / "notes.txt").write_text("not a raster")
    return root


def test_sentinel2_scenes_bands_dtype_dates_and_grid(s2_dir: Path) -> None:
    scenes = TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).load()
    assert [s.name for s in scenes] == ["T18SUJ_20200101T103021_B04", "T18SVJ_20200101T103021_B04"]
    for scene, transform in zip(scenes, TILES.values()):
        assert isinstance(scene, TorchGeoScene)
        assert scene.bands == CANONICAL
        assert (scene.dtype, scene.height, scene.width) == (np.uint16, HEIGHT, WIDTH)
        assert scene.dates == tuple(DATES.values())
        assert scene.crs == "EPSG:32618"
        assert scene.transform == tuple(transform)[:6]
    one_per_date = TorchGeoSource(S2, str(s2_dir), bands=["B08"], group_dates=False).load()
    assert [s.dates for s in one_per_date] == [("2020-01-01",), ("2020-03-01",)] * 2


def test_window_reads_equal_rasterio_reads_of_the_band_files(s2_dir: Path) -> None:
    (scene, _) = TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).load()
    for date_index, date in enumerate(DATES):
        full = np.stack([band_file(s2_dir, "18SUJ", date, band) for band in S2_BANDS])
        for row, col, height, width in [(0, 0, HEIGHT, WIDTH), (3, 7, 20, 11), (40, 25, 24, 15)]:
            tile = scene.read(Window(row, col, height, width), date_index)
            assert tile.dtype == np.uint16
            np.testing.assert_array_equal(tile, full[:, row : row + height, col : col + width])


def test_validity_holds_at_every_date(s2_dir: Path) -> None:
    (collared, clean) = TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).load()
    expected = np.ones((HEIGHT, WIDTH), bool)
    expected[:8] = False
    np.testing.assert_array_equal(collared.read_valid(Window(0, 0, HEIGHT, WIDTH)), expected)
    np.testing.assert_array_equal(collared.read_valid(Window(4, 3, 10, 10)), expected[4:14, 3:13])
    np.testing.assert_array_equal(collared.valid_overview(4), expected[::4, ::4])
    assert clean.valid_overview(3).shape == (22, 14) and clean.valid_overview(3).all()


def test_plain_raster_dataset_with_glob_regex_and_band_names(plain_dir: Path) -> None:
    source = TorchGeoSource("RasterDataset", str(plain_dir), filename_glob="*.tif")
    scenes = source.load()
    assert [(s.name, s.bands, s.dtype, s.dates) for s in scenes] == [
        ("field_20210601", ("b1", "b2", "b3"), np.uint8, ("",)),
        ("field_20210901", ("b1", "b2", "b3"), np.uint8, ("",)),
    ]
    named = TorchGeoSource(
        "torchgeo.datasets.RasterDataset",
        [str(plain_dir)],
        bands=["nir", "red"],
        filename_glob="*.tif",
        filename_regex=r"field_(?P<date>\d{8})\.tif",
        all_bands=["red", "green", "nir"],
    )
    first = named.load()[0]
    assert (first.bands, first.dates) == (("nir", "red"), ("2021-06-01",))
    with rasterio.open(plain_dir / "field_20210601.tif") as ds:
        expected = ds.read([3, 1], window=((5, 25), (2, 32)))
    np.testing.assert_array_equal(first.read(Window(5, 2, 20, 30)), expected)
    assert named.describe()["attrs"]["all_bands"] == ["red", "green", "nir"]


def test_nodata_tag_marks_invalid_pixels(tmp_path: Path) -> None:
    collared = pixels(2, seed=3, dtype=np.uint8)
    collared[:, :, :10] = 255
    write_tif(tmp_path / "tagged.tif", collared, transform=TILES["18SUJ"], nodata=255)
    (scene,) = TorchGeoSource("RasterDataset", str(tmp_path), filename_glob="*.tif").load()
    expected = np.ones((HEIGHT, WIDTH), bool)
    expected[:, :10] = False
    np.testing.assert_array_equal(scene.read_valid(Window(0, 0, HEIGHT, WIDTH)), expected)
    np.testing.assert_array_equal(scene.valid_overview(5), expected[2::5, 2::5])


def test_a_truncated_file_is_named_when_read_or_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    path = write_tif(tmp_path / "cut.tif", pixels(2, seed=4), transform=TILES["18SUJ"])
    write_tif(tmp_path / "whole.tif", pixels(2, seed=5), transform=TILES["18SVJ"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cut, _ = TorchGeoSource("RasterDataset", str(tmp_path), filename_glob="*.tif").load()
    with pytest.raises(DataError, match=r"reading scene 'cut' failed \(cut\.tif.*data\.unreadable=skip"):
        cut.valid_overview(1)
    source = TorchGeoSource("RasterDataset", str(tmp_path), filename_glob="*.tif", unreadable="skip")
    assert [s.name for s in source.load()] == ["whole"]
    assert "skipped 1 of 2 scenes that cannot be read" in caplog.text and "cut.tif" in caplog.text


def plain(root: Path, name: str, pixels: np.ndarray, x: float, nodata: float | None = None) -> Path:
    """A multi-band file of a plain RasterDataset, 5 m pixels, its left edge at `x`."""
    transform = Affine(5.0, 0.0, x, 0.0, -5.0, 4_100_000.0)
    return write_tif(root / name, pixels, transform=transform, nodata=nodata)


def test_files_of_different_dtypes_are_read_in_the_widest(tmp_path: Path, caplog) -> None:
    """A uint8 first file must not wrap a later uint16 file (values up to 60000)."""
    narrow, wide = pixels(3, seed=1, dtype=np.uint8), pixels(3, seed=2, dtype=np.uint16)
    plain(tmp_path, "a.tif", narrow, 600_000.0)
    plain(tmp_path, "b.tif", wide, 601_000.0)  # 800 m right of a's edge: no overlap
    with caplog.at_level(logging.WARNING):
        scene_a, scene_b = TorchGeoSource("RasterDataset", str(tmp_path), filename_glob="*.tif").load()
    whole = Window(0, 0, HEIGHT, WIDTH)
    np.testing.assert_array_equal(scene_b.read(whole), wide)
    np.testing.assert_array_equal(scene_a.read(whole), narrow.astype(np.uint16))
    assert scene_a.dtype == scene_b.dtype == np.uint16
    assert "different dtypes (uint16: 1 file, uint8: 1 file); read as uint16" in caplog.text


def test_overlapping_files_of_different_dtypes_mosaic_in_the_widest(tmp_path: Path) -> None:
    """b overlaps a's right half; torchgeo mosaics them, the first file (a) winning the overlap."""
    narrow, wide = pixels(3, seed=1, dtype=np.uint8), pixels(3, seed=2, dtype=np.uint16)
    plain(tmp_path, "a.tif", narrow, 600_000.0)
    plain(tmp_path, "b.tif", wide, 600_000.0 + 5.0 * WIDTH / 2)
    _, scene_b = TorchGeoSource("RasterDataset", str(tmp_path), filename_glob="*.tif").load()
    half = WIDTH // 2
    expected = np.concatenate([narrow[:, :, half:].astype(np.uint16), wide[:, :, half:]], axis=2)
    np.testing.assert_array_equal(scene_b.read(Window(0, 0, HEIGHT, WIDTH)), expected)


def test_nodata_is_each_files_own(tmp_path: Path) -> None:
    """One footprint at two dates: the first file tags 255 (and has none), the second tags 0 and
    has a zero collar on its 10 left columns and a pixel of 255 in every band, which is data."""
    first = pixels(2, seed=4, dtype=np.uint8)
    second = pixels(2, seed=5, dtype=np.uint8)
    second[:, :, :10] = 0
    second[:, 30, 20] = 255
    plain(tmp_path, "field_20210601.tif", first, 600_000.0, nodata=255)
    plain(tmp_path, "field_20210901.tif", second, 600_000.0, nodata=0)
    source = TorchGeoSource(
        "RasterDataset", str(tmp_path), filename_glob="*.tif", filename_regex=r"field_(?P<date>\d{8})\.tif"
    )
    (scene,) = source.load()
    assert scene.dates == ("2021-06-01", "2021-09-01")
    expected = np.ones((HEIGHT, WIDTH), bool)
    expected[:, :10] = False
    np.testing.assert_array_equal(scene.read_valid(Window(0, 0, HEIGHT, WIDTH)), expected)
    np.testing.assert_array_equal(scene.valid_overview(5), expected[2::5, 2::5])


def test_band_files_of_one_scene_with_different_nodata_are_refused(s2_dir: Path) -> None:
    path = s2_dir / "T18SVJ_20200301T103021_B08.tif"
    with rasterio.open(path, "r+") as ds:
        ds.nodata = 0
    with pytest.raises(
        DataError,
        match=r"band files of T18SVJ_20200301T103021_B04\.tif have different nodata values "
        r"\(None: .*_B04\.tif, .*_B03\.tif, .*_B02\.tif; 0\.0: .*_B08\.tif\); set one nodata value",
    ):
        TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).load()


def test_statistics_fingerprint_covers_every_band_file(s2_dir: Path) -> None:
    source = TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS)
    described = source.describe()
    assert sorted(f["path"] for f in described["files"]) == sorted(str(p) for p in s2_dir.glob("*.tif"))
    os.utime(s2_dir / "T18SVJ_20200301T103021_B08.tif", ns=(0, 10**18))  # rewritten, say
    assert stats_fingerprint(TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).describe()) != (
        stats_fingerprint(described)
    )


def _read_in_child(scene: TorchGeoScene, window: Window, queue: multiprocessing.Queue) -> None:
    pixels = scene.read(window, 1)
    queue.put((pixels, type(scene.reader.dataset)._cached_load_warp_file.cache_info().hits))


def test_scenes_pickle_and_read_in_a_forked_worker(s2_dir: Path) -> None:
    (scene, _) = TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS).load()
    window = Window(10, 3, 20, 30)
    before = scene.read(window, 1)  # the parent now holds cached file handles
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(scene)).read(window, 1), before)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_read_in_child, args=(scene, window, queue))
    child.start()
    pixels, reused_handles = queue.get(timeout=30)
    np.testing.assert_array_equal(pixels, before)
    assert reused_handles == 0  # the child opened its own files, not the parent's cached handles
    child.join(timeout=30)
    assert child.exitcode == 0


def test_datamodule_yields_uint_batches(s2_dir: Path, tmp_path: Path) -> None:
    dm = RSDataModule(
        TorchGeoSource(S2, str(s2_dir), bands=S2_BANDS),
        tile_size=32,
        batch_size=4,
        num_workers=2,
        stats_cache_dir=str(tmp_path / "cache"),
    )
    dm.prepare()
    assert dm.bands == CANONICAL and len(dm.train_index) == 2 + 4  # the collar drops 2 tiles
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint16 and batch["image"].shape == (4, 4, 32, 32)
    assert dm.normalise(batch["image"]).dtype == torch.float32


def test_grid_sampler_route_gives_torchgeo_chips(plain_dir: Path) -> None:
    source = TorchGeoSource("RasterDataset", str(plain_dir), filename_glob="*.tif")
    scenes = source.load()
    index = torchgeo_tile_index(scenes, "grid", size=16)
    dataset = source.reader.dataset
    queries = list(GridGeoSampler(dataset, 16))
    assert len(index) == len(queries) == 2 * 4 * 3
    tiles = TileDataset(scenes, index)
    assert index.col[2] == WIDTH - 16  # a chip past the footprint's edge is moved inside
    for i in [0, 4, 9, 13, 22]:
        x, y, t = queries[i]
        expected = dataset[slice(x.start, x.stop, 5.0), slice(y.start, y.stop, 5.0), t]["image"]
        np.testing.assert_array_equal(tiles[i]["image"].numpy(), expected.numpy().astype(np.uint8))
    random = torchgeo_tile_index(scenes, "random", size=16, length=10, seed=1)
    assert len(random) == 10 and (random.row <= HEIGHT - 16).all() and (random.col <= WIDTH - 16).all()
    assert np.array_equal(random.row, torchgeo_tile_index(scenes, "random", 16, length=10, seed=1).row)


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["rsssl-pretrain", *argv])
    main()


def test_pretrain_cli_runs_on_a_torchgeo_dataset(s2_dir: Path, tmp_path: Path, monkeypatch) -> None:
    runs = tmp_path / "runs"
    run_cli(
        [
            "method=moco",
            "backbone=tiny",
            "trainer=debug",
            "data=torchgeo_raster",
            f"data.paths={s2_dir}",
            f"data.dataset_class={S2}",
            "data.dataset_bands=[B04,B03,B02,B08]",
            "data.num_workers=0",
            "data.batch_size=4",
            "method.bn_groups=2",  # split-BN groups of 2 samples
            "data.tile_size=32",
            f"runs_dir={runs}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
        ],
        monkeypatch,
    )
    (run_dir,) = runs.glob("*/*/")
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4
    assert json.loads((run_dir / "encoder.json").read_text())["bands"] == list(CANONICAL)


def test_missing_files_name_the_glob_folder_and_names(tmp_path: Path, plain_dir: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(
        DataError, match=r"no Sentinel2 raster found in .*empty \(exists\).*'T\*_\*_B04\*\.\*'"
    ):
        TorchGeoSource(S2, str(empty), bands=S2_BANDS).load()
    with pytest.raises(DataError, match=r"\(2 matched\).*filename_regex 'nothing_\\d'"):
        TorchGeoSource(
            "RasterDataset", str(plain_dir), filename_glob="*.tif", filename_regex=r"nothing_\d"
        ).load()


def test_missing_files_through_the_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            ["data=torchgeo_raster", f"data.paths={tmp_path / 'nowhere'}", f"runs_dir={tmp_path}"],
            monkeypatch,
        )
    assert exit_info.value.code == 2
    assert "nowhere (missing): searched each folder recursively for '*'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("dataset_class", "bands", "message"),
    [
        (
            "torchgeo.datasets.NoSuchDataset",
            None,
            r"cannot be imported .*give e\.g\. torchgeo\.datasets\.Sentinel2",
        ),
        ("nosuchpackage.Dataset", None, "cannot be imported"),
        ("torchgeo.datasets.EuroSAT", None, "is not a torchgeo RasterDataset.*use data=torchgeo"),
        ("torchgeo.datasets.CDL", None, r"holds labels \(is_image=False\)"),
        (S2, ["B04", "B99"], r"Sentinel2 has no band 'B99'; its bands are B01, B02"),
        ("RasterDataset", ["nir"], r"data\.dataset_bands=\['nir'\] needs band names.*data\.all_bands"),
    ],
)
def test_bad_class_or_bands(s2_dir: Path, dataset_class: str, bands: list[str] | None, message: str) -> None:
    with pytest.raises(DataError, match=message):
        TorchGeoSource(dataset_class, str(s2_dir), bands=bands).load()


def test_bad_crs(s2_dir: Path) -> None:
    with pytest.raises(DataError, match=r"data\.crs='EPSG:nope' is not a CRS"):
        TorchGeoSource(S2, str(s2_dir), crs="EPSG:nope").load()


def test_real_rgbn_folder_through_a_plain_raster_dataset(data_dir: Path) -> None:
    folder = data_dir / "geotiff" / "rgbn"
    scenes = TorchGeoSource("RasterDataset", str(folder), filename_glob="*.tif").load()
    assert sorted(s.name for s in scenes) == ["rgbn", "rgbn_suba", "rgbn_subb"]
    whole = next(s for s in scenes if s.name == "rgbn")
    assert (whole.height, whole.width, whole.num_bands, whole.dtype) == (403, 515, 4, np.uint8)
    with rasterio.open(folder / "rgbn.tif") as ds:
        np.testing.assert_array_equal(
            whole.read(Window(100, 200, 64, 64)), ds.read(window=((100, 164), (200, 264)))
        )


def test_real_landsat8_file_with_a_date_regex(data_dir: Path) -> None:
    folder = data_dir / "geotiff" / "landsat8"
    source = TorchGeoSource(
        "RasterDataset",
        str(folder),
        filename_glob="LC08_*.TIF",
        filename_regex=r"LC08_L1TP_\d{6}_(?P<date>\d{8})_",
        all_bands=["B2", "B3", "B4"],
        band_preset="landsat8",
    )
    (scene,) = source.load()
    assert (scene.dates, scene.bands, scene.crs) == (("2020-05-18",), ("blue", "green", "red"), "EPSG:32621")
    assert (scene.height, scene.width, scene.dtype, scene.pixel_size) == (1860, 2041, np.uint16, 30.0)
    with rasterio.open(next(folder.glob("*.TIF"))) as ds:
        assert scene.transform == tuple(ds.transform)[:6]
        np.testing.assert_array_equal(
            scene.read(Window(900, 1000, 64, 64)), ds.read(window=((900, 964), (1000, 1064)))
        )
