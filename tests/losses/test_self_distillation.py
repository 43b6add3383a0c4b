"""The self-distillation loss against a plain loop, its centre (also under two gloo processes)
and the teacher entropy the collapse monitor logs."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsssl.losses.self_distillation import (
    self_distillation_loss,
    teacher_batch_center,
    teacher_entropy,
    updated_center,
)


def reference_loss(student, teacher, center, num_global, tau_s, tau_t) -> float:
    """DINO's loss written out: every (teacher crop g, student crop v != g) pair, every image."""
    batch = teacher.shape[0] // num_global
    num_views = student.shape[0] // batch
    total, pairs = 0.0, 0
    for g in range(num_global):
        for v in range(num_views):
            if v == g:
                continue
            pair = 0.0
            for b in range(batch):
                t = teacher[g * batch + b].tolist()
                s = student[v * batch + b].tolist()
                weights = [math.exp((t[k] - center[k]) / tau_t) for k in range(len(t))]
                target = [w / sum(weights) for w in weights]
                norm = math.log(sum(math.exp(x / tau_s) for x in s))
                pair += -sum(target[k] * (s[k] / tau_s - norm) for k in range(len(s)))
            total += pair / batch
            pairs += 1
    return total / pairs


@pytest.mark.parametrize(("num_global", "num_local"), [(2, 3), (2, 0), (1, 2), (3, 1)])
def test_loss_equals_the_plain_loop(num_global, num_local):
    torch.manual_seed(0)
    batch, k = 3, 5
    teacher = torch.randn(num_global * batch, k, dtype=torch.float64)
    student = torch.randn((num_global + num_local) * batch, k, dtype=torch.float64)
    center = torch.randn(k, dtype=torch.float64) * 0.1
    loss = self_distillation_loss(student, teacher, center, num_global, 0.1, 0.04)
    expected = reference_loss(student, teacher, center.tolist(), num_global, 0.1, 0.04)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_a_crop_is_never_its_own_target():
    """Student crop g equal to teacher crop g costs nothing extra: only cross pairs count."""
    teacher = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # 2 global crops of 1 image
    student = torch.tensor([[4.0, 0.0], [0.0, 4.0]]) * 10
    loss = self_distillation_loss(student, teacher, torch.zeros(2), num_global=2, student_temperature=1.0)
    # each pair matches a sharp target with the opposite sharp prediction: about 40 nats each
    assert loss.item() > 30


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="not num_global=2 crops"):
        self_distillation_loss(torch.randn(6, 4), torch.randn(3, 4), torch.zeros(4), num_global=2)
    with pytest.raises(ValueError, match="at least one other"):
        self_distillation_loss(torch.randn(2, 4), torch.randn(2, 4), torch.zeros(4), num_global=1)


def test_center_is_the_moving_average_of_the_teacher_batch_mean():
    teacher = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    center = torch.tensor([10.0, 0.0, -10.0])
    assert torch.equal(teacher_batch_center(teacher), torch.tensor([2.0, 2.0, 2.0]))
    torch.testing.assert_close(updated_center(center, teacher, 0.9), torch.tensor([9.2, 0.2, -8.8]))


def test_teacher_entropy_spans_collapse_to_uniform():
    k = 8
    assert teacher_entropy(torch.zeros(4, k), torch.zeros(k), 0.04).item() == pytest.approx(math.log(k))
    sharp = torch.eye(k)[:4] * 10
    assert teacher_entropy(sharp, torch.zeros(k), 0.04).item() < 1e-6
    # centring removes what every image shares: a shared spike no longer decides the target
    shared = torch.zeros(4, k)
    shared[:, 0] = 10
    assert teacher_entropy(shared, shared[0], 0.04).item() == pytest.approx(math.log(k))


def _center_worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    teacher = torch.full((2, 3), float(rank * 4))  # rank 0: zeros, rank 1: fours
    torch.save(updated_center(torch.ones(3), teacher, 0.5), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_center_is_averaged_across_two_processes(tmp_path):
    mp.spawn(_center_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):  # both: 0.5 * 1 + 0.5 * mean(0, 0, 4, 4) = 1.5 (alone: 0.5 and 2.5)
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), torch.full((3,), 1.5))
