"""Data-sampling strategies for pretraining: which tiles an epoch draws (TOV's data-sampling study).

- `random`: every tile once per epoch, shuffled (the default).
- `geographic`: even coverage of the ground: tiles are grouped into cells, every cell gets the
  same share of an epoch's draws, split evenly among its tiles. A cell is a square of
  `cell_size` map units (metres in a projected CRS) on the tiles' centres, so overlapping scenes
  of one place share their cells instead of counting twice; scenes without georeference, and every
  scene when `cell_size` is unset, are one cell each.
- `balanced`: even coverage of what the images show: k-means (`clusters`) on the current
  encoder's features of every training tile gives pseudo-classes, each drawn equally often;
  refreshed every `refresh_epochs` epochs (`PseudoLabelBalancer`).

Weighted strategies draw an epoch's `len(tiles)` indices with replacement, seeded by (seed,
epoch) as the shuffle is (`rsssl.data.sampling.EpochSampler`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from rsssl.data.scene import Scene
from rsssl.data.tiles import TileIndex
from rsssl.models.backbones import ConfigError

STRATEGIES = ("random", "geographic", "balanced")


@dataclass(frozen=True)
class SamplingSettings:
    """The `sampling:` settings of a run (see the module docstring)."""

    strategy: str = "random"
    cell_size: float | None = None
    clusters: int = 8
    refresh_epochs: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"sampling.strategy={self.strategy!r} is unknown; use one of {list(STRATEGIES)}"
            )
        if self.cell_size is not None and self.cell_size <= 0:
            raise ConfigError(f"sampling.cell_size={self.cell_size} must be positive (map units), or null")
        if self.clusters < 2 or self.refresh_epochs < 1:
            raise ConfigError(
                f"sampling.clusters={self.clusters} must be at least 2 and sampling.refresh_epochs="
                f"{self.refresh_epochs} at least 1"
            )


def equal_share_weights(groups: np.ndarray) -> np.ndarray:
    """Per-item weights (summing to 1) that give every group the same total, split evenly in it."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inverse] * len(counts))


def geographic_cells(scenes: Sequence[Scene], index: TileIndex, cell_size: float | None) -> np.ndarray:
    """A cell id per tile: the `cell_size` map square of its centre (shared across scenes of one
    CRS), or its scene where there is no georeference or no `cell_size`."""
    keys: list[tuple] = [()] * len(index)
    half = index.tile_size / 2
    for number, scene in enumerate(scenes):
        tiles = np.flatnonzero(index.scene == number)
        if cell_size is None or scene.transform is None or not scene.crs:
            for t in tiles:
                keys[t] = ("scene", number)
            continue
        a, b, c, d, e, f = scene.transform
        rows, cols = index.row[tiles] + half, index.col[tiles] + half
        x, y = c + a * cols + b * rows, f + d * cols + e * rows
        cell_x, cell_y = np.floor(x / cell_size).astype(np.int64), np.floor(y / cell_size).astype(np.int64)
        for t, i, j in zip(tiles, cell_x, cell_y, strict=True):
            keys[t] = (scene.crs, int(i), int(j))
    ids = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return np.array([ids[key] for key in keys], dtype=np.int64)


def kmeans(features: Tensor, k: int, iterations: int = 25, seed: int = 0) -> Tensor:
    """Cluster labels of N x D `features` (L2-normalised first): k-means++ seeding from a
    generator seeded by `seed`, then Lloyd iterations; an emptied cluster takes the point
    farthest from its centre."""
    x = torch.nn.functional.normalize(features.float(), dim=1)
    k = min(k, len(x))
    generator = torch.Generator(device="cpu").manual_seed(seed)
    centres = x[torch.randint(len(x), (1,), generator=generator)]
    for _ in range(k - 1):
        nearest = torch.cdist(x, centres).min(dim=1).values ** 2
        pick = torch.multinomial(nearest.cpu() + 1e-12, 1, generator=generator).to(x.device)
        centres = torch.cat([centres, x[pick]])
    labels = torch.cdist(x, centres).argmin(dim=1)
    for _ in range(iterations):
        for cluster in range(k):
            members = labels == cluster
            if members.any():
                centres[cluster] = x[members].mean(0)
            else:
                centres[cluster] = x[torch.cdist(x, centres).min(dim=1).values.argmax()]
        updated = torch.cdist(x, centres).argmin(dim=1)
        if torch.equal(updated, labels):
            break
        labels = updated
    return labels


class PseudoLabelBalancer(L.Callback):
    """`sampling.strategy: balanced`: before training and every `refresh_epochs` epochs, k-means on
    the backbone's features of every training tile sets the datamodule's sample weights so each
    pseudo-class is drawn equally often. The weights in use are part of the checkpoint: a resumed
    run draws with them (not with weights from its resumed features) until the next refresh."""

    def __init__(self, settings: SamplingSettings, seed: int = 0) -> None:
        self.settings, self.seed = settings, seed
        self.weights: np.ndarray | None = None
        self._restored = False

    def refresh(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        features = datamodule.train_features(pl_module.backbone, pl_module.device)
        labels = kmeans(features, self.settings.clusters, seed=self.seed + trainer.current_epoch)
        self.weights = datamodule.sample_weights = equal_share_weights(labels.cpu().numpy())
        sizes = sorted(torch.bincount(labels).tolist(), reverse=True)
        rank_zero_info(f"sampling: {len(sizes)} pseudo-classes of {sizes} tiles, each drawn equally often")

    def state_dict(self) -> dict:
        return {"weights": None if self.weights is None else torch.from_numpy(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("weights") is not None:
            self.weights, self._restored = torch.as_tensor(state["weights"]).numpy(), True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restored:
            trainer.datamodule.sample_weights = self.weights
        else:
            self.refresh(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.settings.refresh_epochs == 0:
            self.refresh(trainer, pl_module)
