"""The supervised reference: the encoder's architecture trained from its seeded random init on
each budget's labels only, under the fine-tune protocols, measured once per architecture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rsssl.eval.finetune as finetune_module
import rsssl.eval.segmentation as segmentation_module
from rsssl.eval.cls_data import synthetic_classification
from rsssl.eval.features import state_dict_digest
from rsssl.eval.finetune import METRICS as FINETUNE_METRICS
from rsssl.eval.suite import Suite, baseline_candidates
from rsssl.models.export import backbone_like
from rsssl.results.store import read_rows
from tests.eval.test_segmentation import block_set
from tests.helpers.encoders import TINY_META

pytestmark = pytest.mark.usefixtures("single_thread")

META = TINY_META
CLASSIFICATION = {
    "protocols": ["knn", "linear", "finetune"],
    "budgets": [2],
    "seeds": [0, 1],
    "finetune": {"steps": 2, "batch_size": 4},
}


@pytest.fixture(scope="module")
def dataset():
    return synthetic_classification(
        num_bands=3, num_classes=2, train_scenes=1, test_scenes=1, size=64, seed=0
    )[0]


def _by_method(meta: dict = META, seed: int = 0, **kwargs) -> dict:
    return {c.method: c for c in baseline_candidates(meta, seed, **kwargs)}


def _suite(results: Path, log=None, **classification) -> Suite:
    return Suite(results, classification={**CLASSIFICATION, **classification}, log=log or (lambda _: None))


@pytest.fixture
def trained(monkeypatch) -> list[dict]:
    """What every fine-tuning got: its initial weights' digest, encoder lr factor and label counts."""
    calls, train = [], finetune_module.finetune

    def spy(encoder, meta, images, labels, *args, **kwargs):
        calls.append(
            {
                "digest": state_dict_digest(encoder),
                "factor": kwargs["encoder_lr_factor"],
                "labels": np.bincount(labels).tolist(),
            }
        )
        return train(encoder, meta, images, labels, *args, **kwargs)

    monkeypatch.setattr(finetune_module, "finetune", spy)
    return calls


def test_baselines_include_the_supervised_reference_with_the_seeded_random_init():
    candidates = baseline_candidates(META, seed=1)
    assert [c.method for c in candidates] == ["random_init", "image_stats", "supervised"]
    supervised = candidates[2]
    assert supervised.checkpoint_hash == state_dict_digest(backbone_like(META, 1))[:16]
    assert supervised.checkpoint_hash == candidates[0].checkpoint_hash
    assert supervised.run_id == "baseline:supervised:test_resnet:3:synthetic:seed1"
    assert (supervised.pretrain_seed, supervised.backbone, supervised.from_scratch) == (
        1,
        "test_resnet",
        True,
    )
    assert not candidates[0].from_scratch
    assert [c.method for c in baseline_candidates(META, supervised=False)] == ["random_init", "image_stats"]


def test_supervised_rows_are_finetune_rows_in_the_finetune_columns(tmp_path, dataset):
    results = tmp_path / "results.csv"
    baselines = _by_method()
    _suite(results).evaluate([baselines["random_init"], baselines["supervised"]], [dataset])
    rows = read_rows(results)
    mine = [r for r in rows if r.method == "supervised"]
    assert {(r.protocol, r.budget) for r in mine} == {("finetune", "2/class")}  # no kNN / linear
    assert sorted((r.seed, r.metric) for r in mine) == sorted(
        (s, m) for s in (0, 1) for m in (*FINETUNE_METRICS, "train_count")
    )
    assert {r.value for r in mine if r.metric == "train_count"} == {4.0}  # 2 per class, 2 classes
    expected = state_dict_digest(backbone_like(META, 0))[:16]
    assert {(r.run_id, r.checkpoint_hash, r.pretrain_seed, r.backbone) for r in mine} == {
        ("baseline:supervised:test_resnet:3:synthetic:seed0", expected, 0, "test_resnet")
    }
    random_init = [r for r in rows if r.method == "random_init" and r.protocol == "finetune"]
    assert {r.eval_hash for r in mine} == {r.eval_hash for r in random_init}  # the same columns
    assert {r.config_hash for r in random_init} == {""}
    (recipe,) = {r.config_hash for r in mine}
    assert len(recipe) == 16  # its own training recipe, see test_a_changed_recipe_is_measured_again


def test_it_trains_its_seeded_init_on_the_budget_with_the_encoder_at_the_head_lr(tmp_path, dataset, trained):
    baselines = _by_method()
    _suite(tmp_path / "r.csv", seeds=[0]).evaluate(
        [baselines["random_init"], baselines["supervised"]], [dataset]
    )
    fresh = state_dict_digest(backbone_like(META, 0))
    assert trained == [
        {"digest": fresh, "factor": 0.1, "labels": [2, 2]},  # random_init: the fine-tune protocol
        {"digest": fresh, "factor": 1.0, "labels": [2, 2]},  # supervised: nothing pretrained to keep
    ]


