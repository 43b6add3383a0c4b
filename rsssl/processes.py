"""Which process this is: the one place that asks `torch.distributed`, so the data layer and the
methods agree on the rank and world size without importing each other."""

from __future__ import annotations

import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
