"""Peak memory of pretraining does not grow with the size of a GeoTIFF folder (`make slow`).

A folder of several GB of compressed 8192 x 8192 uint16 scenes is written once into a temporary
dir (deleted afterwards); a short pretraining runs through `rsssl.cli.pretrain` in a
subprocess on one scene, then on the whole folder, and the peak resident memory (VmHWM) of
the process tree, the trainer and its DataLoader workers, is compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from tests.helpers.memory import descendants, proc_kib

pytestmark = pytest.mark.slow

SIZE, BANDS, STRIP = 8192, 4, 512
SCENES = 10
STEPS = 20
OVERRIDES = [
    "method=moco",
    "backbone=tiny",
    "data=geotiff",
    "trainer=debug",
    "data.num_workers=2",
    f"trainer.max_steps={STEPS}",
]


def write_scene(path: Path, seed: int) -> None:
    """A 4-band uint16 tiled deflate GeoTIFF: blocky low-frequency field + 10 bits of noise, a nodata collar.

    Written strip by strip, so writing it never holds the scene in memory.
    """
    rng = np.random.default_rng(seed)
    cells = rng.uniform(2_000, 30_000, (BANDS, SIZE // 256, SIZE // 256))
    profile = {
        "driver": "GTiff",
        "width": SIZE,
        "height": SIZE,
        "count": BANDS,
        "dtype": "uint16",
        "crs": "EPSG:32618",
        "transform": Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "zlevel": 1,
        "num_threads": 2,
    }
    cell_of = np.arange(SIZE) // 256
    with rasterio.open(path, "w", **profile) as ds:
        for row in range(0, SIZE, STRIP):
            strip = cells[:, cell_of[row : row + STRIP]][:, :, cell_of].astype(np.uint16)
            strip += rng.integers(0, 1024, strip.shape, dtype=np.uint16)
            if row == 0:
                strip[:, :256] = 0
            ds.write(strip, window=Window(0, row, SIZE, STRIP))


def pretrain_peak(root: Path, work: Path) -> dict[str, float]:
    """Run a short pretraining on `root`; peak memory (MiB) of its processes, and its wall time."""
    command = [
        sys.executable,
        "-m",
        "rsssl.cli.pretrain",
        *OVERRIDES,
        f"data.root={root}",
        f"data.stats_cache_dir={work / 'cache'}",
        f"runs_dir={work / 'runs'}",
    ]
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks: dict[int, int] = {}
    tree_pss = 0

    def watch() -> None:
        nonlocal tree_pss
        while process.poll() is None:
            pids = descendants(process.pid)
            for pid in pids:
                peaks[pid] = max(peaks.get(pid, 0), proc_kib(pid, "status", "VmHWM"))
            tree_pss = max(tree_pss, sum(proc_kib(pid, "smaps_rollup", "Pss") for pid in pids))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output, _ = process.communicate(timeout=600)
    watcher.join()
    assert process.returncode == 0, output[-3000:]
    workers = [kib for pid, kib in peaks.items() if pid != process.pid]
    return {
        "main": peaks.get(process.pid, 0) / 1024,
        "worker": max(workers, default=0) / 1024,
        "processes": len(peaks),
        "sum_of_peaks": sum(peaks.values()) / 1024,
        "tree_pss": tree_pss / 1024,
        "seconds": time.time() - start,
    }


@pytest.fixture(scope="module")
def big_folder(tmp_path_factory: pytest.TempPathFactory):
    """SCENES scenes of SIZE^2 x BANDS uint16 (one generated, the others byte copies), deleted after."""
    base = tmp_path_factory.mktemp("geotiff_scale")
    folder = base / "all"
    folder.mkdir()
    write_scene(folder / "scene_00.tif", seed=0)
    for i in range(1, SCENES):
        shutil.copyfile(folder / "scene_00.tif", folder / f"scene_{i:02d}.tif")
    single = base / "one"
    single.mkdir()
    os.link(folder / "scene_00.tif", single / "scene_00.tif")
    yield base
    shutil.rmtree(base)


def test_peak_memory_does_not_grow_with_folder_size(big_folder: Path) -> None:
    on_disk = sum(p.stat().st_size for p in (big_folder / "all").iterdir()) / 2**30
    assert on_disk >= 3.0
    raw = SCENES * SIZE * SIZE * BANDS * 2 / 2**30
    one = pretrain_peak(big_folder / "one", big_folder / "work_one")
    full = pretrain_peak(big_folder / "all", big_folder / "work_all")
    again = pretrain_peak(big_folder / "all", big_folder / "work_all")  # index + overviews cached
    rows = [
        ("1 scene", SIZE * SIZE * BANDS * 2 / 2**30, on_disk / SCENES, one),
        (f"{SCENES} scenes", raw, on_disk, full),
        (f"{SCENES} scenes, cached index", raw, on_disk, again),
    ]
    print(f"\npython -m rsssl.cli.pretrain {' '.join(OVERRIDES)} data.root=<folder>")
    print(
        "| folder | raw GiB | on disk GiB | main VmHWM MiB | max worker VmHWM MiB | sum of VmHWM MiB "
        "| peak tree PSS MiB | s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, raw_gib, disk_gib, peak in rows:
        print(
            f"| {label} | {raw_gib:.1f} | {disk_gib:.2f} | {peak['main']:.0f} | {peak['worker']:.0f} | "
            f"{peak['sum_of_peaks']:.0f} | {peak['tree_pss']:.0f} | {peak['seconds']:.0f} |"
        )
    for peak in (full, again):
        for measure in ("sum_of_peaks", "tree_pss"):
            assert peak[measure] < 1.5 * one[measure], measure
            assert peak[measure] < one[measure] + 300, measure
