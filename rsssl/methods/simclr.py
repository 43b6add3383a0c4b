"""SimCLR (Chen et al. 2020): NT-Xent between two views, in-batch negatives.

Head 2048-2048-128 with BatchNorm, temperature 0.5. Without LARS the learning rate is
0.3 per 256 images with SGD (seed-methods.md §6e) [unverified for RS data]. The
`include_positive_in_denominator` flag switches to the positive-excluded NT-Xent used by
GLCNet and Tao et al. 2020. Under DDP the embeddings of all processes are the negatives.
`false_negatives` (threshold, confidence, scope) turns the loss into FALSE (Zhang et al. 2022).
"""

from __future__ import annotations

from rsssl.losses.false_negatives import false_negative_settings, nt_xent_with
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.methods.distributed import gather_with_grad
from rsssl.models.heads import mlp


class SimCLR(SSLMethod):
    """Two views through one network; each view's partner is its positive."""

    def __init__(
        self,
        temperature: float = 0.5,
        include_positive_in_denominator: bool = True,
        proj_hidden_dim: int = 2048,
        proj_dim: int = 128,
        proj_layers: int = 2,
        false_negatives: dict | None = None,
        **base,
    ) -> None:
        super().__init__(**base)
        self.temperature = temperature
        self.include_positive = include_positive_in_denominator
        self.projector = mlp(self.num_features, proj_hidden_dim, proj_dim, proj_layers, batch_norm=True)
        self.false_negatives = false_negative_settings(false_negatives)

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        both = self.views(images), self.views(images)
        features = [self.backbone(view) for view in both]
        z1, z2 = (gather_with_grad(self.projector(f)) for f in features)
        loss = nt_xent_with(z1, z2, self.temperature, self.include_positive, self.false_negatives)
        return StepOutput(loss=loss, features=features[0], embeddings=z1)
