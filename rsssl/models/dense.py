"""DeepLabv3+ on any timm backbone and band count: the dense network GLCNet (Li et al., TGRS 2022) pretrains.

`DeepLabV3Plus(encoder)` wraps the exported `num_classes=0` timm encoder itself and reads its
multi-scale features through timm's `forward_intermediates` (the approach of
`rsssl.eval.segmentation.SegmentationNet`), so `net.encoder` keeps the exact state-dict keys of
`encoder.safetensors`: an exported encoder loads into it by key and back out again.

Differences from the official DeepLabv3+ (Chen et al., ECCV 2018), all deliberate:

- Output stride: the official network reaches stride 16 by dilating the last ResNet stage.
  Rebuilding the backbone with dilation would change the encoder away from the plain exported
  timm model, so the deepest level is used at its native stride (32 for timm ResNets and
  ConvNeXts, 16 for ViTs). The atrous rates are given for stride 16, as in the paper, and
  scaled by 16 / stride (stride 32: 6, 12, 18 -> 3, 6, 9), DeepLab's own convention for other
  output strides. A rate at least the size of a (tiny) map is still valid (padding = rate): the
  conv then only sees its centre tap.
- ViTs give a single level (the patch stride): it serves as both the low- and high-level map.
- GLCNet's variant ends the decoder with a 1x1 conv to `out_channels` (64) and upsamples it to
  the input size: the per-pixel features its local contrastive loss matches.

Batch norm is used throughout (as in the paper), so training needs batches of at least two
samples (the image-pooling branch has one value per channel and sample).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsssl.data import draws
from rsssl.models.backbones import feature_indices

ENCODER_PREFIX = "encoder."
CLASSIFIER_PREFIX = "classifier."
DECODER_ARCHITECTURE = "deeplabv3plus"  # the name `encoder.json` records an exported decoder under


class DenseOutput(NamedTuple):
    """What `DeepLabV3Plus.forward` returns."""

    context: Tensor  # A: B x aspp_channels x h x w, the ASPP output on the deepest encoder map
    decoder: Tensor  # D: B x out_channels x H x W, the decoder features at the input size
    logits: Tensor | None  # B x num_classes x H x W (a 1x1 classifier on D), None without num_classes
    deepest: Tensor  # the encoder's deepest map, B x num_features x h x w (pooled: the encoder's features)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> ReLU."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SampleDropout(nn.Module):
    """Dropout whose mask is a per-sample draw (`rsssl.data.draws`), not a per-process one: a
    sample is dropped alike on one process or many, so DDP runs take the one-process run's steps.
    Same scaling as `nn.Dropout` (kept values / (1 - p)); the identity in eval."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p={p} must lie in [0, 1)")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = draws.rand(x.shape[0], *x.shape[1:], device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 conv, one 3x3 atrous conv per rate and an image-pooling
    branch (each conv-BN-ReLU), concatenated and projected by a 1x1 conv-BN-ReLU + dropout."""

    def __init__(self, in_channels: int, channels: int, rates: Sequence[int], dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_bn_relu(in_channels, channels, 1)]
            + [conv_bn_relu(in_channels, channels, 3, dilation=rate) for rate in rates]
        )
        self.pool = conv_bn_relu(in_channels, channels, 1)  # applied to the global average
        self.project = conv_bn_relu(channels * (len(rates) + 2), channels, 1)
        self.dropout = SampleDropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x.mean(dim=(-2, -1), keepdim=True))
        outs = [branch(x) for branch in self.branches]
        outs.append(pooled.expand(-1, -1, *x.shape[-2:]))  # bilinear upsampling of a 1x1 map
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabv3+ (encoder -> ASPP -> decoder with a stride-4 skip) on a plain timm encoder.

    `forward(x)` gives a `DenseOutput`: the context map A (ASPP output on the deepest level,
    B x aspp_channels x H/s x W/s with s = `output_stride`), the decoder map D (B x out_channels
    x H x W) and, with `num_classes`, per-pixel logits from a 1x1 classifier on D. The low-level
    skip is the finest level of stride >= 4 (`rsssl.models.backbones.feature_indices`), stride 4
    for CNNs. With `frozen` the encoder stays in eval mode without gradients (weights and BN
    statistics never move), as in `SegmentationNet`.
    """

    def __init__(
        self,
        encoder: nn.Module,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        out_channels: int = 64,
        atrous_rates: Sequence[int] = (6, 12, 18),
        num_classes: int | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        levels = feature_indices(encoder)
        self.low_index, self.high_index = levels[0], levels[-1]
        self.indices = sorted({self.low_index, self.high_index})
        info = encoder.feature_info
        self.output_stride = int(info[self.high_index]["reduction"])
        self.low_level_stride = int(info[self.low_index]["reduction"])
        # rates are given for output stride 16 (the paper's); scale them to the encoder's stride
        self.atrous_rates = tuple(max(1, round(r * 16 / self.output_stride)) for r in atrous_rates)
        self.config = {
            "aspp_channels": aspp_channels,
            "low_level_channels": low_level_channels,
            "decoder_channels": decoder_channels,
            "out_channels": out_channels,
            "atrous_rates": tuple(atrous_rates),
            "num_classes": num_classes,
        }

        self.aspp = ASPP(int(info[self.high_index]["num_chs"]), aspp_channels, self.atrous_rates)
        self.low_level = conv_bn_relu(int(info[self.low_index]["num_chs"]), low_level_channels, 1)
        self.fuse = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.head = nn.Conv2d(decoder_channels, out_channels, 1)
        self.classifier = nn.Conv2d(out_channels, num_classes, 1) if num_classes else None
        self.frozen = frozen
        if frozen:
            encoder.requires_grad_(False)

    @classmethod
    def with_pretrained_decoder(
        cls,
        encoder: nn.Module,
        config: Mapping,
        state: Mapping[str, Tensor],
        num_classes: int,
        frozen: bool = False,
    ) -> DeepLabV3Plus:
        """A network on `encoder` whose ASPP, decoder and head start from an exported decoder
        (`config`: the exporting network's `config`, `state`: its `decoder_state_dict()`), with a
        freshly initialised `num_classes` classifier (a pretrained one, if any, is dropped)."""
        settings = {k: v for k, v in config.items() if k != "num_classes"}
        net = cls(encoder, **settings, frozen=frozen)
        net.load_decoder_state_dict({k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)})
        net.classifier = nn.Conv2d(net.config["out_channels"], num_classes, 1)
        net.config["num_classes"] = num_classes
        return net

    def train(self, mode: bool = True) -> DeepLabV3Plus:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder's (low-level, deepest) maps; the same tensor twice for a single-level ViT."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            maps = self.encoder.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        return maps[0], maps[-1]

    def forward(self, x: Tensor) -> DenseOutput:
        low, high = self.features(x)
        context = self.aspp(high)
        up = F.interpolate(context, size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(self.fuse(torch.cat([up, self.low_level(low)], dim=1)))
        decoder = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(decoder) if self.classifier is not None else None
        return DenseOutput(context=context, decoder=decoder, logits=logits, deepest=high)

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The encoder's parameters (those of `encoder.safetensors`)."""
        return list(self.encoder.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        """Every parameter outside the encoder: ASPP, decoder, head and classifier."""
        return [p for name, p in self.named_parameters() if not name.startswith(ENCODER_PREFIX)]

    def _decoder_items(self) -> Iterator[tuple[str, Tensor]]:
        return ((k, v) for k, v in self.state_dict().items() if not k.startswith(ENCODER_PREFIX))

    def decoder_state_dict(self) -> dict[str, Tensor]:
        """The state dict of everything but the encoder (parameters and BN buffers), keys as in
        `state_dict()`; tensors are shared with the module, as `state_dict()`'s are."""
        return dict(self._decoder_items())

    def load_decoder_state_dict(self, state: Mapping[str, Tensor], strict: bool = True) -> None:
        """Load a `decoder_state_dict()` of a network of the same shape; the encoder is untouched.

        Raises a ValueError naming the keys that are missing or unexpected (`strict`) or whose
        shapes differ (always); nothing is loaded then.
        """
        own = dict(self._decoder_items())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        mismatched = [
            f"{k}: {tuple(state[k].shape)} given, {tuple(v.shape)} expected"
            for k, v in own.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ]
        problems = [f"shape mismatch for {m}" for m in mismatched]
        if strict and missing:
            problems.append(f"missing keys {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys {unexpected}")
        if problems:
            raise ValueError(
                "decoder state dict does not fit this DeepLabV3Plus ("
                + "; ".join(problems)
                + "): use one saved from a network with the same backbone, channels, rates and classes"
            )
        # strict=False only because the encoder's keys are (deliberately) absent
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
