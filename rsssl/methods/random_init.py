"""The random-init baseline: no pretext task, a frozen randomly initialised encoder.

Run through the same pipeline as every method, so its online probe (same views, same
probe, same steps) is the reference each method's probe accuracy is read against.
"""

from __future__ import annotations

import torch

from rsssl.methods.base import SSLMethod, StepOutput, freeze


class RandomInit(SSLMethod):
    """Only the online probe learns; the encoder stays at its random initialisation."""

    trains_backbone = False

    def __init__(self, **base) -> None:
        super().__init__(**base)
        freeze(self.backbone)

    def on_train_epoch_start(self) -> None:
        self.backbone.eval()  # no BatchNorm statistics drift either: the encoder is truly untouched

    def pretext_step(self, batch: dict) -> StepOutput:
        with torch.no_grad():
            features = self.backbone(self.views(batch["image"]))
        return StepOutput(loss=features.new_zeros(()), features=features)
