"""Frozen features, extracted once per (encoder, images) and reused by every probe.

The encoder runs in eval mode on the device, with the normalisation statistics recorded in
its own `encoder.json` (never the evaluation data's, never ImageNet's). Features are cached
in memory and, when a cache folder is given, on disk as safetensors. Cache keys are content
digests (`content_key`): of the encoder's weights, architecture and normalisation, of the
images' pixels, dtype and shape, and of how features were extracted; never of a run id or a
set name, which stay the same when the weights or the data change.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rsssl.data.stats import standardise
from rsssl.eval.data import EvalDataset, to_device_batches
from rsssl.models.export import normalisation_tensors

# Part of every feature key: bump it when extraction changes what a cached feature holds.
FEATURES_VERSION = 1

_MEMORY: dict[str, torch.Tensor] = {}


def array_digest(array: np.ndarray) -> str:
    """Content digest of an array: dtype, shape and every byte (blake2b, 128 bits)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


def state_dict_digest(module: nn.Module) -> str:
    """Content digest of a module's weights: every tensor's name, dtype, shape and values (sha256)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}{value.dtype}{tuple(value.shape)}".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def content_key(**parts: object) -> str:
    """A cache key from named JSON-able parts (sha256 hex): equal parts give equal keys."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def encoder_identity(meta: dict, weights_hash: str) -> dict:
    """What fixes an encoder's features apart from the images: weights, architecture, normalisation."""
    keys = ("timm_name", "timm_kwargs", "in_chans", "mean", "std")
    return {"weights": weights_hash, **{k: meta.get(k) for k in keys}}


def set_digests(dataset: EvalDataset) -> dict[str, str]:
    """Digests of an evaluation set's content: each split's images (``"train"``, ``"test"``) and
    ``"set"``: images, targets, bands, classes, task and ignored label, but not its name."""
    images = {split: array_digest(getattr(dataset, split).images) for split in ("train", "test")}
    whole = content_key(
        images=images,
        targets={split: array_digest(getattr(dataset, split).targets) for split in ("train", "test")},
        task=dataset.task,
        bands=list(dataset.bands),
        class_names=list(dataset.class_names),
        ignore_index=dataset.ignore_index,
    )
    return {**images, "set": whole}


def normalise_for(meta: dict, pixels: torch.Tensor) -> torch.Tensor:
    """uint pixels -> float, standardised with the encoder's own per-band statistics."""
    return standardise(pixels, *normalisation_tensors(meta, pixels.device))


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
    key: str,
    compute,
    cache_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Features for a content key (`content_key`): memory, then `cache_dir/<key>.safetensors`,
    then `compute()`. Disk entries are written under a unique temporary name, then renamed."""
    if key in _MEMORY:
        return _MEMORY[key].to(device)
    path = Path(cache_dir).expanduser() / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        features = load_file(str(path))["features"]
    else:
        features = compute()
        if path is not None:
            _save_atomically(path, features)
    _MEMORY[key] = features.detach()
    return _MEMORY[key].to(device)


def _save_atomically(path: Path, features: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file({"features": features.detach().cpu().contiguous()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
