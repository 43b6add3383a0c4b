"""`rsssl-bench`: every section measured and reported, and the report's verdicts computed from
the figures (the speed itself is what `make bench` publishes, never asserted here)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from rsssl.bench.data_rate import data_rates_with_cache
from rsssl.bench.loop import pretrain_command
from rsssl.bench.report import render
from rsssl.bench.scale import patch_bytes, project
from rsssl.bench.steps import StepSetup
from rsssl.cli.bench import main

TINY = [
    "sections=[moco,methods,eval]",
    "setup.backbone=test_resnet",
    "setup.batch=8",
    "setup.tile=32",
    "rounds=1",
    "warmup=0",
    "method_rounds=1",
    "methods=[moco,simclr]",
    "eval_rounds=1",
    "eval_problem.train=400",
    "eval_problem.test=100",
    "eval_problem.dim=16",
]


def test_the_sections_asked_for_are_measured_and_written(tmp_path: Path, monkeypatch) -> None:
    """The report and its JSON hold every contender of each section asked for, and nothing else;
    both probes give scikit-learn's answers (the loop, SimCLR and scale sections run in `make bench` only)."""
    monkeypatch.setattr(sys, "argv", ["rsssl-bench", f"out={tmp_path}", *TINY])
    main()
    figures = json.loads((tmp_path / "benchmarks.json").read_text())
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert set(figures["moco"]) == {
        "rsssl MoCo v2",
        "rsssl MoCo v2, shuffle_bn=false",
        "torchgeo MoCoTask v2",
        "lightly-built MoCo v2",
        "model-only floor",
    }
    assert set(figures["methods"]) == {"moco", "simclr"}
    assert set(figures["section_seconds"]) == {"moco", "methods", "eval"}
    assert "simclr" not in figures and "loop" not in figures and "## SimCLR" not in report
    rates = [*figures["moco"].values(), *figures["methods"].values(), figures["eval"]["features_per_second"]]
    assert all(rate > 0 for rate in rates)
    knn, linear = figures["eval"]["knn"], figures["eval"]["linear"]
    assert knn["rsssl"]["accuracy"] == knn["scikit-learn"]["accuracy"]  # the same vote
    for solver in ("rsssl", "rsssl path"):
        assert abs(linear[solver]["accuracy"] - linear["scikit-learn"]["accuracy"]) <= 0.02
    assert "warm-started path (`linear_solver=path`)" in report
    for title in (
        "MoCo v2 step against its peers",
        "Every method",
        "Evaluation",
        "GPU",
        "Targets",
    ):
        assert f"## {title}" in report, title
    assert figures["setup"]["backbone"] == "test_resnet" and figures["machine"]["versions"]["torch"]


def test_the_data_layer_reads_one_scene_three_ways_under_a_cold_cache() -> None:
    """In a child process whose GDAL block cache is 1 MB, each source gives its tiles/s."""
    rates = data_rates_with_cache(Path(os.environ["RSSSL_DATA_DIR"]), 1, workers=[0], batches=1)
    assert set(rates) == {"npz (in memory)", "GeoTIFF (windowed reads)", "prepared store (memory map)"}
    assert all(set(by_workers) == {"0"} and by_workers["0"] > 0 for by_workers in rates.values())


def test_an_unknown_section_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["rsssl-bench", f"out={tmp_path}", "sections=[moco,speed]"])
    with pytest.raises(SystemExit) as stopped:
        main()
    assert stopped.value.code == 2 and "unknown sections ['speed']" in capsys.readouterr().err
    assert not (tmp_path / "BENCHMARKS.md").exists()


def test_verdicts_follow_the_figures() -> None:
    figures = {
        "machine": {
            "cpu": "x",
            "cpu_cores": 2,
            "torch_threads": 2,
            "gpu": None,
            "python": "3.11",
            "git_commit": "abc",
            "versions": {"torch": "2"},
        },  # fmt: skip
        "setup": StepSetup().as_dict() | {"lr": 0.0075},
        "date": "today",
        "seconds": 60.0,
        "moco": {
            "rsssl MoCo v2": 101.0,
            "torchgeo MoCoTask v2": 100.0,
            "lightly-built MoCo v2": 202.0,
            "model-only floor": 200.0,
        },  # fmt: skip
        "loop": {
            "bare_step": 80.0,
            "workers": {"0": 76.0, "2": 60.0},
            "loader_wait": {"0": 0.031, "2": 0.25},
        },
    }
    targets = render(figures)[render(figures).index("## Targets") :]
    assert "- rsssl-pretrain loop ÷ bare step (best worker count): 0.950× (target ≥ 0.9×): **met**" in targets
    assert "| rsssl-pretrain, 2 loader workers | 60.0 | 0.75 | 25.0 |" in render(figures)
    assert "- rsssl MoCo v2 ÷ torchgeo MoCoTask: 1.010× (target ≥ 1×): **met**" in targets
    assert "- rsssl MoCo v2 ÷ lightly-built MoCo v2: 0.500× (target ≥ 1×): **missed by 50.0 %**" in targets
    assert "- rsssl MoCo v2 ÷ model-only floor: 0.505× (target ≥ 0.95×): **missed by 46.8 %**" in targets
    assert "Not measured: no CUDA device" in "\n".join(render(figures))


def test_the_loop_runs_moco_with_the_step_setup(tmp_path: Path) -> None:
    command = pretrain_command(StepSetup(batch=32, tile=48, queue=1024), 12, 2, tmp_path)
    for override in ("method=moco", "method.queue_size=1024", "data.batch_size=32", "data.tile_size=48",
                     "data.num_bands=3", "data.num_workers=2", "trainer.max_steps=12", "trainer=cpu",
                     "backbone.name=resnet18"):  # fmt: skip
        assert override in command


def test_the_projection_by_hand() -> None:
    """35 GFLOP an image at 60 TFLOP/s is 1714 images/s a GPU; a node's 10 GB/s of reads carry
    10e9 / 1,812,096 B = 5518 patches/s, below what 8 GPUs compute (13,700), so reads limit."""
    one, eight = project(35e9, 112_000_000, 800.0, gpus=(1, 8))
    assert one.images_per_second == pytest.approx(60e12 / 35e9)
    assert one.total_hours == pytest.approx(100 * 1e6 / (60e12 / 35e9) / 3600)
    assert one.loader_workers_per_gpu == 3 and one.allreduce_ms_per_step == 0.0
    assert one.limit == "the network (GPU compute)"
    assert patch_bytes() == 13 * 264 * 264 * 2 == 1_812_096
    assert eight.images_per_second == pytest.approx(10e9 / 1_812_096)
    assert eight.allreduce_ms_per_step == pytest.approx(2 * 7 / 8 * 112e6 / 150e9 * 1e3)
    assert eight.gpu_hours == pytest.approx(8 * 100 * 1e6 / (10e9 / 1_812_096) / 3600)
    assert eight.limit.startswith("storage reads: the GPUs could take 25 GB/s a node, its disks give 10")
