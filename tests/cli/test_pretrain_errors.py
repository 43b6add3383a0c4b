"""Bad input to rsssl-pretrain: a clear error naming the problem and the fix, nothing lost."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsssl.cli.checks import command_line_problems, options, own_settings
from rsssl.cli.pretrain import main

TINY = [
    "backbone=tiny",
    "trainer=debug",
    "data.num_workers=0",
    "data.batch_size=8",
]
SYNTHETIC = ["data=synthetic", "data.source.size=128", "data.source.num_scenes=2", "data.source.val_scenes=1"]


def run_cli(argv: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "rsssl-pretrain",
            *TINY,
            f"runs_dir={tmp_path / 'runs'}",
            f"data.stats_cache_dir={tmp_path / 'c'}",
            *argv,
        ],
    )
    main()


def failing(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    """Run the CLI expecting a clean failure; return what it printed on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(argv, tmp_path, monkeypatch)
    assert exit_info.value.code != 0
    return capsys.readouterr().err


def write_tif(path: Path, pixels: np.ndarray, nodata: float | None = None) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=pixels.shape[1],
        width=pixels.shape[2],
        count=pixels.shape[0],
        dtype=pixels.dtype,
        crs="EPSG:32618",
        transform=from_origin(500000, 4000000, 5, 5),
        nodata=nodata,
    ) as dst:
        dst.write(pixels)


def test_band_count_differs_from_in_chans(tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, "backbone.in_chans=3"], tmp_path, monkeypatch, capsys)
    assert "backbone.in_chans=3" in err and "4 bands" in err and "data.bands" in err


def test_tile_larger_than_scene(tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, "data.tile_size=256"], tmp_path, monkeypatch, capsys)
    assert "smaller than the tile size 256" in err and "data.tile_size" in err


def test_empty_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    err = failing(["data=geotiff", f"data.root={tmp_path / 'empty'}"], tmp_path, monkeypatch, capsys)
    assert "empty" in err and ".tif" in err


