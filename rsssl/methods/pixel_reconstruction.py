"""The shared base of the pixel-reconstruction pretext signals (inpainting, colorization).

A method alters each tile (`corrupt`: some pixels or some bands hidden), a whole DeepLabv3+ on the
backbone (`rsssl.models.dense`) predicts the hidden values at every pixel from what is left, and
the loss is the squared error on the hidden values only (`masked_mse`), on the per-band
standardised values the datamodule delivers. The dense network is pretrained as a whole, so its
decoder is exported beside the encoder (`decoder.safetensors`), as GLCNet's.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rsssl.losses.reconstruction import masked_mse
from rsssl.methods.base import SSLMethod, StepOutput
from rsssl.models.dense import DeepLabV3Plus


class Corruption(NamedTuple):
    """What the network sees and what it must give back."""

    inputs: Tensor  # B x C x H x W: the altered tiles
    targets: Tensor  # B x T x H x W: the values to predict (T: the method's predicted bands)
    hidden: Tensor  # bool, broadcastable to `targets`: the entries the loss counts


class PixelReconstruction(SSLMethod):
    """Predict the hidden values of `corrupt`'s tiles with a DeepLabv3+; subclasses say what is hidden."""

    def __init__(
        self, predicted_bands: int, aspp_channels: int = 256, decoder_channels: int = 64, **base
    ) -> None:
        super().__init__(**base)
        self.net = DeepLabV3Plus(
            self.backbone,
            aspp_channels=aspp_channels,
            out_channels=decoder_channels,
            num_classes=predicted_bands,
        )

    def corrupt(self, images: Tensor) -> Corruption:
        raise NotImplementedError

    def exported_decoder(self) -> DeepLabV3Plus:
        """The whole dense network is pretrained: its decoder is exported with the encoder."""
        return self.net

    def pretext_step(self, batch: dict) -> StepOutput:
        images = batch["image"]
        corruption = self.corrupt(self.views(images))
        out = self.net(corruption.inputs)
        loss = masked_mse(out.logits, corruption.targets, corruption.hidden)
        return StepOutput(loss=loss, features=self.probe_features(images))
