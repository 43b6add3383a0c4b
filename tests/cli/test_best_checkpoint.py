"""`best.ckpt` means something on every data: the online probe's validation accuracy where a
labelled validation set is validated on, else the epoch-mean training loss."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.test_pretrain_errors import run_cli

SYNTHETIC = ["data=synthetic", "data.source.size=128", "data.source.num_scenes=2"]
LOSS = {"monitor": "train/loss_epoch", "mode": "min"}
PROBE = {"monitor": "val/probe_acc", "mode": "max"}


def _npz(tmp_path: Path) -> list[str]:
    path = tmp_path / "scene.npz"
    np.savez(path, image=np.random.default_rng(0).integers(0, 255, (3, 128, 128), dtype=np.uint8))
    return ["data=npz", f"data.path={path}", "data.tile_size=32"]


CASES = {
    "unlabelled": (_npz, LOSS, "no labelled validation set"),
    "labelled, no validation scenes": (
        lambda _: [*SYNTHETIC, "data.source.val_scenes=0"],
        LOSS,
        "no labelled validation set",
    ),
    "labelled, validation off": (
        lambda _: [*SYNTHETIC, "data.source.val_scenes=1", "trainer.limit_val_batches=0"],
        LOSS,
        "no labelled validation set",
    ),
    "labelled validation": (
        lambda _: [*SYNTHETIC, "data.source.val_scenes=1"],
        PROBE,
        "online-probe accuracy",
    ),
    "labelled validation, stopped mid-epoch": (  # 4 steps an epoch: max_steps=2 stops before its end
        lambda _: [*SYNTHETIC, "data.source.val_scenes=1", "trainer.max_steps=2"],
        PROBE,
        "online-probe accuracy",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_best_checkpoint_monitors_what_the_data_has(case, tmp_path, monkeypatch, recwarn):
    data, expected, reason = CASES[case]
    run_cli(["method=simclr", *data(tmp_path)], tmp_path, monkeypatch)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    assert [str(w.message) for w in recwarn] == []  # no missing monitored key, nor any other warning
    assert (run_dir / "best.ckpt").is_file()
    state = torch.load(run_dir / "best.ckpt", map_location="cpu", weights_only=False)["callbacks"]
    (checkpointing,) = [
        v for k, v in state.items() if k.startswith("ModelCheckpoint")
    ]  # last.ckpt has its own
    assert checkpointing["monitor"] == expected["monitor"]
    with (run_dir / "metrics.csv").open() as file:
        logged = [float(row[expected["monitor"]]) for row in csv.DictReader(file) if row[expected["monitor"]]]
    best_value = min(logged) if expected["mode"] == "min" else max(logged)
    best = json.loads((run_dir / "summary.json").read_text())["best_checkpoint"]
    assert best == {**expected, "file": "best.ckpt", "value": best_value}
    log = (run_dir / "pretrain.log").read_text()
    order = "lowest" if expected["mode"] == "min" else "highest"
    assert sum(f"best.ckpt: by the {order} {expected['monitor']} (" in line for line in log.splitlines()) == 1
    assert reason in log
