"""Cross-process helpers for methods: gathers and MoCo's batch shuffle.

All of them are the identity on a single process, so the same code runs on CPU, one GPU and
DDP. Under DDP (any backend, gloo included) they use `torch.distributed` directly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (no gradient)."""
    _, size = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        rank, size = world()
        ctx.rank, ctx.batch = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's loss depends on every slice
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process, keeping the gradient to the local slice."""
    if world()[1] == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle samples across all processes (per-sample within one); returns the local part
    and the index that undoes it. Keeps BatchNorm from seeing which keys are positives."""
    rank, size = world()
    gathered = gather_no_grad(x)
    order = torch.randperm(gathered.shape[0], device=x.device)
    if size > 1:
        dist.broadcast(order, src=0)
    undo = torch.argsort(order)
    local = order.view(size, -1)[rank]
    return gathered[local], undo


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, undo: torch.Tensor) -> torch.Tensor:
    """Inverse of `batch_shuffle` for the outputs of the shuffled forward pass."""
    rank, size = world()
    gathered = gather_no_grad(x)
    local = undo.view(size, -1)[rank]
    return gathered[local]
