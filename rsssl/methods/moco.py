"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negatives.

Defaults follow the official code (../shared/research/seed-methods.md §0): MLP head
2048-128, queue 65536 (clipped to the data), momentum 0.999, temperature 0.2, SGD lr 0.03
per 256 images, cosine schedule. Subclasses change what the positive pair is by overriding
`pair` (SauMoCo: a spatial neighbour; STICL: a scene-transferred key).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from rsssl.losses import info_nce
from rsssl.methods.base import SSLMethod, StepOutput, freeze
from rsssl.methods.distributed import batch_shuffle, batch_unshuffle, gather_no_grad
from rsssl.models.heads import mlp


class MoCo(SSLMethod):
    """InfoNCE between a query and its momentum-encoded key, negatives from a FIFO queue."""

    def __init__(
        self,
        queue_size: int = 65536,
        temperature: float = 0.2,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        proj_layers: int = 2,
        shuffle_bn: bool = True,
        **base,
    ) -> None:
        super().__init__(**base)
        self.temperature = temperature
        self.shuffle_bn = shuffle_bn
        self.projector = mlp(self.num_features, proj_hidden_dim, proj_dim, proj_layers)
        self.key_backbone = freeze(copy.deepcopy(self.backbone))
        self.key_projector = freeze(copy.deepcopy(self.projector))
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def setup(self, stage: str) -> None:
        """Never hold more keys than distinct training samples minus one global batch: the
        positive's own old key would otherwise sit among the negatives."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "train_index"):
            return
        tiles = len(datamodule.train_index)
        limit = max(1, tiles - datamodule.batch_size * self.trainer.world_size)
        if limit < self.queue.shape[0]:
            rank_zero_warn(
                f"queue_size {self.queue.shape[0]} is larger than the data allows; using {limit} "
                f"({tiles} training tiles minus one global batch)"
            )
            self.queue = self.queue[:limit].clone()

    def pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Query input and key input: two random views of the same tiles."""
        images = batch["image"]
        return self.views(images), self.views(images)

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        if self.shuffle_bn:
            images, undo = batch_shuffle(images)
        keys = F.normalize(self.key_projector(self.key_backbone(images)), dim=1)
        return batch_unshuffle(keys, undo) if self.shuffle_bn else keys

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the keys of every process into the queue (FIFO, wrapping around)."""
        keys = gather_no_grad(keys.float())
        size = self.queue.shape[0]
        keys = keys[-size:]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def pretext_step(self, batch: dict) -> StepOutput:
        query_input, key_input = self.pair(batch)
        features = self.backbone(query_input)
        query = self.projector(features)
        keys = self.encode_keys(key_input)
        loss = info_nce(query, keys, self.queue.clone().detach(), self.temperature)
        self.enqueue(keys)
        return StepOutput(loss=loss, features=features, embeddings=query)
