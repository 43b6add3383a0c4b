"""Spatial neighbours and temporal pairs: exact windows, uniform offsets, clear errors, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import DataLoader

from rsssl.data.datamodule import RSDataModule
from rsssl.data.sampling import EpochSampler, PairSampling, read_reflect
from rsssl.data.scene import ArrayScene, DataError
from rsssl.data.sources import SyntheticSource
from rsssl.data.tiles import TileDataset, build_tile_index
from tests.helpers.problems import ListSource

GEO = (10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)  # 10 m pixels, north up
UTM = "EPSG:32618"  # the CRS of GEO scenes: metres convert to pixels only through a projected CRS


class CountingScene(ArrayScene):
    """Records every window read, to check that only the needed part of a scene is read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.windows = []

    def read(self, window, date=0):
        self.windows.append(window)
        return super().read(window, date)


def ramp_scene(name="s", height=96, width=80, dates=1, transform=None, cls=ArrayScene):
    pixels = np.arange(dates * 2 * height * width, dtype=np.uint16).reshape(dates, 2, height, width)
    crs = UTM if transform is not None else None
    return cls(
        name, pixels, dates=tuple(f"2020-0{t + 1}-01" for t in range(dates)), transform=transform, crs=crs
    )


def datamodule(scenes, keys, tile_size=16, **settings):
    """A prepared datamodule requiring `keys`; torch is seeded so its loader's seed is fixed."""
    torch.manual_seed(0)
    dm = RSDataModule(
        ListSource(scenes), tile_size=tile_size, batch_size=4, num_workers=0, stats_cache_dir=None, **settings
    )
    dm.prepare()
    dm.require(keys)
    return dm


def padded(scene, date=0, pad=64):
    return np.pad(scene.images[date], ((0, 0), (pad, pad), (pad, pad)), mode="reflect"), pad


