"""Multi-stage pretraining (a learning path): stage k starts from stage k−1 by value (the whole
model and the optimiser state for the same method, the encoder otherwise), every stage is exported
and evaluated on the last stage's sets, a path's stages hash without their seed, and the general
stage reads a folder of ordinary pictures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import rsssl.cli.pretrain as pretrain
import rsssl.cli.stages as stages
from rsssl.data.sample_pictures import copy_sample_pictures
from rsssl.results.store import read_rows

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = ["backbone=tiny", "trainer=debug", "data.num_workers=0", "data.batch_size=8"]
RGB_SYNTHETIC = ["data=synthetic", "data.num_bands=3", "data.source.size=256", "data.source.num_scenes=4",
                 "data.source.val_scenes=1"]  # fmt: skip
QUICK_EVAL = ["+eval=classification", "eval.classification.protocols=[knn]", "eval.baselines=false",
              "eval.classification.budgets=[5]", "eval.classification.seeds=[0]"]  # fmt: skip


def path_overrides(first: list[str], second: list[str]) -> str:
    """A `stages=` override of two stages (Hydra's list syntax)."""

    def stage(name: str, overrides: list[str]) -> str:
        return "{name:" + name + ",overrides:[" + ",".join(f"'{o}'" for o in overrides) + "]}"

    return f"stages=[{stage('general', first)},{stage('remote_sensing', second)}]"


def run_path(
    tmp_path: Path, monkeypatch, first: list[str], second: list[str], *more: str, evaluate: bool = True
) -> Path:
    where = [
        f"runs_dir={tmp_path / 'runs'}",
        f"results={tmp_path / 'r.csv'}",
        f"data.stats_cache_dir={tmp_path}/c",
    ]
    argv = [
        "rsssl-pretrain",
        *TINY,
        *(QUICK_EVAL if evaluate else []),
        *where,
        f"leaderboard_dir={tmp_path}/b",
    ]
    monkeypatch.setattr(sys, "argv", [*argv, path_overrides(first, second), *more])
    pretrain.main()
    (record,) = (tmp_path / "runs").glob("*/*/stages.yaml")
    return record.parent


@pytest.fixture
def pictures(tmp_path) -> Path:
    copy_sample_pictures(tmp_path / "pictures")
    return tmp_path / "pictures"


def test_the_same_method_continues_its_whole_model_and_optimiser(tmp_path, monkeypatch, pictures):
    loaded, carried = {}, {}
    original_start, original_carry = stages.start_from, stages.OptimizerStateCarry.on_train_start

    def recording_start(method, previous, whole):
        original_start(method, previous, whole)
        loaded["state"] = {k: v.clone() for k, v in method.state_dict().items()}
        loaded["whole"] = whole

    def recording_carry(self, trainer, pl_module):
        original_carry(self, trainer, pl_module)
        carried["state"] = {
            i: {k: v.clone() for k, v in s.items()}
            for i, s in trainer.optimizers[0].state_dict()["state"].items()
        }

    monkeypatch.setattr(pretrain, "start_from", recording_start)
    monkeypatch.setattr(stages.OptimizerStateCarry, "on_train_start", recording_carry)
    general = ["data=photos", f"data.root={pictures}", "data.tile_size=32"]
    eight_bit = [*RGB_SYNTHETIC, "+data.source.dtype=uint8", "+data.eval_sets.classification.dtype=uint8"]
    path = run_path(tmp_path, monkeypatch, general, eight_bit, "method=moco")
    first = torch.load(path / "stage1-general" / "last.ckpt", map_location="cpu", weights_only=False)
    assert loaded["whole"]
    for key, value in first["state_dict"].items():  # encoder, heads, key encoder and queue, by value
        if not key.startswith("probe."):
            torch.testing.assert_close(loaded["state"][key], value, rtol=0, atol=0, msg=key)
    assert any(k.startswith("queue") for k in first["state_dict"]) and carried["state"]
    for index, state in first["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(carried["state"][index][name], value, rtol=0, atol=0)
    record = json.loads(json.dumps(__import__("yaml").safe_load((path / "stages.yaml").read_text())))
    assert record["stages"] == ["stage1-general", "stage2-remote_sensing"]
    rows = read_rows(tmp_path / "r.csv")
    by_stage = {r.config_hash for r in rows if r.protocol == "knn"}
    assert set(record["config_hashes"]) == by_stage and len(by_stage) == 2  # both stages evaluated
    assert {r.eval_data for r in rows if r.protocol == "knn"} == {"synthetic"}  # on the last stage's set
    for stage in ("stage1-general", "stage2-remote_sensing"):
        assert (path / stage / "encoder.safetensors").exists()


def test_another_method_starts_from_the_encoder_alone(tmp_path, monkeypatch):
    loaded = {}
    original_start = stages.start_from

    def recording_start(method, previous, whole):
        original_start(method, previous, whole)
        loaded["backbone"] = {k: v.clone() for k, v in method.backbone.state_dict().items()}
        loaded["whole"] = whole

    monkeypatch.setattr(pretrain, "start_from", recording_start)
    path = run_path(tmp_path, monkeypatch, ["method=simclr", *RGB_SYNTHETIC], ["method=moco", *RGB_SYNTHETIC])
    exported = load_file(str(path / "stage1-general" / "encoder.safetensors"))
    assert not loaded["whole"] and exported.keys() == loaded["backbone"].keys()
    for key, value in exported.items():
        torch.testing.assert_close(loaded["backbone"][key], value, rtol=0, atol=0, msg=key)


def test_a_paths_stages_hash_without_their_seed(tmp_path, monkeypatch):
    first, second = ["method=simclr", *RGB_SYNTHETIC], ["method=moco", *RGB_SYNTHETIC]
    hashes = []
    for seed in (0, 1):
        path = run_path(tmp_path / str(seed), monkeypatch, first, second, f"seed={seed}")
        hashes.append(__import__("yaml").safe_load((path / "stages.yaml").read_text())["config_hashes"])
    assert hashes[0] == hashes[1] and hashes[0][0] != hashes[0][1]


def test_stages_of_other_band_counts_are_refused(tmp_path, monkeypatch, capsys):
    four_bands = ["method=moco", "data=synthetic", "data.source.size=256", "data.source.num_scenes=4"]
    with pytest.raises(SystemExit):
        run_path(tmp_path, monkeypatch, ["method=simclr", *RGB_SYNTHETIC], four_bands, evaluate=False)
    assert "pretrained an encoder on 3 bands, the next stage's data has 4" in capsys.readouterr().err


def test_a_path_refuses_resume(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        run_path(tmp_path, monkeypatch, RGB_SYNTHETIC, RGB_SYNTHETIC, "resume=true", evaluate=False)
    assert "resume= does not apply to a learning path" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("*/*/stage1-*/last.ckpt"))  # nothing trained
