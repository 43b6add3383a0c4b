"""Segmentation protocol: the exported encoder + a decoder, frozen or fine-tuned.

The decoder (`decoder`) is a light FPN (the default) or DeepLabv3+ (`rsssl.models.dense`, the
network GLCNet pretrains), trained from a seeded init. An encoder exported with its pretrained
decoder (`decoder.safetensors`) is also judged with it: `pretrained_decoder` starts the DeepLabv3+
from those weights (a new classifier on top), under the protocols `segmentation_<mode>_pretrained_decoder`.

For each mode x label fraction x seed, a fresh encoder and decoder are trained on a seeded
fraction of the training tiles for a fixed number of optimisation *steps* (so 1 % and 100 % get
the same amount of optimisation), then judged on the whole test split: OA, mIoU, Cohen's kappa
and per-class IoU (`eval.metrics`). Everything random (subset, decoder init, batch order,
augmentation) follows the seed, and draws happen on the CPU, so a seed gives the same run on
every device.

Multi-scale features come from timm's `forward_intermediates`, the API behind timm's own
`features_only` wrappers, called on the exported `num_classes=0` encoder itself. The encoder
therefore keeps the exact keys of `encoder.safetensors` for every architecture (a
`features_only=True` ConvNeXt renames them, e.g. `stem.0` -> `stem_0`), and ViTs work too.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsssl.eval.budgets import format_budget, select_budget
from rsssl.eval.data import EvalDataset, EvalSplit, to_device_batches
from rsssl.eval.features import normalise_for
from rsssl.eval.metrics import Metrics, confusion_matrix, segmentation_metrics_from_confusion
from rsssl.models.backbones import ConfigError, create_backbone, feature_indices, load_weights
from rsssl.models.dense import DeepLabV3Plus
from rsssl.models.export import PretrainedDecoder, check_band_count

log = logging.getLogger(__name__)

MODES = ("frozen", "finetune")
DECODERS = ("fpn", "deeplabv3plus")
PRETRAINED_SUFFIX = "_pretrained_decoder"
EncoderFactory = Callable[[], nn.Module | dict[str, Tensor]]


class SegmentationNet(nn.Module):
    """Encoder multi-scale features -> FPN decoder -> per-pixel class logits at the input size.

    Decoder: a 1x1 lateral conv to `channels` on every level, top-down sum (bilinear), one
    3x3 conv + BN + ReLU on the finest level, a 1x1 classifier, bilinear upsampling. With
    `frozen` the encoder stays in eval mode without gradients, so its weights and BN statistics
    never move.
    """

    def __init__(
        self, encoder: nn.Module, num_classes: int, channels: int = 64, frozen: bool = False
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.indices = feature_indices(encoder)
        in_channels = [int(encoder.feature_info[i]["num_chs"]) for i in self.indices]
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.frozen = frozen
        if frozen:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> SegmentationNet:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("encoder.")]

    def forward(self, x: Tensor) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            features = self.encoder.forward_intermediates(x, indices=self.indices, intermediates_only=True)
        y = self.laterals[-1](features[-1])
        for lateral, feature in zip(reversed(self.laterals[:-1]), reversed(features[:-1])):
            y = lateral(feature) + F.interpolate(
                y, size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
        logits = self.classifier(self.fuse(y))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def fresh_encoder(encoder_factory: EncoderFactory, meta: dict) -> nn.Module:
    """The factory's encoder; a state dict is loaded into a new `meta["timm_name"]` backbone (all keys)."""
    made = encoder_factory()
    if isinstance(made, nn.Module):
        return made
    encoder = create_backbone(meta["timm_name"], int(meta["in_chans"]), **meta.get("timm_kwargs", {}))
    load_weights(encoder, made, "the encoder state dict", meta["timm_name"], int(meta["in_chans"]))
    return encoder


def check_decoder(decoder: str) -> None:
    """Refuse a decoder name this protocol does not build, naming the ones it does."""
    if decoder not in DECODERS:
        raise ConfigError(f"segmentation decoder {decoder!r} is unknown; use one of {list(DECODERS)}")


def segmentation_protocol(mode: str, pretrained_decoder: bool = False) -> str:
    """The results' protocol name of a segmentation unit."""
    return f"segmentation_{mode}{PRETRAINED_SUFFIX if pretrained_decoder else ''}"