def test_reflect_read_equals_np_pad_of_the_scene_and_reads_only_the_window():
    scene = ramp_scene(height=21, width=23, cls=CountingScene)
    full, pad = padded(scene)
    size = 8
    for row in range(-size // 2, scene.height - size // 2 + 1):
        for col in range(-size // 2, scene.width - size // 2 + 1):
            tile = read_reflect(scene, row, col, size)
            expected = full[:, pad + row : pad + row + size, pad + col : pad + col + size]
            np.testing.assert_array_equal(tile, expected)
    assert (
        max(w.height for w in scene.windows) <= size + 1 and max(w.width for w in scene.windows) <= size + 1
    )


def test_offsets_are_uniform_within_the_radius():
    scene = ramp_scene(height=200, width=200)
    index = build_tile_index([scene], tile_size=16, stride=92)  # tiles at 0, 92, 184: one central
    centre = next(i for i in range(len(index)) if index.row[i] == 92 and index.col[i] == 92)
    radius = 20
    dataset = TileDataset([scene], index, sampling=PairSampling(seed=3, radii=(radius,)))
    offsets = np.array([dataset[(centre, epoch)]["neighbor_offset"].numpy() for epoch in range(6000)])
    assert np.abs(offsets).max() == radius  # the extremes are reached, never exceeded
    for axis in range(2):
        counts = np.bincount(offsets[:, axis] + radius, minlength=2 * radius + 1)
        assert chisquare(counts).pvalue > 1e-3, counts
    assert abs(np.corrcoef(offsets.T)[0, 1]) < 0.05  # dy and dx drawn independently
    sample = dataset[(centre, 0)]
    dy, dx = sample["neighbor_offset"].tolist()
    np.testing.assert_array_equal(
        sample["neighbor"].numpy(), scene.images[0, :, 92 + dy : 108 + dy, 92 + dx : 108 + dx]
    )


def test_georeferenced_neighbour_is_within_the_radius_in_metres():
    dm = datamodule([ramp_scene(transform=GEO)], ["neighbor"], neighbor_radius=105, neighbor_units="m")
    dataset = dm.train_dataloader().dataset
    assert dataset.sampling.radii == (10,)  # 105 m on 10 m pixels: 10 whole pixels
    distances = []
    for epoch in range(40):
        for i in range(len(dataset)):
            sample = dataset[(i, epoch)]
            distances.append((sample["neighbor_pos"] - sample["pos"]).abs().max().item())
            x, y = sample["neighbor_pos"].tolist()
            dy, dx = sample["neighbor_offset"].tolist()
            assert x == sample["pos"][0] + 10 * dx and y == sample["pos"][1] - 10 * dy
    assert max(distances) == 100.0


def test_neighbour_at_the_scene_edge_is_reflect_padded():
    scene = ramp_scene(height=48, width=48)
    dm = datamodule([scene], ["neighbor"], neighbor_radius=12)
    dataset = dm.train_dataloader().dataset
    full, pad = padded(scene)
    overhanging = 0
    for epoch in range(30):
        for i in range(len(dataset)):
            sample = dataset[(i, epoch)]
            row, col = (sample["pixel"] + sample["neighbor_offset"]).tolist()
            assert -8 <= row <= 48 - 8 and -8 <= col <= 48 - 8  # centre inside the scene
            overhanging += not (0 <= row <= 32 and 0 <= col <= 32)
            expected = full[:, pad + row : pad + row + 16, pad + col : pad + col + 16]
            np.testing.assert_array_equal(sample["neighbor"].numpy(), expected)
    assert overhanging > 50


def test_other_time_is_the_same_window_at_another_date():
    scene = ramp_scene(dates=3, transform=GEO)
    dm = datamodule([scene], ["other_time", "neighbor"], neighbor_radius=8)
    dataset = dm.train_dataloader().dataset
    pairs = set()
    for epoch in range(60):
        sample = dataset[(5, epoch)]
        row, col = sample["pixel"].tolist()
        t, other = int(sample["time"]), int(sample["other_time_index"])
        assert t != other
        pairs.add((t, other))
        np.testing.assert_array_equal(
            sample["image"].numpy(), scene.images[t, :, row : row + 16, col : col + 16]
        )
        np.testing.assert_array_equal(
            sample["other_time"].numpy(), scene.images[other, :, row : row + 16, col : col + 16]
        )
        dy, dx = sample["neighbor_offset"].tolist()  # the neighbour is read at the anchor's date
        np.testing.assert_array_equal(
            sample["neighbor"].numpy(), read_reflect(scene, row + dy, col + dx, 16, date=t)
        )
    assert len(pairs) == 6  # every ordered pair of the 3 dates


def test_batches_carry_uint_extras_normalised_on_device(tmp_path):
    dm = RSDataModule(
        SyntheticSource(num_scenes=2, size=128, num_bands=13, num_dates=2),
        tile_size=32,
        batch_size=8,
        num_workers=0,
        stats_cache_dir=str(tmp_path),
    )
    dm.prepare()
    dm.require(["neighbor", "other_time"])
    batch = next(iter(dm.train_dataloader()))
    for key in ("image", "neighbor", "other_time"):
        assert batch[key].dtype == torch.uint16 and batch[key].shape == (8, 13, 32, 32)
    assert batch["neighbor_offset"].shape == (8, 2) and batch["neighbor_pos"].dtype == torch.float64
    out = dm.on_after_batch_transfer(dict(batch), 0)
    torch.testing.assert_close(out["neighbor"], dm.normalise(batch["neighbor"]))
    assert out["other_time"].dtype == torch.float32


@pytest.mark.parametrize(
    ("scenes", "keys", "settings", "message"),
    [
        (
            [ramp_scene()],
            ["neighbor"],
            {"neighbor_radius": 0.5},
            r"neighbor_radius=0.5 px is less than one pixel",
        ),
        (
            [ramp_scene(transform=GEO)],
            ["neighbor"],
            {"neighbor_radius": 5, "neighbor_units": "m"},
            r"neighbor_radius=5 m is less than one pixel on scene 's' \(10 m pixels\).*at least 10 m",
        ),
        ([ramp_scene()], ["neighbor"], {"neighbor_units": "m"}, r"has no georeference.*neighbor_units=px"),
        ([ramp_scene()], ["neighbor"], {"neighbor_units": "km"}, r"neighbor_units='km': choose px"),
        ([ramp_scene()], ["other_time"], {}, r"this data has a single date per scene: 's'"),
    ],
)
def test_unmet_sampling_settings_fail_clearly(scenes, keys, settings, message):
    with pytest.raises(DataError, match=message):
        datamodule(scenes, keys, **settings)


def test_metres_in_a_geographic_crs_are_refused():
    scene = ArrayScene(
        "wgs", np.zeros((1, 64, 64), np.uint8), transform=(1e-4, 0, 5, 0, -1e-4, 50), crs="EPSG:4326"
    )
    with pytest.raises(DataError, match="geographic CRS"):
        datamodule([scene], ["neighbor"], neighbor_units="m")


def test_tile_size_in_metres():
    dm = datamodule([ramp_scene(transform=GEO)], [], tile_size=160, tile_units="m")
    assert dm.tile_size == 16 and dm.train_index.tile_size == 16
    coarse = ramp_scene("coarse", transform=(20.0, 0, 0, 0, -20.0, 0))
    with pytest.raises(DataError, match="different pixel sizes per scene"):
        datamodule([ramp_scene(transform=GEO), coarse], [], tile_size=320, tile_units="m")
    with pytest.raises(DataError, match="no georeference"):
        datamodule([ramp_scene()], [], tile_size=160, tile_units="m")


def test_seeded_reproducible_new_every_epoch_and_independent_of_workers():
    dm = datamodule([ramp_scene(dates=2)], ["neighbor", "other_time"], neighbor_radius=20)

    def epochs(loader, count):
        return [
            torch.cat(
                [
                    torch.cat([b["index"][:, None], b["neighbor_offset"], b["time"][:, None]], 1)
                    for b in loader
                ]
            )
            for _ in range(count)
        ]

    torch.manual_seed(0)
    first = epochs(dm.train_dataloader(), 2)
    torch.manual_seed(0)
    again = epochs(dm.train_dataloader(), 2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], first[1])
    draws = [{int(row[0]): row[1:].tolist() for row in epoch} for epoch in first]
    common = draws[0].keys() & draws[1].keys()
    assert sum(draws[0][i] != draws[1][i] for i in common) > len(common) / 2  # new draws per epoch
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    workers = DataLoader(loader.dataset, 4, sampler=loader.sampler, num_workers=2, drop_last=True)
    assert all(torch.equal(a, b) for a, b in zip(first, epochs(workers, 2)))


def test_epoch_sampler_follows_the_given_epoch():
    epoch = [3]
    sampler = EpochSampler(10, seed=1, epoch=lambda: epoch[0])
    once, twice = list(sampler), list(sampler)
    assert once == twice and {e for _, e in once} == {3} and sorted(i for i, _ in once) == list(range(10))
    epoch[0] = 4
    assert [i for i, _ in sampler] != [i for i, _ in once]


def collar_scene():
    """96 x 96 px whose left 40 columns are nodata (a scene collar)."""
    valid = np.ones((96, 96), bool)
    valid[:, :40] = False
    pixels = np.full((1, 2, 96, 96), 500, np.uint16)
    return ArrayScene("collar", pixels, valid=valid)


def neighbour_valid_fractions(dataset, epochs=30):
    """Valid fraction (from the scene's own mask) of every neighbour drawn over `epochs`."""
    scene, size = dataset.scenes[0], dataset.index.tile_size
    fractions = []
    for epoch in range(epochs):
        for i in range(len(dataset)):
            sample = dataset[(i, epoch)]
            row, col = (sample["pixel"] + sample["neighbor_offset"]).tolist()
            fractions.append(scene.valid[max(row, 0) : row + size, max(col, 0) : col + size].mean())
    return np.array(fractions)


def test_neighbours_avoid_nodata_like_the_anchors():
    dm = datamodule([collar_scene()], ["neighbor"], neighbor_radius=32, min_valid=0.9)
    dataset = dm.train_dataloader().dataset
    assert dm.train_index.col.min() >= 40 - 4  # anchors are valid tiles
    assert neighbour_valid_fractions(dataset).min() >= 0.9
    # the same anchors without the check draw neighbours in the collar: the redraw is what avoids it
    dataset.sampling = dataclasses.replace(dataset.sampling, min_valid=0.0)
    assert neighbour_valid_fractions(dataset).min() < 0.5
