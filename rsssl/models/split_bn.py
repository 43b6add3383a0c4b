"""Split BatchNorm: normalise a batch in G groups of samples, as if it ran on G devices.

MoCo's shuffle-BN only helps when a key is normalised with other samples than its query
(otherwise the two share batch statistics, a signal the network can "cheat" with). On one
device the MoCo authors normalise in groups ("SplitBatchNorm"); this module does the same.
Group g holds the samples at positions g, g + G, g + 2G, ... (a free view of the batch).

`SplitBatchNorm` keeps the exact parameters and buffers of the BatchNorm it replaces (same
names, same tensors), so state dicts, EMA pairs and exported encoders are unchanged. It is
deliberately not a `_BatchNorm` subclass: Lightning's `sync_batchnorm` leaves it alone, which
is how a key encoder keeps per-process statistics under DDP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


class SplitBatchNorm(nn.Module):
    """BatchNorm over `groups` strided groups of the batch in training; running statistics in eval."""

    def __init__(self, bn: _BatchNorm | SplitBatchNorm, groups: int) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.groups = groups
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.affine, self.track_running_stats = bn.affine, bn.track_running_stats
        self.weight, self.bias = bn.weight, bn.bias  # the same Parameter objects (or None)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, getattr(bn, name))
        self.train(bn.training)

    def _factor(self) -> float:
        """The running-average factor, as torch's BatchNorm computes it."""
        if self.num_batches_tracked is None:
            return 0.0 if self.momentum is None else self.momentum
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum

    def forward(self, x: Tensor) -> Tensor:
        use_batch = self.training or self.running_mean is None
        if not use_batch or self.groups == 1:
            factor = self._factor() if self.training and self.track_running_stats else 0.0
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, use_batch, factor, self.eps
            )
        n, g = x.shape[0], self.groups
        if n % g:
            raise ValueError(f"SplitBatchNorm: batch of {n} does not split into {g} groups")
        grouped = x.reshape(n // g, g * x.shape[1], *x.shape[2:])  # channel block j = samples j, j+g, ...
        stats = None
        if self.track_running_stats and self.running_mean is not None:
            factor = self._factor()
            stats = (self.running_mean.repeat(g), self.running_var.repeat(g))
        else:
            factor = 0.0
        weight = self.weight.repeat(g) if self.weight is not None else None
        bias = self.bias.repeat(g) if self.bias is not None else None
        out = F.batch_norm(
            grouped,
            stats[0] if stats else None,
            stats[1] if stats else None,
            weight,
            bias,
            True,
            factor,
            self.eps,
        )
        if stats is not None:
            with torch.no_grad():
                self.running_mean.copy_(stats[0].view(g, -1).mean(0))
                self.running_var.copy_(stats[1].view(g, -1).mean(0))
        # A fresh tensor to autograd, not a view of `out`: the in-place ReLU that follows a BatchNorm
        # in a ResNet would otherwise make backward clone and zero-fill the whole activation
        # (CopySlices) at every layer. BatchNorm's backward does not read `out`, so sharing is safe.
        return torch.ops.aten._unsafe_view(out.contiguous(), x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, momentum={self.momentum}"


def split_batch_norm(module: nn.Module, groups: int) -> nn.Module:
    """Replace every BatchNorm (or SplitBatchNorm) inside `module` by a SplitBatchNorm with `groups`.

    Idempotent; returns `module` (changed in place unless `module` itself is a BatchNorm).
    """
    if isinstance(module, _BatchNorm | SplitBatchNorm):
        return SplitBatchNorm(module, groups)
    for name, child in module.named_children():
        setattr(module, name, split_batch_norm(child, groups))
    return module
