"""Frozen features, extracted once per (encoder, dataset, split) and reused by every probe.

The encoder runs in eval mode on the device, with the normalisation statistics recorded in
its own `encoder.json` (never the evaluation data's, never ImageNet's). Features are cached
in memory and, when a cache folder is given, on disk as safetensors keyed by the encoder's
weights hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rsssl.eval.data import to_device_batches
from rsssl.models.export import normalisation_tensors

_MEMORY: dict[tuple[str, str, str], torch.Tensor] = {}


def normalise_for(meta: dict, pixels: torch.Tensor) -> torch.Tensor:
    """uint pixels -> float, standardised with the encoder's own per-band statistics."""
    mean, std = normalisation_tensors(meta, pixels.device)
    return (pixels.float() - mean) / std


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    meta: dict,
    images: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> torch.Tensor:
    """Global features N x D (float32, on `device`) of uint images N x C x H x W."""
    was_training = encoder.training
    encoder.eval().to(device)
    parts = []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")
    with autocast:
        for batch in to_device_batches(images, batch_size, device):
            parts.append(encoder(normalise_for(meta, batch)).float())
    encoder.train(was_training)
    return torch.cat(parts) if parts else torch.empty(0, getattr(encoder, "num_features", 0), device=device)


def cached_features(
    key: tuple[str, str, str],
    compute,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features for key (encoder id, dataset, split): memory, then disk, then `compute()`."""
    if key in _MEMORY:
        return _MEMORY[key].to(device)
    path = Path(cache_dir).expanduser() / ("-".join(key) + ".safetensors") if cache_dir else None
    if path is not None and path.is_file():
        features = load_file(str(path))["features"]
    else:
        features = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({"features": features.detach().cpu().contiguous()}, str(tmp))
            tmp.replace(path)
    _MEMORY[key] = features.detach()
    return _MEMORY[key].to(device)
