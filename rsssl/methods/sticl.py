"""STICL (Huang et al., GRSL 2022): MoCo v2 whose key is, sometimes, the query's tile in another scene.

With probability `transfer_p` per sample (0.1, the official runs' "10p") the key view is made
from the tile recoloured by optimal transport into the spectral distribution of a style image
(`rsssl.data.scene_transfer`): another tile of the batch (`style: batch`, the official choice) or
the same place at another date (`style: other_time`, where the data has dates). The query stays
the tile itself, so the encoder must embed a scene and its transfer alike: invariance to where
and when a tile was seen. With `positive: other_time` the key of a chosen sample is instead the
real tile of another date (the temporal sampler's), the measured counterpart of the synthetic
transfer. Everything else is MoCo v2 (queue, momentum encoder, shuffle-BN; seed-methods.md §5).
"""

from __future__ import annotations

from torch import Tensor

from rsssl.data import draws
from rsssl.data.scene_transfer import TransferSettings, sample_pixels, transfer_with_samples
from rsssl.methods.distributed import gather_no_grad
from rsssl.methods.moco import MoCo
from rsssl.models.backbones import ConfigError

STYLES = ("batch", "other_time")
POSITIVES = ("scene_transfer", "other_time")


class STICL(MoCo):
    """InfoNCE between a view of a tile and a view of its scene-transferred self."""

    def __init__(
        self,
        transfer_p: float = 0.1,
        style: str = "batch",
        positive: str = "scene_transfer",
        transfer: dict | None = None,
        **moco,
    ) -> None:
        super().__init__(**moco)
        if style not in STYLES or positive not in POSITIVES:
            raise ConfigError(
                f"sticl: style={style!r}, positive={positive!r}: style is one of {list(STYLES)}, "
                f"positive one of {list(POSITIVES)}"
            )
        if not 0.0 <= transfer_p <= 1.0:
            raise ConfigError(f"sticl: transfer_p={transfer_p} must be a probability")
        self.transfer_p, self.style, self.positive = transfer_p, style, positive
        self.transfer = TransferSettings(**(transfer or {}))
        uses_dates = positive == "other_time" or style == "other_time"
        self.required_keys = ("other_time",) if uses_dates else ()

    def key_source(self, batch: dict) -> Tensor:
        """The key's tile for each sample: the tile, or (with probability `transfer_p`) its
        scene transfer or its other-date tile. Every draw is per sample (`rsssl.data.draws`) and
        made whether or not a sample is chosen, so one process and many take the same keys."""
        images = batch["image"]
        chosen = draws.chance(len(images), self.transfer_p, images.device)
        if self.positive == "scene_transfer":
            settings = self.transfer
            source = sample_pixels(images.float(), settings.num_samples, settings.fixed_subsample)
            target = self.style_samples(batch)
        if not bool(chosen.any()):
            return images
        if self.positive == "other_time":
            replacement = batch["other_time"][chosen]
        else:
            replacement = transfer_with_samples(images[chosen], source[chosen], target[chosen], settings)
        keys = images.clone()
        keys[chosen] = replacement.to(images.dtype)
        return keys

    def style_samples(self, batch: dict) -> Tensor:
        """B x n x C pixels of each sample's style image: its other-date tile, or another tile of
        the global batch (the pixel samples of every process are gathered)."""
        n, fixed = self.transfer.num_samples, self.transfer.fixed_subsample
        if self.style == "other_time":
            return sample_pixels(batch["other_time"].float(), n, fixed)
        images = batch["image"]
        pixels = gather_no_grad(sample_pixels(images.float(), n, fixed))
        partners = draws.partners(len(images), images.device)
        return pixels[draws.gathered_rows(partners, len(images))]

    def pair(self, batch: dict) -> tuple[Tensor, Tensor]:
        """Query input: a view of the tile; key input: a view of its key source."""
        return self.views(batch["image"]), self.views(self.key_source(batch))
