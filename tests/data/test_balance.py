"""Data-sampling strategies: the weights by hand, the geographic sampler covers every scene and
cell evenly, k-means recovers clusters, the pseudo-label sampler flattens known classes, and
both strategies run through the entry point."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rsssl.data.balance import (
    PseudoLabelBalancer,
    SamplingSettings,
    equal_share_weights,
    geographic_cells,
    kmeans,
)
from rsssl.data.datamodule import RSDataModule
from rsssl.data.sampling import EpochSampler
from rsssl.data.scene import ArrayScene
from rsssl.models.backbones import ConfigError
from tests.cli.test_pretrain_errors import SYNTHETIC, run_cli
from tests.helpers.problems import ListSource

pytestmark = pytest.mark.usefixtures("single_thread")


def test_equal_share_weights_by_hand():
    weights = equal_share_weights(np.array([3, 3, 3, 7]))
    np.testing.assert_allclose(weights, [1 / 6, 1 / 6, 1 / 6, 1 / 2])


def test_a_weighted_pass_draws_by_the_weights_from_its_seed_and_epoch():
    weights = np.array([0.0, 0.0, 1.0, 0.0])
    sampler = EpochSampler(4, seed=1, weights=lambda: weights)
    assert [i for i, _ in sampler] == [2, 2, 2, 2]
    uneven = EpochSampler(
        1000, seed=1, epoch=lambda: 3, weights=lambda: np.r_[np.full(500, 1.0), np.full(500, 3.0)]
    )
    first, again = list(uneven), list(uneven)
    assert first == again and {e for _, e in first} == {3}
    assert 0.7 < np.mean([i >= 500 for i, _ in first]) < 0.8  # three times as likely: 75 %


def scene(
    name: str, size: int, value: int = 0, transform=None, crs=None, label: int | None = None
) -> ArrayScene:
    pixels = np.full((1, 3, size, size), value, np.uint8)
    pixels[0, 0] = (np.arange(size * size).reshape(size, size) % 7).astype(np.uint8)  # some texture
    mask = None if label is None else np.full((size, size), label, np.uint8)
    names = None if label is None else ("a", "b")
    return ArrayScene(name, pixels, mask=mask, transform=transform, crs=crs, class_names=names)


def datamodule(scenes, tmp_path, **sampling) -> RSDataModule:
    dm = RSDataModule(
        ListSource(scenes), tile_size=16, batch_size=4, num_workers=0, stats_cache_dir=str(tmp_path),
        sampling=SamplingSettings(**sampling),
    )  # fmt: skip
    dm.prepare()
    return dm


def drawn_scenes(dm: RSDataModule, epochs: int = 40) -> np.ndarray:
    """Share of an epoch's draws from each training scene, over `epochs` epochs."""
    counts = np.zeros(len(dm.train_scenes))
    for epoch in range(epochs):
        sampler = EpochSampler(
            len(dm.train_index), seed=0, epoch=lambda e=epoch: e, weights=lambda: dm.sample_weights
        )
        for index, _ in sampler:
            counts[dm.train_index.scene[index]] += 1
    return counts / counts.sum()


def test_the_geographic_sampler_covers_every_scene_evenly(tmp_path):
    small, large = scene("small", 32), scene("large", 128)  # 4 and 64 tiles
    dm = datamodule([small, large], tmp_path, strategy="geographic")
    np.testing.assert_allclose(drawn_scenes(dm), [0.5, 0.5], atol=0.02)
    plain = datamodule([small, large], tmp_path)
    assert plain.sample_weights is None  # random: each tile once per epoch


