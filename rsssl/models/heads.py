"""Projection and prediction heads (MLPs), shared by every method."""

from __future__ import annotations

from torch import nn


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = False
) -> nn.Sequential:
    """Linear-(BN)-ReLU blocks ending in a plain Linear; `num_layers=1` is a single linear map."""
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)
