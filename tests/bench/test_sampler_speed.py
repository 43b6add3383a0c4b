"""Tiles per second of the training sampler with 2 workers, plain and with spatial neighbours (`make slow`).

Each row times the real `RSDataModule.train_dataloader` (workers slicing uint tiles, collation)
over the same number of batches, plain and with `neighbor` tiles, in one run so that both see
the same machine load. The table is printed; the check is a ratio: a neighbour is one more
windowed read per sample (plus redraws off nodata), so it may cost about half the rate, not more.
"""

from __future__ import annotations

import os
import time

import pytest

from rsssl.data.datamodule import RSDataModule
from rsssl.data.sources import GeoTiffSource, Source, SyntheticSource

pytestmark = pytest.mark.slow

BATCH, TILE, WORKERS = 64, 32, 2
WARMUP, BATCHES = 3, 40
MIN_NEIGHBOUR_RATIO = 0.3


def tiles_per_second(source: Source, keys: list[str], cache_dir: str) -> float:
    """Tiles/s of `BATCHES` training batches after `WARMUP` (worker start-up is not counted)."""
    dm = RSDataModule(
        source, tile_size=TILE, batch_size=BATCH, num_workers=WORKERS, stats_cache_dir=cache_dir
    )
    dm.prepare()
    dm.require(keys)
    loader = dm.train_dataloader()
    seen, start = 0, 0.0
    while True:  # epochs repeat until enough batches are timed
        for batch in loader:
            seen += 1
            if seen == WARMUP:
                start = time.perf_counter()
            if seen == WARMUP + BATCHES:
                return BATCHES * BATCH / (time.perf_counter() - start)
            assert batch["image"].shape[-1] == TILE


SOURCES = {
    "geotiff/rgbn (4 bands, uint16)": lambda: GeoTiffSource(
        os.path.join(os.environ["RSSSL_DATA_DIR"], "geotiff", "rgbn"), band_preset="rgbn"
    ),
    "synthetic, 4 bands": lambda: SyntheticSource(num_scenes=4, size=512, num_bands=4),
    "synthetic, 13 bands": lambda: SyntheticSource(num_scenes=4, size=512, num_bands=13),
}


def test_sampler_tiles_per_second(data_dir, tmp_path, capsys):
    rows = []
    for name, make in SOURCES.items():
        plain = tiles_per_second(make(), [], str(tmp_path))
        neighbours = tiles_per_second(make(), ["neighbor"], str(tmp_path))
        rows.append((name, plain, neighbours))
    with capsys.disabled():
        print(f"\nsampler: {WORKERS} workers, tile {TILE}, batch {BATCH}, cpus {os.cpu_count()}")
        print("| data | plain tiles/s | with neighbours tiles/s | ratio |\n|---|---|---|---|")
        for name, plain, neighbours in rows:
            print(f"| {name} | {plain:.0f} | {neighbours:.0f} | {neighbours / plain:.2f} |")
    for name, plain, neighbours in rows:
        assert neighbours >= MIN_NEIGHBOUR_RATIO * plain, (name, plain, neighbours)
