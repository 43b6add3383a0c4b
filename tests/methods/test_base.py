"""The base's schedules, LR scaling, collapse monitor and online probe, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from rsssl.methods.base import (
    StepOutput,
    adam_settings,
    cosine_ramp,
    embedding_std,
    scaled_lr,
    warmup_cosine,
)
from rsssl.methods.moco import MoCo
from tests.helpers.methods import tiny_method


def test_cosine_ramp_runs_from_start_to_end_along_half_a_cosine():
    assert cosine_ramp(0.9, 0.99, 0.0) == pytest.approx(0.9)
    assert cosine_ramp(0.9, 0.99, 0.5) == pytest.approx(0.945)  # halfway: the midpoint
    assert cosine_ramp(0.9, 0.99, 0.25) == pytest.approx(0.99 - 0.09 * (math.cos(math.pi / 4) + 1) / 2)
    assert cosine_ramp(0.9, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_ramp(0.9, 0.99, -1.0) == cosine_ramp(0.9, 0.99, 0.0)  # clipped to [0, 1]
    assert cosine_ramp(0.9, 0.99, 2.0) == cosine_ramp(0.9, 0.99, 1.0)


def test_warmup_cosine_rises_linearly_then_decays_to_zero():
    # 10 steps, 4 of warm-up: 1/4, 2/4, 3/4, 4/4, then cos over the remaining 6 steps
    factors = [warmup_cosine(step, 10, 4) for step in range(10)]
    assert factors[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    decay = [(math.cos(math.pi * k / 6) + 1) / 2 for k in range(6)]
    assert factors[4:] == pytest.approx(decay)
    assert warmup_cosine(10, 10, 4) == pytest.approx(0.0)
    assert [warmup_cosine(s, 4, 0) for s in range(4)] == pytest.approx(
        [1.0, 0.853553, 0.5, 0.146447], abs=1e-6
    )


def test_lr_scales_with_the_global_batch():
    assert scaled_lr(0.03, 256) == pytest.approx(0.03)
    assert scaled_lr(0.03, 64) == pytest.approx(0.0075)
    assert scaled_lr(0.03, 64 * 4 * 2) == pytest.approx(0.06)  # 4 processes x 2 accumulated batches


def test_adam_takes_its_betas_and_eps_from_the_settings_and_torchs_defaults_otherwise():
    assert adam_settings({"name": "adam"}) == {"betas": (0.9, 0.999), "eps": 1e-8}
    assert adam_settings({"betas": [0.9, 0.95], "eps": 1e-6}) == {"betas": (0.9, 0.95), "eps": 1e-6}


def test_embedding_std_is_one_for_orthogonal_embeddings_and_zero_when_collapsed():
    # the rows +-e_j of a 2-dim space: each coordinate of the normalised rows is (1, -1, 0, 0)
    # or (0, 0, 1, -1), sample std sqrt(2/3), times sqrt(2)
    rows = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    assert float(embedding_std(rows)) == pytest.approx(math.sqrt(2 / 3) * math.sqrt(2))
    collapsed = torch.tensor([[2.0, 1.0]]).repeat(8, 1)
    assert float(embedding_std(collapsed)) == pytest.approx(0.0, abs=1e-7)


def test_the_online_probe_never_trains_the_backbone():
    """Backbone gradients come from the pretext loss only: the probe sees detached features."""
    torch.manual_seed(0)
    moco = tiny_method(
        MoCo,
        num_classes=3,
        queue_size=16,
        proj_hidden_dim=8,
        proj_dim=4,
        batch_size=8,
        shuffle_bn=False,
    )

    def pretext_without_loss(batch: dict) -> StepOutput:  # features in the graph, a loss of zero
        features = moco.backbone(batch["image"])
        return StepOutput(loss=0.0 * features.sum(), features=features)

    moco.pretext_step = pretext_without_loss
    batch = {"image": torch.randn(8, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])}
    moco.training_step(batch, 0).backward()
    backbone_grads = [p.grad for p in moco.backbone.parameters()]
    assert all(g is None or not g.any() for g in backbone_grads), "the probe's gradient reached the backbone"
    assert moco.probe.weight.grad is not None and moco.probe.weight.grad.abs().sum() > 0