def segmentation_net(
    encoder: nn.Module,
    num_classes: int,
    decoder: str = "fpn",
    decoder_channels: int = 64,
    frozen: bool = False,
    pretrained: PretrainedDecoder | None = None,
) -> SegmentationNet | DeepLabV3Plus:
    """The network a segmentation unit trains: `encoder` + the named decoder, or + the pretrained
    DeepLabv3+ decoder when `pretrained` is given (`decoder` and `decoder_channels` then unused)."""
    if pretrained is not None:
        return DeepLabV3Plus.with_pretrained_decoder(
            encoder, pretrained.config, pretrained.state, num_classes, frozen=frozen
        )
    check_decoder(decoder)
    if decoder == "fpn":
        return SegmentationNet(encoder, num_classes, decoder_channels, frozen=frozen)
    return DeepLabV3Plus(encoder, num_classes=num_classes, frozen=frozen)


def segmentation_logits(net: nn.Module, x: Tensor) -> Tensor:
    """Per-pixel class logits at the input size, from either kind of `segmentation_net`."""
    out = net(x)
    return out.logits if isinstance(net, DeepLabV3Plus) else out


def _dihedral(images: Tensor, masks: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """One random flip / rot90 (of the 8 symmetries of a square) per sample, identical for image and mask.

    Three coin flips per sample (vertical flip, horizontal flip, transpose) compose every
    symmetry (non-square tiles skip the transpose); the coins come from the CPU generator, the
    pixels never leave the device.
    """
    coins = (torch.rand(len(images), 3, generator=generator) < 0.5).to(images.device)
    ops = [lambda t: t.flip(-2), lambda t: t.flip(-1)]
    if images.shape[-1] == images.shape[-2]:
        ops.append(lambda t: t.transpose(-1, -2))
    for coin, op in zip(coins.T, ops):
        images = torch.where(coin.view(-1, 1, 1, 1), op(images), images)
        masks = torch.where(coin.view(-1, 1, 1), op(masks), masks)
    return images, masks


def train_segmentation(
    net: SegmentationNet | DeepLabV3Plus,
    split: EvalSplit,
    meta: dict,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    weight_decay: float = 1e-2,
    ignore_index: int | None = None,
    seed: int = 0,
    encoder_lr_factor: float = 0.1,
    device: torch.device | str = "cpu",
) -> None:
    """Train `net` for `steps` AdamW + cosine steps on `split` (cross-entropy, flips/rot90 augmentation).

    The decoder learns at `lr`; a fine-tuned encoder at `lr * encoder_lr_factor` (0.1: pretrained
    weights move less; 1.0 for the supervised reference, trained from a random init). Every step
    sees `batch_size` tiles drawn epoch by epoch from seeded permutations of the split, so a split
    smaller than a batch repeats its tiles (under other flips): the same compute per step at every
    budget, and batch statistics from more than one sample.
    """
    net.to(device).train()
    param_groups = [{"params": net.decoder_parameters(), "lr": lr}]
    if not net.frozen:
        param_groups.append({"params": list(net.encoder.parameters()), "lr": lr * encoder_lr_factor})
    optimiser = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    epochs = math.ceil(steps * batch_size / len(split))
    order = (
        torch.rand(epochs, len(split), generator=generator).argsort(dim=1).reshape(-1)[: steps * batch_size]
    )
    images = torch.from_numpy(np.ascontiguousarray(split.images)).to(device)
    masks = torch.from_numpy(np.ascontiguousarray(split.targets)).to(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")
    for batch in order.view(steps, batch_size).to(device):
        x, y = _dihedral(images[batch], masks[batch], generator)
        with autocast:
            logits = segmentation_logits(net, normalise_for(meta, x))
        loss = F.cross_entropy(
            logits.float(), y.long(), ignore_index=-100 if ignore_index is None else ignore_index
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()


@torch.no_grad()
def evaluate_segmentation(
    net: SegmentationNet | DeepLabV3Plus,
    split: EvalSplit,
    meta: dict,
    num_classes: int,
    ignore_index: int | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> Metrics:
    """OA, mIoU, kappa and per-class IoU of `net` on every pixel of `split` (streamed confusion matrix)."""
    net.to(device).eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")
    batches = zip(
        to_device_batches(split.images, batch_size, device),
        to_device_batches(split.targets, batch_size, device),
    )
    for x, y in batches:
        with autocast:
            logits = segmentation_logits(net, normalise_for(meta, x))
        cm += confusion_matrix(logits.argmax(dim=1), y, num_classes, ignore_index)
    return segmentation_metrics_from_confusion(cm)


def _rows(protocol: str, budget: str, seed: int, train_count: int, metrics: Metrics, names) -> list[dict]:
    values = [(m, metrics[m]) for m in ("oa", "miou", "kappa")]
    values += [(f"iou_{name}", iou) for name, iou in zip(names, metrics["per_class_iou"])]
    return [
        {
            "protocol": protocol,
            "budget": budget,
            "seed": seed,
            "metric": m,
            "value": float(v),
            "train_count": train_count,
        }
        for m, v in values
    ]


def run_segmentation(
    encoder_factory: EncoderFactory,
    meta: dict,
    dataset: EvalDataset,
    fractions: Iterable[float] = (0.01, 0.1, 1.0),
    seeds: Iterable[int] = (0, 1, 2),
    modes: Iterable[str] = MODES,
    steps: int = 200,
    batch_size: int = 16,
    lr: float = 3e-3,
    decoder: str = "fpn",
    decoder_channels: int = 64,
    encoder_lr_factor: float = 0.1,
    pretrained_decoder: PretrainedDecoder | None = None,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Rows {protocol, budget, seed, metric, value, train_count} for every mode x fraction x seed.

    `encoder_factory()` returns a fresh encoder (the `num_classes=0` timm model, or its state
    dict) for each run; a fine-tuned encoder learns at `lr * encoder_lr_factor`. `fractions` are
    label fractions of the training tiles (at least one tile). `decoder`: "fpn" (`decoder_channels`
    wide) or "deeplabv3plus", from a seeded init; with `pretrained_decoder`, the exported
    DeepLabv3+ decoder instead (protocols `segmentation_<mode>_pretrained_decoder`). Metrics:
    "oa", "miou", "kappa" and "iou_<class name>" (NaN for a class absent from both the test masks
    and the predictions).
    """
    dataset.check()
    if dataset.task != "segmentation":
        raise ConfigError(f"evaluation set {dataset.name!r} is a {dataset.task} set, not a segmentation set")
    check_band_count(meta, len(dataset.bands))
    modes, fractions, seeds = list(modes), list(fractions), list(seeds)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ConfigError(f"segmentation modes {unknown} are unknown; use {list(MODES)}")
    if any(not isinstance(f, float) for f in fractions):
        raise ConfigError(f"segmentation fractions {fractions} must be floats in (0, 1] (1.0, not 1)")
    if steps < 1:
        raise ConfigError(f"steps={steps}: train for at least one step")
    check_decoder(decoder)
    protocol = {m: segmentation_protocol(m, pretrained_decoder is not None) for m in modes}
    pool = np.zeros(len(dataset.train), dtype=np.int64)  # a single pseudo-class: fractions of all tiles
    rows = []
    for mode in modes:
        for fraction in fractions:
            for seed in seeds:
                chosen = select_budget(pool, fraction, seed, num_classes=1).indices.numpy()
                subset = dataset.train.subset(chosen)
                start = time.perf_counter()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    encoder = fresh_encoder(encoder_factory, meta)
                    net = segmentation_net(
                        encoder, dataset.num_classes, decoder, decoder_channels, mode == "frozen",
                        pretrained_decoder,
                    )  # fmt: skip
                train_segmentation(
                    net, subset, meta, steps=steps, batch_size=batch_size, lr=lr,
                    ignore_index=dataset.ignore_index, seed=seed, encoder_lr_factor=encoder_lr_factor,
                    device=device,
                )  # fmt: skip
                metrics = evaluate_segmentation(
                    net, dataset.test, meta, dataset.num_classes, dataset.ignore_index, batch_size, device
                )
                label = format_budget(fraction)
                log.info(
                    "%s %s seed %d on %s: %d tiles, mIoU %.3f (%.1f s)",
                    protocol[mode], label, seed, dataset.name, len(subset), metrics["miou"],
                    time.perf_counter() - start,
                )  # fmt: skip
                rows += _rows(protocol[mode], label, seed, len(subset), metrics, dataset.class_names)
    return rows
