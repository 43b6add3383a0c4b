"""A prepared tile store: a source's scenes decoded once into memory-mapped numpy arrays.

`rsssl-prepare` reads every scene of a source (a GeoTIFF folder, per-band files at mixed
resolutions resampled onto the scene grid, an npz file, ...) and writes, per scene, its pixels
(`<stem>.pixels.npy`, T x C x H x W in the native dtype), its validity (`<stem>.valid.npy`, H x W
bool: nodata, collars and non-finite values already resolved) and its class mask where it has one,
plus `store.json`: the scenes' names, bands, dates, georeference and the description of the source
they came from. `data=store data.root=<folder>` trains on it with the same data module: tiles are
slices of the memory maps (no decompression, no resampling), and the workers share the pages.

The manifest is written last (to a temporary name, then renamed), so a store whose preparation
stopped part-way has none and is refused, never half read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rsssl.data.index import file_identity
from rsssl.data.scene import READ_STRIP, ArrayScene, DataError, Scene, Window
from rsssl.data.sources import Source

STORE_VERSION = 1
MANIFEST = "store.json"


def _write_planes(path: Path, shape: tuple[int, ...], dtype: np.dtype, rows, height: int) -> str:
    """Fill a new .npy memory map strip by strip from `rows(row, count)` (an array of `count`
    rows on the last-but-one axis); returns the file name."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    for row in range(0, height, READ_STRIP):
        count = min(READ_STRIP, height - row)
        array[..., row : row + count, :] = rows(row, count)
    array.flush()
    del array
    return path.name


def _write_scene(scene: Scene, folder: Path, stem: str) -> dict:
    """The arrays of one scene, and its manifest entry."""
    height, width, dates = scene.height, scene.width, len(scene.dates)

    def strip(row: int, count: int) -> Window:
        return Window(row, 0, count, width)

    pixels = _write_planes(
        folder / f"{stem}.pixels.npy",
        (dates, scene.num_bands, height, width),
        np.dtype(scene.dtype),
        lambda row, count: np.stack([scene.read(strip(row, count), date) for date in range(dates)]),
        height,
    )
    valid = _write_planes(
        folder / f"{stem}.valid.npy", (height, width), np.dtype(bool),
        lambda row, count: scene.read_valid(strip(row, count)), height,
    )  # fmt: skip
    mask = None
    if scene.read_mask(Window(0, 0, 1, 1)) is not None:
        mask = _write_planes(
            folder / f"{stem}.mask.npy", (height, width), np.dtype(np.uint8),
            lambda row, count: scene.read_mask(strip(row, count)), height,
        )  # fmt: skip
    return {
        "name": scene.name,
        "bands": list(scene.bands),
        "dtype": np.dtype(scene.dtype).name,
        "shape": [dates, scene.num_bands, height, width],
        "dates": list(scene.dates),
        "transform": list(scene.transform) if scene.transform is not None else None,
        "crs": scene.crs,
        "class_names": list(scene.class_names) if scene.class_names is not None else None,
        "pixels": pixels,
        "valid": valid,
        "mask": mask,
    }


def prepare_store(source: Source, folder: str | Path, overwrite: bool = False) -> dict:
    """Write the store of every scene of `source` into `folder`; returns its manifest."""
    folder = Path(folder).expanduser()
    if (folder / MANIFEST).exists() and not overwrite:
        raise DataError(
            f"{folder} already holds a prepared store ({MANIFEST}): choose another out=, or set "
            "overwrite=true to replace it"
        )
    scenes = source.load()
    if not scenes:
        raise DataError(f"the {source.name} source has no scene to prepare: check its path")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # a store being rewritten is no store until it is done
    entries = [_write_scene(scene, folder, f"scene{i:05d}") for i, scene in enumerate(scenes)]
    manifest = {
        "version": STORE_VERSION,
        "source_name": source.name,
        "source": source.describe(),
        "scenes": entries,
    }
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path) -> dict:
    """The store's manifest, refused with the fix when absent or from another store version."""
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{folder} is no prepared store (no {MANIFEST}; a preparation that stopped part-way leaves "
            "none): run rsssl-prepare data=<your data> out=" + str(folder)
        )
    manifest = json.loads(path.read_text())
    if manifest.get("version") != STORE_VERSION:
        raise DataError(
            f"{path} is store version {manifest.get('version')}, this rsssl reads version {STORE_VERSION}: "
            "prepare it again with rsssl-prepare ... overwrite=true"
        )
    return manifest


def _open(folder: Path, name: str, shape: list[int]) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise DataError(f"{path} is missing from the prepared store: prepare it again (overwrite=true)")
    array = np.load(path, mmap_mode="r")
    if list(array.shape) != list(shape):
        raise DataError(
            f"{path} has shape {list(array.shape)}, the manifest says {shape}: the store was changed "
            "after it was prepared; prepare it again (overwrite=true)"
        )
    return array


class StoreSource(Source):
    """The scenes of a prepared store (`rsssl-prepare`), memory-mapped."""

    name = "store"

    def __init__(self, root: str) -> None:
        if not root:
            raise DataError(
                "data.root is empty: give the folder rsssl-prepare wrote, e.g. data.root=stores/s2"
            )
        self.root = Path(root).expanduser()

    def load(self) -> list[Scene]:
        scenes = []
        for entry in read_manifest(self.root)["scenes"]:
            height, width = entry["shape"][2:]
            scenes.append(
                ArrayScene(
                    entry["name"],
                    _open(self.root, entry["pixels"], entry["shape"]),
                    bands=tuple(entry["bands"]),
                    valid=_open(self.root, entry["valid"], [height, width]),
                    mask=_open(self.root, entry["mask"], [height, width]) if entry["mask"] else None,
                    dates=tuple(entry["dates"]),
                    transform=entry["transform"],
                    crs=entry["crs"],
                    class_names=entry["class_names"],
                )
            )
        return scenes

    def describe(self) -> dict:
        """The manifest and every array it names, by size and modification time."""
        if not (self.root / MANIFEST).is_file():
            return {"store": str(self.root)}
        manifest = read_manifest(self.root)
        names = [e[key] for e in manifest["scenes"] for key in ("pixels", "valid", "mask") if e[key]]
        return {
            "store": file_identity(self.root / MANIFEST),
            "files": [file_identity(self.root / n) for n in names],
        }
