"""Tiny methods for unit tests: a method class on timm's `test_resnet` over 3 RGB bands."""

from __future__ import annotations

from rsssl.methods.base import SSLMethod

TINY_BASE = {"backbone": {"name": "test_resnet"}, "in_chans": 3, "bands": ["red", "green", "blue"]}


def tiny_method(cls: type[SSLMethod], **settings) -> SSLMethod:
    """`cls` built on the tiny backbone; `settings` are the method's and the base's other arguments."""
    return cls(**TINY_BASE, **settings)


#: methods that need a particular backbone kind, with the overrides of a small one of it
SMALL_SPECTRAL = [
    "backbone=spectral",
    "backbone.kwargs.embed_dim=16",
    "backbone.kwargs.depth=1",
    "backbone.kwargs.num_heads=2",
]
SMALL_BACKBONES = {"spectral_mae": SMALL_SPECTRAL, "spectral_spatial": SMALL_SPECTRAL}


def with_small_backbone(method: str, overrides: list[str]) -> list[str]:
    """`overrides` with their `backbone=` replaced by the small backbone `method` needs, if any."""
    if method not in SMALL_BACKBONES:
        return overrides
    return [o for o in overrides if not o.startswith("backbone=")] + SMALL_BACKBONES[method]
