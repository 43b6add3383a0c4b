"""SauMoCo (Kang et al., TGRS 2021): MoCo whose positive is a spatially neighbouring tile.

"Near things are more related": the query is the anchor tile, the key its neighbour, a tile
of the same scene whose centre is drawn uniformly in the square ±D around the anchor centre
(`rsssl.data.sampling`, reflect padding at the scene edges; D = `data.neighbor_radius`, in
px or m). Both get independent flips and 90° rotations only, no colour or crop.

Defaults from the official code (jiankang1991/SauMoCo, seed-methods.md §1): one linear layer
to 128-d (no MLP), temperature 0.07, EMA momentum 0.999, SGD lr 1e-3 for batch 256 (scaled
linearly by the base), Nesterov momentum 0.9, weight decay 1e-4, queue = the whole data set
(a query's own stale keys are masked by `MoCo`), D = 100 px. Deviations:
the queue starts L2-normalised (the official one is uniform in ±sqrt(3/d), unnormalised),
and the schedule is the base's cosine instead of StepLR(30 epochs, gamma 0.5).
"""

from __future__ import annotations

import torch

from rsssl.methods.moco import MoCo


class SauMoCo(MoCo):
    """InfoNCE between an anchor tile and its spatial neighbour, negatives from the queue."""

    required_keys = ("neighbor",)

    def __init__(
        self,
        queue_size: int = 100_000,
        temperature: float = 0.07,
        proj_dim: int = 128,
        proj_layers: int = 1,
        **base,
    ) -> None:
        base.setdefault("views", {"preset": "geometric"})
        super().__init__(
            queue_size=queue_size,
            temperature=temperature,
            proj_dim=proj_dim,
            proj_layers=proj_layers,
            **base,
        )

    def pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Query input and key input: a geometric view of the anchor and one of its neighbour."""
        return self.views(batch["image"]), self.views(batch["neighbor"])