def test_truncated_file(tmp_path, monkeypatch, capsys):
    source = tmp_path / "scene.npz"
    np.savez(source, image=np.ones((3, 64, 64), np.uint8))
    data = source.read_bytes()
    source.write_bytes(data[: len(data) // 2])
    err = failing(["data=npz", f"data.path={source}", "data.tile_size=32"], tmp_path, monkeypatch, capsys)
    assert "scene.npz" in err


def test_scene_all_nodata(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "tifs"
    folder.mkdir()
    write_tif(folder / "blank.tif", np.zeros((4, 96, 96), np.uint16), nodata=0)
    err = failing(["data=geotiff", f"data.root={folder}", "data.tile_size=32"], tmp_path, monkeypatch, capsys)
    assert "blank" in err and "nodata" in err


def test_nan_in_float_data(tmp_path, monkeypatch, capsys):
    source = tmp_path / "float.npz"
    pixels = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    pixels[0, 3, 4] = np.nan
    np.savez(source, image=pixels)
    err = failing(["data=npz", f"data.path={source}", "data.tile_size=32"], tmp_path, monkeypatch, capsys)
    assert "NaN" in err or "non-finite" in err


@pytest.mark.parametrize(
    ("override", "listed"),
    [("method=mocco", "moco"), ("data=synthetik", "synthetic"), ("backbone=resnet19", "resnet18")],
)
def test_unknown_names_list_the_choices(override, listed, tmp_path, monkeypatch, capsys):
    err = failing([override], tmp_path, monkeypatch, capsys)
    assert "Available options" in err and listed in err


def test_a_boolean_as_an_option_name_is_refused_with_the_options(tmp_path, monkeypatch, capsys):
    err = failing(["method=false"], tmp_path, monkeypatch, capsys)
    assert "method=false: Hydra reads 'false' as a constant, not a method option" in err
    assert ", ".join(options("method")) in err and "Traceback" not in err
    assert "method=false_simclr or false_glcnet" in err


def test_unknown_timm_backbone_name(tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, "backbone.name=resnet19"], tmp_path, monkeypatch, capsys)
    assert "unknown backbone 'resnet19'" in err and "resnet18" in err


def test_resume_without_checkpoint(tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, "resume=true"], tmp_path, monkeypatch, capsys)
    assert "resume=true" in err and "last.ckpt" in err


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


def test_resume_continues_and_failures_lose_nothing(tmp_path, monkeypatch, capsys):
    run_cli([*SYNTHETIC, "method=moco", "trainer.max_steps=2"], tmp_path, monkeypatch)
    (first,) = [p.parent for p in (tmp_path / "runs").glob("*/*/last.ckpt")]
    before = _digest(first)
    failing([*SYNTHETIC, "method=moco", "backbone.in_chans=7"], tmp_path, monkeypatch, capsys)
    run_cli([*SYNTHETIC, "method=moco", "trainer.max_steps=4", "resume=true"], tmp_path, monkeypatch)
    assert _digest(first) == before, "a later run changed the files of an earlier one"
    runs = sorted(p.parent for p in (tmp_path / "runs").glob("*/*/last.ckpt"))
    assert len(runs) == 2
    import torch

    resumed = torch.load(runs[-1] / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 4  # 2 steps from the first run + 2 more


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.tilesize=64"], "unknown key data.tilesize: data=synthetic has no setting 'tilesize'"),
        (["+data.tilesize=64"], "did you mean data.tile_size? (data.tile_size=64)"),
        (["data.tilesize=16"], "did you mean data.tile_size? (data.tile_size=16)"),
        (["method=simclr", "method.temprature=0.1"], "method=simclr has no setting 'temprature'"),
        (["method=simclr", "+method.queue_size=10"], "unknown key method.queue_size: method=simclr"),
        (["+method.views.crop_sise=24"], "did you mean method.views.crop_size? (method.views.crop_size=24)"),
        (["+method.optimizer.betas=[0.9,0.99]", "+method.optimizer.moment=0.8"], "method.optimizer.momentum"),
        (["+data.source.num_scene=1"], "did you mean data.source.num_scenes?"),
        (["+eval=classification", "eval.classification.knn=5"], "did you mean eval.classification.knn_k?"),
        (["eval.tasks=[segmentation]"], "no eval config is selected: add +eval=benchmark|classification"),
    ],
)
def test_unknown_keys_are_refused_with_the_closest(overrides, message, tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, *overrides], tmp_path, monkeypatch, capsys)
    assert message in err
    assert "To append to your config" not in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "a refused command wrote a run folder"


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (["data.tilesize=32,64"], "did you mean data.tile_size? (data.tile_size=32,64)"),
        # the moco job is fine: the simclr one is refused before moco trains
        (["method=moco,simclr", "++method.queue_size=10"], "unknown key method.queue_size: method=simclr"),
    ],
)
def test_a_sweep_with_an_unknown_key_is_refused_before_any_job(sweep, message, tmp_path, monkeypatch, capsys):
    argv = ["rsssl-pretrain", "-m", *TINY, *SYNTHETIC, f"runs_dir={tmp_path / 'runs'}", *sweep]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_eval_without_the_task_is_refused_before_training(tmp_path, monkeypatch, capsys):
    err = failing(
        ["data=npz_segmentation", "data.path=x.npz", "+eval=classification"], tmp_path, monkeypatch, capsys
    )
    assert "data=npz_segmentation has no classification evaluation set" in err
    assert "+eval=segmentation" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["+experiment=demo"],
        ["+experiment=synthetic_benchmark"],
        ["+eval=suite", "method=saumoco", "+method.proj_hidden_dim=512"],  # MoCo's, through **base
        ["+eval=demo", "method=simclr", "++method.ema.base=0.99", "+method.views.crop_size=24"],
        ["method=random_init", "+method.optimizer.nesterov=true", "+eval=segmentation"],
        ["+data.eval_sets.segmentation.train_scenes=2", "+eval=segmentation"],
    ],
)
def test_valid_configs_pass_the_checks(overrides, tmp_path, monkeypatch, capsys):
    run_cli([*overrides, "--cfg", "job"], tmp_path, monkeypatch)
    assert "seed: 0" in capsys.readouterr().out


@pytest.mark.parametrize("method", options("method"))
@pytest.mark.parametrize("data", options("data"))
def test_every_shipped_config_passes_the_key_checks(data, method):
    problems = command_line_problems("pretrain", [f"data={data}", f"method={method}", "+eval=suite"])
    assert not [p for p in problems if "unknown key" in p or "valid setting" in p]


def test_an_option_built_on_another_accepts_the_inherited_keys_and_refuses_typos():
    """spectral_spatial builds on last.yaml (its defaults list): last's multicrop keys are its too."""
    settings = own_settings("method", "spectral_spatial")
    assert {"num_global", "num_local", "num_spectral"} <= set(settings["multicrop"])
    assert settings["name"] == "spectral_spatial" and settings["out_dim"] == 65536  # own, then inherited
    problems = command_line_problems("pretrain", ["method=spectral_spatial", "method.multicrop.num_globl=3"])
    assert any("did you mean method.multicrop.num_global" in p for p in problems), problems
