"""Self-distillation (DINO, Caron et al. 2021; the loss LaST builds on): no negatives.

With K-way outputs of a student (every crop) and a momentum teacher (global crops only), a
running centre c and temperatures τ_s, τ_t:

    P_t(x) = softmax((g_t(x) − c) / τ_t),   log P_s(x') = log_softmax(g_s(x') / τ_s)
    L = mean over pairs (x, x'), x a global crop, x' any crop but x itself, of
        mean over the batch of H(P_t(x), P_s(x')) = −Σ_k P_t(x)_k log P_s(x')_k

Centring (subtracting c) keeps one dimension from dominating, sharpening (a low τ_t) keeps the
teacher from going uniform: either alone collapses. The centre is an exponential moving
average of the teacher's batch mean, averaged over every process under DDP.

Crops are view-major (crop 0 of every image, then crop 1, ...), as `rsssl.data.multicrop`
returns them, and the student's first `num_global` crops are the teacher's crops, in order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def self_distillation_loss(
    student: Tensor,
    teacher: Tensor,
    center: Tensor,
    num_global: int,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> Tensor:
    """The loss above. `teacher`: (G*B) x K logits of the `num_global` = G global crops;
    `student`: (V*B) x K logits of V >= G crops whose first G are the teacher's; `center`: K."""
    batch, leftover = divmod(teacher.shape[0], num_global)
    if num_global < 1 or batch < 1 or leftover or student.shape[0] % batch:
        raise ValueError(
            f"self_distillation_loss: teacher rows {teacher.shape[0]} are not num_global={num_global} "
            f"crops of one batch, or student rows {student.shape[0]} are not whole crops of it"
        )
    num_views = student.shape[0] // batch
    if num_views < num_global or num_views < 2:
        raise ValueError(
            f"self_distillation_loss: {num_views} student crop(s) for {num_global} teacher crop(s): the "
            "student sees the teacher's crops and at least one other"
        )
    targets = F.softmax((teacher.float() - center.float().view(1, -1)) / teacher_temperature, dim=-1)
    log_probs = F.log_softmax(student.float() / student_temperature, dim=-1)
    targets = targets.view(num_global, batch, -1)
    log_probs = log_probs.view(num_views, batch, -1)
    cross = -torch.einsum("gbk,vbk->gv", targets, log_probs) / batch  # G x V mean cross-entropies
    same_crop = torch.zeros_like(cross, dtype=torch.bool)
    same_crop[:, :num_global] = torch.eye(num_global, dtype=torch.bool, device=cross.device)
    return cross[~same_crop].mean()


def teacher_batch_center(teacher: Tensor) -> Tensor:
    """Mean teacher logit over the batch (K), over every process when torch.distributed runs."""
    total = teacher.detach().float().sum(dim=0)
    count = torch.tensor(float(teacher.shape[0]), device=teacher.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        dist.all_reduce(count)
    return total / count


def updated_center(center: Tensor, teacher: Tensor, momentum: float = 0.9) -> Tensor:
    """c ← m·c + (1 − m)·(the teacher's batch mean over all processes)."""
    return momentum * center + (1 - momentum) * teacher_batch_center(teacher).view_as(center)


def teacher_entropy(teacher: Tensor, center: Tensor, teacher_temperature: float) -> Tensor:
    """Mean entropy of the centred, sharpened teacher distributions P_t (nats): 0 when every
    image goes to one prototype (sharpening collapse), log K when uniform (centring collapse)."""
    probs = F.softmax((teacher.detach().float() - center.float().view(1, -1)) / teacher_temperature, dim=-1)
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1).mean()
