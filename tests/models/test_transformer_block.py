"""The spectral transformer's pre-norm block: the maths of torch's TransformerEncoderLayer."""

from __future__ import annotations

import torch
from torch import nn

from rsssl.models.spectral import PreNormBlock


def torch_layer_with_the_weights_of(block: PreNormBlock, dim: int, heads: int, mlp: int) -> nn.Module:
    layer = nn.TransformerEncoderLayer(
        dim, heads, mlp, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).double()
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(block.qkv.weight)
        layer.self_attn.in_proj_bias.copy_(block.qkv.bias)
        layer.self_attn.out_proj.weight.copy_(block.proj.weight)
        layer.self_attn.out_proj.bias.copy_(block.proj.bias)
        for mine, theirs in ((block.fc1, layer.linear1), (block.fc2, layer.linear2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
        for mine, theirs in ((block.norm1, layer.norm1), (block.norm2, layer.norm2)):
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    return layer


def test_the_block_equals_torchs_pre_norm_encoder_layer_forward_and_backward():
    torch.manual_seed(0)
    dim, heads, mlp = 16, 4, 32
    block = PreNormBlock(dim, heads, mlp).double()
    with torch.no_grad():  # non-trivial biases and norms, so every parameter's place is checked
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    layer = torch_layer_with_the_weights_of(block, dim, heads, mlp)
    x = torch.randn(5, 13, dim, dtype=torch.float64, requires_grad=True)
    ours, theirs = block(x), layer(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    weights = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_theirs,) = torch.autograd.grad((theirs * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=0, atol=1e-12)
    grads = torch.autograd.grad((block(x) * weights).sum(), [block.qkv.weight, block.fc1.weight])
    theirs_grads = torch.autograd.grad(
        (layer(x) * weights).sum(), [layer.self_attn.in_proj_weight, layer.linear1.weight]
    )
    for mine, reference in zip(grads, theirs_grads, strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-12)


def test_the_block_starts_as_torchs_layer_does():
    """Xavier-uniform packed q/k/v projection and zero attention biases, as MultiheadAttention."""
    torch.manual_seed(0)
    block = PreNormBlock(64, 4, 128)
    bound = (6 / (64 + 3 * 64)) ** 0.5
    assert block.qkv.weight.abs().max() <= bound and block.qkv.weight.abs().max() > 0.9 * bound
    assert not block.qkv.bias.any() and not block.proj.bias.any()
