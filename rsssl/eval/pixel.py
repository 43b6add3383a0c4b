"""Pixel-level protocols on frozen features: per-pixel classification and spectral-index regression.

Spectral pretext tasks (Zhang & Han, Remote Sens. 2023) target pixel-based analysis (land cover
per pixel, soil parameters); these protocols judge any encoder there, on the segmentation sets:

- `pixel_linear`: a linear probe (`rsssl.eval.linear`) on the features at single pixels,
  classifying each pixel's mask label;
- `pixel_ridge`: ridge regression of a per-pixel spectral index from the features there;
- `tile_ridge`: ridge regression of a tile's mean index from its pooled features.

A pixel's feature is the encoder's finest multi-scale map (the first of `feature_indices`,
through timm's `forward_intermediates`) sampled bilinearly at the pixel's centre. The index
(`index`: "ndvi", (nir − red) / (nir + red)) comes from the raw pixels of bands named by their
canonical names, so it is the same quantity for every encoder. Each (protocol, fraction, seed)
samples `pixels_per_tile` pixels of a seeded fraction of the training tiles and is judged on
`pixels_per_tile` pixels of every test tile. Ridge's λ is chosen by cross-validation on the
labelled pixels or tiles (`ridge_folds`), features standardised over every training pixel or tile
(`fit_ridge`); the probe's L2 on a split (`val_fraction`); metrics RMSE and R² (1 − SSE / SST on
the test targets).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsssl.data.bands import canonical_band_name
from rsssl.data.scene import DataError
from rsssl.eval.budgets import format_budget, select_budget
from rsssl.eval.data import EvalDataset
from rsssl.eval.features import extract_features, normalise_for
from rsssl.eval.linear import fit_linear_probe, split_train_val, standardisation
from rsssl.eval.metrics import classification_metrics
from rsssl.eval.segmentation import EncoderFactory, fresh_encoder
from rsssl.models.backbones import ConfigError, feature_indices

PIXEL_PROTOCOLS = ("pixel_linear", "pixel_ridge", "tile_ridge")
INDICES = {"ndvi": ("nir", "red")}
RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
REGRESSION_METRICS = ("rmse", "r2")
PIXEL_CLASSIFICATION_METRICS = ("oa", "aa", "kappa", "f1_macro")


def sample_positions(count: int, height: int, width: int, per_tile: int, seed: int) -> Tensor:
    """count x per_tile x 2 (row, col) pixel positions, uniform and seeded (CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randint(0, height * width, (count, per_tile), generator=generator)
    return torch.stack([flat // width, flat % width], dim=-1)


@torch.no_grad()
def pixel_features(
    encoder: nn.Module,
    meta: dict,
    images: np.ndarray,
    positions: Tensor,
    device: str = "cpu",
    batch_size: int = 64,
) -> Tensor:
    """(N * P) x D features of the encoder's finest map at the pixel centres `positions` (N x P x 2)."""
    encoder.eval().to(device)
    finest = feature_indices(encoder)[0]
    height, width = images.shape[-2:]
    parts = []
    for start in range(0, len(images), batch_size):
        pixels = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        (fmap,) = encoder.forward_intermediates(
            normalise_for(meta, pixels), indices=[finest], intermediates_only=True
        )
        where = positions[start : start + batch_size].to(device).float() + 0.5  # pixel centres
        grid = torch.stack([where[..., 1] / width, where[..., 0] / height], dim=-1) * 2 - 1  # x, y in [-1, 1]
        sampled = F.grid_sample(fmap.float(), grid[:, :, None, :], mode="bilinear", align_corners=False)
        parts.append(sampled[..., 0].transpose(1, 2).reshape(-1, fmap.shape[1]))
    return torch.cat(parts)


def spectral_index(images: np.ndarray, bands: Sequence[str], index: str = "ndvi") -> np.ndarray:
    """N x H x W float32 spectral index of raw uint images N x C x H x W, from named bands."""
    if index not in INDICES:
        raise ConfigError(f"spectral index {index!r} is unknown; use one of {sorted(INDICES)}")
    names = [canonical_band_name(b) for b in bands]
    missing = [b for b in INDICES[index] if b not in names]
    if missing:
        raise DataError(
            f"{index} needs bands {', '.join(INDICES[index])}, but the set's bands ({', '.join(bands)}) lack "
            f"{', '.join(missing)}: evaluate the regression protocols on data with them, or name the bands "
            "(data.band_names / data.band_preset)"
        )
    first, second = (images[:, names.index(b)].astype(np.float32) for b in INDICES[index])
    return (first - second) / np.maximum(first + second, 1e-6)


def fit_ridge(
    x: Tensor,
    y: Tensor,
    folds: int,
    seed: int,
    grid: Sequence[float] = RIDGE_GRID,
    pool: Tensor | None = None,
) -> Callable[[Tensor], Tensor]:
    """Closed-form ridge of `y` on `x`; returns a predict function.

    Features are standardised with the mean and std of `pool` (every training sample's features,
    labelled or not: no label is used; default `x`), since a handful of labelled rows gives a
    feature that barely varies among them a tiny std, and test values far outside it then blow the
    prediction up. λ (per sample, on the mean squared error) is chosen by `folds`-fold
    cross-validation on the labelled rows (seeded; as many folds as rows when there are fewer),
    then the fit is redone on all of them. With one row every λ predicts its label."""
    x, y = x.double(), y.double()
    mean, std = standardisation((x if pool is None else pool).double())
    xs = (x - mean) / std

    def solve(rows: Tensor, lam: float) -> tuple[Tensor, Tensor]:
        centre = y[rows].mean()
        gram = xs[rows].T @ xs[rows] + lam * len(rows) * torch.eye(
            xs.shape[1], dtype=x.dtype, device=x.device
        )
        return torch.linalg.solve(gram, xs[rows].T @ (y[rows] - centre)), centre

    count = min(folds, len(x))
    if count < 2:
        chosen = max(grid)
    else:
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(x.device)
        held_out = order.chunk(count)
        errors = []
        for lam in grid:
            squared = 0.0
            for part in held_out:
                kept = order[~torch.isin(order, part)]
                weight, centre = solve(kept, lam)
                squared += float(((xs[part] @ weight + centre - y[part]) ** 2).sum())
            errors.append(squared)
        chosen = grid[int(np.argmin(errors))]
    weight, centre = solve(torch.arange(len(x), device=x.device), chosen)
    return lambda z: ((z.double() - mean) / std) @ weight + centre


def regression_metrics(prediction: Tensor, target: Tensor) -> dict[str, float]:
    """RMSE and R² (1 − SSE / SST; 0 for predicting the test mean, negative when worse)."""
    prediction, target = prediction.double(), target.double()
    sse = ((prediction - target) ** 2).sum()
    sst = ((target - target.mean()) ** 2).sum().clamp_min(1e-12)
    return {"rmse": float((sse / len(target)).sqrt()), "r2": float(1 - sse / sst)}


def _gather(values: np.ndarray, positions: Tensor) -> Tensor:
    """values[n, row, col] at N x P x 2 positions, flattened to N * P."""
    rows, cols = positions[..., 0].numpy(), positions[..., 1].numpy()
    return torch.from_numpy(
        np.ascontiguousarray(values[np.arange(len(values))[:, None], rows, cols]).reshape(-1)
    )


def run_pixel(
    encoder_factory: EncoderFactory,
    meta: dict,
    dataset: EvalDataset,
    protocols: Iterable[str] = PIXEL_PROTOCOLS,
    fractions: Iterable[float] = (0.01, 0.1, 1.0),
    seeds: Iterable[int] = (0, 1, 2),
    pixels_per_tile: int = 16,
    index: str = "ndvi",
    val_fraction: float = 0.2,
    ridge_folds: int = 5,
    device: str = "cpu",
) -> list[dict]:
    """Rows {protocol, budget, seed, metric, value, train_count} of the pixel-level protocols."""
    dataset.check()
    if dataset.task != "segmentation":
        raise ConfigError(f"pixel protocols need per-pixel labels: {dataset.name!r} is a {dataset.task} set")
    protocols = list(protocols)
    unknown = [p for p in protocols if p not in PIXEL_PROTOCOLS]
    if unknown:
        raise ConfigError(f"pixel protocols {unknown} are unknown; use {list(PIXEL_PROTOCOLS)}")
    if ridge_folds < 2 and any(p != "pixel_linear" for p in protocols):
        raise ConfigError(
            f"eval.pixel.ridge_folds={ridge_folds}: cross-validation needs at least 2 folds to choose the "
            "ridge's λ; set it to 2 or more (5 is the default)"
        )
    encoder = fresh_encoder(encoder_factory, meta)
    height, width = dataset.train.images.shape[-2:]
    train_at = sample_positions(len(dataset.train), height, width, pixels_per_tile, seed=10_000)
    test_at = sample_positions(len(dataset.test), height, width, pixels_per_tile, seed=20_000)
    train_pixels = pixel_features(encoder, meta, dataset.train.images, train_at, device)
    test_pixels = pixel_features(encoder, meta, dataset.test.images, test_at, device)
    regression = [p for p in protocols if p != "pixel_linear"]
    if regression:
        train_index = spectral_index(dataset.train.images, dataset.bands, index)
        test_index = spectral_index(dataset.test.images, dataset.bands, index)
    if "tile_ridge" in protocols:
        train_tiles = extract_features(encoder, meta, dataset.train.images, device)
        test_tiles = extract_features(encoder, meta, dataset.test.images, device)
    rows = []
    pool = np.zeros(len(dataset.train), dtype=np.int64)
    for fraction in fractions:
        for seed in seeds:
            tiles = select_budget(pool, float(fraction), seed, num_classes=1).indices
            picked = (tiles[:, None] * pixels_per_tile + torch.arange(pixels_per_tile)).reshape(-1)
            for protocol in protocols:
                if protocol == "pixel_linear":
                    metrics, count = _pixel_linear(
                        dataset,
                        train_pixels,
                        test_pixels,
                        train_at,
                        test_at,
                        picked,
                        val_fraction,
                        seed,
                        device,
                    )
                elif protocol == "pixel_ridge":
                    y = _gather(train_index, train_at)
                    predict = fit_ridge(
                        train_pixels[picked.to(train_pixels.device)],
                        y[picked].to(device),
                        ridge_folds,
                        seed,
                        pool=train_pixels,
                    )
                    metrics, count = (
                        regression_metrics(predict(test_pixels).cpu(), _gather(test_index, test_at)),
                        len(picked),
                    )
                else:
                    y = torch.from_numpy(train_index.mean(axis=(1, 2)))
                    predict = fit_ridge(
                        train_tiles[tiles.to(train_tiles.device)],
                        y[tiles].to(device),
                        ridge_folds,
                        seed,
                        pool=train_tiles,
                    )
                    metrics, count = (
                        regression_metrics(
                            predict(test_tiles).cpu(), torch.from_numpy(test_index.mean(axis=(1, 2)))
                        ),
                        len(tiles),
                    )
                rows += [
                    {"protocol": protocol, "budget": format_budget(float(fraction)), "seed": seed,
                     "metric": name, "value": float(value), "train_count": count}
                    for name, value in metrics.items()
                ]  # fmt: skip
    return rows


def _pixel_linear(dataset, train_pixels, test_pixels, train_at, test_at, picked, val_fraction, seed, device):
    """The linear probe on labelled pixels (ignored labels left out); classification metrics."""
    labels = _gather(dataset.train.targets, train_at).long()
    test_labels = _gather(dataset.test.targets, test_at).long()
    keep = picked[labels[picked] != (dataset.ignore_index if dataset.ignore_index is not None else -1)]
    test_keep = test_labels != (dataset.ignore_index if dataset.ignore_index is not None else -1)
    x, y = train_pixels[keep.to(train_pixels.device)], labels[keep].to(device)
    fit_idx, val_idx = split_train_val(y.cpu(), val_fraction, seed)
    fit_idx, val_idx = fit_idx.to(x.device), val_idx.to(x.device)
    if len(val_idx) == 0:
        val_idx = fit_idx
    probe = fit_linear_probe(x[fit_idx], y[fit_idx], x[val_idx], y[val_idx], dataset.num_classes)
    scores = probe.predict_scores(test_pixels[test_keep.to(test_pixels.device)])
    metrics = classification_metrics(scores, test_labels[test_keep].to(device), dataset.num_classes)
    return {m: metrics[m] for m in PIXEL_CLASSIFICATION_METRICS}, len(keep)
