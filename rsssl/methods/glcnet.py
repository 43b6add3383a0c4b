"""GLCNet (Li et al., TGRS 2022): global style and local matching contrast on a whole DeepLabv3+.

Two views of a tile go through the same dense network (encoder + ASPP + decoder, no momentum
encoder, no queue):

- global style contrast: each view's ASPP context map A is summarised by its per-channel mean and
  variance over space (the "style"; mean only with `style: false`), projected (512-256-64) and
  contrasted with NT-Xent over the (global, under DDP) batch;
- local matching contrast: `num_patches` P x P patches of the decoder map D at the same source
  locations in both views (tracked through the crops, flips and rotations, `rsssl.data.tracked_views`)
  are average-pooled, projected (64-64-64) and contrasted with NT-Xent over all patches (of every
  process under DDP).

L = λ · global + (1 − λ) · local, both NT-Xent forms without the positive in the denominator, as
the official code. `use_global` / `use_local` / `style` are the paper's ablations. With
`false_negatives` set, both terms go through the FALSE loss (rsssl.losses.false_negatives).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align

from rsssl.data.tracked_views import make_tracked_pair, matched_patches
from rsssl.losses.false_negatives import false_negative_settings, nt_xent_with
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.methods.distributed import gather_kept_with_grad, gather_no_grad, gather_with_grad
from rsssl.models.backbones import ConfigError
from rsssl.models.dense import DeepLabV3Plus
from rsssl.models.heads import mlp


def style_features(context: Tensor, with_variance: bool = True) -> Tensor:
    """B x C (or B x 2C) summary of a B x C x h x w map: per-channel spatial mean, then variance
    (population, over h x w) when `with_variance`."""
    flat = context.flatten(2).float()
    mean = flat.mean(dim=2)
    if not with_variance:
        return mean
    return torch.cat([mean, flat.var(dim=2, unbiased=False)], dim=1)


def pooled_patches(decoder: Tensor, boxes: Tensor, patch_size: int) -> Tensor:
    """(B * n) x C mean features of the P x P boxes (B x n x 4, x1 y1 x2 y2) of a B x C x H x W map."""
    patches = roi_align(decoder.float(), list(boxes.to(decoder.device)), patch_size, aligned=True)
    return patches.mean(dim=(2, 3))


class GLCNet(SSLMethod):
    """Both views through one DeepLabv3+; style contrast on its context map, matched-patch contrast
    on its decoder map."""

    def __init__(
        self,
        temperature: float = 0.5,
        weight_global: float = 0.5,
        patch_size: int = 16,
        num_patches: int = 4,
        style: bool = True,
        use_global: bool = True,
        use_local: bool = True,
        aspp_channels: int = 256,
        decoder_channels: int = 64,
        global_proj: tuple[int, int] = (256, 64),
        local_proj: tuple[int, int] = (64, 64),
        false_negatives: dict | None = None,
        **base,
    ) -> None:
        super().__init__(**base)
        if not (use_global or use_local):
            raise ConfigError("glcnet: use_global and use_local are both false: nothing to learn")
        if not 0.0 <= weight_global <= 1.0:
            raise ConfigError(f"glcnet: weight_global={weight_global} must lie in [0, 1]")
        self.temperature = temperature
        self.weight_global = weight_global if use_global and use_local else float(use_global)
        self.patch_size, self.num_patches = int(patch_size), int(num_patches)
        self.style, self.use_global, self.use_local = style, use_global, use_local
        self.net = DeepLabV3Plus(self.backbone, aspp_channels=aspp_channels, out_channels=decoder_channels)
        summary = aspp_channels * (2 if style else 1)
        self.global_head = mlp(summary, global_proj[0], global_proj[1], 2)
        self.local_head = mlp(decoder_channels, local_proj[0], local_proj[1], 2)
        self.false_negatives = false_negative_settings(false_negatives)

    def exported_decoder(self) -> DeepLabV3Plus:
        """The whole DeepLabv3+ is pretrained: its decoder is exported with the encoder."""
        return self.net

    def contrast(self, z1: Tensor, z2: Tensor) -> Tensor:
        """NT-Xent without the positive in the denominator (through FALSE when it is set)."""
        return nt_xent_with(z1, z2, self.temperature, False, self.false_negatives)

    def pretext_step(self, batch: dict) -> StepOutput:
        pair = make_tracked_pair(self.view_maker, batch["image"])
        side = min(pair.view_a.shape[-2:])
        if self.use_local and self.patch_size > side:
            raise ConfigError(
                f"glcnet: method.patch_size={self.patch_size} is larger than the {side} px views: lower "
                "method.patch_size or raise data.tile_size"
            )
        out_a, out_b = self.net(pair.view_a), self.net(pair.view_b)
        logs: dict[str, Tensor | float] = {}
        loss = out_a.decoder.new_zeros(())
        embeddings = None
        if self.use_global:
            z_a = self.global_head(style_features(out_a.context, self.style))
            z_b = self.global_head(style_features(out_b.context, self.style))
            global_loss = self.contrast(gather_with_grad(z_a), gather_with_grad(z_b))
            loss = loss + self.weight_global * global_loss
            logs["loss_global"] = global_loss.detach()
            embeddings = z_a
        if self.use_local:
            boxes_a, boxes_b, valid = matched_patches(
                pair.coords_a, pair.coords_b, self.patch_size, self.num_patches
            )
            keep = valid.flatten().to(out_a.decoder.device)
            everywhere = int(gather_no_grad(keep).sum())  # the global batch's matched patches
            logs["matched_patches"] = float(everywhere)
            if everywhere >= 2:  # NT-Xent without the positive needs two pairs
                p_a = self.local_head(pooled_patches(out_a.decoder, boxes_a, self.patch_size)[keep])
                p_b = self.local_head(pooled_patches(out_b.decoder, boxes_b, self.patch_size)[keep])
                local_loss = self.contrast(gather_kept_with_grad(p_a, keep), gather_kept_with_grad(p_b, keep))
                loss = loss + (1 - self.weight_global) * local_loss
                logs["loss_local"] = local_loss.detach()
                embeddings = p_a if embeddings is None else embeddings
        features = out_a.deepest.mean(dim=(2, 3))
        return StepOutput(loss=loss, features=features, embeddings=embeddings, logs=logs)
