"""rsssl-eval and +eval on rsssl-pretrain, end to end: rows, baselines, resume, bad input."""

from __future__ import annotations

import errno
import os
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


def export_tiny(folder: Path, bands: int = 3, mean: float = 1000.0, std: float = 500.0) -> Path:
    """A tiny encoder whose pixel statistics are those of synthetic reflectance (uint8 RGB: mean 130)."""
    torch.manual_seed(0)
    meta = {
        "timm_name": "test_resnet",
        "in_chans": bands,
        "bands": ["red", "green", "blue", "nir"][:bands],
        "mean": [mean] * bands,
        "std": [std] * bands,
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
    assert methods == {"moco", "random_init", "image_stats", "supervised"}
    protocols = {(r.method, r.protocol) for r in rows}
    assert ("moco", "finetune") in protocols and ("image_stats", "linear") in protocols
    assert ("image_stats", "finetune") not in protocols  # no encoder to fine-tune
    assert {p for m, p in protocols if m == "supervised"} == {"finetune"}  # trained from scratch only
    assert {r.budget for r in rows} == {"5/class", "1000/class"}
    assert {r.seed for r in rows} == {0, 1}
    counts = {r.value for r in rows if r.metric == "train_count" and r.budget == "5/class"}
    assert counts == {40.0}  # exactly 5 per class, 8 classes
    big = [r.value for r in rows if r.metric == "train_count" and r.budget == "1000/class"]
    assert big and all(v < 8000 for v in big)  # a budget larger than the classes uses what exists
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


def test_a_full_disk_stops_the_evaluation_with_a_message_and_keeps_the_rows_stored(
    tmp_path, monkeypatch, capsys
):
    """kNN rows of seed 0 are stored; the disk fills before seed 1's: the command stops with the
    store's message (no traceback), and no part of the failed append is in the file."""
    weights = export_tiny(tmp_path / "enc")
    results = tmp_path / "results.csv"
    argv = [
        f"encoder={weights}",
        *SMALL_SYNTHETIC,
        "eval=classification",
        "eval.baselines=false",
        "eval.classification.protocols=[knn]",
        "eval.classification.budgets=[5]",
        "eval.classification.seeds=[0,1]",
        f"results={results}",
        "features_cache_dir=null",
    ]
    real_write, appends = os.write, []

    def fills_on_the_second_append(fd: int, data: bytes) -> int:
        appends.append(len(data))
        if len(appends) > 1:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("rsssl.results.store.os.write", fills_on_the_second_append)
    with pytest.raises(SystemExit) as exit_info:
        run(evaluate, argv, monkeypatch)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "none of its" in err and "Traceback" not in err
    assert {r.seed for r in read_rows(results)} == {0}
    assert results.read_text().endswith("\n")


def test_eval_supervised_false_drops_only_the_supervised_reference(tmp_path, monkeypatch):
    weights = export_tiny(tmp_path / "enc")
    results = tmp_path / "results.csv"
    argv = [
        f"encoder={weights}",
        *SMALL_SYNTHETIC,
        *QUICK_CLASSIFICATION,
        "eval.classification.budgets=[5]",
        "eval.classification.seeds=[0]",
        "eval.classification.protocols=[finetune]",
        "eval.supervised=false",
        f"results={results}",
        "features_cache_dir=null",
    ]
    run(evaluate, argv, monkeypatch)
    assert {r.method for r in read_rows(results)} == {"moco", "random_init"}


def test_segmentation_on_real_tree_crowns(data_dir, tmp_path, monkeypatch):
    weights = export_tiny(tmp_path / "enc", mean=130.0, std=50.0)  # an encoder of uint8 RGB
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
    assert {r.method for r in rows} == {"moco", "random_init", "supervised"}  # image statistics: scenes only
    assert {r.protocol for r in rows if r.method == "supervised"} == {"segmentation_finetune"}


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
    (log,) = (tmp_path / "runs").glob("*/*/pretrain.log")  # each evaluation's number, in the run's log
    said = [line.split("] - ", 1)[-1] for line in log.read_text().splitlines()]
    measured = [r for r in rows if r.metric == "oa" and r.protocol in ("knn", "linear")]
    assert len(measured) == 6  # simclr, random_init, image_stats x knn, linear
    for r in measured:
        assert said.count(f"{r.method} on {r.eval_data}: {r.protocol} 5/class seed 0: oa {r.value:.4f}") == 1


# --- what a new user gets wrong, refused with the fix (no traceback, nothing written) --------------
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def test_no_encoder_names_the_key_and_an_example(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = failing(evaluate, [f"results={tmp_path / 'r.csv'}"], monkeypatch, capsys)
    assert "encoder= is missing" in err
    assert "encoder.safetensors" in err and "run folder" in err
    assert "rsssl-eval encoder=runs/" in err and "eval=classification data=synthetic" in err
    assert "Traceback" not in err and "MissingMandatoryValue" not in err
    assert not (tmp_path / "r.csv").exists()


def test_no_encoder_offers_the_newest_export(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    export_tiny(tmp_path / "runs" / "moco_x" / "t1")
    err = failing(evaluate, ["encoder=null", f"results={tmp_path / 'r.csv'}"], monkeypatch, capsys)
    assert "rsssl-eval encoder=runs/moco_x/t1/encoder.safetensors" in err


@pytest.mark.parametrize("exported", [True, False])
def test_training_checkpoint_as_encoder(exported, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "runs" / "moco_x" / "t1"
    if exported:
        export_tiny(run_dir)
    else:
        (run_dir / ".hydra").mkdir(parents=True)
        (run_dir / ".hydra" / "overrides.yaml").write_text("- method=moco\n- data=synthetic\n")
    torch.save({"state_dict": {}, "global_step": 2}, run_dir / "last.ckpt")
    before = sorted(p.name for p in run_dir.iterdir())
    err = failing(
        evaluate,
        [f"encoder={run_dir / 'last.ckpt'}", f"results={tmp_path / 'r.csv'}"],
        monkeypatch,
        capsys,
    )
    assert "is a training checkpoint" in err and "different runs" not in err
    if exported:
        assert f"encoder={run_dir / 'encoder.safetensors'}" in err
    else:
        assert "has no encoder.safetensors" in err
        assert f"rsssl-pretrain method=moco data=synthetic resume={run_dir / 'last.ckpt'}" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before and not (tmp_path / "r.csv").exists()


def test_encoder_with_more_bands_than_the_data(tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    meta = {"timm_name": "test_resnet", "in_chans": 13, "bands": S2, "mean": [1000.0] * 13}
    meta.update(std=[500.0] * 13, method="moco", data="sentinel2", run_dir=str(tmp_path / "enc"))
    weights = save_encoder(create_backbone("test_resnet", 13), tmp_path / "enc", meta)
    err = failing(
        evaluate,
        [f"encoder={weights}", *SMALL_SYNTHETIC, f"results={tmp_path / 'r.csv'}"],
        monkeypatch,
        capsys,
    )
    assert "trained on 13 bands" in err and "has 3 (red, green, blue)" in err
    assert "cannot run on fewer bands than it was trained on" in err
    assert "data.bands" not in err and "select" not in err
    assert not (tmp_path / "r.csv").exists()


def test_suite_runs_the_tasks_the_data_has_and_says_which_it_skips(data_dir, tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc", mean=130.0, std=50.0)  # an encoder of uint8 RGB
    results = tmp_path / "results.csv"
    run(
        evaluate,
        [
            f"encoder={weights}",
            "eval=suite",
            "data=npz_segmentation",
            f"data.path={data_dir / 'deepforest_treecrowns_dev.npz'}",
            "eval.baselines=false",
            "eval.segmentation.fractions=[1.0]",
            "eval.segmentation.seeds=[0]",
            "eval.segmentation.steps=1",
            "eval.segmentation.batch_size=2",
            "eval.segmentation.modes=[frozen]",
            f"results={results}",
            "features_cache_dir=null",
        ],
        monkeypatch,
    )
    out = capsys.readouterr().out
    assert "data=npz_segmentation has no classification evaluation set" in out
    assert "(data configs with one: imagefolder, synthetic, torchgeo)" in out
    assert "skipping classification, running segmentation" in out and "eval.tasks=[segmentation]" in out
    assert {r.protocol for r in read_rows(results)} == {"segmentation_frozen"}


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
    assert "data=npz_segmentation has no classification evaluation set" in err
    assert "(data configs with one: imagefolder, synthetic, torchgeo)" in err
    assert "eval=segmentation" in err
    assert not (tmp_path / "r.csv").exists()


def test_data_without_any_eval_set(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    argv = [
        f"encoder={weights}",
        "eval=suite",
        "data=npz",
        "data.path=x.npz",
        f"results={tmp_path / 'r.csv'}",
    ]
    err = failing(evaluate, argv, monkeypatch, capsys)
    assert "data=npz has no labelled evaluation set" in err
    assert (
        "classification: imagefolder, synthetic, torchgeo; segmentation: npz_segmentation, synthetic" in err
    )


def test_unknown_eval_task_names_the_closest(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    argv = [f"encoder={weights}", "eval.tasks=[clasification]", f"results={tmp_path / 'r.csv'}"]
    err = failing(evaluate, argv, monkeypatch, capsys)
    assert "unknown task 'clasification' in eval.tasks" in err and "did you mean classification?" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.tilesize=16"], "unknown key data.tilesize: data=synthetic has no setting 'tilesize'"),
        (["+data.tilesize=16"], "did you mean data.tile_size? (data.tile_size=16)"),
        (["eval.classification.budget=[5]"], "did you mean eval.classification.budgets?"),
        (["+eval.classification.finetune.step=3"], "did you mean eval.classification.finetune.steps?"),
        (["eval=segmentation", "+eval.segmentation.decoder_chanels=8"], "eval.segmentation.decoder_channels"),
        (["+eval.classification.finetune.encoder_lr_factor=1"], "has no setting 'encoder_lr_factor'"),
        (["+eval.classification.supervised.step=3"], "did you mean eval.classification.supervised.steps?"),
        (["eval=segmentation", "+eval.segmentation.supervised.modes=[finetune]"], "has no setting 'modes'"),
    ],
)
def test_unknown_keys_are_refused_with_the_closest(overrides, message, tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    err = failing(
        evaluate, [f"encoder={weights}", *overrides, f"results={tmp_path / 'r.csv'}"], monkeypatch, capsys
    )
    assert message in err
    assert "To append to your config" not in err and "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


def test_settings_the_code_reads_are_accepted(tmp_path, monkeypatch, capsys):
    weights = export_tiny(tmp_path / "enc")
    argv = [
        f"encoder={weights}",
        "eval=suite",
        "+eval.classification.finetune.lr=0.01",  # run_finetune reads it; no eval config sets it
        "+eval.segmentation.decoder_channels=32",
        "eval.classification.supervised.steps=1000",  # the supervised reference's own recipe
        "+eval.classification.supervised.weight_decay=0.05",
        "+eval.segmentation.supervised.lr=0.01",
        "+eval.classification.finetune.seeds=[1]",  # the suite reads it: fine-tune at these label seeds
        "+eval.classification.supervised.budgets=[5]",
        "data.eval_sets.classification.test_scenes=1",  # synthetic_classification reads it
        "+eval.extra_sets.crowns={_target_:rsssl.eval.seg_data.npz_segmentation,path:x.npz}",
        "--cfg",
        "job",
    ]
    run(evaluate, argv, monkeypatch)
    out = capsys.readouterr().out
    assert "decoder_channels: 32" in out and "steps: 1000" in out and "weight_decay: 0.05" in out
    assert "seeds:\n      - 1" in out


def test_a_set_in_other_units_is_refused_by_the_cli_and_measured_only_when_allowed(
    data_dir, tmp_path, monkeypatch, capsys
):
    weights = export_tiny(
        tmp_path / "enc"
    )  # pretrained on uint16 reflectance (mean 1000); tree crowns are uint8
    argv = [
        f"encoder={weights}", "eval=segmentation", "data=npz_segmentation",
        f"data.path={data_dir / 'deepforest_treecrowns_dev.npz'}", "eval.baselines=false",
        "eval.segmentation.fractions=[1.0]", "eval.segmentation.seeds=[0]", "eval.segmentation.steps=1",
        "eval.segmentation.batch_size=2", "eval.segmentation.modes=[frozen]",
        f"results={tmp_path / 'results.csv'}", "features_cache_dir=null",
    ]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        run(evaluate, argv, monkeypatch)
    assert exit_info.value.code == 2
    assert (
        "pixel scale of evaluation set 'deepforest_treecrowns_dev': its band means are 0.14 times"
        in capsys.readouterr().err
    )
    assert read_rows(tmp_path / "results.csv") == []
    run(evaluate, [*argv, "eval.allow_other_units=true"], monkeypatch)
    assert {r.protocol for r in read_rows(tmp_path / "results.csv")} == {"segmentation_frozen"}
