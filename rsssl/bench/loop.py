"""The whole `rsssl-pretrain` loop (data module, device-side views, Lightning, online probe,
checkpoints) on the synthetic scenes, run as a user runs it, for its images/s after warm-up."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rsssl.bench.steps import StepSetup


def pretrain_command(setup: StepSetup, steps: int, workers: int, runs_dir: Path) -> list[str]:
    """`rsssl-pretrain` of MoCo v2 with the setup's backbone, bands, batch, tile and queue."""
    return [
        sys.executable,
        "-m",
        "rsssl.cli.pretrain",
        "method=moco",
        f"method.queue_size={setup.queue}",
        f"backbone.name={setup.backbone}",
        "data=synthetic",
        f"data.num_bands={setup.bands}",
        f"data.tile_size={setup.tile}",
        f"data.batch_size={setup.batch}",
        f"data.num_workers={workers}",
        f"trainer={'gpu' if setup.device.startswith('cuda') else 'cpu'}",
        f"trainer.precision={'bf16-mixed' if setup.precision == 'bf16' else '32-true'}",
        f"speed.channels_last={str(setup.channels_last).lower()}",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=1000",
        "trainer.enable_progress_bar=false",
        f"runs_dir={runs_dir}",
    ]


def pretrain_loop_rate(setup: StepSetup, steps: int = 40, workers: int = 2) -> tuple[float, float]:
    """Images/s and the loader-wait share of the step time that the run's `summary.json` reports
    (`ThroughputMonitor`: every step after the first three and each epoch's first, loading
    included, validation left out)."""
    with tempfile.TemporaryDirectory(prefix="rsssl-bench-") as folder:
        runs = Path(folder) / "runs"
        done = subprocess.run(
            pretrain_command(setup, steps, workers, runs), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"rsssl-pretrain failed ({done.returncode}):\n{done.stderr[-3000:]}")
        summary = json.loads(next(runs.rglob("summary.json")).read_text())
    return float(summary["train_images_per_second_after_warmup"]), float(
        summary["train_loader_wait_fraction"]
    )