def test_finetune_budgets_and_seeds_can_leave_encoders_frozen_and_train_only_the_reference(
    tmp_path, dataset, trained
):
    """`finetune.budgets: []` fine-tunes no encoder; the reference's own `budgets` and `seeds`
    train it at those only, while the frozen protocols keep every budget and seed."""
    baselines = _by_method()
    _suite(
        tmp_path / "r.csv",
        budgets=[2, 1.0],
        finetune={"steps": 2, "batch_size": 4, "budgets": []},
        supervised={"budgets": [1.0], "seeds": [1]},
    ).evaluate([baselines["random_init"], baselines["supervised"]], [dataset])
    rows = read_rows(tmp_path / "r.csv")
    assert {(r.method, r.budget, r.seed) for r in rows if r.protocol == "finetune"} == {
        ("supervised", "100%", 1)
    }
    assert {(r.budget, r.seed) for r in rows if r.method == "random_init" and r.protocol == "linear"} == {
        (b, s) for b in ("2/class", "100%") for s in (0, 1)
    }
    assert [t["factor"] for t in trained] == [1.0]


def test_a_second_encoder_of_the_same_architecture_skips_it(tmp_path, dataset, trained):
    results, lines = tmp_path / "results.csv", []
    first = _by_method(dict(META, method="moco", sha256="a" * 64))["supervised"]
    second = _by_method(dict(META, method="simclr", sha256="b" * 64))["supervised"]
    _suite(results, seeds=[0]).evaluate([first], [dataset])
    before = results.read_text()
    _suite(results, log=lines.append, seeds=[0]).evaluate([second], [dataset])
    assert results.read_text() == before and len(trained) == 1
    assert lines == ["evaluating supervised on synthetic (classification)"]


def test_a_changed_recipe_is_measured_again_and_a_default_is_not_a_change(tmp_path, dataset, trained):
    results, supervised = tmp_path / "results.csv", _by_method()["supervised"]
    _suite(results, seeds=[0]).evaluate([supervised], [dataset])
    _suite(results, seeds=[0], supervised={"encoder_lr_factor": 1.0}).evaluate([supervised], [dataset])
    assert len(trained) == 1  # 1.0 is the default: the same recipe
    _suite(results, seeds=[0], supervised={"steps": 3}).evaluate([supervised], [dataset])
    rows = [r for r in read_rows(results) if r.metric == "oa"]
    assert len(trained) == 2 and len({r.config_hash for r in rows}) == 2
    assert len({r.eval_hash for r in rows}) == 1  # still the fine-tune columns


def test_its_recipe_is_the_finetune_settings_overridden_by_its_own():
    suite = Suite(
        Path("unused.csv"),
        classification={"finetune": {"steps": 30, "budgets": [20]}, "supervised": {"lr": 3e-3}},
    )
    supervised, random_init = _by_method()["supervised"], _by_method()["random_init"]
    assert suite.recipe(supervised, "finetune") == {
        "steps": 30,
        "budgets": [20],
        "encoder_lr_factor": 1.0,
        "lr": 3e-3,
    }
    assert suite.recipe(random_init, "finetune") == {"steps": 30, "budgets": [20]}


def test_it_is_not_run_without_the_finetune_protocol_and_says_how_to_run_it(tmp_path, dataset, trained):
    results, lines = tmp_path / "results.csv", []
    _suite(results, log=lines.append, protocols=["knn", "linear"]).evaluate(
        [_by_method()["supervised"]], [dataset]
    )
    assert trained == [] and not read_rows(results)
    assert lines[-1] == (
        "supervised on synthetic: not trained, as eval.classification.protocols has no finetune; "
        "add it (with eval.classification.finetune.budgets=[] to fine-tune no encoder) for the reference"
    )


def test_segmentation_supervised_rows_are_segmentation_finetune_rows(tmp_path, monkeypatch):
    factors, train = [], segmentation_module.train_segmentation

    def spy(net, split, *args, **kwargs):
        factors.append((kwargs["encoder_lr_factor"], len(split)))
        return train(net, split, *args, **kwargs)

    monkeypatch.setattr(segmentation_module, "train_segmentation", spy)
    meta = dict(META, in_chans=2, bands=["a", "b"], mean=[130.0] * 2, std=[80.0] * 2)
    baselines = _by_method(meta)
    settings = {
        "modes": ["frozen", "finetune"],
        "fractions": [0.5],
        "seeds": [0],
        "steps": 1,
        "batch_size": 2,
    }
    results = tmp_path / "results.csv"
    Suite(results, segmentation=settings, log=lambda _: None).evaluate(
        [baselines["random_init"], baselines["supervised"]], [block_set(train=8, test=4)]
    )
    rows = read_rows(results)
    mine = [r for r in rows if r.method == "supervised"]
    assert {(r.protocol, r.budget, r.seed) for r in mine} == {("segmentation_finetune", "50%", 0)}
    assert {r.metric for r in mine} == {"oa", "miou", "kappa", "iou_c0", "iou_c1", "train_count"}
    assert {r.value for r in mine if r.metric == "train_count"} == {4.0}  # half of the 8 tiles
    fine = {r.eval_hash for r in rows if r.protocol == "segmentation_finetune"}
    assert len(fine) == 1  # random_init's and supervised's rows share the column
    # random_init frozen, random_init fine-tuned, supervised fine-tuned (from scratch: factor 1)
    assert factors == [(0.1, 4), (0.1, 4), (1.0, 4)]
