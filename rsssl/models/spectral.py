"""A spectral transformer: each pixel (or s x s site) is a sequence of band tokens.

Zhang & Han (Remote Sens. 2023) reconstruct a pixel's spectral profile from a masked version;
this is the encoder that task trains. A site's bands are cut into tokens of `band_group`
adjacent bands (each token: band_group x s x s values, bands beyond C zero-padded), embedded by
one linear map plus a learned position per token, and encoded by a small transformer along the
spectral axis; a site's feature is the mean of its encoded tokens.

It is registered with timm (`rsssl_spectral_transformer`), so everything that takes a timm
backbone takes it: `create_backbone`, the export (`encoder.safetensors`), the evaluation suite
(image features: the mean over sites; `global_pool`), and the segmentation protocol
(`forward_intermediates`: per-site maps at stride s, one per block). `pretrained` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models import register_model
from torch import Tensor, nn


class PreNormBlock(nn.Module):
    """One pre-norm transformer layer, batch first, no dropout: x + Attn(LN(x)), then
    x + MLP(LN(x)) with a GELU. The maths (and initialisation) of torch's
    `nn.TransformerEncoderLayer(norm_first=True, activation="gelu")`, with q, k and v split by
    one `unbind`: the packed projection's three slices there each give a full-size gradient that
    autograd fills with zeros and copies into, a quarter of a spectral-spatial step on a CPU
    (sequences of 13 band tokens, so the attention itself is cheap)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer: embed_dim={dim} is not divisible by num_heads={heads}")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)
        nn.init.xavier_uniform_(self.qkv.weight)  # as MultiheadAttention's packed projection
        nn.init.zeros_(self.qkv.bias)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(attended)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def transformer_layers(dim: int, heads: int, mlp_dim: int, depth: int) -> nn.ModuleList:
    """`depth` pre-norm transformer layers (`PreNormBlock`: GELU MLP, no dropout), batch first."""
    return nn.ModuleList(PreNormBlock(dim, heads, mlp_dim) for _ in range(depth))


class SpectralTransformer(nn.Module):
    """Band-token transformer applied at every s x s site of an image."""

    def __init__(
        self,
        in_chans: int = 13,
        band_group: int = 1,
        pixel_patch: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
        num_classes: int = 0,
        global_pool: str = "avg",
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if band_group < 1 or pixel_patch < 1:
            raise ValueError(f"band_group={band_group} and pixel_patch={pixel_patch} must be >= 1")
        if drop_path_rate:
            raise ValueError("the spectral transformer has no stochastic depth: leave drop_path_rate at 0")
        self.in_chans, self.band_group, self.pixel_patch = in_chans, band_group, pixel_patch
        self.num_tokens = math.ceil(in_chans / band_group)
        self.token_dim = band_group * pixel_patch * pixel_patch
        self.num_features = self.embed_dim = embed_dim
        self.global_pool = global_pool
        self.embed = nn.Linear(self.token_dim, embed_dim)
        self.position = nn.Parameter(torch.zeros(1, self.num_tokens, embed_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = transformer_layers(embed_dim, num_heads, int(embed_dim * mlp_ratio), depth)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes else nn.Identity()
        self.feature_info = [
            {"num_chs": embed_dim, "reduction": pixel_patch, "module": f"blocks.{i}"} for i in range(depth)
        ]

    # ---- tokens --------------------------------------------------------------------------
    def site_tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(B*h*w) x T x token_dim band tokens of the s x s sites of a B x C x H x W image, and (h, w)."""
        batch, channels, height, width = x.shape
        if channels != self.in_chans:
            raise ValueError(f"spectral transformer: expected {self.in_chans} bands, got {channels}")
        s = self.pixel_patch
        if height % s or width % s:
            raise ValueError(
                f"spectral transformer: {height} x {width} px is not a multiple of pixel_patch={s}"
            )
        pad = self.num_tokens * self.band_group - channels
        x = F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x
        h, w = height // s, width // s
        sites = x.view(batch, self.num_tokens, self.band_group, h, s, w, s)
        sites = sites.permute(0, 3, 5, 1, 2, 4, 6).reshape(batch * h * w, self.num_tokens, self.token_dim)
        return sites, (h, w)

    def token_valid(self) -> Tensor:
        """T x token_dim: which token entries hold a real band (not the zero padding)."""
        band = torch.arange(self.num_tokens * self.band_group).view(self.num_tokens, self.band_group)
        valid = (band < self.in_chans)[:, :, None].expand(-1, -1, self.pixel_patch**2)
        return valid.reshape(self.num_tokens, self.token_dim).contiguous()  # a buffer DDP can broadcast

    def encode_tokens(self, tokens: Tensor, positions: Tensor | None = None) -> Tensor:
        """Encode N x t x token_dim tokens at token indices `positions` (N x t; None: all, in order)."""
        embedded = self.embed(tokens)
        if positions is None:
            embedded = embedded + self.position[:, : tokens.shape[1]]
        else:
            embedded = embedded + self.position[0][positions]
        for block in self.blocks:
            embedded = block(embedded)
        return self.norm(embedded)

    # ---- timm interface ------------------------------------------------------------------
    def _site_maps(self, x: Tensor, keep: Sequence[int]) -> list[Tensor]:
        tokens, (h, w) = self.site_tokens(x)
        embedded = self.embed(tokens) + self.position
        maps = []
        for index, block in enumerate(self.blocks):
            embedded = block(embedded)
            if index in keep:
                normed = self.norm(embedded) if index == len(self.blocks) - 1 else embedded
                maps.append(normed.mean(dim=1).view(x.shape[0], h, w, -1).permute(0, 3, 1, 2))
        return maps

    def forward_features(self, x: Tensor) -> Tensor:
        """B x D x h x w: each site's mean encoded token."""
        return self._site_maps(x, [len(self.blocks) - 1])[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = x.mean(dim=(2, 3)) if self.global_pool == "avg" else x.amax(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self, x: Tensor, indices: Sequence[int] | int | None = None, intermediates_only: bool = False, **_
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Per-site maps after the blocks in `indices` (timm's convention), stride `pixel_patch`."""
        depth = len(self.blocks)
        if indices is None:
            keep = list(range(depth))
        elif isinstance(indices, int):
            keep = list(range(depth - indices, depth))
        else:
            keep = [i % depth for i in indices]
        maps = self._site_maps(x, keep)
        return maps if intermediates_only else (self.forward_features(x), maps)


@register_model
def rsssl_spectral_transformer(pretrained: bool = False, **kwargs) -> SpectralTransformer:
    """timm entry point of `SpectralTransformer` (random init only: no weights exist to download)."""
    if pretrained:
        raise ValueError("rsssl_spectral_transformer has no pretrained weights: load a local file instead")
    for timm_only in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # what timm adds
        kwargs.pop(timm_only, None)
    return SpectralTransformer(**kwargs)
