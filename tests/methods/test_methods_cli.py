"""Every method YAML in conf/method/ runs through the real rsssl-pretrain entry point.

A new method file + YAML is picked up here with no edit: loss finite, trainable parameters
change, EMA targets move by exactly the expected amount, the queue pointer advances.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from rsssl.cli.pretrain import main
from tests.methods.recorder import RECORDS

CONF = Path(__file__).resolve().parents[2] / "conf"
METHODS = sorted(p.stem for p in (CONF / "method").glob("*.yaml"))

TINY = [
    "backbone=tiny",
    "data=synthetic",
    "trainer=debug",
    "data.num_workers=0",
    "data.batch_size=16",
    "data.source.size=128",
    "data.source.num_scenes=2",
    "data.source.val_scenes=1",
]


def run_cli(argv: list[str], monkeypatch) -> None:
    """Call the console script's function exactly as the installed `rsssl-pretrain` does."""
    monkeypatch.setattr(sys, "argv", ["rsssl-pretrain", *argv])
    main()


def test_every_method_yaml_is_discovered():
    assert {"moco", "simclr", "random_init"} <= set(METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_through_cli(method, tmp_path, monkeypatch):
    RECORDS.clear()
    run_cli(
        [
            f"method={method}",
            *TINY,
            f"runs_dir={tmp_path}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
            "callbacks=[{_target_:tests.methods.recorder.Recorder}]",
        ],
        monkeypatch,
    )
    (record,) = RECORDS
    assert len(record["steps"]) == 4
    assert all(math.isfinite(v) for v in record["losses"]), record["losses"]
    first, last = record["steps"][0], record["steps"][-1]
    changed = {n for n in first["params"] if not torch.equal(first["params"][n], last["params"][n])}
    backbone = set(record["backbone_names"])
    if record["trains_backbone"]:
        assert backbone & changed, "the pretext task did not change the backbone"
    else:
        assert not (backbone & changed), "a baseline changed its frozen backbone"
    assert any(n.startswith("probe.") for n in changed), "the online probe did not learn"
    # EMA: after step s, target = m * target_before + (1 - m) * online_after_step_s
    for before, after in zip(record["steps"][:-1], record["steps"][1:]):
        m = after["momentum"]
        for t0, t1, online in zip(before["targets"], after["targets"], after["onlines"]):
            for name in t0:
                expected = m * t0[name] + (1 - m) * online[name]
                torch.testing.assert_close(t1[name], expected, rtol=1e-5, atol=1e-6)
            assert any(not torch.equal(t0[n], t1[n]) for n in t0), "EMA target did not move"
    if "queue_ptr" in first:
        size = first["queue_size"]
        for before, after in zip(record["steps"][:-1], record["steps"][1:]):
            assert after["queue_ptr"] == (before["queue_ptr"] + before["batch_size"]) % size
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    for name in ("last.ckpt", "config.yaml", "metrics.csv", "encoder.safetensors", "encoder.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == 4
