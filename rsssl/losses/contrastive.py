"""Contrastive losses: InfoNCE (MoCo, SauMoCo, STICL) and NT-Xent (SimCLR, GLCNet, FALSE).

Pure functions of embeddings: no state, no Lightning. Inputs are L2-normalised here (the queue
is not: it already holds normalised keys). All arithmetic runs in float32 (float64 stays
float64) so bf16/fp16 autocast cannot overflow exp(s/τ); logits go through logsumexp/softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _normalise_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """L2-normalise rows of both inputs in their common dtype, at least float32."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    return F.normalize(a.to(dtype), dim=-1), F.normalize(b.to(dtype), dim=-1)


def _full_precision(z: Tensor) -> torch.autocast:
    """A context that turns autocast off, so the similarity matmuls stay in float32."""
    return torch.autocast(device_type=z.device.type, enabled=False)


def info_nce_logits(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None = None,
    temperature: float = 0.2,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """InfoNCE logits and the index of each row's positive.

    With a queue (K×D, already normalised): logits are B×(1+K), column 0 = q·k⁺, the rest q·queue,
    targets all 0 (MoCo). Without a queue: logits are B×B = q·kᵀ, the other keys of the batch are
    the negatives and the diagonal holds the positives (targets = arange(B)). `exclude` (B×K
    bool, queue only) removes queue entries from a row's negatives (logit −inf): MoCo masks
    stale keys of the query's own sample with it.
    """
    with _full_precision(query):
        q, k = _normalise_pair(query, key)
        if queue is None:
            logits = q @ k.T
            targets = torch.arange(q.shape[0], device=q.device)
        else:
            positive = (q * k).sum(dim=1, keepdim=True)
            negatives = q @ queue.to(q.dtype).T
            if exclude is not None:
                negatives = negatives.masked_fill(exclude, float("-inf"))
            logits = torch.cat([positive, negatives], dim=1)
            targets = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        return logits / temperature, targets


def info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None = None,
    temperature: float = 0.2,
    exclude: Tensor | None = None,
) -> Tensor:
    """InfoNCE: cross-entropy over [positive, negatives] logits, mean over the batch (see
    `info_nce_logits` for where the negatives come from and what `exclude` masks). The key
    is not detached here: a momentum encoder computes it under no_grad."""
    logits, targets = info_nce_logits(query, key, queue, temperature, exclude)
    return F.cross_entropy(logits, targets)


def nt_xent_logits(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> tuple[Tensor, Tensor]:
    """Similarity logits of the 2N embeddings [z1; z2] and the column of each row's positive.

    Returns a 2N×2N matrix s_ij/τ with the self-similarities set to −inf (never a candidate), and
    targets p(i) = i+N mod 2N. FALSE-style calibrations start from these.
    """
    with _full_precision(z1):
        z = torch.cat(_normalise_pair(z1, z2), dim=0)
        logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    n2 = z.shape[0]
    targets = torch.arange(n2, device=z.device).roll(n2 // 2)
    return logits, targets


def nt_xent(
    z1: Tensor, z2: Tensor, temperature: float = 0.5, include_positive_in_denominator: bool = True
) -> Tensor:
    """NT-Xent over the 2N embeddings of two views, z1[i] and z2[i] being a positive pair.

    ℓ_i = −log[exp(s_ip/τ) / Σ_{j∈D_i} exp(s_ij/τ)], averaged over all 2N anchors, where D_i is
    every j ≠ i (standard SimCLR / VISSL / FALSE form) or, with
    `include_positive_in_denominator=False`, every j ∉ {i, p(i)} (GLCNet, Tao 2020). The
    excluded form is not bounded below by 0 and needs N ≥ 2.
    """
    logits, targets = nt_xent_logits(z1, z2, temperature)
    rows = torch.arange(logits.shape[0], device=logits.device)
    positive = logits[rows, targets]
    if include_positive_in_denominator:
        denominator = logits
    else:
        if z1.shape[0] < 2:
            raise ValueError("nt_xent without the positive in the denominator needs a batch of at least 2")
        positives = F.one_hot(targets, logits.shape[1]).bool()
        denominator = logits.masked_fill(positives, float("-inf"))
    return (torch.logsumexp(denominator, dim=1) - positive).mean()
