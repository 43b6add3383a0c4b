"""Cross-process helpers for methods: gathers and MoCo's batch shuffle.

All of them are the identity on a single process, so the same code runs on CPU, one GPU and
DDP. Under DDP (any backend, gloo included) they use `torch.distributed` directly.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from rsssl.data import draws
from rsssl.processes import world


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every process along dim 0 (no gradient)."""
    _, size = world()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def gather_in_batch_order(tensor: torch.Tensor) -> torch.Tensor:
    """`gather_no_grad` with the rows in global-batch order (sample k of process r of W is row
    k·W + r: the epoch sampler's striding), the order one process holding the whole batch has."""
    gathered = gather_no_grad(tensor)
    if world()[1] == 1:
        return gathered
    positions = torch.arange(gathered.shape[0], device=gathered.device)
    return gathered[draws.gathered_rows(positions, tensor.shape[0])]


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


def gather_kept_with_grad(rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The kept rows of every process, rank by rank, with the gradient to the local ones: `rows`
    are this process's kept rows, `keep` its mask over all of its candidates (so the processes
    may keep different counts)."""
    if world()[1] == 1:
        return rows
    padded = rows.new_zeros(keep.shape[0], *rows.shape[1:]).index_put((keep,), rows)
    return gather_with_grad(padded)[gather_no_grad(keep)]


def balanced_order(
    total: int, groups: int, strided: bool, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A random permutation of `total` samples in which every group draws evenly from every group.

    Positions form `groups` equal groups: position p is in group p % groups (`strided`, the
    layout of `SplitBatchNorm`) or p // (total / groups) (blocks: one block per process).
    After `x[order]`, group h holds total / groups**2 samples of each original group (as
    evenly as the sizes allow), so a key is never normalised with its query's group of samples.
    """
    if groups < 1 or total % groups:
        raise ValueError(f"a batch of {total} does not split into {groups} equal groups")
    per = total // groups
    if strided:
        positions = (
            torch.arange(per, device=device)[None, :] * groups + torch.arange(groups, device=device)[:, None]
        )
    else:
        positions = torch.arange(total, device=device).view(groups, per)
    shuffled_rows = positions.gather(1, torch.argsort(torch.rand(groups, per, device=device), dim=1))
    cycling = shuffled_rows.T.reshape(groups, per)  # row h takes its turn from every group in a cycle
    order = torch.empty(total, dtype=torch.long, device=device)
    order[positions.reshape(-1)] = cycling.reshape(-1)
    return order


@torch.no_grad()
def batch_shuffle(x: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle the key batch for shuffle-BN; returns the local part and the index that undoes it.

    Under DDP the samples of all processes are dealt evenly over the processes (the key
    encoder's BatchNorm is per process); on one process they are dealt over `groups` strided
    BatchNorm groups (`SplitBatchNorm`). Either way no key shares its BatchNorm statistics
    with its query's group of samples.
    """
    rank, size = world()
    gathered = gather_no_grad(x)
    if size > 1:
        order = balanced_order(gathered.shape[0], size, strided=False, device=x.device)
        dist.broadcast(order, src=0)
    else:
        order = balanced_order(gathered.shape[0], groups, strided=True, device=x.device)
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
