"""InfoNCE and NT-Xent against plain double-loop references (math.exp, explicit sums)."""

from __future__ import annotations

import math

import pytest
import torch

from rsssl.losses import info_nce, info_nce_logits, nt_xent, nt_xent_logits


def _unit_rows(z: torch.Tensor) -> list[list[float]]:
    rows = z.tolist()
    return [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in rows]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def reference_info_nce(query, key, queue, temperature, exclude=None) -> float:
    q, k = _unit_rows(query), _unit_rows(key)
    total = 0.0
    for i in range(len(q)):
        positive = math.exp(_dot(q[i], k[i]) / temperature)
        if queue is None:
            negatives = [math.exp(_dot(q[i], k[j]) / temperature) for j in range(len(k)) if j != i]
        else:
            negatives = [
                math.exp(_dot(q[i], n) / temperature)
                for j, n in enumerate(queue.tolist())
                if exclude is None or not exclude[i][j]
            ]
        total += -math.log(positive / (positive + sum(negatives)))
    return total / len(q)


def reference_nt_xent(z1, z2, temperature, include_positive) -> float:
    z = _unit_rows(z1) + _unit_rows(z2)
    n = len(z) // 2
    total = 0.0
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        positive = math.exp(_dot(z[i], z[p]) / temperature)
        denominator = 0.0
        for j in range(2 * n):
            if j == i or (j == p and not include_positive):
                continue
            denominator += math.exp(_dot(z[i], z[j]) / temperature)
        total += -math.log(positive / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("batch,dim", [(1, 3), (4, 8), (7, 16)])
@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("queue_size", [None, 5, 32])
def test_info_nce_matches_reference(batch, dim, temperature, queue_size):
    torch.manual_seed(batch * 100 + dim)
    query = torch.randn(batch, dim, dtype=torch.float64) * 3
    key = torch.randn(batch, dim, dtype=torch.float64)
    queue = None
    if queue_size is not None:
        queue = torch.nn.functional.normalize(torch.randn(queue_size, dim, dtype=torch.float64), dim=1)
    loss = info_nce(query, key, queue, temperature)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(reference_info_nce(query, key, queue, temperature), abs=1e-5)


@pytest.mark.parametrize("temperature", [0.07, 0.2])
def test_info_nce_excluded_queue_entries_are_neither_positive_nor_negative(temperature):
    """MoCo masks a query's own stale keys: the loss is the reference over the remaining negatives."""
    torch.manual_seed(3)
    query, key = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 8, dtype=torch.float64)
    queue = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1)
    exclude = torch.zeros(4, 6, dtype=torch.bool)
    exclude[0, [1, 4]] = True
    exclude[2, 0] = True
    loss = info_nce(query, key, queue, temperature, exclude=exclude)
    expected = reference_info_nce(query, key, queue, temperature, exclude.tolist())
    assert loss.item() == pytest.approx(expected, abs=1e-9)
    assert loss.item() != pytest.approx(reference_info_nce(query, key, queue, temperature), abs=1e-6)


@pytest.mark.parametrize("batch,dim", [(2, 3), (5, 8), (9, 16)])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("include_positive", [True, False])
def test_nt_xent_matches_reference(batch, dim, temperature, include_positive):
    torch.manual_seed(batch * 100 + dim)
    z1 = torch.randn(batch, dim, dtype=torch.float64)
    z2 = torch.randn(batch, dim, dtype=torch.float64) * 0.5
    loss = nt_xent(z1, z2, temperature, include_positive_in_denominator=include_positive)
    expected = reference_nt_xent(z1, z2, temperature, include_positive)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_logits_layout():
    torch.manual_seed(0)
    q, k, queue = torch.randn(4, 6), torch.randn(4, 6), torch.randn(10, 6)
    logits, targets = info_nce_logits(q, k, torch.nn.functional.normalize(queue, dim=1))
    assert logits.shape == (4, 11) and targets.tolist() == [0, 0, 0, 0]
    logits, targets = info_nce_logits(q, k)
    assert logits.shape == (4, 4) and targets.tolist() == [0, 1, 2, 3]
    logits, targets = nt_xent_logits(q, k)
    assert logits.shape == (8, 8) and targets.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    assert torch.isneginf(logits.diagonal()).all()


def test_gradients_finite():
    torch.manual_seed(0)
    q = torch.randn(8, 16, requires_grad=True)
    k = torch.randn(8, 16, requires_grad=True)
    queue = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    losses = [
        info_nce(q, k, queue, 0.07),
        info_nce(q, k, None, 0.07),
        nt_xent(q, k, 0.1, include_positive_in_denominator=True),
        nt_xent(q, k, 0.1, include_positive_in_denominator=False),
    ]
    for loss in losses:
        gq, gk = torch.autograd.grad(loss, [q, k])
        assert torch.isfinite(loss) and torch.isfinite(gq).all() and torch.isfinite(gk).all()
        assert gq.abs().sum() > 0


def test_scale_invariance():
    torch.manual_seed(0)
    q, k = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    scale = torch.rand(6, 1, dtype=torch.float64) * 100 + 0.01
    assert info_nce(q * scale, k * 7.0).item() == pytest.approx(info_nce(q, k).item(), abs=1e-10)
    for flag in (True, False):
        a = nt_xent(q * scale, k / 3.0, include_positive_in_denominator=flag).item()
        assert a == pytest.approx(nt_xent(q, k, include_positive_in_denominator=flag).item(), abs=1e-10)


def test_aligned_batch_has_lower_loss():
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    other = torch.randn(16, 32)
    queue = torch.nn.functional.normalize(torch.randn(128, 32), dim=1)
    assert info_nce(z, z, queue) < info_nce(z, other, queue)
    assert info_nce(z, z) < info_nce(z, other)
    for flag in (True, False):
        assert nt_xent(z, z, include_positive_in_denominator=flag) < nt_xent(
            z, other, include_positive_in_denominator=flag
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_under_autocast_computes_in_float32(dtype):
    torch.manual_seed(0)
    q, k = torch.randn(32, 64).to(dtype) * 1e3, torch.randn(32, 64).to(dtype) * 1e3
    queue = torch.nn.functional.normalize(torch.randn(256, 64), dim=1).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = [
            (info_nce(q, k, queue, 0.01), info_nce(q.double(), k.double(), queue.double(), 0.01)),
            (nt_xent(q, k, 0.01), nt_xent(q.double(), k.double(), 0.01)),
            (
                nt_xent(q, k, 0.05, include_positive_in_denominator=False),
                nt_xent(q.double(), k.double(), 0.05, include_positive_in_denominator=False),
            ),
        ]
    for loss, exact in results:
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        assert loss.item() == pytest.approx(exact.item(), rel=1e-4)


def test_excluded_form_needs_two_pairs():
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.randn(1, 4), torch.randn(1, 4), include_positive_in_denominator=False)
