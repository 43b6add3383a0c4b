"""Fine-tuning protocol: the whole encoder plus a linear head, trained on a label budget.

For every (budget, seed) a fresh encoder from `encoder_factory()` and a new linear head are
trained on the budget's labelled subset (`select_budget`) and scored on the full test split:

- a fixed number of optimiser steps, not epochs, so a 5/class run and a 100 % run get the same
  compute and their numbers compare; a batch is min(batch_size, subset size) samples, drawn as
  successive seeded permutations of the subset (every sample is seen once per pass);
- inputs normalised with the encoder's own statistics (`normalise_for`), then random flips and
  quarter turns on the device (`preset("geometric")`): overhead imagery has no "up";
- AdamW, the head at `lr` and the encoder at `lr * encoder_lr_factor`: 0.1 by default (the
  pretrained weights move less than the new head), 1.0 for the supervised reference trained from
  a random init (nothing to preserve); linear warm-up then cosine decay to zero;
- BatchNorm: with batches smaller than `MIN_BN_BATCH` the batch statistics are too noisy to
  train on (and a batch of one has none), so every BatchNorm layer stays in eval mode, i.e. uses
  the encoder's running statistics and does not update them; its affine weights still learn;
- bf16 autocast on CUDA; on the CPU everything is float32 and, given the seed, deterministic.

The labelled subset is moved to the device once (as uint), the test split streams in batches.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rsssl.data.scene import DataError
from rsssl.data.views import ViewMaker, preset
from rsssl.eval.budgets import DEFAULT_BUDGETS, select_budget
from rsssl.eval.data import EvalDataset, EvalSplit, to_device_batches
from rsssl.eval.features import normalise_for
from rsssl.eval.metrics import Metrics, classification_metrics_from_confusion, confusion_matrix
from rsssl.models.export import check_band_count

log = logging.getLogger(__name__)

MIN_BN_BATCH = 8
METRICS = ("oa", "aa", "kappa", "f1_macro")


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def _batch_indices(n: int, batch: int, steps: int) -> Tensor:
    """steps x batch indices into 0..n-1: consecutive random permutations of the n samples (CPU RNG)."""
    passes = math.ceil(steps * batch / n)
    order = torch.rand(passes, n).argsort(dim=1).flatten()
    return order[: steps * batch].view(steps, batch)


def _cosine_with_warmup(steps: int, warmup: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return factor


def _freeze_batchnorm_statistics(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.eval()


def finetune(
    encoder: nn.Module,
    meta: dict,
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    bands: Sequence[str],
    steps: int = 500,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    warmup_fraction: float = 0.05,
    encoder_lr_factor: float = 0.1,
    device: torch.device | str = "cpu",
) -> nn.Linear:
    """Train `encoder` (in place) and a new linear head on uint `images` / `labels`; return the head.

    Randomness (head init, batch order, views) comes from torch's global RNG: seed it first.
    """
    device = torch.device(device)
    encoder.to(device)
    head = nn.Linear(int(encoder.num_features), num_classes).to(device)
    pool = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    targets = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    batch = min(batch_size, len(pool))
    order = _batch_indices(len(pool), batch, steps)
    views = ViewMaker(preset("geometric"), bands).to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": head.parameters(), "lr": lr},
            {"params": encoder.parameters(), "lr": lr * encoder_lr_factor},
        ],
        weight_decay=weight_decay,
    )
    warmup = max(1, round(warmup_fraction * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(steps, warmup))
    encoder.train()
    if batch < MIN_BN_BATCH:
        _freeze_batchnorm_statistics(encoder)
    for step_indices in order.to(device):
        x = views(normalise_for(meta, pool[step_indices]))
        with _autocast(device):
            loss = F.cross_entropy(head(encoder(x)).float(), targets[step_indices])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return head


@torch.no_grad()
def evaluate_classifier(
    encoder: nn.Module,
    head: nn.Module,
    meta: dict,
    split: EvalSplit,
    num_classes: int,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> Metrics:
    """Classification metrics (metrics.py) of encoder + head on a whole split, streamed in batches."""
    device = torch.device(device)
    encoder.eval()
    head.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    targets = torch.from_numpy(np.asarray(split.targets, dtype=np.int64))
    start = 0
    for batch in to_device_batches(split.images, batch_size, device):
        with _autocast(device):
            logits = head(encoder(normalise_for(meta, batch))).float()
        cm += confusion_matrix(logits, targets[start : start + len(batch)].to(device), num_classes)
        start += len(batch)
    return classification_metrics_from_confusion(cm)


def run_finetune(
    encoder_factory: Callable[[], nn.Module],
    meta: dict,
    dataset: EvalDataset,
    budgets: Sequence[int | float] = DEFAULT_BUDGETS,
    seeds: Sequence[int] = (0, 1, 2),
    steps: int = 500,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    encoder_lr_factor: float = 0.1,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Fine-tune a fresh encoder per (budget, seed) and score it on the full test split.

    `encoder_factory()` returns a new timm encoder (`num_classes=0`, `num_features`) holding the
    weights to evaluate; it is called under the seed, so a random-init baseline is reproducible
    too. `encoder_lr_factor` scales the encoder's learning rate (see the module doc). The seed
    picks the labelled subset (nested across budgets, see budgets.py) and all the training
    randomness; the global RNG is left as it was. Returns one row per metric:
    {"protocol": "finetune", "budget", "seed", "metric", "value", "train_count", "warnings"}.
    """
    if dataset.task != "classification":
        raise DataError(f"fine-tuning scores classification sets; {dataset.name!r} is {dataset.task}")
    check_band_count(meta, len(dataset.bands))
    device = torch.device(device)
    rows = []
    for budget in budgets:
        for seed in seeds:
            selection = select_budget(dataset.train.targets, budget, seed, dataset.num_classes)
            subset = dataset.train.subset(selection.indices.numpy())
            started = time.perf_counter()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed)
                encoder = encoder_factory()
                head = finetune(
                    encoder, meta, subset.images, subset.targets, dataset.num_classes, dataset.bands,
                    steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    encoder_lr_factor=encoder_lr_factor, device=device,
                )  # fmt: skip
            metrics = evaluate_classifier(encoder, head, meta, dataset.test, dataset.num_classes, device)
            log.info(
                "finetune %s seed %d on %d labels: OA %.4f (%.1f s)",
                selection.label, seed, len(subset), metrics["oa"], time.perf_counter() - started,
            )  # fmt: skip
            rows += [
                {
                    "protocol": "finetune",
                    "budget": selection.label,
                    "seed": seed,
                    "metric": name,
                    "value": float(metrics[name]),
                    "train_count": len(subset),
                    "warnings": list(selection.warnings),
                }
                for name in METRICS
            ]
    return rows
