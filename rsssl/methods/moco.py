"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negatives.

Defaults follow the official code (../shared/research/seed-methods.md §0): MLP head
2048-128, queue 65536, momentum 0.999, temperature 0.2, SGD lr 0.03 per 256 images, cosine
schedule. Subclasses change what the positive pair is by overriding `pair` (SauMoCo: a
spatial neighbour; STICL: a scene-transferred key).

Shuffle-BN (`shuffle_bn`): on one process both encoders normalise in `bn_groups` groups
(`SplitBatchNorm`, the MoCo authors' single-GPU recipe) and the keys are dealt so that each
key group draws evenly from every query group; under DDP the query encoder is left to
Lightning (SyncBN when `sync_batchnorm`) and the key encoder keeps per-process statistics.

Deliberate improvement over the original: the queue stores each key's sample index, and a
query never meets a stale key of its own sample as a negative (it is masked out, neither
positive nor negative), and slots not yet written are no negatives either (the original's
random initial vectors would flood the softmax for the K/B steps a large queue takes to fill on a
small data set). So a queue may be larger than the data set.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from rsssl.losses.false_negatives import false_negative_settings, info_nce_with
from rsssl.methods.base import SSLMethod, StepOutput, freeze
from rsssl.methods.distributed import batch_shuffle, batch_unshuffle, gather_in_batch_order
from rsssl.models.backbones import ConfigError
from rsssl.models.heads import mlp
from rsssl.models.split_bn import split_batch_norm

#: `queue_index` of a slot never written (not a negative) and of a key whose batch had no index
EMPTY_SLOT, UNKNOWN_SAMPLE = -2, -1


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
        bn_groups: int = 4,
        false_negatives: dict | None = None,
        **base,
    ) -> None:
        super().__init__(**base)
        self.false_negatives = false_negative_settings(false_negatives)
        self.temperature = temperature
        self.shuffle_bn = shuffle_bn
        self.bn_groups = bn_groups
        self.projector = mlp(self.num_features, proj_hidden_dim, proj_dim, proj_layers)
        self.key_backbone = freeze(copy.deepcopy(self.backbone))
        self.key_projector = freeze(copy.deepcopy(self.projector))
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), EMPTY_SLOT, dtype=torch.long))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.key_groups = 1

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.key_backbone), (self.projector, self.key_projector)]

    def setup(self, stage: str) -> None:
        self.configure_batch_norm(self.trainer.world_size)

    def configure_batch_norm(self, world_size: int) -> None:
        """Shuffle-BN's BatchNorm layout: split groups on one process, per-process keys under DDP."""
        if not self.shuffle_bn:
            return
        if world_size > 1:
            self.key_groups = 1
        else:
            self.key_groups = self.bn_groups
            fitting = [g for g in range(2, self.batch_size // 2 + 1) if self.batch_size % g == 0]
            if self.bn_groups not in fitting:
                suggestion = f"method.bn_groups={max(g for g in fitting if g <= 4)}, or " if fitting else ""
                raise ConfigError(
                    f"method.bn_groups={self.bn_groups} must divide data.batch_size={self.batch_size} into "
                    f"groups of at least 2 samples (BatchNorm needs two per group): choose {suggestion}"
                    "method.shuffle_bn=false"
                )
            split_batch_norm(self.backbone, self.bn_groups)
            split_batch_norm(self.projector, self.bn_groups)
        split_batch_norm(self.key_backbone, self.key_groups)
        split_batch_norm(self.key_projector, self.key_groups)

    def pair(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Query input and key input: two random views of the same tiles."""
        images = batch["image"]
        return self.views(images), self.views(images)

    @torch.no_grad()
    def encode_keys(self, images: torch.Tensor) -> torch.Tensor:
        if self.shuffle_bn:
            images, undo = batch_shuffle(images, self.key_groups)
        keys = F.normalize(self.key_projector(self.key_backbone(images)), dim=1)
        return batch_unshuffle(keys, undo) if self.shuffle_bn else keys

    def not_negatives(self, index: torch.Tensor) -> torch.Tensor:
        """B x K mask of the queue entries that are no negative of each query: stale keys of the
        query's own sample, and slots never written."""
        own = (index[:, None] == self.queue_index[None, :]) & (index[:, None] >= 0)
        return own | (self.queue_index == EMPTY_SLOT)[None, :]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """Write the keys of every process, with their sample indices, into the queue (FIFO, wrapping),
        in global-batch order (the queue of one process holding the whole batch)."""
        keys, index = gather_in_batch_order(keys.float()), gather_in_batch_order(index.long())
        size = self.queue.shape[0]
        keys, index = keys[-size:], index[-size:]
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_index[slots] = index.to(self.queue_index.device)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    def pretext_step(self, batch: dict) -> StepOutput:
        query_input, key_input = self.pair(batch)
        features = self.backbone(query_input)
        query = self.projector(features)
        keys = self.encode_keys(key_input)
        index = sample_index(batch)
        queue = self.queue.clone().detach()
        loss = info_nce_with(
            query, keys, queue, self.temperature, self.not_negatives(index), self.false_negatives
        )
        self.enqueue(keys, index)
        return StepOutput(loss=loss, features=features, embeddings=query)


def sample_index(batch: dict) -> torch.Tensor:
    """Each sample's dataset index (unique per tile), or UNKNOWN_SAMPLE where the batch carries none."""
    if "index" in batch:
        return batch["index"].long()
    shape, device = (batch["image"].shape[0],), batch["image"].device
    return torch.full(shape, UNKNOWN_SAMPLE, dtype=torch.long, device=device)
