"""Exact resume: a run stopped mid-epoch and resumed from its `last.ckpt` ends with the same
weights, buffers (queues, EMA targets, centres), optimiser and scheduler state as the run that was
never stopped, bitwise on the CPU, for every method; checkpoints are written at a step interval,
atomically."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rsssl.cli import pretrain
from rsssl.cli.checkpoints import AtomicCheckpointIO
from rsssl.cli.pretrain import main
from tests.cli.test_pretrain_errors import SYNTHETIC, TINY, failing, run_cli
from tests.helpers.interrupt import StopAt
from tests.helpers.methods import with_small_backbone
from tests.methods.test_methods_cli import METHODS

ROOT = Path(__file__).resolve().parents[2]
# 2 scenes of 128 px in 32 px tiles at batch 8: 4 steps an epoch. 6 steps, a checkpoint every 3:
# the one at step 3 is mid-epoch (one batch of epoch 0 left), and the resumed run crosses an epoch.
STEPS, EVERY = 6, 3
RUN = [
    *SYNTHETIC,
    "trainer.max_steps=6",
    f"checkpoint_every_n_steps={EVERY}",
    "trainer.limit_val_batches=0",
    "+trainer.deterministic=true",  # spectral_mae: CPU index accumulation is otherwise unordered
]
STOP = f"callbacks=[{{_target_:tests.helpers.interrupt.StopAt,step:{EVERY}}}]"


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("*/*/last.ckpt"), key=lambda p: p.parent.name)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_same_state(resumed: dict, whole: dict) -> None:
    assert resumed["global_step"] == whole["global_step"] == STEPS
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    for name, tensor in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), f"{name} differs after the resume"
    for ours, theirs in zip(resumed["optimizer_states"], whole["optimizer_states"], strict=True):
        for key, state in theirs["state"].items():
            for field, value in state.items():
                other = ours["state"][key][field]
                assert torch.equal(other, value) if torch.is_tensor(value) else other == value
        assert ours["param_groups"] == theirs["param_groups"]
    assert resumed["lr_schedulers"] == whole["lr_schedulers"]


CASES = {m: [f"method={m}"] for m in METHODS if m != "random_init"} | {
    "moco_balanced_sampling": ["method=moco", "sampling.strategy=balanced", "sampling.clusters=3"],
}


@pytest.mark.parametrize("case", CASES)
def test_a_run_stopped_mid_epoch_resumes_to_the_same_state(case, tmp_path, monkeypatch, capsys):
    method = CASES[case][0].removeprefix("method=")
    overrides = with_small_backbone(method, [*CASES[case], "backbone=tiny", *RUN])
    run_cli([*overrides, "run_name=whole"], tmp_path / "whole", monkeypatch)
    with pytest.raises(SystemExit):  # Hydra reports the `Interrupted` and exits
        run_cli([*overrides, "run_name=stopped", STOP], tmp_path / "parts", monkeypatch)
    assert f"Interrupted: stopped before step {EVERY + 1}" in capsys.readouterr().err
    (stopped,) = checkpoints(tmp_path / "parts")
    assert load(stopped)["global_step"] == EVERY  # the step interval's checkpoint, mid-epoch
    run_cli([*overrides, "run_name=stopped", f"resume={stopped}"], tmp_path / "parts", monkeypatch)
    (whole,) = checkpoints(tmp_path / "whole")
    resumed = [p for p in checkpoints(tmp_path / "parts") if p != stopped]
    assert len(resumed) == 1
    assert_same_state(load(resumed[0]), load(whole))


def test_a_killed_run_leaves_a_whole_checkpoint_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGKILL in its own process right after the step interval's checkpoint: last.ckpt loads, and
    resuming from it gives the uninterrupted run's state."""
    overrides = ["method=moco", "backbone=tiny", *RUN]
    run_cli([*overrides, "run_name=whole"], tmp_path / "whole", monkeypatch)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "rsssl.cli.pretrain",
            "trainer=debug",
            "data.num_workers=0",
            "data.batch_size=8",
            f"runs_dir={tmp_path / 'parts' / 'runs'}",
            f"data.stats_cache_dir={tmp_path / 'parts' / 'c'}",
            *overrides,
            "run_name=killed",
            STOP.replace("}]", ",kill:true}]"),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    (checkpoint,) = checkpoints(tmp_path / "parts")
    assert load(checkpoint)["global_step"] == EVERY
    run_cli([*overrides, "run_name=killed", f"resume={checkpoint}"], tmp_path / "parts", monkeypatch)
    resumed = [p for p in checkpoints(tmp_path / "parts") if p != checkpoint]
    assert_same_state(load(resumed[0]), load(checkpoints(tmp_path / "whole")[0]))


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_run_repeated_at_its_thread_count_exports_the_same_encoder_and_records_the_count(
    one_thread, tmp_path, monkeypatch
):
    """The same command twice gives the same encoder file, bitwise; summary.json records the thread
    count, since another count rounds the CPU's reductions in another order (README, Exact resume)."""
    overrides = ["method=moco", "backbone=tiny", *RUN]
    for name in ("first", "second"):
        run_cli([*overrides, "run_name=again"], tmp_path / name, monkeypatch)
    runs = [next((tmp_path / name / "runs" / "again").iterdir()) for name in ("first", "second")]
    digests = [json.loads((run / "encoder.json").read_text())["sha256"] for run in runs]
    assert digests[0] == digests[1]
    assert json.loads((runs[0] / "summary.json").read_text())["torch_threads"] == 1


