"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016), one of the pretext signals of Tao et al. 2020.

A tile is cut into a `grid` x `grid` array of cells; from each cell a patch of `cell − gap` pixels
is taken at a random offset (the gap keeps neighbouring patches from sharing edges, the offset
keeps their positions from telling the order), and the patches are put in the order of one of a
fixed set of permutations; the network names which one. The set is chosen for large Hamming
distances between its permutations (Noroozi's greedy algorithm), so that no two classes differ
by a swap of a few cells. The cutting and shuffling are batched tensor ops (no loop over samples).

The network (the context-free network of the paper): every patch through the shared backbone,
its features through one shared linear layer, the pieces' outputs concatenated in their shuffled
order, an MLP to one logit per permutation, cross-entropy against the permutation drawn.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsssl.data import draws
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.models.backbones import ConfigError
from rsssl.models.heads import mlp

FULL_SEARCH_LIMIT = 9  # cells up to which every permutation is a candidate (9! = 362,880)


def hamming_permutations(cells: int, count: int, seed: int = 0) -> np.ndarray:
    """`count` permutations of `cells` items (count x cells, int64), chosen greedily: a random
    first one, then always the candidate whose smallest Hamming distance to those chosen is the
    largest (ties broken at random). With `count` equal to cells! it is every permutation."""
    if cells > FULL_SEARCH_LIMIT:
        raise ConfigError(f"jigsaw: {cells} cells have too many permutations to search; use a grid of 2 or 3")
    total = math.factorial(cells)
    if not 1 <= count <= total:
        raise ConfigError(f"jigsaw: num_permutations={count} must lie in [1, {total}] for {cells} cells")
    candidates = np.array(list(itertools.permutations(range(cells))), dtype=np.int8)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(total))]
    nearest = (candidates != candidates[chosen[0]]).sum(1)  # distance of each candidate to the set
    for _ in range(count - 1):
        best = np.flatnonzero(nearest == nearest.max())
        pick = int(rng.choice(best))
        chosen.append(pick)
        nearest = np.minimum(nearest, (candidates != candidates[pick]).sum(1))
    return candidates[chosen].astype(np.int64)


def minimum_hamming_distance(permutations: np.ndarray) -> int:
    """The smallest number of positions in which two permutations of the set differ."""
    distances = (permutations[:, None, :] != permutations[None, :, :]).sum(-1)
    np.fill_diagonal(distances, permutations.shape[1] + 1)
    return int(distances.min())


def patch_size_of(tile: int, grid: int, gap: int) -> int:
    """Side of one puzzle piece of a `tile` px tile (clear error when the tile is too small)."""
    side = tile // grid - gap
    if side < 1:
        raise ConfigError(
            f"jigsaw: a {tile} px tile cut into {grid} x {grid} cells with a {gap} px gap leaves no patch: "
            "lower method.gap or method.grid, or raise data.tile_size"
        )
    return side


def cut_cells(images: Tensor, grid: int, gap: int) -> Tensor:
    """B x grid² x C x p x p patches, cell by cell in reading order, each at its own random offset
    within its cell (per sample and cell: `gap` + the remainder of the tile's side, in pixels)."""
    batch, _, height, width = images.shape
    if height != width:
        raise ConfigError(f"jigsaw needs square tiles, got {height} x {width}")
    side, cell = patch_size_of(height, grid, gap), height // grid
    slack = cell - side
    origins = torch.arange(grid, device=images.device) * cell  # cell corners along one axis
    row_offsets = draws.randint(0, slack + 1, batch, grid, grid, device=images.device)
    col_offsets = draws.randint(0, slack + 1, batch, grid, grid, device=images.device)
    span = torch.arange(side, device=images.device)
    rows = (origins[None, :, None] + row_offsets)[..., None] + span  # B x grid x grid x p
    cols = (origins[None, None, :] + col_offsets)[..., None] + span
    rows, cols = rows.flatten(1, 2), cols.flatten(1, 2)  # B x cells x p
    index_b = torch.arange(batch, device=images.device)[:, None, None, None]
    patches = images[index_b, :, rows[..., :, None], cols[..., None, :]]  # B x cells x p x p x C
    return patches.permute(0, 1, 4, 2, 3)


def shuffle_cells(patches: Tensor, permutations: Tensor, labels: Tensor) -> Tensor:
    """Patches (B x cells x ...) put in the order of permutation `labels[b]`: position i holds
    cell permutations[labels[b], i]."""
    order = permutations[labels]  # B x cells
    shape = (*order.shape, *([1] * (patches.dim() - 2)))
    return patches.gather(1, order.view(shape).expand_as(patches))


def standardise_patches(patches: Tensor, eps: float = 1e-5) -> Tensor:
    """Each patch and band to zero mean and unit std over its pixels (Noroozi's per-patch
    normalisation: no piece can be placed by its brightness alone)."""
    mean = patches.mean(dim=(-2, -1), keepdim=True)
    std = patches.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return (patches - mean) / (std + eps)


class Jigsaw(SSLMethod):
    """Name the permutation a tile's shuffled pieces were put in."""

    def __init__(
        self,
        grid: int = 3,
        num_permutations: int = 100,
        gap: int = 2,
        patch_size: int | None = None,
        standardise: bool = True,
        piece_dim: int = 512,
        hidden_dim: int = 1024,
        permutation_seed: int = 0,
        **base,
    ) -> None:
        super().__init__(**base)
        if grid < 2:
            raise ConfigError(f"jigsaw: grid={grid} gives no puzzle; use 2 or 3")
        self.grid, self.gap, self.patch_size, self.standardise = grid, gap, patch_size, standardise
        permutations = hamming_permutations(grid * grid, num_permutations, permutation_seed)
        self.register_buffer("permutations", torch.as_tensor(permutations), persistent=False)
        self.piece = nn.Linear(self.num_features, piece_dim)
        self.classifier = mlp(grid * grid * piece_dim, hidden_dim, num_permutations, 2)

    def pieces(self, images: Tensor) -> Tensor:
        """B x cells x C x p x p patches of one random view of each tile, in reading order."""
        patches = cut_cells(self.views(images), self.grid, self.gap)
        if self.patch_size is not None:
            batch, cells = patches.shape[:2]
            flat = F.interpolate(patches.flatten(0, 1), size=self.patch_size, mode="bilinear", antialias=True)
            patches = flat.unflatten(0, (batch, cells))
        return standardise_patches(patches) if self.standardise else patches

    def logits(self, shuffled: Tensor) -> Tensor:
        """B x num_permutations logits of B x cells x C x p x p shuffled pieces."""
        batch, cells = shuffled.shape[:2]
        features = self.backbone(shuffled.flatten(0, 1))  # (B cells) x D
        return self.classifier(self.piece(features).reshape(batch, cells * self.piece.out_features))

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        labels = draws.randint(0, len(self.permutations), len(images), device=images.device)
        logits = self.logits(shuffle_cells(self.pieces(images), self.permutations, labels))
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        return StepOutput(loss=loss, features=self.probe_features(images), logs={"pretext_acc": accuracy})
