"""Zhang & Han's spectral-spatial framework (Remote Sens. 2023): both pretext tasks on one encoder.

No official code exists (seed-methods.md §2, every default unverified). On the spectral
transformer (`backbone=spectral`):

- object-based multi-view identification: LaST's self-distillation (`rsssl.methods.last`) across
  global, local and spectral crops (`multicrop.num_spectral` crops with the `spectral` view
  recipe), the teacher on the global crops only;
- pixel-based masked spectral reconstruction (`rsssl.methods.spectral_mae.SpectralReconstruction`,
  settings under `reconstruction`).

L = `weight_distillation` · L_distillation + `weight_reconstruction` · L_reconstruction.
"""

from __future__ import annotations

from rsssl.methods.base import StepOutput
from rsssl.methods.last import LaST
from rsssl.methods.spectral_mae import SpectralReconstruction, spectral_encoder
from rsssl.models.backbones import ConfigError


class SpectralSpatial(LaST):
    """Self-distillation over spatial and spectral views plus masked spectral reconstruction."""

    def __init__(
        self,
        weight_distillation: float = 1.0,
        weight_reconstruction: float = 1.0,
        reconstruction: dict | None = None,
        **last,
    ) -> None:
        super().__init__(**last)
        if (
            min(weight_distillation, weight_reconstruction) < 0
            or weight_distillation + weight_reconstruction == 0
        ):
            raise ConfigError(
                f"spectral_spatial: weight_distillation={weight_distillation}, weight_reconstruction="
                f"{weight_reconstruction}: both >= 0 and not both 0"
            )
        self.weight_distillation, self.weight_reconstruction = weight_distillation, weight_reconstruction
        encoder = spectral_encoder(self, "spectral_spatial")
        self.reconstruction = SpectralReconstruction(encoder, **(reconstruction or {}))

    def pretext_step(self, batch: dict) -> StepOutput:
        distilled = super().pretext_step(batch)
        reconstruction = self.reconstruction(self.backbone, batch["image"])
        loss = self.weight_distillation * distilled.loss + self.weight_reconstruction * reconstruction
        logs = {
            **distilled.logs,
            "loss_distillation": distilled.loss.detach(),
            "loss_reconstruction": reconstruction.detach(),
        }
        return StepOutput(loss=loss, features=distilled.features, embeddings=distilled.embeddings, logs=logs)