def test_a_bad_checkpoint_interval_is_named(tmp_path, monkeypatch, capsys):
    err = failing([*SYNTHETIC, "checkpoint_every_n_steps=0"], tmp_path, monkeypatch, capsys)
    assert "checkpoint_every_n_steps=0: give a positive step count, or null" in err


def test_a_failed_checkpoint_write_keeps_the_previous_file(tmp_path, monkeypatch):
    """A write that fails midway (a full disk, a kill) leaves the checkpoint before it whole and no
    temporary file."""
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, target)

    def full_disk(checkpoint, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 6}, target)
    monkeypatch.undo()
    assert load(target)["global_step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_sweep_run_again_with_resume_auto_finishes_only_what_is_missing(tmp_path, monkeypatch, capsys):
    """Seed 0 finished (trained and evaluated), seed 1 stopped mid-epoch: the same sweep again with
    `resume=auto` trains nothing for seed 0 and adds none of its rows, and continues seed 1 from
    its last.ckpt to the end, then evaluates it."""
    quick = [
        "method=moco",
        "backbone=tiny",
        *RUN,
        "data.source.size=256",  # enough scenes for every class in the evaluation's splits
        "data.source.num_scenes=4",
        "+eval=classification",
        "eval.classification.protocols=[knn]",
        "eval.classification.budgets=[5]",
        "eval.classification.seeds=[0]",
        "eval.baselines=false",
        f"results={tmp_path}/results.csv",
        f"leaderboard_dir={tmp_path}/board",
    ]
    run_cli([*quick, "seed=0"], tmp_path, monkeypatch)
    build_trainer = pretrain.build_trainer  # a crash at step 3, the config left as the sweep's

    def crashing(cfg, run_dir, validated, extra=None):
        return build_trainer(cfg, run_dir, validated, [*(extra or []), StopAt(EVERY)])

    monkeypatch.setattr(pretrain, "build_trainer", crashing)
    with pytest.raises(SystemExit):
        run_cli([*quick, "seed=1"], tmp_path, monkeypatch)
    monkeypatch.setattr(pretrain, "build_trainer", build_trainer)
    before = (tmp_path / "results.csv").read_text()
    (stopped,) = [
        p for p in (tmp_path / "runs").glob("*/*/last.ckpt") if not (p.parent / "summary.json").exists()
    ]
    capsys.readouterr()
    sweep = [
        "rsssl-pretrain",
        "-m",
        *TINY,
        f"runs_dir={tmp_path / 'runs'}",
        f"data.stats_cache_dir={tmp_path / 'c'}",
    ]
    monkeypatch.setattr(sys, "argv", [*sweep, *quick, "seed=0,1", "resume=auto"])
    main()
    assert "already trained this config and seed; evaluating its encoder" in capsys.readouterr().out
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/summary.json")]
    assert sorted(s["resumed_from"] or "" for s in summaries) == ["", str(stopped)]  # seed 0 trained once
    assert all(s["steps"] == STEPS for s in summaries)
    with open(tmp_path / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert (tmp_path / "results.csv").read_text().startswith(before)  # seed 0's rows kept, none twice
    assert sorted(int(r["pretrain_seed"]) for r in rows if (r["protocol"], r["metric"]) == ("knn", "oa")) == [
        0,
        1,
    ]


def test_a_loss_that_becomes_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """The loss is NaN at step 5: the run stops there with an error naming the step and the fix;
    last.ckpt is the step-3 one, with finite weights; no encoder is exported and no row written."""
    from rsssl.methods.moco import MoCo

    step = MoCo.pretext_step

    def diverging(self, batch):
        out = step(self, batch)
        return replace(out, loss=out.loss * float("nan")) if self.global_step == 4 else out

    monkeypatch.setattr(MoCo, "pretext_step", diverging)
    argv = ["method=moco", *RUN, "+eval=classification", f"results={tmp_path}/results.csv"]
    err = failing(argv, tmp_path, monkeypatch, capsys)
    assert "the MoCo loss is nan at optimiser step 5 (epoch 1): training stopped before the step" in err
    assert "lower optimizer.lr or raise optimizer.warmup" in err
    (checkpoint,) = checkpoints(tmp_path)
    state = load(checkpoint)
    assert state["global_step"] == 4  # the epoch end before the bad step (a step checkpoint came at 3)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not list(checkpoint.parent.glob("encoder.*")) and not (tmp_path / "results.csv").exists()


class RunsCode:
    """Unpickling this calls `Path.touch` on its file: what a hostile checkpoint could do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_holding_python_objects_is_refused_unopened(tmp_path, monkeypatch, capsys):
    """Checkpoints load with `weights_only`: one that holds arbitrary objects is refused with a clear
    error, and the object's code never runs."""
    hostile, touched = tmp_path / "hostile.ckpt", tmp_path / "ran"
    torch.save({"state_dict": {}, "payload": RunsCode(touched)}, hostile)
    err = failing([*SYNTHETIC, f"resume={hostile}"], tmp_path, monkeypatch, capsys)
    assert f"resume={hostile}: not a plain checkpoint" in err and "only tensors and plain values load" in err
    assert not touched.exists()
