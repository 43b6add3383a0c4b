"""The on-disk caches (band statistics, the GeoTIFF folder index) under concurrent writers and
after a killed writer: every writer succeeds, and a corrupt entry is recomputed with a warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from rsssl.data.index import index_folder
from rsssl.data.stats import BandStats, cached_band_stats
from tests.data.test_geotiff_source import random_pixels, write_tif

FIRST, SECOND = BandStats((1.0, 2.0), (3.0, 4.0)), BandStats((5.0, 6.0), (7.0, 8.0))


def stored(cache: Path) -> BandStats:
    (path,) = cache.glob("stats-*.json")
    return BandStats.from_dict(json.loads(path.read_text())["stats"])


def test_truncated_stats_entry_is_recomputed_with_a_warning(tmp_path: Path, caplog) -> None:
    cached_band_stats(tmp_path, {"x": 1}, lambda: FIRST)
    (path,) = tmp_path.glob("stats-*.json")
    path.write_text(path.read_text()[:20])  # what a writer killed mid-write leaves
    with caplog.at_level(logging.WARNING):
        assert cached_band_stats(tmp_path, {"x": 1}, lambda: SECOND) == SECOND
    assert f"{path} is corrupt" in caplog.text and "recomputing it" in caplog.text
    assert stored(tmp_path) == SECOND  # the entry is whole again
    assert cached_band_stats(tmp_path, {"x": 1}, lambda: FIRST) == SECOND


def test_stats_entry_of_another_shape_is_recomputed(tmp_path: Path, caplog) -> None:
    cached_band_stats(tmp_path, {"x": 1}, lambda: FIRST)
    (path,) = tmp_path.glob("stats-*.json")
    path.write_text(json.dumps({"source": {"x": 1}}))
    with caplog.at_level(logging.WARNING):
        assert cached_band_stats(tmp_path, {"x": 1}, lambda: SECOND) == SECOND
    assert f"{path} is corrupt (KeyError" in caplog.text


def test_two_writers_of_one_stats_key_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second writer (another DDP rank) writes and renames the same entry between the first
    writer's write and its rename."""
    replace, second = os.replace, []

    def interleaved(src: str | Path, dst: str | Path) -> None:
        monkeypatch.setattr(os, "replace", replace)
        second.append(cached_band_stats(tmp_path, {"x": 1}, lambda: SECOND))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", interleaved)
    assert cached_band_stats(tmp_path, {"x": 1}, lambda: FIRST) == FIRST
    assert second == [SECOND]
    assert stored(tmp_path) == FIRST  # the last rename wins, whole
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_truncated_index_is_rebuilt_with_a_warning(tmp_path: Path, caplog) -> None:
    folder, cache = tmp_path / "scenes", tmp_path / "cache"
    write_tif(folder / "a.tif", random_pixels(2))
    first = index_folder(folder, cache)
    assert first.cache is not None
    first.cache.write_text(first.cache.read_text()[:50])
    with caplog.at_level(logging.WARNING):
        second = index_folder(folder, cache)
    assert f"{first.cache} is corrupt" in caplog.text
    assert second.scenes == first.scenes
    assert json.loads(first.cache.read_text())["scenes"][0]["name"] == "a"
