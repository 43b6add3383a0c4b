"""The thin base every pretext method extends.

A method builds its networks, makes its views on the device and returns one `StepOutput`
from `pretext_step`. The base supplies the rest: optimiser and schedule from config, the EMA
of declared `(online, target)` momentum pairs, an online linear probe on detached features
whenever the batch has labels, and an embedding-std collapse monitor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from rsssl.data.views import ViewMaker, preset
from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.dense import DeepLabV3Plus


@dataclass
class StepOutput:
    """What one pretext step gives back to the base.

    loss: the pretext loss to minimise.
    features: backbone features of the first view, B x D (the probe gets them detached).
    embeddings: the projected embeddings the loss sees (for the collapse monitor).
    logs: extra scalars to log under `train/`.
    """

    loss: torch.Tensor
    features: torch.Tensor
    embeddings: torch.Tensor | None = None
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)


def cosine_ramp(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from `start` (progress 0) to `end` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return (step + 1) / warmup
    return cosine_ramp(1.0, 0.0, (step - warmup) / max(1, total - warmup))


def scaled_lr(lr_per_256: float, global_batch: int) -> float:
    """The linear scaling rule: a base LR stated per 256 images, for the images of one optimiser step."""
    return lr_per_256 * global_batch / 256


@torch.no_grad()
def ema_update(online: nn.Module, target: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, for every parameter.

    Buffers (BatchNorm statistics) are not averaged: the target keeps its own, as in MoCo.
    """
    online_params, target_params = list(online.parameters()), list(target.parameters())
    torch._foreach_mul_(target_params, momentum)
    torch._foreach_add_(target_params, online_params, alpha=1 - momentum)


