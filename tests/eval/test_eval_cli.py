"""rsssl-eval and +eval on rsssl-pretrain, end to end: rows, baselines, resume, bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rsssl.cli import evaluate, pretrain
from rsssl.models.backbones import create_backbone
from rsssl.models.export import save_encoder
from rsssl.results.store import read_rows
from tests.eval.test_band_checks import eval_set_from_config

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_SYNTHETIC = ["data=synthetic", "data.source.size=256", "data.source.num_scenes=4", "data.num_bands=3"]
QUICK_CLASSIFICATION = [
    "eval=classification",
    "eval.classification.budgets=[5,1000]",
    "eval.classification.seeds=[0,1]",
    "eval.classification.finetune.steps=2",
    "eval.classification.finetune.batch_size=8",
]


def export_tiny(folder: Path, bands: int = 3) -> Path:
    torch.manual_seed(0)
    meta = {
        "timm_name": "test_resnet",
        "in_chans": bands,
        "bands": ["red", "green", "blue", "nir"][:bands],
        "mean": [1000.0] * bands,
        "std": [500.0] * bands,
        "method": "moco",
        "data": "synthetic",
        "run_dir": str(folder),
    }
    return save_encoder(create_backbone("test_resnet", bands), folder, meta)


def reference_image_stats_knn_oa(data_overrides: list[str]) -> float:
    """OA of a plain-loop kNN (cosine, top 20, votes exp(sim / 0.07)) on per-band statistics
    (mean, std, percentiles 5/25/50/75/95) computed with numpy, on the set the config builds."""
    dataset = eval_set_from_config("classification", data_overrides)

    def stats(images):
        x = images.astype(np.float64).reshape(*images.shape[:2], -1)
        parts = [x.mean(2), x.std(2), *np.moveaxis(np.percentile(x, [5, 25, 50, 75, 95], axis=2), 0, 0)]
        return np.stack(parts, axis=2).reshape(len(images), -1)

    train, test = stats(dataset.train.images), stats(dataset.test.images)
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    test /= np.linalg.norm(test, axis=1, keepdims=True)
    labels, correct = dataset.train.targets, 0
    for sample, target in zip(test, dataset.test.targets, strict=True):
        similarity = train @ sample
        top = np.argsort(-similarity)[:20]
        votes = np.zeros(len(dataset.class_names))
        np.add.at(votes, labels[top], np.exp(similarity[top] / 0.07))
        correct += int(votes.argmax() == target)
    return correct / len(test)


def run(module, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["rsssl", *argv])
    module.main()


def test_classification_rows_baselines_and_resume(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    results = tmp_path / "results.csv"
    argv = [
        f"encoder={weights}",
        *SMALL_SYNTHETIC,
        *QUICK_CLASSIFICATION,
        f"results={results}",
        "features_cache_dir=null",
    ]
    run(evaluate, argv, monkeypatch)
    rows = read_rows(results)
    methods = {r.method for r in rows}
    assert methods == {"moco", "random_init", "image_stats"}
    protocols = {(r.method, r.protocol) for r in rows}
    assert ("moco", "finetune") in protocols and ("image_stats", "linear") in protocols
    assert ("image_stats", "finetune") not in protocols  # no encoder to fine-tune
    assert {r.budget for r in rows} == {"5/class", "1000/class"}
    assert {r.seed for r in rows} == {0, 1}
    counts = {r.value for r in rows if r.metric == "train_count" and r.budget == "5/class"}
    assert counts == {30.0}  # exactly 5 per class, 6 classes
    big = [r.value for r in rows if r.metric == "train_count" and r.budget == "1000/class"]
    assert big and all(v < 6000 for v in big)  # a budget larger than the classes uses what exists
    assert "fewer than the 1000 per class" in capsys.readouterr().out
    whole = {
        (r.seed, r.metric): r.value
        for r in rows
        if r.method == "image_stats" and r.protocol == "knn" and r.budget == "1000/class"
    }
    for metric in ("oa", "aa", "kappa", "f1_macro"):  # the whole training set: every seed selects it
        assert whole[0, metric] == whole[1, metric]
    assert whole[0, "oa"] == pytest.approx(reference_image_stats_knn_oa(SMALL_SYNTHETIC), abs=1e-12)
    before = results.read_text()
    run(evaluate, argv, monkeypatch)  # a re-run skips every unit already in the store
    assert results.read_text() == before


def test_segmentation_on_real_tree_crowns(data_dir, tmp_path, monkeypatch):
    weights = export_tiny(tmp_path / "enc")
    results = tmp_path / "results.csv"
    run(
        evaluate,
        [
            f"encoder={weights}",
            "eval=segmentation",
            "data=npz_segmentation",
            f"data.path={data_dir / 'deepforest_treecrowns_dev.npz'}",
            "eval.segmentation.fractions=[1.0]",
            "eval.segmentation.seeds=[0]",
            "eval.segmentation.steps=2",
            "eval.segmentation.batch_size=2",
            "eval.segmentation.modes=[frozen,finetune]",
            f"results={results}",
            "features_cache_dir=null",
        ],
        monkeypatch,
    )
    rows = read_rows(results)
    assert {r.eval_data for r in rows} == {"deepforest_treecrowns_dev"}
    assert {r.protocol for r in rows} == {"segmentation_frozen", "segmentation_finetune"}
    assert {"oa", "miou", "kappa"} <= {r.metric for r in rows}
    assert {r.method for r in rows} == {"moco", "random_init"}  # image statistics: scene-level only


def failing(module, argv, monkeypatch, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        run(module, argv, monkeypatch)
    assert info.value.code != 0
    return capsys.readouterr().err


def test_missing_encoder(tmp_path, monkeypatch, capsys):
    err = failing(
        evaluate,
        [f"encoder={tmp_path / 'nope.safetensors'}", f"results={tmp_path / 'r.csv'}"],
        monkeypatch,
        capsys,
    )
    assert "does not exist" in err and "encoder.safetensors" in err
    assert not (tmp_path / "r.csv").exists()


def test_band_count_mismatch(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc", bands=4)
    err = failing(
        evaluate,
        [f"encoder={weights}", *SMALL_SYNTHETIC, f"results={tmp_path / 'r.csv'}"],
        monkeypatch,
        capsys,
    )
    assert "trained on 4 bands" in err and "has 3" in err


def test_data_without_the_task(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    err = failing(
        evaluate,
        [
            f"encoder={weights}",
            "eval=classification",
            "data=npz_segmentation",
            "data.path=x.npz",
            f"results={tmp_path / 'r.csv'}",
        ],
        monkeypatch,
        capsys,
    )
    assert "no classification evaluation set" in err


def test_pretrain_with_eval_writes_rows_and_leaderboard(tmp_path, monkeypatch):
    results, board = tmp_path / "results.csv", tmp_path / "board"
    run(
        pretrain,
        [
            "method=simclr",
            "backbone=tiny",
            "trainer=debug",
            "+trainer.val_check_interval=2",
            *SMALL_SYNTHETIC,
            "data.batch_size=16",
            "data.num_workers=0",
            "data.source.val_scenes=1",
            f"runs_dir={tmp_path / 'runs'}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
            "+eval=classification",
            "eval.classification.protocols=[knn,linear]",
            "eval.classification.budgets=[5]",
            "eval.classification.seeds=[0]",
            f"results={results}",
            f"leaderboard_dir={board}",
            "features_cache_dir=null",
        ],
        monkeypatch,
    )
    rows = read_rows(results)
    online = [r for r in rows if r.protocol == "online_linear"]
    assert len(online) == 1 and online[0].method == "simclr"
    assert {r.method for r in rows} == {"simclr", "random_init", "image_stats"}
    assert "online probe during pretraining" in (board / "LEADERBOARD.md").read_text()
