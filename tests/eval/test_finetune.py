"""Fine-tuning protocol on a trivially separable set (the class is which band is bright)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

import rsssl.eval.finetune as finetune_module
from rsssl.eval.data import EvalDataset, EvalSplit
from rsssl.eval.finetune import run_finetune

pytestmark = pytest.mark.usefixtures("single_thread")

BANDS = ("b1", "b2", "b3", "b4")
META = {
    "timm_name": "test_resnet",
    "in_chans": 4,
    "bands": list(BANDS),
    "mean": [60.0] * 4,
    "std": [50.0] * 4,
}
ROW_KEYS = {"protocol", "budget", "seed", "metric", "value", "train_count", "warnings"}


def _split(per_class: int, rng: np.random.Generator) -> EvalSplit:
    labels = np.repeat(np.arange(4), per_class)
    images = rng.integers(0, 60, (len(labels), 4, 16, 16)).astype(np.uint8)
    images[np.arange(len(labels)), labels] += 120
    return EvalSplit(images, labels)


@pytest.fixture(scope="module")
def dataset() -> EvalDataset:
    rng = np.random.default_rng(0)
    return EvalDataset(
        "bright-band", "classification", BANDS, ("a", "b", "c", "d"), _split(20, rng), _split(10, rng)
    )


class Factory:
    """Makes test_resnet encoders and keeps them, so a test can inspect the trained weights."""

    def __init__(self) -> None:
        self.made: list[torch.nn.Module] = []

    def __call__(self) -> torch.nn.Module:
        self.made.append(timm.create_model("test_resnet", pretrained=False, in_chans=4, num_classes=0))
        return self.made[-1]


def test_finetune_learns_changes_the_encoder_and_uses_exactly_n_per_class(dataset, monkeypatch):
    seen_counts = []
    train = finetune_module.finetune

    def spy(encoder, meta, images, labels, *args, **kwargs):
        seen_counts.append(np.bincount(labels, minlength=4).tolist())
        before = {k: v.clone() for k, v in encoder.state_dict().items()}
        head = train(encoder, meta, images, labels, *args, **kwargs)
        after = encoder.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
        return head

    monkeypatch.setattr(finetune_module, "finetune", spy)
    factory = Factory()
    rows = run_finetune(factory, META, dataset, budgets=(5,), seeds=(0,), steps=60, batch_size=16)
    assert seen_counts == [[5, 5, 5, 5]]
    assert all(set(row) == ROW_KEYS for row in rows)
    assert [row["metric"] for row in rows] == ["oa", "aa", "kappa", "f1_macro"]
    values = {row["metric"]: row["value"] for row in rows}
    assert values["oa"] >= 0.9, values
    row = rows[0]
    assert (row["protocol"], row["budget"], row["seed"], row["train_count"], row["warnings"]) == (
        "finetune", "5/class", 0, 20, []
    )  # fmt: skip


def test_finetune_is_deterministic_and_records_a_short_budget(dataset):
    kwargs = dict(budgets=(1000,), seeds=(1,), steps=8, batch_size=16)
    rows = run_finetune(Factory(), META, dataset, **kwargs)
    assert rows[0]["budget"] == "1000/class" and rows[0]["train_count"] == 80
    assert len(rows[0]["warnings"]) == 4 and "fewer than the 1000 per class" in rows[0]["warnings"][0]
    assert run_finetune(Factory(), META, dataset, **kwargs) == rows
    state = torch.random.get_rng_state()
    run_finetune(Factory(), META, dataset, budgets=(1,), seeds=(0,), steps=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone


def test_tiny_batches_keep_batchnorm_statistics(dataset):
    factory = Factory()
    run_finetune(factory, META, dataset, budgets=(1,), seeds=(0,), steps=3)  # batch of 4 < MIN_BN_BATCH
    bn = next(m for m in factory.made[0].modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert int(bn.num_batches_tracked) == 0


def largest_move(before: dict, module: torch.nn.Module) -> float:
    return max(float((p.detach() - before[name]).abs().max()) for name, p in module.named_parameters())


@pytest.mark.parametrize("factor", [0.1, 1.0])
def test_one_step_moves_the_encoder_by_its_learning_rate(dataset, factor):
    """AdamW's first step moves a weight by lr * g / (|g| + eps), i.e. by lr wherever it has a
    gradient (weight decay 0; one step: warm-up factor 1): the encoder's largest move is lr * factor."""
    torch.manual_seed(0)
    encoder = Factory()()
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}
    finetune_module.finetune(
        encoder, META, dataset.train.images, dataset.train.targets, 4, BANDS,
        steps=1, batch_size=16, lr=1e-2, weight_decay=0.0, encoder_lr_factor=factor,
    )  # fmt: skip
    assert largest_move(before, encoder) == pytest.approx(1e-2 * factor, rel=1e-4)
