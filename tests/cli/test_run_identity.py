"""Which run is which: the run name carries the data's identity, `resume=true` continues only a run
of the same pretraining config and seed, and a checkpoint that does not fit fails with the fix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from tests.cli.test_pretrain_errors import failing, run_cli, write_tif

CONF = Path(CONF_DIR)
HASH = "[0-9a-f]{6}"


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="pretrain", overrides=list(overrides))


def _run_name(*overrides: str) -> str:
    return _cfg(*overrides).run_name


def tif_folder(folder: Path, bands: int, scenes: int = 2) -> Path:
    """`scenes` random uint16 GeoTIFFs of `bands` bands, 96 x 96 px (18 tiles of 32 px)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(bands)
    for number in range(scenes):
        write_tif(folder / f"scene{number}.tif", rng.integers(1, 4000, (bands, 96, 96), dtype=np.uint16))
    return folder


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    np.savez(tmp_path / "scene.npz", image=np.ones((3, 64, 64), np.uint8))
    return {
        "landsat8": tif_folder(tmp_path / "landsat8", bands=3, scenes=1),
        "sentinel2": tif_folder(tmp_path / "sentinel2", bands=4, scenes=1),
        "npz": tmp_path / "scene.npz",
    }


def test_run_name_names_the_data_source_and_file(files, tmp_path):
    assert re.fullmatch(
        f"moco_resnet18_geotiff-landsat8-{HASH}", _run_name(f"data.root={files['landsat8']}", "data=geotiff")
    )
    assert re.fullmatch(f"moco_resnet18_npz-scene-{HASH}", _run_name("data=npz", f"data.path={files['npz']}"))
    assert re.fullmatch(
        f"moco_resnet18_torchgeo_raster-sentinel2-{HASH}",
        _run_name("data=torchgeo_raster", f"data.paths={files['sentinel2']}"),
    )
    both = _run_name("data=geotiff", f"data.root=[{files['landsat8']},{files['sentinel2']}]")
    assert re.fullmatch(f"moco_resnet18_geotiff-landsat8\\+sentinel2-{HASH}", both)
    assert re.fullmatch(f"moco_resnet18_synthetic-{HASH}", _run_name())
    named = _run_name("data=geotiff", f"data.root={files['landsat8']}", "data.name=l8")
    assert re.fullmatch(f"moco_resnet18_l8-landsat8-{HASH}", named)


def test_run_name_changes_with_what_changes_the_pixels_only(files, tmp_path, monkeypatch):
    base = ["data=geotiff", f"data.root={files['landsat8']}"]
    name = _run_name(*base)
    for other in (
        f"data.root={files['sentinel2']}",
        "data.bands=[b1,b2]",
        "data.band_preset=landsat8",
        "data.tile_size=32",
        "data.nodata=0",
    ):
        assert _run_name(*base, other) != name, other
    for same in (
        "data.batch_size=8",
        "data.num_workers=0",
        f"data.stats_cache_dir={tmp_path / 'elsewhere'}",
        "data.min_valid=0.5",
        "method.temperature=0.1",
        "seed=3",
    ):
        assert _run_name(*base, same) == name, same
    monkeypatch.chdir(tmp_path)
    assert _run_name("data=geotiff", "data.root=landsat8") == name  # the folder, however it is spelled


@pytest.mark.parametrize("data", sorted(p.stem for p in (CONF / "data").glob("*.yaml")))
def test_every_data_config_gets_a_run_name(data):
    """A required path not given yet leaves the bare data name, so the run reports what is missing."""
    cfg = _cfg(f"data={data}")
    assert cfg.run_name.startswith(f"moco_resnet18_{cfg.data.name}")


def _geotiff(folder: Path) -> list[str]:
    return ["method=moco", "method.queue_size=24", "data=geotiff", f"data.root={folder}", "data.tile_size=32"]


def test_resume_true_on_another_folder_never_picks_its_runs(tmp_path, monkeypatch, capsys):
    """The first-hour bug: resume=true on a Landsat folder resumed the Sentinel-2 run and crashed."""
    sentinel, landsat = tif_folder(tmp_path / "sentinel2", 4), tif_folder(tmp_path / "landsat8", 3)
    run_cli([*_geotiff(sentinel), "trainer.max_steps=2"], tmp_path, monkeypatch)
    err = failing([*_geotiff(landsat), "resume=true"], tmp_path, monkeypatch, capsys)
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 2
    assert re.fullmatch(f"moco_test_resnet_geotiff-landsat8-{HASH}", names[0])
    assert re.fullmatch(f"moco_test_resnet_geotiff-sentinel2-{HASH}", names[1])
    assert f"resume=true but no earlier run of {names[0]!r} has a last.ckpt" in err
    assert "size mismatch" not in err


def _last_ckpts(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*/*/last.ckpt"), key=lambda p: p.stat().st_mtime)


def test_resume_true_continues_the_newest_run_of_the_same_config(tmp_path, monkeypatch, capsys):
    synthetic = [
        "data=synthetic",
        "data.source.size=128",
        "data.source.num_scenes=2",
        "data.source.val_scenes=1",
    ]
    moco = ["method=moco", "method.queue_size=24", *synthetic]
    run_cli([*moco, "trainer.max_steps=2"], tmp_path, monkeypatch)
    run_cli([*moco, "method.temperature=0.1", "trainer.max_steps=2"], tmp_path, monkeypatch)  # newer
    same, other = _last_ckpts(tmp_path)
    run_cli([*moco, "trainer.max_steps=4", "resume=true"], tmp_path, monkeypatch)
    resumed = _last_ckpts(tmp_path)[-1]
    summary = json.loads((resumed.parent / "summary.json").read_text())
    assert summary["resumed_from"] == str(same)
    assert torch.load(resumed, map_location="cpu", weights_only=False)["global_step"] == 4
    err = failing([*moco, "seed=1", "resume=true"], tmp_path, monkeypatch, capsys)
    run = same.parent.parent.name
    assert f"resume=true but no earlier run of {run!r} with this config and seed has a last.ckpt" in err
    assert f"{same.parent.name}: seed 0 (here 1)" in err
    assert f"{other.parent.name}: method.temperature 0.1 (here 0.2), seed 0 (here 1)" in err
    assert f"{resumed.parent.name}: seed 0 (here 1)" in err
    assert "resume=/path/to/last.ckpt" in err


def test_resume_from_a_checkpoint_that_does_not_fit_names_the_entries(tmp_path, monkeypatch, capsys):
    synthetic = [
        "data=synthetic",
        "data.source.size=128",
        "data.source.num_scenes=2",
        "data.source.val_scenes=1",
    ]
    run_cli(["method=moco", "method.queue_size=24", *synthetic, "trainer.max_steps=2"], tmp_path, monkeypatch)
    (checkpoint,) = _last_ckpts(tmp_path)
    err = failing(
        ["method=moco", "method.queue_size=32", *synthetic, f"resume={checkpoint}"],
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert f"resume={checkpoint}: the checkpoint does not fit the model of this config" in err
    assert "queue [24, 128] in the checkpoint, [32, 128] here" in err
    assert "queue_index [24] in the checkpoint, [32] here" in err
    assert "resume=/path/to/last.ckpt" in err and "resume=false" in err
    assert "Traceback" not in err and "size mismatch" not in err
