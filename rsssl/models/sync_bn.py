"""Synchronised BatchNorm for CPU processes (gloo), where torch's `SyncBatchNorm` refuses to run.

Under DDP on CPUs `trainer.sync_batchnorm=true` converts every BatchNorm into `CPUSyncBatchNorm`:
the batch statistics are those of the global batch (two differentiable all-reduces: the mean,
then the centred sum of squares), so a W-process run normalises as the one-process run of the
same global batch does, and gradients flow to every process's samples, as with `SyncBatchNorm`.
The converted layer keeps the parameters, buffers and state-dict names of the layer it replaces;
`SplitBatchNorm` (MoCo's key encoder) is no `_BatchNorm` and is left alone.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from rsssl.processes import world


class _AllReduceSum(torch.autograd.Function):
    """The sum over processes; its gradient is the sum over processes of the gradients (every
    process's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(tensor: Tensor) -> Tensor:
    return _AllReduceSum.apply(tensor)


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm over the samples of every process (training); running statistics in eval."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CPUSyncBatchNorm expects N x C x ... input, got {input.dim()}-D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not (self.training and self.track_running_stats) or world()[1] == 1:
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = all_reduce(input.new_tensor(float(input.numel() // input.shape[1])))
        mean = all_reduce(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count  # biased, as BatchNorm normalises
        self._update_running_stats(mean.detach(), var.detach() * count / (count - 1).clamp_min(1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, unbiased_var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def convert(module: nn.Module) -> nn.Module:
    """`module` with every `_BatchNorm` inside it replaced by a `CPUSyncBatchNorm` that holds the
    same parameters and buffers."""
    if isinstance(module, _BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        synced = CPUSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(synced, name, tensor)
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, convert(child))
    return module


class CPUSyncBatchNormPlugin(LayerSync):
    """Lightning's layer-sync plugin for `CPUSyncBatchNorm` (the CPU counterpart of
    `TorchSyncBatchNorm`, which `sync_batchnorm=true` selects on GPUs)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return model  # the converted layers are BatchNorm on one process and in eval already
