"""The photo-folder source: a truncated or corrupt picture fails naming it, or is skipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsssl.data.scene import DataError
from rsssl.data.sources import PhotoFolderSource


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """Four 40 px RGB pictures; b.png is cut short, c.jpg holds text."""
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.jpg", "d.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    data = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "c.jpg").write_text("not a picture")
    return tmp_path


def test_unreadable_pictures_fail_naming_each(pictures: Path) -> None:
    with pytest.raises(DataError) as error:
        PhotoFolderSource(str(pictures)).load()
    message = str(error.value)
    assert "2 of 4 scenes cannot be read" in message and "data.unreadable=skip" in message
    assert "b.png (OSError" in message and "c.jpg (UnidentifiedImageError" in message


def test_unreadable_pictures_are_skipped_with_a_count(pictures: Path, caplog) -> None:
    scenes = PhotoFolderSource(str(pictures), unreadable="skip").load()
    assert [s.name for s in scenes] == ["a.png", "d.png"]
    assert "skipped 2 of 4 scenes that cannot be read" in caplog.text


def test_the_sample_pictures_are_four_rgb_photographs_from_installed_packages(tmp_path: Path) -> None:
    """matplotlib's two photographs and scikit-learn's two, copied with no download."""
    from rsssl.data.sample_pictures import copy_sample_pictures

    copied = copy_sample_pictures(tmp_path)
    scenes = PhotoFolderSource(str(tmp_path)).load()
    assert sorted(p.name for p in copied) == sorted(s.name for s in scenes)
    assert sorted(s.name for s in scenes) == [
        "Minduka_Present_Blue_Pack.png", "china.jpg", "flower.jpg", "grace_hopper.jpg"
    ]  # fmt: skip
    assert all(s.images.shape[:2] == (1, 3) and s.images.dtype == np.uint8 for s in scenes)
    assert all(s.bands == ("red", "green", "blue") for s in scenes)
    assert {s.images.shape[2:] for s in scenes if s.name in ("china.jpg", "flower.jpg")} == {(427, 640)}
