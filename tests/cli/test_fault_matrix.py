"""The rest of the fault matrix through the real `rsssl-pretrain` entry point: non-finite float
pixels, files that cannot be read midway through a folder, nodata tiles inside a valid scene and
checkpoints of another rsssl version. Each fault either trains correctly or fails naming the fix."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tests.cli.test_pretrain_errors import run_cli, write_tif

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
