"""Soak (`make slow`): 2,000 steps of MoCo v2 on a GeoTIFF folder with 2 DataLoader workers,
through `rsssl.cli.pretrain` in a subprocess; memory must stay flat between step 100 and 2,000.

The trainer's own callback (`tests.helpers.memory.MemoryAt`) writes the process tree's memory at
steps 100 and 2,000: the main process's peak resident memory (VmHWM), the largest worker peak and
the tree's resident memory then. A leak of a few hundred bytes per step per tile (a kept graph,
a growing list of logged values, a cache without a bound) would add tens of MiB over the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SCENES, SIZE, BANDS = 4, 1024, 4
STEPS = (100, 2000)
OVERRIDES = [
    "method=moco",
    "backbone=resnet18",
    "data=geotiff",
    "trainer=cpu",
    "data.num_workers=2",
    "data.batch_size=16",
    "data.tile_size=64",
    f"trainer.max_steps={STEPS[-1]}",
    "trainer.max_epochs=null",
    "trainer.enable_progress_bar=false",
]


def write_folder(folder: Path) -> None:
    """SCENES tiled uint16 GeoTIFFs: a blocky field of 64 px cells plus noise, side by side."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(SCENES):
        cells = rng.uniform(2_000, 30_000, (BANDS, SIZE // 64, SIZE // 64))
        pixels = np.kron(cells, np.ones((64, 64))) + rng.integers(0, 1024, (BANDS, SIZE, SIZE))
        profile = {
            "driver": "GTiff", "width": SIZE, "height": SIZE, "count": BANDS, "dtype": "uint16",
            "crs": "EPSG:32618", "transform": Affine(10.0, 0, 500_000.0 + i * SIZE * 10, 0, -10.0, 4e6),
            "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        }  # fmt: skip
        with rasterio.open(folder / f"scene_{i}.tif", "w", **profile) as ds:
            ds.write(pixels.astype(np.uint16))


@pytest.mark.timeout(3600)  # 22 minutes on 2 cores
def test_memory_stays_flat_over_2000_steps(tmp_path: Path) -> None:
    write_folder(tmp_path / "tifs")
    figures = tmp_path / "memory.json"
    steps = ",".join(map(str, STEPS))
    probe = f"callbacks=[{{_target_:tests.helpers.memory.MemoryAt,steps:[{steps}],path:'{figures}'}}]"
    command = [
        sys.executable, "-m", "rsssl.cli.pretrain", *OVERRIDES, f"data.root={tmp_path / 'tifs'}",
        f"data.stats_cache_dir={tmp_path / 'cache'}", f"runs_dir={tmp_path / 'runs'}", probe,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    at = {int(step): value for step, value in json.loads(figures.read_text()).items()}
    early, late = at[STEPS[0]], at[STEPS[1]]
    print(f"\npython -m rsssl.cli.pretrain {' '.join(OVERRIDES)} data.root=<{SCENES} x {SIZE}^2 x {BANDS}>")
    print("| step | main VmHWM MiB | max worker VmHWM MiB | workers | tree RSS MiB |")
    print("|---|---|---|---|---|")
    for step in STEPS:
        m = at[step]
        cells = (
            f"{m['main_peak']:.0f}",
            f"{m['worker_peak']:.0f}",
            str(m["workers"]),
            f"{m['tree_rss']:.0f}",
        )
        print(f"| {step} | {' | '.join(cells)} |")
    assert late["workers"] == early["workers"] == 2
    for measure in ("main_peak", "worker_peak", "tree_rss"):
        assert late[measure] < early[measure] * 1.05 + 32, (measure, early[measure], late[measure])
