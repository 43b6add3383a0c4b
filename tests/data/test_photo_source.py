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
