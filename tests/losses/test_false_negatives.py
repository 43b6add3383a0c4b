"""FALSE (false-negative self-determination + confidence calibration) against a plain-loop reference
(math.exp on floats, unscaled exp-similarities), a hand-computed 4×4 example and the plain losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from rsssl.losses.contrastive import info_nce, info_nce_logits, nt_xent, nt_xent_logits
from rsssl.losses.false_negatives import (
    FalseNegativeSettings,
    false_negative_loss,
    select_false_negatives,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_false(
    logits, targets, temperature, threshold, confidence, scope, upper_triangle, include_positive
):
    """The FALSE loss with loops: returns (loss, accepted pairs as a sorted list of (row, column))."""
    L, t = logits.tolist(), targets.tolist()
    n_rows, n_cols = len(L), len(L[0])
    S = [[math.exp(v) if math.isfinite(v) else 0.0 for v in row] for row in L]
    pos = [S[i][t[i]] for i in range(n_rows)]
    restrict = scope == "batch" and upper_triangle and n_rows == n_cols

    def negatives(i):
        return [j for j in range(n_cols) if j != t[i] and math.isfinite(L[i][j])]

    def candidates(i):
        return [j for j in negatives(i) if not restrict or j > i]

    selected = []
    if scope == "anchor":
        for i in range(n_rows):
            if candidates(i):  # min keeps the first of equal distances
                selected.append((i, min(candidates(i), key=lambda j, i=i: abs(S[i][j] - pos[i]))))
    else:
        pairs = [(i, j) for i in range(n_rows) for j in candidates(i)]
        best = min(abs(S[i][j] - pos[i]) for i, j in pairs)
        selected = [(i, j) for i, j in pairs if abs(S[i][j] - pos[i]) == best]
    accepted = [(i, j) for i, j in selected if temperature * L[i][t[i]] >= threshold]

    total = 0.0
    for i in range(n_rows):
        p = pos[i]
        neg = sum(S[i][j] for j in negatives(i))
        for r, j in accepted:
            if r == i:
                p += confidence * S[i][j]
                neg -= confidence * S[i][j]
        total += -math.log(p / (p + neg)) if include_positive else -math.log(p / neg)
    return total / n_rows, sorted(accepted)


def _nt_xent_case(seed, batch=5, dim=8, temperature=0.1, dtype=torch.float64):
    torch.manual_seed(seed)
    z1 = torch.randn(batch, dim, dtype=dtype)
    z2 = z1 + 0.8 * torch.randn(batch, dim, dtype=dtype)
    return z1, z2, *nt_xent_logits(z1, z2, temperature)


def _info_nce_case(seed, batch=5, dim=8, queue_size=7, temperature=0.1):
    torch.manual_seed(seed)
    query = torch.randn(batch, dim, dtype=torch.float64)
    key = query + 0.8 * torch.randn(batch, dim, dtype=torch.float64)
    queue = None
    exclude = None
    if queue_size is not None:
        queue = F.normalize(torch.randn(queue_size, dim, dtype=torch.float64), dim=1)
        exclude = torch.zeros(batch, queue_size, dtype=torch.bool)
        exclude[0, [1, 4]] = True
        exclude[2, 0] = True
        exclude[3, 2:5] = True
    return query, key, queue, exclude, *info_nce_logits(query, key, queue, temperature, exclude)


def _pairs(tensor):
    return [tuple(p) for p in tensor.tolist()]


# --- 1. against the loop reference ---------------------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("confidence", [1.0, 0.5])
@pytest.mark.parametrize("include_positive", [True, False])
@pytest.mark.parametrize("threshold", [-1.0, 0.3])
@pytest.mark.parametrize("temperature,seed", [(0.05, 0), (0.1, 1), (0.2, 2)])
def test_nt_xent_logits_match_reference(scope, confidence, include_positive, threshold, temperature, seed):
    z1, z2, logits, targets = _nt_xent_case(seed, temperature=temperature)
    loss = false_negative_loss(
        logits, targets, temperature, threshold, confidence, scope, True, include_positive
    )
    expected, accepted = reference_false(
        logits, targets, temperature, threshold, confidence, scope, True, include_positive
    )
    assert _pairs(select_false_negatives(logits, targets, temperature, threshold, scope)) == accepted
    assert_close(loss, torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-10)
    if threshold == -1.0:  # every positive cosine passes: the calibration really changes the loss
        assert len(accepted) == (1 if scope == "batch" else 10)
        plain = nt_xent(z1, z2, temperature, include_positive_in_denominator=include_positive)
        assert loss < plain - 1e-6


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("upper_triangle", [True, False])
@pytest.mark.parametrize("confidence", [1.0, 0.5])
@pytest.mark.parametrize("include_positive", [True, False])
@pytest.mark.parametrize("queue_size", [7, None])
@pytest.mark.parametrize("seed", [3, 4])
def test_info_nce_logits_match_reference(
    scope, upper_triangle, confidence, include_positive, queue_size, seed
):
    temperature = 0.07
    *_, logits, targets = _info_nce_case(seed, queue_size=queue_size, temperature=temperature)
    args = (logits, targets, temperature, -1.0, confidence, scope, upper_triangle, include_positive)
    expected, accepted = reference_false(*args)
    got = select_false_negatives(logits, targets, temperature, -1.0, scope, upper_triangle)
    assert _pairs(got) == accepted and len(accepted) >= 1
    assert_close(
        false_negative_loss(*args), torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=1e-10
    )
    if queue_size is not None:  # masked queue entries are never picked
        assert torch.isfinite(logits[got[:, 0], got[:, 1]]).all()


def test_float32_logits_match_reference():
    _, _, logits, targets = _nt_xent_case(5, batch=8, dim=16, temperature=0.1, dtype=torch.float32)
    for scope in ("batch", "anchor"):
        expected, accepted = reference_false(logits, targets, 0.1, -1.0, 0.5, scope, True, True)
        loss = false_negative_loss(logits, targets, 0.1, -1.0, 0.5, scope)
        assert loss.dtype == torch.float32
        assert _pairs(select_false_negatives(logits, targets, 0.1, -1.0, scope)) == accepted
        assert_close(loss, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5)


# --- 2. nothing accepted: exactly the plain losses -----------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("include_positive", [True, False])
def test_nothing_accepted_equals_nt_xent(scope, include_positive):
    z1, z2, logits, targets = _nt_xent_case(6, temperature=0.1, dtype=torch.float32)
    assert select_false_negatives(logits, targets, 0.1, 1.01, scope).shape == (0, 2)
    loss = false_negative_loss(
        logits, targets, 0.1, threshold=1.01, scope=scope, include_positive_in_denominator=include_positive
    )
    plain = nt_xent(z1, z2, 0.1, include_positive_in_denominator=include_positive)
    assert_close(loss, plain, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("queue_size", [7, None])
def test_nothing_accepted_equals_info_nce(scope, queue_size):
    query, key, queue, exclude, logits, targets = _info_nce_case(7, queue_size=queue_size, temperature=0.2)
    assert select_false_negatives(logits, targets, 0.2, 1.01, scope).shape == (0, 2)
    loss = false_negative_loss(logits, targets, 0.2, threshold=1.01, scope=scope)
    assert_close(loss, F.cross_entropy(logits, targets), rtol=1e-12, atol=1e-12)
    assert_close(loss, info_nce(query, key, queue, 0.2, exclude), rtol=1e-12, atol=1e-12)


# --- 3. a hand-made 2N = 4 example ---------------------------------------------------------------

# Cosines of [z1_0, z1_1, z2_0, z2_1]: positives (0,2) at 0.9 and (1,3) at 0.75, τ = 0.5 so S = e^{2c}.
# Distances |S_ij − Pos_i| (e^x written E(x)):
#   upper triangle: (0,1) = (2,3) = E(1.8) − E(1.6) ≈ 1.097 (an exact tie), (1,2) ≈ 3.26, (0,3) ≈ 5.05
#   lower triangle: (1,0) = (3,2) = E(1.6) − E(1.5) ≈ 0.471, (3,0) ≈ 3.48, (2,1) ≈ 4.83
# so batch scope on j > i picks both (0,1) and (2,3) but not their mirrors; on the full matrix it picks
# (1,0) and (3,2); anchor scope picks 0→1, 1→0, 2→3, 3→2.
HAND_TEMPERATURE = 0.5
HAND_COSINES = [
    [0.0, 0.8, 0.9, 0.0],
    [0.8, 0.0, 0.1, 0.75],
    [0.9, 0.1, 0.0, 0.8],
    [0.0, 0.75, 0.8, 0.0],
]
E = math.exp


def _hand_logits():
    logits = torch.tensor(HAND_COSINES, dtype=torch.float64) / HAND_TEMPERATURE
    return logits.fill_diagonal_(float("-inf")), torch.tensor([2, 3, 0, 1])


def test_hand_example_selection():
    logits, targets = _hand_logits()

    def select(threshold, scope, upper=True):
        return _pairs(select_false_negatives(logits, targets, HAND_TEMPERATURE, threshold, scope, upper))

    assert select(0.7, "batch") == [(0, 1), (2, 3)]
    assert select(0.7, "batch", upper=False) == [(1, 0), (3, 2)]
    assert select(0.7, "anchor") == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert select(0.7, "anchor", upper=False) == [(0, 1), (1, 0), (2, 3), (3, 2)]  # no effect here
    # Gate at 0.85: rows 0, 2 (positive cosine 0.9) pass, rows 1, 3 (0.75) do not. On the full
    # matrix the global minimum lies in rows 1 and 3, so nothing is accepted: no fallback pick.
    assert select(0.85, "batch") == [(0, 1), (2, 3)]
    assert select(0.85, "batch", upper=False) == []
    assert select(0.85, "anchor") == [(0, 1), (2, 3)]


def test_hand_example_loss_values():
    logits, targets = _hand_logits()
    totals = [
        E(1.6) + E(1.8) + E(0.0),
        E(1.6) + E(0.2) + E(1.5),
        E(1.8) + E(0.2) + E(1.6),
        E(0.0) + E(1.5) + E(1.6),
    ]
    pos = [E(1.8), E(1.5), E(1.8), E(1.5)]

    def loss(*args, **kwargs):
        return false_negative_loss(logits, targets, HAND_TEMPERATURE, *args, **kwargs).item()

    # batch, α = 1: rows 0 and 2 move E(1.6) into the positive; rows 1 and 3 unchanged.
    calibrated = [pos[0] + E(1.6), pos[1], pos[2] + E(1.6), pos[3]]
    expected = -sum(math.log(p / d) for p, d in zip(calibrated, totals)) / 4
    assert loss(0.7, scope="batch") == pytest.approx(expected, rel=1e-12)
    # by hand: rows 0..3 give log(12.0026/11.0026) + log(10.6561/4.4817) + log(12.2240/11.0026)
    # + log(10.4347/4.4817) = 0.0870 + 0.8662 + 0.1053 + 0.8451, mean 0.4759
    assert expected == pytest.approx(0.4759, abs=1e-4)

    # anchor, α = 0.5, positive excluded: every row moves half of its pick (E(1.6) in all four rows).
    negatives = [t - p for t, p in zip(totals, pos)]
    calibrated = [p + 0.5 * E(1.6) for p in pos]
    remaining = [n - 0.5 * E(1.6) for n in negatives]
    expected = -sum(math.log(p / n) for p, n in zip(calibrated, remaining)) / 4
    assert loss(0.7, 0.5, "anchor", include_positive_in_denominator=False) == pytest.approx(
        expected, rel=1e-12
    )

    # full matrix, gate 0.85: nothing accepted, the plain NT-Xent value.
    plain = -sum(math.log(p / d) for p, d in zip(pos, totals)) / 4
    assert loss(0.85, scope="batch", upper_triangle=False) == pytest.approx(plain, rel=1e-12)


# --- 4. gate semantics ---------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "anchor"])
def test_gate_accepts_iff_positive_cosine_reaches_threshold(scope):
    """Two InfoNCE rows, identical except for the positive cosine: threshold + 1e-4 and − 1e-4.

    Row 1's negative is a hair closer to its positive, so the batch-scope global arg-min is row 1;
    it is gated out and, code-faithfully, nothing else is accepted."""
    temperature, threshold = 0.1, 0.9
    cosines = torch.tensor(
        [[threshold + 1e-4, threshold - 0.05, 0.1], [threshold - 1e-4, threshold - 0.05, 0.1]],
        dtype=torch.float64,
    )
    logits, targets = cosines / temperature, torch.zeros(2, dtype=torch.long)
    pairs = _pairs(select_false_negatives(logits, targets, temperature, threshold, scope))
    assert pairs == ([(0, 1)] if scope == "anchor" else [])
    # Lowering the threshold below row 1's cosine lets row 1 through as well.
    pairs = _pairs(select_false_negatives(logits, targets, temperature, threshold - 2e-4, scope))
    assert pairs == ([(0, 1), (1, 1)] if scope == "anchor" else [(1, 1)])


def test_gate_is_inclusive():
    """temperature · L_pos == threshold exactly (τ = 0.5, all values exact in binary) is accepted."""
    logits = torch.tensor([[1.5, 1.0, -1.0]], dtype=torch.float64)  # positive cosine 0.75
    targets = torch.zeros(1, dtype=torch.long)
    assert _pairs(select_false_negatives(logits, targets, 0.5, 0.75)) == [(0, 1)]
    assert select_false_negatives(logits, targets, 0.5, 0.75 + 1e-12).shape == (0, 2)
    pos, neg = E(1.5) + E(1.0), E(-1.0)
    assert false_negative_loss(logits, targets, 0.5, 0.75).item() == pytest.approx(
        -math.log(pos / (pos + neg))
    )


# --- 5. gradients and precision ------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("include_positive", [True, False])
def test_gradients_flow_through_calibration(scope, include_positive):
    torch.manual_seed(8)
    z1 = torch.randn(6, 16, requires_grad=True)
    z2 = torch.randn(6, 16, requires_grad=True)
    logits, targets = nt_xent_logits(z1, z2, 0.1)
    loss = false_negative_loss(
        logits, targets, 0.1, -1.0, 0.5, scope, include_positive_in_denominator=include_positive
    )
    g1, g2 = torch.autograd.grad(loss, [z1, z2])
    assert torch.isfinite(loss) and torch.isfinite(g1).all() and torch.isfinite(g2).all()
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0
    plain = nt_xent(z1, z2, 0.1, include_positive_in_denominator=include_positive)
    assert not torch.allclose(torch.autograd.grad(plain, z1)[0], g1)


@pytest.mark.parametrize("scope", ["batch", "anchor"])
@pytest.mark.parametrize("confidence", [1.0, 0.5])
@pytest.mark.parametrize("include_positive", [True, False])
def test_gradcheck_through_calibration(scope, confidence, include_positive):
    """The analytic gradient through Pos and Neg matches finite differences on the embeddings (random,
    so no tie sits at the selection boundary and the picks stay fixed under the perturbation)."""
    z1, z2, logits, targets = _nt_xent_case(11, batch=4, dim=6, temperature=0.2)
    assert select_false_negatives(logits, targets, 0.2, -1.0, scope).shape[0] >= 1

    def fn(a, b):
        logits, targets = nt_xent_logits(a, b, 0.2)
        return false_negative_loss(logits, targets, 0.2, -1.0, confidence, scope, True, include_positive)

    inputs = (z1.clone().requires_grad_(True), z2.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-7, atol=1e-7)


def test_bf16_under_autocast_matches_float32():
    torch.manual_seed(9)
    layer = torch.nn.Linear(12, 8)
    x1, x2 = torch.randn(6, 12), torch.randn(6, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z1, z2 = layer(x1), layer(x2)
        assert z1.dtype == torch.bfloat16
        logits, targets = nt_xent_logits(z1, z2, 0.1)
        results = {
            scope: (
                false_negative_loss(logits, targets, 0.1, -1.0, 0.5, scope),
                false_negative_loss(logits.bfloat16(), targets, 0.1, -1.0, 0.5, scope),
            )
            for scope in ("batch", "anchor")
        }
    ref_logits, _ = nt_xent_logits(z1.float(), z2.float(), 0.1)
    for scope, (loss, from_bf16_logits) in results.items():
        exact = false_negative_loss(ref_logits, targets, 0.1, -1.0, 0.5, scope)
        assert loss.dtype == torch.float32 and from_bf16_logits.dtype == torch.float32
        assert_close(loss, exact, rtol=1e-6, atol=1e-6)
        assert_close(
            from_bf16_logits, false_negative_loss(logits.bfloat16().float(), targets, 0.1, -1.0, 0.5, scope)
        )
        assert_close(from_bf16_logits, exact, rtol=2e-2, atol=2e-2)


def test_small_temperature_does_not_overflow():
    """τ = 0.005: exp(L) up to e^200 would overflow float32; selection and loss stay finite."""
    _, _, logits, targets = _nt_xent_case(10, temperature=0.005, dtype=torch.float32)
    for scope in ("batch", "anchor"):
        assert select_false_negatives(logits, targets, 0.005, -1.0, scope).shape[0] >= 1
        assert torch.isfinite(false_negative_loss(logits, targets, 0.005, -1.0, 0.5, scope))


# --- 6. settings and shapes ----------------------------------------------------------------------


def test_bad_settings_raise():
    logits, targets = _hand_logits()
    with pytest.raises(ValueError, match="scope"):
        false_negative_loss(logits, targets, 0.5, scope="global")
    with pytest.raises(ValueError, match="scope"):
        select_false_negatives(logits, targets, 0.5, scope="row")
    for confidence in (0.0, -0.5, 1.5, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            false_negative_loss(logits, targets, 0.5, confidence=confidence)
    with pytest.raises(ValueError, match="temperature"):
        false_negative_loss(logits, targets, 0.0)
    with pytest.raises(ValueError, match="threshold"):
        false_negative_loss(logits, targets, 0.5, threshold=float("nan"))
    with pytest.raises(ValueError, match="targets"):
        false_negative_loss(logits, targets[:3], 0.5)
    with pytest.raises(ValueError, match="targets"):
        false_negative_loss(logits, torch.tensor([2, 3, 0, 4]), 0.5)
    with pytest.raises(ValueError, match="logits"):
        false_negative_loss(logits[0], targets, 0.5)
    with pytest.raises(ValueError, match="confidence"):
        FalseNegativeSettings(confidence=0.0)
    with pytest.raises(ValueError, match="scope"):
        FalseNegativeSettings(scope="all")


def test_settings_dataclass_delegates():
    logits, targets = _hand_logits()
    settings = FalseNegativeSettings(threshold=0.7, confidence=0.5, scope="anchor")
    assert_close(
        settings.loss(logits, targets, HAND_TEMPERATURE, include_positive_in_denominator=False),
        false_negative_loss(logits, targets, HAND_TEMPERATURE, 0.7, 0.5, "anchor", True, False),
    )
    assert _pairs(settings.select(logits, targets, HAND_TEMPERATURE)) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    with pytest.raises(AttributeError):
        settings.scope = "batch"  # frozen
