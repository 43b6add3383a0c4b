"""Encoder export: `encoder.safetensors` (timm state dict) + `encoder.json` (how to use it).

Everything downstream (evaluation, fine-tuning, other libraries) loads only these two files.
Loading never unpickles. The JSON records the weights' sha256 so a mismatched pair is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from rsssl.models.backbones import ConfigError, create_backbone, load_state_dict_file, load_weights

WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_encoder(backbone: nn.Module, folder: str | Path, meta: dict) -> Path:
    """Write the two files atomically into `folder`; returns the weights path.

    `meta` must hold at least `timm_name`, `in_chans`, `bands`, `mean`, `std`, `method`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in backbone.state_dict().items()}
    weights, tmp_weights = folder / WEIGHTS_NAME, folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp_weights))
    record = dict(
        meta, num_features=int(getattr(backbone, "num_features", 0)), sha256=file_sha256(tmp_weights)
    )
    tmp_meta = folder / (META_NAME + ".tmp")
    tmp_meta.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp_weights, weights)
    os.replace(tmp_meta, folder / META_NAME)
    return weights


def read_encoder_meta(weights_path: str | Path) -> dict:
    """The `encoder.json` beside a weights file, checked against the weights it describes."""
    weights_path = Path(weights_path).expanduser()
    if weights_path.is_dir():
        weights_path = weights_path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ConfigError(
            f"encoder file {weights_path} does not exist: give the encoder.safetensors of a pretraining run"
        )
    meta_path = weights_path.with_name(META_NAME)
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path} is missing: an exported encoder is two files, keep them together")
    meta = json.loads(meta_path.read_text())
    missing = [k for k in ("timm_name", "in_chans", "bands", "mean", "std") if k not in meta]
    if missing:
        raise ConfigError(f"{meta_path} lacks {', '.join(missing)}: re-export the encoder with rsssl")
    if meta.get("sha256") and meta["sha256"] != file_sha256(weights_path):
        raise ConfigError(
            f"{meta_path} does not describe {weights_path} (sha256 differs): the two files come from "
            "different runs; copy both files from the same run folder"
        )
    meta["weights_path"] = str(weights_path)
    return meta


def backbone_like(meta: dict, seed: int | None = None) -> nn.Module:
    """A freshly initialised backbone of an exported encoder's architecture and band count
    (the random-init baseline); `seed` makes its initialisation reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_backbone(meta["timm_name"], in_chans=int(meta["in_chans"]), **meta.get("timm_kwargs", {}))


def load_encoder(weights_path: str | Path) -> tuple[nn.Module, dict]:
    """A timm backbone with the exported weights, and its metadata."""
    meta = read_encoder_meta(weights_path)
    model = backbone_like(meta)
    state = load_state_dict_file(meta["weights_path"])
    load_weights(model, state, meta["weights_path"], meta["timm_name"], int(meta["in_chans"]))
    return model, meta


def check_band_count(meta: dict, data_bands: int) -> None:
    """The data must have the band count the encoder was trained on."""
    if int(meta["in_chans"]) != data_bands:
        raise ConfigError(
            f"the encoder was trained on {meta['in_chans']} bands ({', '.join(meta['bands'])}) but the data "
            f"has {data_bands}: select the same bands with data.bands=[...] or use an encoder for this sensor"
        )


def normalisation_tensors(
    meta: dict, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std
