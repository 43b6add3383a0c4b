"""Tile index, band statistics and the datamodule: uint until the device, stats from the data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsssl.data.datamodule import RSDataModule, resolve_bands
from rsssl.data.scene import ArrayScene, DataError, Window
from rsssl.data.sources import GeoTiffSource, NpzSource, SyntheticSource
from rsssl.data.stats import BandStats, cached_band_stats, compute_band_stats, standardise, tile_dates
from rsssl.data.tiles import TileDataset, TileIndex, build_tile_index
from tests.helpers.problems import ListSource


def scene(name="s", bands=3, size=64, dtype=np.uint16, valid=None, mask=None, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(100, 5000, size=(bands, size, size)).astype(dtype)
    names = ("a", "b", "c") if mask is not None else None
    return ArrayScene(name, pixels, valid=valid, mask=mask, class_names=names)


def test_index_skips_collar_and_covers_edges():
    valid = np.ones((64, 64), bool)
    valid[:, :20] = False  # collar on the left
    index = build_tile_index([scene(size=64, valid=valid)], tile_size=16, min_valid=0.9)
    assert index.col.min() >= 20 - 16 // 4  # no tile mostly in the collar (overview at 1/4 of the tile)
    assert index.row.max() == 64 - 16 and index.col.max() == 64 - 16  # last tile flush with the edge
    assert not index.labelled


def test_majority_labels():
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 2
    mask[:16, :] = 1
    index = build_tile_index([scene(size=32, mask=mask)], tile_size=16)
    labels = {(int(r), int(c)): int(lab) for r, c, lab in zip(index.row, index.col, index.label)}
    assert labels == {(0, 0): 1, (0, 16): 1, (16, 0): 0, (16, 16): 2}


def test_dataset_keeps_uint_and_positions():
    s = ArrayScene(
        "geo",
        np.arange(2 * 32 * 32, dtype=np.uint16).reshape(2, 32, 32),
        transform=(10, 0, 1000, 0, -10, 5000),
    )
    index = build_tile_index([s], tile_size=16)
    sample = TileDataset([s], index)[1]
    assert sample["image"].dtype == torch.uint16
    row, col = sample["pixel"].tolist()
    assert torch.equal(
        sample["image"], torch.from_numpy(s.images[0, :, row : row + 16, col : col + 16].copy())
    )
    assert sample["pos"].tolist() == [1000 + 10 * (col + 8), 5000 - 10 * (row + 8)]


def test_band_stats_match_numpy_over_valid_pixels():
    valid = np.ones((64, 64), bool)
    valid[:8] = False
    scenes = [scene(size=64, valid=valid, seed=1), scene("t", size=64, seed=2)]
    index = build_tile_index(scenes, tile_size=16, min_valid=0.0)
    stats = compute_band_stats(scenes, index, max_tiles=10_000)
    pixels = []
    for i in range(len(index)):
        sc = scenes[index.scene[i]]
        r, c = index.row[i], index.col[i]
        tile, ok = sc.images[0, :, r : r + 16, c : c + 16], sc.valid_overview(1)[r : r + 16, c : c + 16]
        pixels.append(tile[:, ok].astype(np.float64))
    everything = np.concatenate(pixels, axis=1)
    np.testing.assert_allclose(stats.mean, everything.mean(1), rtol=1e-9)
    np.testing.assert_allclose(stats.std, everything.std(1), rtol=1e-9)


def test_band_stats_count_each_bands_finite_values_and_normalising_zeroes_the_rest():
    """A NaN or Inf in one band is no data in that band only: its statistics skip it (the other
    bands of the pixel still count), and standardising turns it into 0, the band mean."""
    pixels = np.array([[[1.0, 3.0], [np.nan, 5.0]], [[2.0, np.inf], [4.0, 6.0]]], np.float32)
    (s,) = scenes = [ArrayScene("f", pixels)]
    stats = compute_band_stats(scenes, build_tile_index(scenes, tile_size=2, min_valid=0.0))
    np.testing.assert_allclose(stats.mean, [3.0, 4.0])
    np.testing.assert_allclose(stats.std, [np.sqrt(8 / 3), np.sqrt(8 / 3)])
    mean = torch.tensor(stats.mean).view(1, 2, 1, 1)
    std = torch.tensor(stats.std).view(1, 2, 1, 1)
    out = standardise(torch.from_numpy(s.images), mean, std)
    assert out[0, 0, 1, 0] == 0 and out[0, 1, 0, 1] == 0
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(-2 / np.sqrt(8 / 3), dtype=torch.float32))


def two_dates(name="two_dates"):
    """One band, 32 px, 100 everywhere at the first date and 300 at the second."""
    images = np.stack([np.full((1, 32, 32), 100, np.uint16), np.full((1, 32, 32), 300, np.uint16)])
    return ArrayScene(name, images, dates=("2020-01-01", "2020-06-01"))


def test_band_stats_sample_every_date():
    """4 tiles x 2 dates, as many pixels at 100 as at 300: mean 200, std 100."""
    scene = two_dates()
    stats = compute_band_stats([scene], build_tile_index([scene], 16), max_tiles=10_000)
    assert stats == BandStats((200.0,), (100.0,))


def test_tile_dates_pair_each_tile_with_each_date_of_its_scene():
    one, three = scene("one", size=16), ArrayScene("three", np.zeros((3, 1, 16, 16), np.uint8))
    index = TileIndex(np.array([0, 1, 0]), np.zeros(3, int), np.zeros(3, int), np.full(3, -1), 16)
    tiles, dates = tile_dates([one, three], index)
    assert tiles.tolist() == [0, 1, 1, 1, 2] and dates.tolist() == [0, 0, 1, 2, 0]


def test_first_date_statistics_cached_before_are_not_reused(tmp_path):
    """An entry cached under the description the first-date statistics were stored with."""
    source = ListSource([two_dates()])
    old = {"source": source.describe(), "bands": ["b1"], "tile_size": 16, "stride": None}
    old |= {"min_valid": 0.9, "tiles": 256}
    cached_band_stats(tmp_path, old, lambda: BandStats((100.0,), (1.0,)))
    dm = RSDataModule(source, tile_size=16, batch_size=2, num_workers=0, stats_cache_dir=str(tmp_path))
    dm.prepare()
    assert dm.stats == BandStats((200.0,), (100.0,))


def test_stats_cache_is_reused(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return compute_band_stats([scene()], build_tile_index([scene()], 16))

    first = cached_band_stats(tmp_path, {"x": 1}, compute)
    second = cached_band_stats(tmp_path, {"x": 1}, compute)
    assert first == second and len(calls) == 1
    cached_band_stats(tmp_path, {"x": 2}, compute)
    assert len(calls) == 2


def test_datamodule_batches_stay_uint_until_device_then_normalised(tmp_path):
    dm = RSDataModule(
        SyntheticSource(num_scenes=2, size=128, num_bands=5),
        tile_size=32,
        batch_size=8,
        num_workers=0,
        stats_cache_dir=str(tmp_path),
    )
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint16 and batch["image"].shape == (8, 5, 32, 32)
    assert batch["label"].dtype == torch.int64
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["image"].dtype == torch.float32
    expected = (batch["image"].float() - torch.tensor(dm.stats.mean).view(1, -1, 1, 1)) / torch.tensor(
        dm.stats.std
    ).view(1, -1, 1, 1)
    torch.testing.assert_close(out["image"], expected)
    assert dm.num_classes == 8 and dm.val_dataloader() != []
    assert dm.info()["bands"] == list(dm.bands) and len(dm.info()["mean"]) == 5


def test_band_selection_by_name(tmp_path):
    dm = RSDataModule(
        SyntheticSource(num_scenes=2, size=64, num_bands=4),
        tile_size=32,
        batch_size=2,
        num_workers=0,
        stats_cache_dir=None,
        bands=["nir", "red"],
    )
    dm.prepare()
    full = dm.train_scenes[0].source_scene.images[0]
    sample = dm.train_dataloader().dataset[0]
    r, c = sample["pixel"].tolist()
    np.testing.assert_array_equal(sample["image"].numpy(), full[[3, 0], r : r + 32, c : c + 32])
    with pytest.raises(DataError, match="no band 'swir'"):
        resolve_bands(dm.train_scenes, ["swir"])


def test_mixed_band_counts_need_selection():
    with pytest.raises(DataError, match="different band counts"):
        resolve_bands([scene(bands=3), scene("t", bands=4)], None)


def named(name, bands, seed=0):
    """A 16 px scene whose plane i holds the value 100 * (i + 1): tells bands apart after selection."""
    planes = np.stack([np.full((16, 16), 100 * (i + 1), np.uint16) for i in range(len(bands))])
    return ArrayScene(name, planes, bands=tuple(bands))


def test_same_band_count_with_other_bands_is_refused():
    with pytest.raises(DataError, match=r"different bands: 'rgb'.*'nrg'.*data.bands"):
        resolve_bands([named("rgb", ["red", "green", "blue"]), named("nrg", ["nir", "red", "green"])], None)


def test_common_bands_at_different_positions_are_aligned():
    rgbn = named("rgbn", ["red", "green", "blue", "nir"])
    s2 = named("s2", ["B02", "B03", "B04", "B08"])  # Sentinel-2 names, in wavelength order
    bands, scenes = resolve_bands([rgbn, s2], ["red", "green", "B08"])  # B08 is the NIR band of both
    assert bands == ("red", "green", "B08")
    window = Window(0, 0, 4, 4)
    assert [int(p[0, 0]) for p in scenes[0].read(window)] == [100, 200, 400]
    assert [int(p[0, 0]) for p in scenes[1].read(window)] == [300, 200, 400]
    assert scenes[1].name == "s2" and scenes[1].height == 16


def test_identity_selection_keeps_the_scene():
    rgb = named("rgb", ["red", "green", "blue"])
    assert resolve_bands([rgb], ["red", "green", "blue"])[1][0] is rgb


class WithValidation(ListSource):
    def __init__(self, train, val):
        super().__init__(train)
        self.val = val

    def validation(self):
        return ListSource(self.val)


def test_validation_scenes_get_the_same_bands():
    source = WithValidation([named("t", ["red", "green", "nir"])], [named("v", ["nir", "green", "red"])])
    dm = RSDataModule(
        source, tile_size=8, batch_size=2, num_workers=0, stats_cache_dir=None, bands=["nir", "red"]
    )
    dm.prepare()
    assert [int(p[0, 0]) for p in dm.val_scenes[0].read(Window(0, 0, 8, 8))] == [100, 300]
    source = WithValidation([named("t", ["red", "green", "nir"])], [named("v", ["red", "green", "blue"])])
    dm = RSDataModule(source, tile_size=8, batch_size=2, num_workers=0, stats_cache_dir=None)
    with pytest.raises(DataError, match="different bands: 't'"):
        dm.prepare()


def test_too_few_tiles_for_a_batch(tmp_path):
    dm = RSDataModule(
        ListSource([scene(size=32)]), tile_size=16, batch_size=64, num_workers=0, stats_cache_dir=None
    )
    dm.prepare()
    with pytest.raises(DataError, match="fewer than one batch"):
        dm.train_dataloader()


@pytest.mark.parametrize("folder", ["geotiff/landsat8", "geotiff/rgbn"])
def test_real_geotiff_folders_give_uint_batches(data_dir, folder, tmp_path):
    dm = RSDataModule(
        GeoTiffSource(str(data_dir / folder)),
        tile_size=64,
        batch_size=4,
        num_workers=0,
        stats_cache_dir=str(tmp_path),
    )
    dm.prepare()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype in (torch.uint8, torch.uint16)
    assert (batch["image"].int().flatten(1) > 0).float().mean() > 0.5  # collar tiles were skipped
    assert all(s > 0 for s in dm.stats.std)


def test_real_npz_scene(data_dir, tmp_path):
    dm = RSDataModule(
        NpzSource(str(data_dir / "landsat7_rgb_scene.npz")),
        tile_size=64,
        batch_size=4,
        num_workers=0,
        stats_cache_dir=str(tmp_path),
    )
    dm.prepare()
    assert dm.bands == ("red", "green", "blue") or len(dm.bands) == 3
    assert len(dm.train_index) > 20


def test_ambiguous_band_name_is_refused():
    with pytest.raises(DataError, match="'NIR' matches several bands.*nir, B08"):
        resolve_bands([named("x", ["nir", "B08"])], ["NIR"])


def test_nodata_tiles_inside_a_valid_geotiff_scene_are_never_trained_on(tmp_path):
    """A 128 px scene (nodata 0) with two 32 px blocks of nodata and one half-nodata block: of
    its 16 grid tiles the three are never cut, every batch holds data only, and the band means
    are those of the 13 tiles kept."""
    from tests.data.test_geotiff_source import write_tif

    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 5000, (2, 128, 128)).astype(np.uint16)
    pixels[:, 0:32, 32:64] = 0
    pixels[:, 64:96, 0:32] = 0
    pixels[:, 96:128, 96:112] = 0
    (tmp_path / "tifs").mkdir()
    write_tif(tmp_path / "tifs" / "scene.tif", pixels, nodata=0)
    dm = RSDataModule(
        GeoTiffSource(str(tmp_path / "tifs")),
        tile_size=32,
        batch_size=13,
        num_workers=0,
        stats_cache_dir=None,
        pin_memory=False,
        seed=0,
    )
    dm.prepare()
    kept = sorted(zip(dm.train_index.row.tolist(), dm.train_index.col.tolist()))
    every = [(r, c) for r in range(0, 128, 32) for c in range(0, 128, 32)]
    assert kept == [t for t in every if t not in {(0, 32), (64, 0), (96, 96)}]
    (batch,) = list(dm.train_dataloader())
    assert batch["image"].shape == (13, 2, 32, 32) and bool((batch["image"] != 0).all())
    tiles = np.stack([pixels[:, r : r + 32, c : c + 32] for r, c in kept]).astype(np.float64)
    np.testing.assert_allclose(dm.stats.mean, tiles.mean(axis=(0, 2, 3)), rtol=1e-12)
