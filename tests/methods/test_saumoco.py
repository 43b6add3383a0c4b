"""SauMoCo through the real rsssl-pretrain on 13-band synthetic scenes and on real GeoTIFFs."""

from __future__ import annotations

import json
import math
import sys

import pytest

from rsssl.cli.pretrain import main


def pretrain(argv: list[str], tmp_path, monkeypatch) -> dict:
    """Run `rsssl-pretrain method=saumoco` with a tiny backbone; returns the run's summary."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "rsssl-pretrain",
            "method=saumoco",
            "backbone=tiny",
            "trainer=debug",
            f"runs_dir={tmp_path}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
            *argv,
        ],
    )
    main()
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["encoder"] = json.loads((run_dir / "encoder.json").read_text())
    return summary


def test_saumoco_on_13_band_synthetic_scenes_in_metres(tmp_path, monkeypatch):
    summary = pretrain(
        [
            "data=synthetic",
            "data.num_bands=13",
            "data.num_workers=0",
            "data.batch_size=16",
            "data.source.size=128",
            "data.source.num_scenes=2",
            "data.source.val_scenes=1",
            "data.neighbor_radius=500",
            "data.neighbor_units=m",
        ],
        tmp_path,
        monkeypatch,
    )
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_step"])
    assert summary["encoder"]["in_chans"] == 13


def test_saumoco_on_real_geotiffs(data_dir, tmp_path, monkeypatch):
    summary = pretrain(
        ["data=geotiff", f"data.root={data_dir / 'geotiff' / 'rgbn'}", "data.tile_size=32"],
        tmp_path,
        monkeypatch,
    )
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_step"])
    assert summary["encoder"]["in_chans"] == 4


def test_a_radius_under_one_pixel_stops_before_training(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        pretrain(["data=synthetic", "data.source.size=64", "data.neighbor_radius=0.5"], tmp_path, monkeypatch)
    assert stop.value.code == 2
    assert "data.neighbor_radius=0.5 px is less than one pixel" in capsys.readouterr().err
