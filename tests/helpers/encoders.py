"""What the evaluation tests say about a tiny exported encoder (`encoder.json` fields)."""

from __future__ import annotations

TINY_META = {
    "timm_name": "test_resnet",
    "in_chans": 3,
    "bands": ["red", "green", "blue"],
    "mean": [1000.0] * 3,
    "std": [500.0] * 3,
    "data": "synthetic",
}
