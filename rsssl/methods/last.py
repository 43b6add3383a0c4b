"""LaST (Wang et al., GRSL 2022): label-free self-distillation with multi-crop and a transformer.

No official code was released; this follows the DINO recipe LaST builds on
(../shared/research/seed-methods.md §4, every default there marked unverified):

- a student (backbone + `DINOHead`) and a teacher, its EMA (momentum `ema.base` -> `ema.final`
  by a cosine over the optimiser steps, the base's schedule), no negatives;
- multi-crop views (`rsssl.data.multicrop`): the teacher sees the global crops only, the student
  every crop, one batched forward per crop size; with `multicrop.num_spectral` and a `spectral`
  view recipe the student also gets global-size crops with a spectral view (Zhang & Han's
  multi-view identification task: `method=last` with spectral views);
- the self-distillation loss (`rsssl.losses.self_distillation`) with a running centre of the
  teacher's outputs (momentum `center_momentum`, averaged over processes under DDP), student
  temperature `student_temperature` and a teacher temperature warmed up linearly from
  `warmup_teacher_temperature` to `teacher_temperature` over the first `teacher_temperature_warmup`
  of training (a fraction: DINO's 30 of 100 epochs is 0.3);
- the head's last layer frozen for the first `freeze_last_layer_epochs` epochs; AdamW with the
  weight decay cosine-scheduled and gradient clipping (`optimizer.weight_decay_end`, `clip_grad`).

Any backbone works: a ViT (`backbone=vit_tiny`, position embeddings interpolated for both crop
sizes) as the paper, or a CNN (`backbone=resnet18`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from rsssl.data.multicrop import MultiCrop, MultiCropRecipe, MultiCropViewMaker
from rsssl.data.spectral_views import SpectralRecipe
from rsssl.losses.self_distillation import self_distillation_loss, teacher_entropy, updated_center
from rsssl.methods.base import SSLMethod, StepOutput, freeze
from rsssl.models.heads import DINOHead


def warmed_up(start: float, end: float, progress: float, warmup: float) -> float:
    """Linear from `start` at progress 0 to `end` at progress `warmup` (fractions of training),
    then `end`; `warmup` 0 gives `end` throughout."""
    if warmup <= 0:
        return end
    return start + (end - start) * min(1.0, progress / warmup)


class LaST(SSLMethod):
    """A student matches its momentum teacher's centred, sharpened outputs across crops."""

    def __init__(
        self,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        head_layers: int = 3,
        norm_last_layer: bool = True,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        warmup_teacher_temperature: float = 0.04,
        teacher_temperature_warmup: float = 0.0,
        center_momentum: float = 0.9,
        freeze_last_layer_epochs: int = 1,
        multicrop: dict | None = None,
        spectral: dict | None = None,
        **base,
    ) -> None:
        super().__init__(**base)
        self.multicrop = MultiCropViewMaker(
            MultiCropRecipe(**(multicrop or {})),
            self.view_maker.recipe,
            self.bands,
            base.get("rgb_bands"),
            SpectralRecipe(**spectral) if spectral else None,
        )
        self.head = DINOHead(
            self.num_features, out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer
        )
        self.teacher_backbone = freeze(copy.deepcopy(self.backbone))
        self.teacher_head = freeze(copy.deepcopy(self.head))
        self.register_buffer("center", torch.zeros(out_dim))
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.teacher_temperature_warmup = teacher_temperature_warmup
        self.center_momentum = center_momentum
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    @property
    def momentum_pairs(self):
        return [(self.backbone, self.teacher_backbone), (self.head, self.teacher_head)]

    def current_teacher_temperature(self) -> float:
        """The teacher temperature at this optimiser step (`warmed_up`)."""
        if self._trainer is None:
            return self.teacher_temperature
        progress = self.global_step / max(1, self.trainer.estimated_stepping_batches)
        return warmed_up(
            self.warmup_teacher_temperature,
            self.teacher_temperature,
            progress,
            self.teacher_temperature_warmup,
        )

    def student_outputs(self, crops: MultiCrop) -> tuple[Tensor, Tensor]:
        """Student logits of every crop (globals first) and backbone features of the globals."""
        features = [self.backbone(group) for group in crops.groups()]
        return self.head(torch.cat(features)), features[0]

    @torch.no_grad()
    def teacher_outputs(self, crops: MultiCrop) -> Tensor:
        """Teacher logits of the global crops only: the teacher never sees a local crop."""
        return self.teacher_head(self.teacher_backbone(crops.globals_))

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        crops = self.multicrop(images)
        student, global_features = self.student_outputs(crops)
        teacher = self.teacher_outputs(crops)
        temperature = self.current_teacher_temperature()
        loss = self_distillation_loss(
            student, teacher, self.center, crops.num_global, self.student_temperature, temperature
        )
        logs = {
            "teacher_entropy": teacher_entropy(teacher, self.center, temperature),
            "teacher_temperature": temperature,
        }
        if self.training:
            self.center.copy_(updated_center(self.center, teacher, self.center_momentum))
        batch_size = images.shape[0]
        embeddings = self.head.embed(global_features[:batch_size])
        return StepOutput(loss=loss, features=global_features[:batch_size], embeddings=embeddings, logs=logs)

    def on_after_backward(self) -> None:
        """DINO's trick: the prototypes (the head's last layer) stay fixed for the first epochs."""
        if self.current_epoch < self.freeze_last_layer_epochs:
            for parameter in self.head.last_layer.parameters():
                parameter.grad = None
