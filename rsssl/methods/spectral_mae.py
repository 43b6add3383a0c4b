"""Masked spectral reconstruction (Zhang & Han, Remote Sens. 2023, pretext task A): no official code.

From `reconstruction.sites_per_image` random s x s sites of each tile, the spectral transformer
(`rsssl.models.spectral`, `backbone=spectral`) sees a random `1 − mask_ratio` of each site's band
tokens (the masked ones never enter it); a light decoder (`decoder_depth` transformer layers over
the encoded visible tokens and a learned mask token at every masked position) predicts the
masked tokens, and the loss is the squared error on the masked tokens only, on the per-band
standardised values the datamodule delivers (MAE's recipe along the spectral axis).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rsssl.data import draws
from rsssl.losses.reconstruction import masked_mse
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.models.backbones import ConfigError
from rsssl.models.spectral import SpectralTransformer, transformer_layers


def split_tokens(
    num_sequences: int, num_tokens: int, mask_ratio: float, device, per_sample: int = 1
) -> tuple[Tensor, Tensor]:
    """Per sequence, the indices of its visible and of its masked tokens (a random split);
    the sequences come `per_sample` to a sample, sample by sample (the split is a per-sample draw)."""
    visible_count = max(1, round(num_tokens * (1 - mask_ratio)))
    if visible_count >= num_tokens:
        raise ConfigError(
            f"spectral_mae: mask_ratio={mask_ratio} of {num_tokens} band tokens masks none: raise "
            "method.mask_ratio, or lower backbone.kwargs.band_group to get more tokens"
        )
    scores = draws.rand(num_sequences // per_sample, per_sample, num_tokens, device=device)
    order = scores.flatten(0, 1).argsort(dim=1)
    return order[:, :visible_count], order[:, visible_count:]


def take(tokens: Tensor, index: Tensor) -> Tensor:
    """tokens[n, index[n, k]] for N x T x D tokens and N x t indices."""
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def spectral_encoder(method: SSLMethod, name: str) -> SpectralTransformer:
    """The method's backbone, which must be the spectral transformer (its band tokens are the task)."""
    if not isinstance(method.backbone, SpectralTransformer):
        raise ConfigError(
            f"{name} reconstructs band tokens: it needs backbone=spectral (the spectral transformer), "
            f"not {method.backbone_name}"
        )
    return method.backbone


class SpectralReconstruction(nn.Module):
    """The masked-reconstruction task on a spectral transformer: site sampling, the token split,
    the light decoder and the loss (what `SpectralMAE` trains, and `SpectralSpatial` beside
    self-distillation). The encoder is the method's backbone, passed to every call: its weights
    belong to the method, the decoder's to this module."""

    def __init__(
        self,
        encoder: SpectralTransformer,
        mask_ratio: float = 0.75,
        sites_per_image: int = 64,
        decoder_dim: int = 32,
        decoder_depth: int = 1,
        decoder_heads: int = 4,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ConfigError(
                f"spectral reconstruction: mask_ratio={mask_ratio} must lie strictly between 0 and 1"
            )
        self.mask_ratio, self.sites_per_image = mask_ratio, sites_per_image
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_position = nn.Parameter(torch.zeros(encoder.num_tokens, decoder_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_position, std=0.02)
        self.decoder = transformer_layers(decoder_dim, decoder_heads, 2 * decoder_dim, decoder_depth)
        self.predict = nn.Linear(decoder_dim, encoder.token_dim)
        self.register_buffer("valid", encoder.token_valid(), persistent=False)

    def sample_sites(self, encoder: SpectralTransformer, images: Tensor) -> Tensor:
        """N x T x token_dim band tokens of `sites_per_image` random sites of every image."""
        tokens, (h, w) = encoder.site_tokens(images)
        sites = draws.randint(0, h * w, images.shape[0], self.sites_per_image, device=images.device)
        offsets = torch.arange(images.shape[0], device=images.device)[:, None] * (h * w)
        return tokens[(sites + offsets).flatten()]

    def reconstruct(
        self, encoder: SpectralTransformer, tokens: Tensor, visible: Tensor, masked: Tensor
    ) -> Tensor:
        """Predictions of the masked tokens (N x t_masked x token_dim) from the visible ones alone."""
        encoded = encoder.encode_tokens(take(tokens, visible), visible)
        known = self.decoder_embed(encoded) + self.decoder_position[visible]
        unknown = self.mask_token + self.decoder_position[masked]
        sequence = torch.cat([known, unknown], dim=1)
        for layer in self.decoder:
            sequence = layer(sequence)
        return self.predict(sequence[:, visible.shape[1] :])

    def forward(self, encoder: SpectralTransformer, images: Tensor) -> Tensor:
        """The reconstruction loss of one batch: masked real bands only."""
        tokens = self.sample_sites(encoder, images)
        visible, masked = split_tokens(
            len(tokens), tokens.shape[1], self.mask_ratio, images.device, self.sites_per_image
        )
        prediction = self.reconstruct(encoder, tokens, visible, masked)
        return masked_mse(prediction, take(tokens, masked), self.valid[masked])


class SpectralMAE(SSLMethod):
    """Reconstruct masked band tokens of pixel spectra from the visible ones (settings of the task
    under `reconstruction`: `SpectralReconstruction`'s)."""

    def __init__(self, reconstruction: dict | None = None, **base) -> None:
        super().__init__(**base)
        encoder = spectral_encoder(self, "spectral_mae")
        self.reconstruction = SpectralReconstruction(encoder, **(reconstruction or {}))

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        loss = self.reconstruction(self.backbone, images)
        features = self.backbone(images)
        return StepOutput(loss=loss, features=features, embeddings=features)
