"""SplitBatchNorm: per-group statistics equal to BatchNorm run on each group alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsssl.models.split_bn import SplitBatchNorm, split_batch_norm


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, momentum=0.25)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, -0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, 0.2, -0.3]))
        bn.running_mean.copy_(torch.tensor([1.0, 2.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 5.0, 6.0]))
    return bn


def test_training_normalises_each_strided_group_alone_and_averages_running_stats():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    reference = _bn(3)
    split = SplitBatchNorm(_bn(3), groups=4)
    out = split(x)
    running = []
    for g in range(4):  # group g = samples g, g+4
        mean, var = reference.running_mean.clone(), reference.running_var.clone()
        expected = F.batch_norm(
            x[g::4], mean, var, reference.weight, reference.bias, True, 0.25, reference.eps
        )
        torch.testing.assert_close(out[g::4], expected)
        running.append((mean, var))
    torch.testing.assert_close(split.running_mean, torch.stack([m for m, _ in running]).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack([v for _, v in running]).mean(0))
    assert int(split.num_batches_tracked) == 1


def test_eval_uses_running_statistics_like_batchnorm():
    torch.manual_seed(1)
    x = torch.randn(6, 3, 4, 4)
    bn, split = _bn(3).eval(), SplitBatchNorm(_bn(3), groups=3).eval()
    torch.testing.assert_close(split(x), bn(x))


def test_conversion_keeps_state_dict_and_parameters_and_escapes_syncbn():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), _bn(3), nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    keys, weight = list(net.state_dict()), net[1].weight
    split_batch_norm(net, 2)
    assert list(net.state_dict()) == keys
    assert isinstance(net[1], SplitBatchNorm) and isinstance(net[2][1], SplitBatchNorm)
    assert net[1].weight is weight  # the same Parameter: optimiser and EMA pairs are unaffected
    split_batch_norm(net, 4)  # idempotent, regroups
    assert net[1].groups == 4 and list(net.state_dict()) == keys
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())


def test_batchnorm1d_inputs_split_too():
    torch.manual_seed(2)
    x = torch.randn(6, 4)
    split = SplitBatchNorm(nn.BatchNorm1d(4), groups=2)
    out = split(x)
    for g in range(2):
        torch.testing.assert_close(out[g::2], F.batch_norm(x[g::2], None, None, training=True))


def test_an_in_place_activation_after_it_keeps_the_gradients_and_copies_no_activation():
    """The output is a fresh tensor to autograd, not a view of the grouped one: ResNets apply ReLU in
    place after every BatchNorm, and on a view autograd clones and zero-fills the whole activation in
    backward (CopySlices) at every layer, several per cent of a ResNet-18 step."""
    torch.manual_seed(3)
    x = torch.randn(8, 3, 5, 5, requires_grad=True)
    split = SplitBatchNorm(_bn(3), groups=4)
    out = split(x)
    assert not out._is_view()
    upstream = torch.randn(8, 3, 5, 5)
    (torch.relu_(out) * upstream).sum().backward()
    in_place = x.grad.clone(), split.weight.grad.clone()
    x.grad, split.weight.grad = None, None
    (torch.relu(split(x)) * upstream).sum().backward()
    torch.testing.assert_close(in_place[0], x.grad)
    torch.testing.assert_close(in_place[1], split.weight.grad)
