"""Rotation prediction (Gidaris et al., ICLR 2018), one of the classic pretext signals.

Each tile is turned by k quarter turns, k in {0, 1, 2, 3}, and a head on the backbone's features
names k (cross-entropy). With `all_rotations` every tile is seen at all four angles in the same
batch (RotNet's choice); otherwise each tile at one random angle. The views must keep the tile's
orientation, so the method's views have no flips and no quarter turns of their own.

Overhead imagery has no canonical "up": what can tell the angle is anisotropic structure the
scene keeps in one direction (sun shadows, illumination, crop rows, a sensor's stripes). On
scenes without it the task cannot be learnt, and `train/pretext_acc` stays near 0.25, as it should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rsssl.data import draws
from rsssl.data.views import dihedral
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.models.backbones import ConfigError
from rsssl.models.heads import mlp

QUARTER_TURNS = 4


def rotated(images: Tensor, turns: Tensor) -> Tensor:
    """Each image turned counter-clockwise by `turns[b]` quarter turns (`torch.rot90`)."""
    no_flip = torch.zeros_like(turns, dtype=torch.bool)
    return dihedral(images, no_flip, no_flip, turns)


class RotationPrediction(SSLMethod):
    """Name the number of quarter turns a tile was rotated by."""

    def __init__(self, all_rotations: bool = True, hidden_dim: int = 0, **base) -> None:
        super().__init__(**base)
        recipe = self.view_maker.recipe
        if recipe.rot90 or recipe.hflip_p > 0 or recipe.vflip_p > 0:
            raise ConfigError(
                "rotation: the views turn or flip the tiles themselves, which hides the angle to name; set "
                "method.views.rot90=false, method.views.hflip_p=0 and method.views.vflip_p=0"
            )
        self.all_rotations = all_rotations
        layers = 2 if hidden_dim else 1
        self.head = mlp(self.num_features, hidden_dim, QUARTER_TURNS, layers, batch_norm=bool(hidden_dim))

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        if images.shape[-1] != images.shape[-2]:
            raise ConfigError(f"rotation needs square tiles, got {tuple(images.shape[-2:])}")
        view = self.views(images)
        if self.all_rotations:
            turns = torch.arange(QUARTER_TURNS, device=view.device).repeat_interleave(len(view))
            view = view.repeat(QUARTER_TURNS, 1, 1, 1)  # angle-major: the first B are unturned
        else:
            turns = draws.randint(0, QUARTER_TURNS, len(view), device=view.device)
        features = self.backbone(rotated(view, turns))
        logits = self.head(features)
        loss = F.cross_entropy(logits.float(), turns)
        accuracy = (logits.argmax(1) == turns).float().mean()
        probe = features[: len(images)] if self.all_rotations else self.probe_features(images)
        return StepOutput(loss=loss, features=probe, logs={"pretext_acc": accuracy})
