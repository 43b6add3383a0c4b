"""What a run tells the user: one data summary before training, the run's logging in
`pretrain.log`, one throughput figure in `summary.json`, no spurious warnings on a fresh run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rsssl.cli import callbacks
from rsssl.cli.callbacks import ThroughputMonitor
from tests.cli.test_pretrain_errors import run_cli, write_tif

SUMMARY_KEYS = {
    "run_name",
    "method",
    "backbone",
    "data",
    "config_hash",
    "steps",
    "torch_threads",
    "epochs",
    "train_images_per_second_after_warmup",
    "train_loader_wait_fraction",
    "best_checkpoint",
    "resumed_from",
    "metrics",
}


@pytest.fixture
def tifs(tmp_path):
    """Two 4-band uint16 scenes, 128 x 128 px at 5 m, their last 32 columns nodata (75 % valid)."""
    folder = tmp_path / "tifs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for number in range(2):
        pixels = rng.integers(1, 4000, (4, 128, 128), dtype=np.uint16)
        pixels[:, :, 96:] = 0
        write_tif(folder / f"scene{number}.tif", pixels, nodata=0)
    return folder


def test_a_run_summarises_its_data_logs_to_its_folder_and_warns_of_nothing(
    tifs, tmp_path, monkeypatch, capsys, recwarn
):
    recwarn.clear()  # writing the files warned (rasterio); the run itself must not
    data = ["data=geotiff", f"data.root={tifs}", "data.band_preset=rgbn", "data.tile_size=32"]
    run_cli(["method=simclr", *data], tmp_path, monkeypatch)
    out = capsys.readouterr().out.splitlines()
    expected = [
        "data geotiff: 2 training scenes, no validation scenes; unlabelled",
        "  bands (4): red, green, blue, nir; dtype uint16",
        "  scenes: 128 x 128 px, 1 date each; pixel size 5 m (EPSG:32618)",
        "  tiles: 32 px, stride 32 px; 24 training tiles; valid pixels 75.0 % of the training scenes "
        "(tiles kept with >= 90 % valid)",
    ]
    start = out.index(expected[0])
    assert out[start : start + 4] == expected
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    log = [line.split("] - ", 1)[-1] for line in (run_dir / "pretrain.log").read_text().splitlines()]
    start = log.index(expected[0])
    assert log[start : start + 4] == expected
    for said in (f"run folder: {run_dir}", "`Trainer.fit` stopped: `max_steps=4` reached."):
        assert said in log and said in out
    assert [str(w.message) for w in recwarn] == []
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert [k for k in summary["metrics"] if "per_second" in k] == []


class _Clock:
    def __init__(self, times: list[float]) -> None:
        self.times = iter(times)

    def __call__(self) -> float:
        return next(self.times)


def test_throughput_is_images_over_the_time_after_the_warm_up_steps(monkeypatch):
    """Batches of 8 ending at t = 0, 1, 2 (the 3 warm-up steps), 3, 4, 6, validation from 6 to 16,
    a batch ending at 17: the 4 steps after the warm-up took 1 + 1 + 2 + 1 s for 32 images."""
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 6.0, 16.0, 17.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", _Clock(times))
    monitor = ThroughputMonitor(warmup=3)
    trainer, module = SimpleNamespace(world_size=1), SimpleNamespace(log=lambda *a, **k: None)
    batch = {"image": torch.zeros(8, 1, 1, 1)}
    for step in range(6):
        monitor.on_train_batch_end(trainer, module, None, batch, step)
    monitor.on_validation_start(trainer, module)
    monitor.on_validation_end(trainer, module)
    monitor.on_train_batch_end(trainer, module, None, batch, 6)
    assert monitor.images_per_second == 32 / 5


def test_throughput_counts_every_process(monkeypatch):
    monkeypatch.setattr(callbacks.time, "perf_counter", _Clock([0.0, 2.0]))
    monitor = ThroughputMonitor(warmup=0)
    trainer, module = SimpleNamespace(world_size=4), SimpleNamespace(log=lambda *a, **k: None)
    for step in range(2):
        monitor.on_train_batch_end(trainer, module, None, {"image": torch.zeros(8, 1, 1, 1)}, step)
    assert monitor.images_per_second == 4 * 8 / 2


def test_loader_wait_is_the_share_of_the_step_time_spent_before_the_step_starts(monkeypatch):
    """After one warm-up step ending at t = 1: the next step starts at 1.5 and ends at 3, the one
    after starts at 4 and ends at 5, so 0.5 + 1 of the 4 s went to fetching the batches."""
    times = [0.0, 1.0, 1.5, 3.0, 4.0, 5.0]
    monkeypatch.setattr(callbacks.time, "perf_counter", _Clock(times))
    monitor = ThroughputMonitor(warmup=1)
    trainer, module = SimpleNamespace(world_size=1), SimpleNamespace(log=lambda *a, **k: None)
    batch = {"image": torch.zeros(8, 1, 1, 1)}
    for step in range(3):
        monitor.on_train_batch_start(trainer, module, batch, step)
        monitor.on_train_batch_end(trainer, module, None, batch, step)
    assert monitor.images_per_second == 16 / 4
    assert monitor.loader_wait_fraction == 1.5 / 4
