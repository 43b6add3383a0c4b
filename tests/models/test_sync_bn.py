"""CPUSyncBatchNorm: two gloo processes with half a batch each normalise, back-propagate and
update their running statistics as one BatchNorm over the whole batch does."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from rsssl.models.split_bn import SplitBatchNorm
from rsssl.models.sync_bn import CPUSyncBatchNorm, convert

WORLD = 2


def network() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    net(torch.zeros(2, 3, 6, 6))  # materialise the lazy layer
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def step(net: nn.Module, images: torch.Tensor) -> dict:
    """One forward and backward; the loss is a sum over samples, so gradients add over processes."""
    images = images.clone().requires_grad_(True)
    out = net(images)
    (out * torch.arange(1.0, 3.0)).sum().backward()
    return {
        "out": out.detach(),
        "input_grad": images.grad,
        "grads": {n: p.grad.clone() for n, p in net.named_parameters()},
        "state": {n: t.clone() for n, t in net.state_dict().items()},
    }


def _worker(rank: int, init_file: str, out_dir: str, images: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    net = convert(network())
    assert isinstance(net[1], CPUSyncBatchNorm)
    result = step(net, images[rank * 3 : (rank + 1) * 3])
    for grad in result["grads"].values():  # DDP's reduction of a summed loss
        dist.all_reduce(grad)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_normalise_as_one_batchnorm_over_the_global_batch(tmp_path):
    torch.manual_seed(1)
    images = torch.randn(2 * 3, 3, 6, 6) * 3 + 1
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), images), nprocs=WORLD, join=True)
    whole = step(network(), images)
    local = step(network(), images[:3])
    for rank in range(WORLD):
        theirs = torch.load(tmp_path / f"rank{rank}.pt")
        part = slice(rank * 3, (rank + 1) * 3)
        torch.testing.assert_close(theirs["out"], whole["out"][part])
        torch.testing.assert_close(theirs["input_grad"], whole["input_grad"][part])
        assert theirs["state"].keys() == whole["state"].keys()
        for name, value in whole["state"].items():
            torch.testing.assert_close(theirs["state"][name], value, msg=name)
        for name, grad in whole["grads"].items():
            torch.testing.assert_close(theirs["grads"][name], grad, msg=name)
    assert not torch.allclose(local["out"], whole["out"][:3])  # the global statistics mattered


def test_one_process_and_eval_mode_are_plain_batchnorm_and_split_bn_is_left_alone():
    torch.manual_seed(2)
    images = torch.randn(4, 3, 6, 6)
    plain, synced = network(), convert(network())
    torch.testing.assert_close(synced(images), plain(images))
    torch.testing.assert_close(synced.eval()(images), plain.eval()(images))
    split = nn.Sequential(SplitBatchNorm(nn.BatchNorm2d(3), groups=2))
    assert isinstance(convert(split)[0], SplitBatchNorm)
