"""Weighted k-nearest-neighbour probe on frozen features.

The InstDisc / DINO protocol: features are L2-normalised, the k most cosine-similar training
samples vote for their class, each vote weighted by exp(similarity / temperature). Test rows are
processed in chunks so the similarity matrix never exceeds `chunk_size x N_train`, which keeps
the probe on the GPU for large feature banks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def knn_predict(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    weighting: Literal["exp", "uniform"] = "exp",
    chunk_size: int = 1024,
) -> Tensor:
    """Vote shares (N_test x num_classes, rows sum to 1) of the k most cosine-similar training samples.

    weighting="exp" weights each neighbour's vote by exp(sim / temperature) (the DINO kNN);
    "uniform" counts votes, whose argmax equals scikit-learn's KNeighborsClassifier(metric="cosine").
    Shares instead of raw sums: the weights are computed relative to each row's nearest neighbour,
    so a small temperature cannot overflow, and the scores read as probabilities.
    `k` larger than the training set uses every training sample. Computation runs on the
    device and in the floating dtype of `train_x` (float16/bfloat16 are promoted to float32).
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x must be N x D with the same D, got {tuple(train_x.shape)} "
            f"and {tuple(test_x.shape)}"
        )
    if train_y.shape != (train_x.shape[0],):
        raise ValueError(f"train_y must have shape ({train_x.shape[0]},), got {tuple(train_y.shape)}")
    if k < 1 or temperature <= 0 or chunk_size < 1:
        raise ValueError(
            f"need k >= 1, temperature > 0, chunk_size >= 1; got {k}, {temperature}, {chunk_size}"
        )
    if weighting not in ("exp", "uniform"):
        raise ValueError(f"weighting must be 'exp' or 'uniform', got {weighting!r}")

    dtype = torch.promote_types(train_x.dtype, torch.float32)
    device = train_x.device
    train = F.normalize(train_x.to(dtype), dim=1)
    labels = train_y.to(device=device, dtype=torch.long)
    k = min(k, train.shape[0])
    scores = torch.zeros(test_x.shape[0], num_classes, dtype=dtype, device=device)
    for start in range(0, test_x.shape[0], chunk_size):
        query = F.normalize(test_x[start : start + chunk_size].to(device=device, dtype=dtype), dim=1)
        sim, idx = (query @ train.T).topk(k, dim=1)
        # Exp weights relative to the row's nearest neighbour (sim[:, :1]): no overflow at small tau.
        votes = torch.ones_like(sim) if weighting == "uniform" else ((sim - sim[:, :1]) / temperature).exp()
        scores[start : start + chunk_size].scatter_add_(1, labels[idx], votes / votes.sum(1, keepdim=True))
    return scores
