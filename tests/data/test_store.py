"""The prepared tile store (`rsssl-prepare`, `data=store`): the same scenes, pixels, validity and
tiles as the source it was prepared from, and a clear refusal of a store that is not whole."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rsssl.cli.prepare import main as prepare_main
from rsssl.data.datamodule import RSDataModule
from rsssl.data.scene import ArrayScene, DataError, Window
from rsssl.data.sources import GeoTiffSource
from rsssl.data.store import MANIFEST, StoreSource, prepare_store
from tests.cli.test_pretrain_errors import run_cli
from tests.data.test_geotiff_resampling import BILINEAR_ROW, EXPECTED_VALID, write_scene
from tests.data.test_geotiff_source import write_tif
from tests.helpers.problems import ListSource

FULL = Window(0, 0, 8, 8)


def test_mixed_resolution_scene_is_stored_as_read(tmp_path: Path) -> None:
    """A 10 m and a 20 m band with a nodata collar: the store holds the resampled pixels and the
    per-band validity the GeoTIFF reader gives, with the names, georeference and dates."""
    folder = tmp_path / "tifs"
    folder.mkdir()
    write_scene(folder, np.uint16, 0, 0)
    source = GeoTiffSource(str(folder))
    prepare_store(source, tmp_path / "store")
    (tif,) = source.load()
    (stored,) = StoreSource(str(tmp_path / "store")).load()
    np.testing.assert_array_equal(stored.read(FULL)[1, 4], BILINEAR_ROW)  # B05 as bilinear read it
    np.testing.assert_array_equal(stored.read(FULL), tif.read(FULL))
    np.testing.assert_array_equal(stored.read_valid(FULL), EXPECTED_VALID)
    for attr in ("name", "bands", "dtype", "dates", "transform", "crs", "height", "width"):
        assert getattr(stored, attr) == getattr(tif, attr), attr
    assert isinstance(stored.images, np.memmap)  # read by slicing the memory map, not loaded


def _batches(source, tmp_path: Path, count: int = 3) -> list[torch.Tensor]:
    datamodule = RSDataModule(
        source, tile_size=16, batch_size=4, num_workers=0, stats_cache_dir=str(tmp_path / "c"), seed=3
    )
    datamodule.prepare()
    loader = iter(datamodule.train_dataloader())
    return [next(loader)["image"] for _ in range(count)]


def test_training_tiles_equal_the_geotiff_tiles(tmp_path: Path) -> None:
    """The data module draws the same tiles in the same order from the store as from the files."""
    folder = tmp_path / "tifs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = rng.integers(1, 4000, (3, 48, 64)).astype(np.uint16)
        pixels[:, :8, :] = 0  # a collar: its tiles are dropped from both alike
        write_tif(folder / f"{name}.tif", pixels, nodata=0)
    source = GeoTiffSource(str(folder), cache_dir=str(tmp_path / "c"))
    prepare_store(source, tmp_path / "store")
    for ours, theirs in zip(
        _batches(StoreSource(str(tmp_path / "store")), tmp_path), _batches(source, tmp_path)
    ):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_class_masks_and_dates_are_kept(tmp_path: Path) -> None:
    pixels = np.arange(2 * 2 * 6 * 5, dtype=np.uint8).reshape(2, 2, 6, 5)
    mask = (np.arange(30).reshape(6, 5) % 3).astype(np.uint8)
    scene = ArrayScene("s", pixels, bands=("red", "nir"), mask=mask, dates=("2020-01-01", "2020-06-01"),
                       class_names=("a", "b", "c"))  # fmt: skip
    prepare_store(ListSource([scene]), tmp_path / "store")
    (stored,) = StoreSource(str(tmp_path / "store")).load()
    window = Window(1, 2, 4, 3)
    np.testing.assert_array_equal(stored.read(window, 1), pixels[1, :, 1:5, 2:5])
    np.testing.assert_array_equal(stored.read_mask(window), mask[1:5, 2:5])
    assert stored.dates == ("2020-01-01", "2020-06-01") and stored.class_names == ("a", "b", "c")
    assert stored.valid is not None and stored.valid.all()


def _small_store(tmp_path: Path) -> Path:
    scene = ArrayScene("s", np.ones((1, 2, 8, 8), np.uint16), bands=("b1", "b2"))
    prepare_store(ListSource([scene]), tmp_path / "store")
    return tmp_path / "store"


def test_an_existing_store_is_kept_unless_overwrite(tmp_path: Path) -> None:
    store = _small_store(tmp_path)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    other = ArrayScene("t", np.zeros((1, 2, 8, 8), np.uint16), bands=("b1", "b2"))
    with pytest.raises(DataError, match="already holds a prepared store.*overwrite=true"):
        prepare_store(ListSource([other]), store)
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before
    prepare_store(ListSource([other]), store, overwrite=True)
    assert StoreSource(str(store)).load()[0].name == "t"


def test_a_store_that_is_not_whole_is_refused(tmp_path: Path) -> None:
    store = _small_store(tmp_path)
    manifest = json.loads((store / MANIFEST).read_text())
    np.save(store / "scene00000.valid.npy", np.ones((4, 8), bool))  # rewritten since
    with pytest.raises(DataError, match=r"valid\.npy has shape \[4, 8\], the manifest says \[8, 8\]"):
        StoreSource(str(store)).load()
    (store / "scene00000.valid.npy").unlink()
    with pytest.raises(DataError, match=r"valid\.npy is missing from the prepared store"):
        StoreSource(str(store)).load()
    (store / MANIFEST).write_text(json.dumps(manifest | {"version": 0}))
    with pytest.raises(DataError, match="store version 0, this rsssl reads version 1"):
        StoreSource(str(store)).load()
    (store / MANIFEST).unlink()  # what a preparation stopped part-way leaves
    with pytest.raises(DataError, match="no prepared store .*run rsssl-prepare"):
        StoreSource(str(store)).load()


def test_a_rewritten_array_changes_the_description(tmp_path: Path) -> None:
    """The cached index and statistics are keyed by `describe`: a changed array is a new store."""
    store = _small_store(tmp_path)
    before = StoreSource(str(store)).describe()
    np.save(store / "scene00000.pixels.npy", np.full((1, 2, 8, 8), 7, np.uint16))
    assert StoreSource(str(store)).describe() != before


def test_prepare_then_pretrain_through_the_entry_points(tmp_path: Path, monkeypatch, capsys) -> None:
    folder = tmp_path / "tifs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_tif(folder / f"{name}.tif", rng.integers(1, 4000, (3, 64, 64)).astype(np.uint16))
    store = tmp_path / "store"
    monkeypatch.setattr(sys, "argv", ["rsssl-prepare", "data=geotiff", f"data.root={folder}", f"out={store}"])
    prepare_main()
    assert "2 scenes" in capsys.readouterr().out
    run_cli(["data=store", f"data.root={store}", "data.tile_size=32", "data.batch_size=4",
             "trainer.max_steps=2", "method=simclr"], tmp_path, monkeypatch)  # fmt: skip
    (summary,) = (tmp_path / "runs").glob("*/*/summary.json")
    assert json.loads(summary.read_text())["steps"] == 2
    monkeypatch.setattr(sys, "argv", ["rsssl-prepare", "data=geotiff", f"data.root={folder}", f"out={store}"])
    with pytest.raises(SystemExit) as stopped:
        prepare_main()
    assert stopped.value.code == 2 and "overwrite=true" in capsys.readouterr().err