def test_geographic_cells_count_overlapping_scenes_of_one_place_once(tmp_path):
    here = (10.0, 0.0, 0.0, 0.0, -10.0, 320.0)  # 10 m pixels, top-left corner at (0, 320)
    elsewhere = (10.0, 0.0, 10000.0, 0.0, -10.0, 320.0)
    scenes = [
        scene("summer", 32, transform=here, crs="EPSG:32631"),
        scene("winter", 32, transform=here, crs="EPSG:32631"),  # the same ground as summer
        scene("far", 32, transform=elsewhere, crs="EPSG:32631"),
        scene("unreferenced", 32),
    ]
    dm = datamodule(scenes, tmp_path, strategy="geographic", cell_size=160.0)  # one 16 px tile per cell
    cells = geographic_cells(dm.train_scenes, dm.train_index, 160.0)
    by_scene = [sorted(cells[dm.train_index.scene == s].tolist()) for s in range(4)]
    assert by_scene[0] == by_scene[1] and len(set(by_scene[0])) == 4  # shared cells
    assert not set(by_scene[2]) & set(by_scene[0]) and len(set(by_scene[2])) == 4
    assert len(set(by_scene[3])) == 1 and dm.sampling_cells == 9
    np.testing.assert_allclose(drawn_scenes(dm), [2 / 9, 2 / 9, 4 / 9, 1 / 9], atol=0.02)


def test_kmeans_recovers_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    directions = torch.eye(4)[:3] * 5
    truth = torch.arange(3).repeat_interleave(40)
    points = directions[truth] + 0.3 * torch.randn(120, 4, generator=generator)
    labels = kmeans(points, 3, seed=0)
    assert {(int(t), int(l)) for t, l in zip(truth, labels, strict=True)} == {
        (t, int(labels[truth == t][0])) for t in range(3)
    }  # every true cluster is one label
    assert len(set(labels.tolist())) == 3


class MeanColour(torch.nn.Module):
    """A backbone whose features are the tile's mean colour: it tells the classes apart."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_the_pseudo_label_sampler_flattens_known_classes(tmp_path):
    scenes = [scene(f"field{i}", 64, value=40, label=0) for i in range(3)] + [
        scene("forest", 64, value=220, label=1)
    ]
    dm = datamodule(scenes, tmp_path, strategy="balanced", clusters=2)
    labels = dm.train_index.label
    assert np.mean(labels == 1) == pytest.approx(0.25)  # three times as many field tiles
    trainer = SimpleNamespace(datamodule=dm, current_epoch=0)
    PseudoLabelBalancer(dm.sampling).refresh(trainer, SimpleNamespace(backbone=MeanColour(), device="cpu"))
    draws = np.concatenate(
        [
            [labels[i] for i, _ in EpochSampler(len(labels), 0, lambda e=e: e, lambda: dm.sample_weights)]
            for e in range(20)
        ]
    )
    assert np.mean(draws == 1) == pytest.approx(0.5, abs=0.03)


def test_bad_sampling_settings_are_named():
    with pytest.raises(
        ConfigError, match=r"sampling.strategy='even' is unknown; use one of \['random', 'geo"
    ):
        SamplingSettings(strategy="even")
    with pytest.raises(ConfigError, match="sampling.clusters=1 must be at least 2"):
        SamplingSettings(strategy="balanced", clusters=1)


ENTRY_POINT = {
    "balanced": (
        ["method=moco", *SYNTHETIC, "sampling.strategy=balanced", "sampling.clusters=3"],
        "sampling: 3 pseudo-classes of [",  # the k-means ran on the model's features
    ),
    "geographic": (
        ["method=simclr", "data=geotiff", "data.root={d}/geotiff/rgbn", "data.band_preset=rgbn",
         "sampling.strategy=geographic", "sampling.cell_size=500"],
        "sampling: geographic, ",
    ),
}  # fmt: skip


@pytest.mark.parametrize("strategy", ENTRY_POINT)
def test_strategies_run_through_the_entry_point(strategy, data_dir, tmp_path, monkeypatch):
    overrides, said = ENTRY_POINT[strategy]
    run_cli([o.format(d=data_dir) for o in overrides], tmp_path, monkeypatch)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and np.isfinite(summary["metrics"]["train/loss_epoch"])
    assert said in (run_dir / "pretrain.log").read_text()
