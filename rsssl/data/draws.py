"""Per-sample random draws that do not depend on how the global batch is split over processes.

Under DDP process r of W holds every W-th sample of the global batch (the epoch sampler strides
the shuffled order like `DistributedSampler`): its k-th sample is sample k·W + r of the global
batch. Every draw made here is made for the whole global batch, from a stream seeded alike on
every process (`reseed`, by `rsssl.cli.checkpoints.StepSeeds` before each training step), and
each process keeps its own rows. Sample j of the global batch so gets the same crop, flip, mask,
label or partner on one process as on W, and a W-process run of global batch B takes the steps
of the one-process run of batch B (tested for every method in tests/methods/test_ddp_equivalence.py).

Per-process draws (dropout, drop-path) stay on torch's global RNG, which StepSeeds seeds per
process. Outside a training step (no `reseed` yet: unit tests, evaluation) the draws come from
torch's global RNG, so `torch.manual_seed` reproduces them as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rsssl.processes import world


class _SampleStream:
    """The seed of the current step and one generator per device, seeded with it on first use."""

    def __init__(self) -> None:
        self.seed: int | None = None
        self.generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.generators.clear()

    def generator(self, device: torch.device | str) -> torch.Generator | None:
        if self.seed is None:
            return None
        device = torch.device(device)
        if device.type != "cpu" and device.index is None:
            device = torch.device(device.type, torch.empty(0, device=device).device.index)
        if device not in self.generators:
            self.generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self.generators[device]


_STREAM = _SampleStream()


def reseed(seed: int | None) -> None:
    """Seed the per-sample stream (the same value on every process); None: back to torch's RNG."""
    _STREAM.reseed(seed)


def _local_rows(full: Tensor) -> Tensor:
    rank, size = world()
    return full if size == 1 else full[rank::size]


def _global_shape(batch: int, shape: Sequence[int]) -> tuple[int, ...]:
    return (batch * world()[1], *shape)


def rand(batch: int, *shape: int, device: torch.device | str = "cpu") -> Tensor:
    """Uniform [0, 1) values, `batch` x `shape`, one row per local sample."""
    generator = _STREAM.generator(device)
    return _local_rows(torch.rand(_global_shape(batch, shape), generator=generator, device=device))


def uniform(
    batch: int, *shape: int, bounds: tuple[float, float], device: torch.device | str = "cpu"
) -> Tensor:
    """Uniform values in [low, high) = `bounds`, `batch` x `shape`, one row per local sample."""
    low, high = bounds
    return low + (high - low) * rand(batch, *shape, device=device)


def randint(low: int, high: int, batch: int, *shape: int, device: torch.device | str = "cpu") -> Tensor:
    """Integers in [low, high), `batch` x `shape`, one row per local sample."""
    generator = _STREAM.generator(device)
    full = torch.randint(low, high, _global_shape(batch, shape), generator=generator, device=device)
    return _local_rows(full)


def chance(batch: int, p: float, device: torch.device | str = "cpu") -> Tensor:
    """One coin per local sample, True with probability `p`."""
    return rand(batch, device=device) < p


def global_positions(batch: int, device: torch.device | str = "cpu") -> Tensor:
    """Each local sample's position in the global batch (k·W + r)."""
    rank, size = world()
    return torch.arange(batch, device=device) * size + rank


def gathered_rows(positions: Tensor, batch: int) -> Tensor:
    """Where global-batch positions sit in a `gather_no_grad` of the processes' local batches
    (process r's rows come r-th, in their local order)."""
    size = world()[1]
    return (positions % size) * batch + positions // size


def partners(batch: int, device: torch.device | str = "cpu") -> Tensor:
    """For each local sample the global-batch position of another sample, uniformly (never
    itself when the global batch has two or more)."""
    total = batch * world()[1]
    own = global_positions(batch, device)
    if total < 2:
        return own
    return (own + randint(1, total, batch, device=device)) % total
