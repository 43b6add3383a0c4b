"""Optional loggers: TensorBoard event files and wandb offline runs, beside the CSV that is always written."""

from __future__ import annotations

import sys

import pytest

from rsssl.cli.pretrain import main

QUICK = [
    "method=simclr",
    "backbone=tiny",
    "trainer=debug",
    "data=synthetic",
    "data.source.size=128",
    "data.source.num_scenes=2",
    "data.source.val_scenes=1",
    "data.num_workers=0",
    "data.batch_size=8",
]


@pytest.mark.parametrize(
    ("logger", "pattern"),
    [("tensorboard", "tensorboard/events.out.tfevents.*"), ("wandb", "wandb/offline-run-*")],
)
def test_optional_logger_writes_beside_csv(logger, pattern, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "rsssl-pretrain",
            *QUICK,
            f"logger={logger}",
            f"runs_dir={tmp_path}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
        ],
    )
    main()
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    assert (run_dir / "metrics.csv").is_file()
    assert list(run_dir.glob(pattern)), f"no {pattern} in {sorted(p.name for p in run_dir.iterdir())}"
