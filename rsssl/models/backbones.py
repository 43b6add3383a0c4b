"""timm backbones by name, for any band count, random init unless a local file is given.

No code path downloads weights: `pretrained` only ever means "load this local file".
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from rsssl.data.scene import DataError
from rsssl.models import spectral  # noqa: F401  (registers rsssl_spectral_transformer with timm)


class ConfigError(ValueError):
    """A configuration value that cannot work. The message names it and the fix."""


def check_backbone_name(name: str) -> None:
    """Raise a ConfigError listing close timm names when `name` is not a timm model."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
    hint = f" Close timm names: {', '.join(close)}." if close else ""
    raise ConfigError(
        f"unknown backbone {name!r}: not a timm model.{hint} Use a conf/backbone/ preset "
        "(backbone=resnet18) or any timm name (backbone.name=<timm name>)"
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a local .safetensors or .pth/.pt file (never unpickles arbitrary objects)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist: give a local .safetensors or .pth file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "encoder"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def create_backbone(
    name: str,
    in_chans: int,
    weights: str | None = None,
    drop_path_rate: float = 0.0,
    **kwargs,
) -> nn.Module:
    """A timm model without classifier (`num_classes=0`), global-pooled features of `num_features`.

    `weights` is a local file holding a timm state dict for the same architecture and band
    count (e.g. an `encoder.safetensors` exported by rsssl).
    """
    check_backbone_name(name)
    if in_chans < 1:
        raise DataError(f"in_chans={in_chans}: the data must have at least one band")
    model = timm.create_model(
        name, pretrained=False, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate, **kwargs
    )
    if weights:
        load_weights(model, load_state_dict_file(weights), f"weights file {weights}", name, in_chans)
    return model


def load_weights(model: nn.Module, state: dict, what: str, name: str, in_chans: int) -> None:
    """Load a backbone state dict; keys the backbone lacks (a classifier head) are ignored."""
    try:
        missing, _ = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatch, e.g. another band count
        raise ConfigError(
            f"{what} does not fit backbone {name!r} with in_chans={in_chans}: "
            f"{str(error).splitlines()[-1].strip()}; use weights of the same architecture and band count"
        ) from None
    if missing:
        raise ConfigError(
            f"{what} does not fit backbone {name!r} with in_chans={in_chans}: missing {len(missing)} keys "
            f"(e.g. {missing[0]}); use weights of the same architecture and band count"
        )


def feature_indices(encoder: nn.Module) -> list[int]:
    """Which intermediates feed the decoder: the last one of every stride >= 4 (the coarsest if none).

    CNNs give one map per stage (strides 4 ... 32; the stride-2 stem is skipped: costly, little
    semantics). A ViT gives one map per block, all at the patch stride: its last block's patch
    tokens, reshaped to a map, are the single level.
    """
    info = getattr(encoder, "feature_info", None)
    if not info or not hasattr(encoder, "forward_intermediates"):
        raise ConfigError(
            f"backbone {type(encoder).__name__} exposes no multi-scale features (timm feature_info and "
            "forward_intermediates): segmentation is not supported for it yet"
        )
    reductions = [int(f["reduction"]) for f in info]
    last = {r: i for i, r in enumerate(reductions)}
    return sorted(i for r, i in last.items() if r >= 4) or [len(reductions) - 1]
