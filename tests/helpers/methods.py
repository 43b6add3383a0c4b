"""Tiny methods for unit tests: a method class on timm's `test_resnet` over 3 RGB bands."""

from __future__ import annotations

from rsssl.methods.base import SSLMethod

TINY_BASE = {"backbone": {"name": "test_resnet"}, "in_chans": 3, "bands": ["red", "green", "blue"]}


def tiny_method(cls: type[SSLMethod], **settings) -> SSLMethod:
    """`cls` built on the tiny backbone; `settings` are the method's and the base's other arguments."""
    return cls(**TINY_BASE, **settings)
