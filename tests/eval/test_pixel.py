"""Pixel-level protocols: features at pixel centres, the spectral index, ridge, and the runner."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rsssl.data.scene import DataError
from rsssl.eval.data import EvalDataset, EvalSplit
from rsssl.eval.pixel import (
    fit_ridge,
    pixel_features,
    regression_metrics,
    run_pixel,
    sample_positions,
    spectral_index,
)
from rsssl.eval.suite import Suite, baseline_candidates
from rsssl.models.backbones import ConfigError
from rsssl.results.store import read_rows

META = {
    "timm_name": "identity",
    "in_chans": 2,
    "bands": ["red", "nir"],
    "mean": [0.0, 0.0],
    "std": [100.0, 100.0],
}


class PixelIdentity(nn.Module):
    """A stride-1 'encoder' whose only feature map is its input: a pixel's feature is its value."""

    feature_info = [{"num_chs": 2, "reduction": 1, "module": "identity"}]
    num_features = 2

    def forward_intermediates(self, x, indices, intermediates_only=True):
        return [x]

    def forward(self, x):
        return x.mean(dim=(2, 3))


def blocks(n: int, seed: int) -> EvalSplit:
    """red / nir tiles of 4 x 4 cells: class 1 (vegetation) where nir is bright, else class 0."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 2, (n, 4, 4)).repeat(4, 1).repeat(4, 2)
    red = np.where(cells == 1, 30, 120)
    nir = np.where(cells == 1, 200, 60)
    images = np.stack([red, nir], 1) + rng.integers(0, 10, (n, 2, 16, 16))
    return EvalSplit(images.astype(np.uint8), cells.astype(np.uint8))


def pixel_set() -> EvalDataset:
    return EvalDataset("veg", "segmentation", ("red", "nir"), ("soil", "veg"), blocks(40, 0), blocks(20, 1))


def test_positions_are_seeded_and_inside():
    a, b = sample_positions(5, 7, 9, 11, seed=3), sample_positions(5, 7, 9, 11, seed=3)
    assert torch.equal(a, b) and a.shape == (5, 11, 2)
    assert (a[..., 0] < 7).all() and (a[..., 1] < 9).all() and (a >= 0).all()


def test_features_are_read_at_the_pixel_centres():
    images = np.random.default_rng(0).integers(0, 255, (3, 2, 8, 8)).astype(np.uint8)
    positions = sample_positions(3, 8, 8, 5, seed=0)
    features = pixel_features(PixelIdentity(), META, images, positions)
    rows, cols = positions[..., 0], positions[..., 1]
    expected = torch.from_numpy(images).float()[torch.arange(3)[:, None], :, rows, cols] / 100.0
    torch.testing.assert_close(features, expected.reshape(-1, 2))


def test_ndvi_by_hand_and_missing_bands_named():
    images = np.array([[[[10]], [[30]]]], dtype=np.uint8)  # red 10, nir 30
    assert spectral_index(images, ["red", "nir"])[0, 0, 0] == pytest.approx(0.5)
    with pytest.raises(DataError, match="ndvi needs bands nir, red, but .* lack nir"):
        spectral_index(images, ["red", "green"])


def test_ridge_recovers_a_linear_target_and_metrics_by_hand():
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 3.0
    predict = fit_ridge(x, y, folds=5, seed=0)
    assert regression_metrics(predict(x), y)["r2"] > 0.999
    target = torch.tensor([1.0, 2.0, 3.0])
    assert regression_metrics(torch.full((3,), 2.0), target) == {
        "rmse": pytest.approx((2 / 3) ** 0.5),
        "r2": 0.0,
    }


def test_ridge_standardises_with_the_whole_training_pool():
    """One λ: the closed form by hand, features standardised with the pool's mean and std (every
    training sample's features, labelled or not), not with the few labelled rows'."""
    torch.manual_seed(0)
    pool = torch.randn(50, 4, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5, 3.0]) + 1.0
    x, y = pool[:6], torch.randn(6, dtype=torch.float64)
    predict = fit_ridge(x, y, folds=3, seed=0, grid=(0.5,), pool=pool)
    mean, std = pool.mean(0), pool.std(0, unbiased=False)
    xs = (x - mean) / std
    weight = torch.linalg.solve(
        xs.T @ xs + 0.5 * 6 * torch.eye(4, dtype=torch.float64), xs.T @ (y - y.mean())
    )
    test = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(predict(test), ((test - mean) / std) @ weight + y.mean())


def test_ridge_on_a_few_unpredictive_labels_falls_back_to_their_mean():
    """Targets the features do not predict, on 12 labelled samples in 64 dimensions: the folds
    choose the strongest regularisation, so every prediction is the labels' mean (a fit of the
    noise would scatter them by about the labels' spread)."""
    generator = torch.Generator().manual_seed(0)
    pool = torch.randn(500, 64, generator=generator)
    x, y = pool[:12], torch.randn(12, generator=generator)
    predict = fit_ridge(x, y, folds=5, seed=0, pool=pool)
    prediction = predict(torch.randn(100, 64, generator=generator))
    assert (prediction - y.mean()).abs().max() < 0.01 * y.std()


def test_the_runner_separates_vegetation_and_regresses_ndvi():
    rows = run_pixel(lambda: PixelIdentity(), META, pixel_set(), fractions=(1.0,), seeds=(0,))
    values = {(r["protocol"], r["metric"]): r["value"] for r in rows}
    assert values["pixel_linear", "oa"] > 0.95
    assert values["pixel_ridge", "r2"] > 0.9 and values["tile_ridge", "r2"] > 0.5
    assert {r["train_count"] for r in rows if r["protocol"] == "pixel_linear"} == {40 * 16}
    assert {r["budget"] for r in rows} == {"100%"}


def test_the_suite_runs_the_pixel_protocols_once_per_unit(tmp_path):
    meta = {**META, "timm_name": "test_resnet"}
    random_init = baseline_candidates(meta)[0]
    settings = {
        "protocols": ["pixel_linear", "pixel_ridge"],
        "fractions": [1.0],
        "seeds": [0],
        "pixels_per_tile": 4,
    }
    suite = Suite(tmp_path / "results.csv", segmentation={"modes": []}, pixel=settings, log=lambda _: None)
    suite.evaluate([random_init], [pixel_set()])
    rows = read_rows(tmp_path / "results.csv")
    assert {(r.protocol, r.metric) for r in rows} == {
        *(("pixel_linear", m) for m in ("oa", "aa", "kappa", "f1_macro", "train_count")),
        *(("pixel_ridge", m) for m in ("rmse", "r2", "train_count")),
    }
    Suite(tmp_path / "results.csv", segmentation={"modes": []}, pixel=settings, log=lambda _: None).evaluate(
        [random_init], [pixel_set()]
    )
    assert len(read_rows(tmp_path / "results.csv")) == len(rows)  # every unit was done


def test_fewer_than_two_ridge_folds_are_refused_naming_the_setting():
    with pytest.raises(
        ConfigError, match=r"eval.pixel.ridge_folds=1: cross-validation needs at least 2 folds"
    ):
        run_pixel(lambda: PixelIdentity(), META, pixel_set(), protocols=["pixel_ridge"], ridge_folds=1)