def freeze(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the run stops at that step, writing nothing after it."""


class SSLMethod(L.LightningModule):
    """Base of every method. Subclasses implement `pretext_step` (and `momentum_pairs`)."""

    #: batch keys the method needs beyond `image` (the datamodule samples them).
    required_keys: tuple[str, ...] = ()
    #: whether the pretext task trains the backbone (False only for baselines).
    trains_backbone: bool = True

    def __init__(
        self,
        backbone: dict,
        in_chans: int,
        bands: Sequence[str],
        rgb_bands: Sequence[str] | None = None,
        num_classes: int = 0,
        views: dict | None = None,
        optimizer: dict | None = None,
        ema: dict | None = None,
        probe_lr: float = 0.1,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        spec = dict(backbone)
        self.backbone_name = spec.pop("name")
        self.backbone = create_backbone(self.backbone_name, in_chans=in_chans, **spec)
        self.num_features = int(self.backbone.num_features)
        self.bands = tuple(bands)
        views = dict(views or {})
        self.view_maker = ViewMaker(preset(views.pop("preset", "moco_v2"), **views), self.bands, rgb_bands)
        self.probe = nn.Linear(self.num_features, num_classes) if num_classes > 0 else None
        self.optimizer_cfg = {"name": "sgd", "lr": 0.03, "weight_decay": 1e-4, "momentum": 0.9, "warmup": 0.0}
        self.optimizer_cfg.update(optimizer or {})
        self.ema_cfg = {"base": 0.999, "final": 0.999}
        self.ema_cfg.update(ema or {})
        self.current_momentum = float(self.ema_cfg["base"])
        self.probe_lr = probe_lr
        self.batch_size = batch_size

    # ---- what subclasses provide -------------------------------------------------------------
    def pretext_step(self, batch: dict) -> StepOutput:
        raise NotImplementedError

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) modules whose targets follow the online weights by EMA."""
        return []

    def exported_decoder(self) -> DeepLabV3Plus | None:
        """A pretrained dense network on `backbone` whose decoder is exported beside the encoder
        (`decoder.safetensors`), or None: most methods pretrain the encoder alone."""
        return None

    # ---- training --------------------------------------------------------------------------
    def views(self, images: torch.Tensor) -> torch.Tensor:
        """One random view of a normalised batch, on its device."""
        return self.view_maker(images)

    @torch.no_grad()
    def probe_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features of the unaltered batch, without a graph: what the online probe sees
        when the pretext input is something else (puzzle pieces, masked or grey tiles)."""
        return self.backbone(images)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.pretext_step(batch)
        loss = out.loss
        if self.diverged(loss):
            raise TrainingDiverged(
                f"the {type(self).__name__} loss is {float(loss.detach())} at optimiser step "
                f"{self.global_step + 1} (epoch {self.current_epoch}): training stopped before the step, "
                "and the last.ckpt written before it is kept; lower optimizer.lr or raise "
                "optimizer.warmup, and check the data for NaN or extreme values"
            )
        logs = {f"train/{k}": v for k, v in out.logs.items()}
        logs["train/loss"] = out.loss.detach()
        if out.embeddings is not None:
            logs["train/embedding_std"] = embedding_std(out.embeddings.detach())
        if self.probe is not None and "label" in batch:
            logits = self.probe(out.features.detach().float())
            probe_loss = F.cross_entropy(logits, batch["label"])
            loss = loss + probe_loss
            logs["train/probe_loss"] = probe_loss.detach()
            logs["train/probe_acc"] = (logits.argmax(1) == batch["label"]).float().mean()
        self.log_dict(  # under DDP the mean over processes: the global batch's loss
            logs,
            prog_bar=False,
            on_step=True,
            on_epoch=True,
            batch_size=batch["image"].shape[0],
            sync_dist=True,
        )
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False)
        return loss if loss.requires_grad else None  # nothing to learn in this batch (unlabelled baseline)

    def diverged(self, loss: torch.Tensor) -> bool:
        """Whether the loss is NaN or infinite on any process (all of them stop together, rather
        than the others waiting for the stopped one at the next all-reduce)."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        return trainer.strategy.reduce_boolean_decision(bad, all=False) if trainer is not None else bad

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if self.optimizer_cfg.get("weight_decay_end") is not None:
            self.schedule_weight_decay()

    def schedule_weight_decay(self) -> None:
        """`optimizer.weight_decay` -> `optimizer.weight_decay_end` by a cosine over the optimiser
        steps (DINO's schedule), on the parameter groups that decay."""
        cfg = self.optimizer_cfg
        total = max(1, self.trainer.estimated_stepping_batches)
        value = cosine_ramp(cfg["weight_decay"], cfg["weight_decay_end"], self.global_step / total)
        for group in self.optimizers().optimizer.param_groups:
            if group.get("scheduled_decay"):
                group["weight_decay"] = value

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """`optimizer.clip_grad`: the method's own clipping of the total gradient norm (LaST: 3.0);
        otherwise the trainer's `gradient_clip_val`, as Lightning does."""
        clip = self.optimizer_cfg.get("clip_grad")
        if clip is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.clip_gradients(optimizer, gradient_clip_val=float(clip), gradient_clip_algorithm="norm")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """The optimiser step, then the EMA of the momentum pairs, with the momentum following
        optimiser steps from `ema.base` to `ema.final`: once per optimiser step (not per
        accumulated micro-batch), and inside the step, so a checkpoint a callback writes at the
        batch's end already holds the updated targets."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        pairs = self.momentum_pairs
        if not pairs:
            return
        total = max(1, self.trainer.estimated_stepping_batches)
        done = self.global_step  # steps before this one: Lightning counts this one after the hook
        self.current_momentum = cosine_ramp(self.ema_cfg["base"], self.ema_cfg["final"], done / total)
        for online, target in pairs:
            ema_update(online, target, self.current_momentum)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.probe is None or "label" not in batch:
            return
        logits = self.probe(self.backbone(batch["image"]).float())
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log("val/probe_acc", acc, on_epoch=True, prog_bar=True, batch_size=batch["image"].shape[0])

    # ---- optimisation ----------------------------------------------------------------------
    def probe_parameters(self) -> list[nn.Parameter]:
        return list(self.probe.parameters()) if self.probe is not None else []

    @property
    def global_batch_size(self) -> int:
        """Images per optimiser step: per-process batch x processes x accumulated micro-batches."""
        trainer = self.trainer
        return self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        cfg = self.optimizer_cfg
        probe_ids = {id(p) for p in self.probe_parameters()}
        trained = [p for p in self.parameters() if p.requires_grad and id(p) not in probe_ids]
        lr = scaled_lr(cfg["lr"], self.global_batch_size)
        rank_zero_info(
            f"learning rate {lr:.6g} = {cfg['lr']} per 256 images x global batch {self.global_batch_size}"
        )
        groups = weight_decay_groups(trained, lr, cfg["weight_decay"], cfg.get("decay_norm_and_bias", True))
        if probe_ids:
            groups.append(
                {"params": self.probe_parameters(), "lr": self.probe_lr, "weight_decay": 0.0, "probe": True}
            )
        groups = [g for g in groups if g["params"]]
        if not groups:
            return None
        name = cfg["name"].lower()
        if name == "sgd":
            optimizer = torch.optim.SGD(groups, momentum=cfg["momentum"], nesterov=cfg.get("nesterov", False))
        elif name == "adamw":
            optimizer = torch.optim.AdamW(groups, **adam_settings(cfg))
        elif name == "adam":
            optimizer = torch.optim.Adam(groups, **adam_settings(cfg))
        else:
            raise ConfigError(f"unknown optimizer {cfg['name']!r}: choose sgd, adam or adamw")
        total = max(1, self.trainer.estimated_stepping_batches)
        warmup = int(cfg["warmup"] * total)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def adam_settings(cfg: Mapping) -> dict:
    """Adam's `betas` and `eps` from the optimiser settings (torch's defaults where unset)."""
    return {"betas": tuple(cfg.get("betas", (0.9, 0.999))), "eps": float(cfg.get("eps", 1e-8))}


def weight_decay_groups(
    params: list[nn.Parameter], lr: float, weight_decay: float, decay_all: bool
) -> list[dict]:
    """Optimiser groups of `params`; with `decay_all` false, biases and normalisation weights
    (every tensor of at most one dimension) get no weight decay, as in DINO and timm."""
    if decay_all:
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "scheduled_decay": True}]
    decayed = [p for p in params if p.ndim > 1]
    kept = [p for p in params if p.ndim <= 1]
    return [
        {"params": decayed, "lr": lr, "weight_decay": weight_decay, "scheduled_decay": True},
        {"params": kept, "lr": lr, "weight_decay": 0.0},
    ]


def embedding_std(embeddings: torch.Tensor) -> torch.Tensor:
    """Std over the batch of L2-normalised embeddings, times sqrt(dim): ~1 healthy, 0 collapsed."""
    normalised = F.normalize(embeddings.float(), dim=1)
    return normalised.std(0).mean() * math.sqrt(normalised.shape[1])
