"""The rest of the fault matrix through the real `rsssl-pretrain` entry point: non-finite float
pixels, files that cannot be read midway through a folder and checkpoints of another rsssl
version. Each fault either trains correctly or fails naming the fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import rsssl
from rsssl.cli.checkpoints import CHECKPOINT_FORMAT
from rsssl.eval.suite import git_commit
from tests.cli.test_pretrain_errors import SYNTHETIC, failing, run_cli, write_tif

GEOTIFF = ["data.tile_size=32", "data.batch_size=4", "trainer.max_steps=2", "method=simclr"]


def _run_dir(tmp_path: Path) -> Path:
    (summary,) = (tmp_path / "runs").glob("*/*/summary.json")
    return summary.parent


def _train_losses(run_dir: Path) -> list[float]:
    with (run_dir / "metrics.csv").open() as file:
        return [float(row["train/loss_step"]) for row in csv.DictReader(file) if row.get("train/loss_step")]


def test_non_finite_float_pixels_are_no_data_and_never_reach_the_network(tmp_path, monkeypatch):
    """Float reflectance with a NaN collar and a stray Inf: both are no data, and the tiles kept
    (at least 90 % valid) carry them as the band mean, so the loss stays finite."""
    folder = tmp_path / "reflectance"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = rng.random((3, 96, 96)).astype(np.float32)
        pixels[:, :, :2] = np.nan  # a collar inside every tile of the first column
        pixels[1, 50, 50] = np.inf
        pixels[0, 70, 40] = -np.inf
        write_tif(folder / f"{name}.tif", pixels)
    run_cli(["data=geotiff", f"data.root={folder}", *GEOTIFF], tmp_path, monkeypatch)
    losses = _train_losses(_run_dir(tmp_path))
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert json.loads((_run_dir(tmp_path) / "summary.json").read_text())["steps"] == 2


def _folder_with_a_truncated_scene(root: Path) -> Path:
    """Four 96 px scenes; the third is cut in half (its header reads, its pixels do not)."""
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a", "b", "c", "d"):
        write_tif(root / f"{name}.tif", rng.integers(1, 4000, (3, 96, 96)).astype(np.uint16))
    data = (root / "c.tif").read_bytes()
    (root / "c.tif").write_bytes(data[: len(data) // 2])
    return root


def test_a_truncated_file_midway_through_a_folder_fails_fast_naming_it(tmp_path, monkeypatch, capsys):
    root = _folder_with_a_truncated_scene(tmp_path / "tifs")
    err = failing(["data=geotiff", f"data.root={root}", *GEOTIFF], tmp_path, monkeypatch, capsys)
    assert "c.tif failed" in err and "truncated or corrupt" in err and "data.unreadable=skip" in err
    assert not list((tmp_path / "runs").glob("**/last.ckpt")), "it failed after training began"


def test_skipping_unreadable_files_trains_on_the_others_and_says_how_many(tmp_path, monkeypatch):
    root = _folder_with_a_truncated_scene(tmp_path / "tifs")
    run_cli(["data=geotiff", f"data.root={root}", "data.unreadable=skip", *GEOTIFF], tmp_path, monkeypatch)
    log = (_run_dir(tmp_path) / "pretrain.log").read_text()
    assert "data.unreadable=skip: skipped 1 of 4 scenes that cannot be read" in log and "c.tif" in log
    assert np.isfinite(_train_losses(_run_dir(tmp_path))).all()


@pytest.fixture(scope="module")
def short_run_checkpoint(tmp_path_factory) -> Path:
    """The last.ckpt of a 2-step MoCo run, made once for the tests below (each copies it)."""
    folder = tmp_path_factory.mktemp("short_run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_cli([*SYNTHETIC, "method=moco", "trainer.max_steps=2"], folder, monkeypatch)
    (checkpoint,) = (folder / "runs").glob("*/*/last.ckpt")
    return checkpoint


def _rewritten(source: Path, target: Path, change) -> Path:
    """`source` with `change` applied to its content, saved as `target`."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, target)
    return target


def test_a_checkpoint_records_the_rsssl_that_wrote_it(short_run_checkpoint):
    checkpoint = torch.load(short_run_checkpoint, weights_only=True)
    assert checkpoint["rsssl"] == {
        "version": rsssl.__version__,
        "format": CHECKPOINT_FORMAT,
        "git_commit": git_commit(),
    }


def test_a_checkpoint_of_an_older_rsssl_that_no_longer_fits_says_so(
    short_run_checkpoint, tmp_path, monkeypatch, capsys
):
    """An older rsssl's checkpoint (no stamp; a buffer under an older name): resuming it names the
    version gap and the two ways out, before anything trains."""

    def older(checkpoint: dict) -> None:
        del checkpoint["rsssl"]
        state = checkpoint["state_dict"]
        state["queue_old_name"] = state.pop("queue")

    path = _rewritten(short_run_checkpoint, tmp_path / "older.ckpt", older)
    err = failing(
        [*SYNTHETIC, "method=moco", "trainer.max_steps=4", f"resume={path}"], tmp_path, monkeypatch, capsys
    )
    assert "written by an rsssl older than its checkpoints' version stamp" in err
    assert f"this is rsssl {rsssl.__version__}" in err
    assert "queue missing from the checkpoint" in err and "queue_old_name only in the checkpoint" in err
    assert "with the rsssl that wrote it" in err and "resume=false" in err


def test_a_checkpoint_of_a_newer_rsssl_asks_for_an_upgrade(
    short_run_checkpoint, tmp_path, monkeypatch, capsys
):
    def newer(checkpoint: dict) -> None:
        checkpoint["rsssl"] = {"version": "9.0.0", "format": CHECKPOINT_FORMAT + 1, "git_commit": "abc1234"}

    path = _rewritten(short_run_checkpoint, tmp_path / "newer.ckpt", newer)
    err = failing(
        [*SYNTHETIC, "method=moco", "trainer.max_steps=4", f"resume={path}"], tmp_path, monkeypatch, capsys
    )
    assert "written by rsssl 9.0.0 (checkpoint format 2, commit abc1234)" in err
    assert f"reads checkpoint formats up to {CHECKPOINT_FORMAT}" in err and "upgrade rsssl" in err


def test_an_unstamped_checkpoint_that_fits_resumes(short_run_checkpoint, tmp_path, monkeypatch):
    path = _rewritten(short_run_checkpoint, tmp_path / "unstamped.ckpt", lambda c: c.pop("rsssl"))
    run_cli([*SYNTHETIC, "method=moco", "trainer.max_steps=4", f"resume={path}"], tmp_path, monkeypatch)
    resumed = max((tmp_path / "runs").glob("*/*/last.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(resumed, weights_only=True)["global_step"] == 4
