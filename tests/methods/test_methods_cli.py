"""Every method YAML in conf/method/ runs through the real rsssl-pretrain entry point.

A new method file + YAML is picked up here with no edit: loss finite, trainable parameters
change, EMA targets move by exactly the expected amount with the scheduled momentum, the
queue holds exactly the enqueued keys in FIFO order, the LR follows the global batch.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rsssl.cli.pretrain import main
from rsssl.methods.moco import EMPTY_SLOT
from tests.helpers.methods import with_small_backbone
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


def _has_queue(method: str) -> bool:
    return "queue_size:" in (CONF / "method" / f"{method}.yaml").read_text()


# EMA base 0.9 -> final 0.99 over 4 optimiser steps; the EMA after step k uses
# cosine_ramp(0.9, 0.99, (k - 1) / 4), worked out by hand:
MOMENTA = [
    0.9,
    0.99 - 0.09 * (math.cos(math.pi / 4) + 1) / 2,
    0.945,
    0.99 - 0.09 * (math.cos(3 * math.pi / 4) + 1) / 2,
]
QUEUE = 24  # batch 16: the second step wraps around


def _check_ema(steps: list[dict], record: dict, momenta: list[float]) -> None:
    """After optimiser step k, every target = m_k * target_before + (1 - m_k) * online_after."""
    targets = [s["targets"] for s in steps] + [record["final_targets"]]
    onlines = [s["onlines"] for s in steps[1:]] + [record["final_onlines"]]
    for k, m in enumerate(momenta):
        for t0, t1, online in zip(targets[k], targets[k + 1], onlines[k]):
            for name in t0:
                expected = m * t0[name] + (1 - m) * online[name]
                torch.testing.assert_close(t1[name], expected, rtol=1e-5, atol=1e-6)
            assert any(not torch.equal(t0[n], t1[n]) for n in t0), "EMA target did not move"


def _check_fifo_queue(record: dict) -> None:
    """The queue holds exactly the enqueued keys and their sample indices, first in first out."""
    queue, index, ptr = record["initial_queue"].clone(), torch.full((QUEUE,), EMPTY_SLOT), 0
    assert len(record["enqueued"]) == len(record["queues"]) == len(record["steps"])
    for (keys, sample), (queue_after, index_after), step in zip(
        record["enqueued"], record["queues"], record["steps"], strict=True
    ):
        assert torch.equal(sample, step["index"])  # the keys of this batch's samples
        slots = [(ptr + i) % QUEUE for i in range(keys.shape[0])]
        queue[slots], index[slots] = keys, sample
        ptr = (ptr + keys.shape[0]) % QUEUE
        torch.testing.assert_close(queue_after, queue, rtol=0, atol=0)
        assert torch.equal(index_after, index)


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_through_cli(method, tmp_path, monkeypatch):
    RECORDS.clear()
    extra = ["++method.ema.base=0.9", "++method.ema.final=0.99"]
    if _has_queue(method):
        extra.append(f"method.queue_size={QUEUE}")
    run_cli(
        [
            f"method={method}",
            *with_small_backbone(method, TINY),
            *extra,
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
    if record["steps"][0]["targets"]:
        _check_ema(record["steps"], record, MOMENTA)
        assert record["final_momentum"] == pytest.approx(MOMENTA[-1], abs=1e-12)
    if _has_queue(method):
        _check_fifo_queue(record)
    method_cfg = yaml.safe_load((CONF / "method" / f"{method}.yaml").read_text())
    if "optimizer" in method_cfg:  # the method's lr per 256 images x global batch 16
        assert record["initial_lr"] == pytest.approx(float(method_cfg["optimizer"]["lr"]) * 16 / 256)
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    for name in ("last.ckpt", "config.yaml", "metrics.csv", "encoder.safetensors", "encoder.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["method"] == method and summary["steps"] == 4


def test_accumulation_steps_ema_and_lr_per_optimiser_step(tmp_path, monkeypatch):
    """4 micro-batches accumulated 2 by 2: 2 optimiser steps, 2 EMA updates, LR for 32 images."""
    RECORDS.clear()
    run_cli(
        [
            "method=moco",
            *TINY,
            "trainer.max_steps=2",
            "+trainer.accumulate_grad_batches=2",
            "++method.ema.base=0.9",
            "++method.ema.final=0.99",
            f"method.queue_size={QUEUE}",
            f"runs_dir={tmp_path}",
            f"data.stats_cache_dir={tmp_path / 'cache'}",
            "callbacks=[{_target_:tests.methods.recorder.Recorder}]",
        ],
        monkeypatch,
    )
    (record,) = RECORDS
    steps = record["steps"]
    assert [s["global_step"] for s in steps] == [0, 0, 1, 1]
    assert record["initial_lr"] == pytest.approx(0.03 * 32 / 256)
    # targets change only at the end of micro-batches 1 and 3, with momenta for steps 1 and 2 of 2
    momenta = [0.9, 0.945]
    for i in (0, 2):
        for t0, t1 in zip(steps[i]["targets"], steps[i + 1]["targets"]):
            assert all(torch.equal(t0[n], t1[n]) for n in t0), "EMA ran on a micro-batch"
    _check_ema([steps[1], steps[3]], record, momenta)  # the micro-batches that end in a step


def test_last_ckpt_holds_the_last_step_even_when_the_probe_stops_improving(tmp_path, monkeypatch):
    """Lightning 2.6 writes `save_last` only beside a new best checkpoint; last.ckpt must be the
    final state whatever the monitored metric did (resume continues from it)."""
    run_cli(
        [
            "method=simclr",
            *TINY,
            "trainer.max_steps=8",
            f"runs_dir={tmp_path}",
            f"data.stats_cache_dir={tmp_path}",
        ],
        monkeypatch,
    )
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    last = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 8 and last["epoch"] == 3  # four epochs of two steps
    exported = load_file(str(run_dir / "encoder.safetensors"))
    for key, value in exported.items():
        torch.testing.assert_close(last["state_dict"][f"backbone.{key}"], value, rtol=0, atol=0)
