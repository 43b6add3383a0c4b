"""A folder of ordinary pictures made without any download: the photographs matplotlib and
scikit-learn ship (Grace Hopper's portrait, a gift pack, a Chinese temple, a flower), for trying a
learning path's general stage.

    python -m rsssl.data.sample_pictures runs/pictures
"""

from __future__ import annotations

import shutil
import sys
from importlib.resources import files
from pathlib import Path

MATPLOTLIB_PICTURES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
SKLEARN_PICTURES = ("china.jpg", "flower.jpg")


def sample_picture_paths() -> list[Path]:
    """Where the installed matplotlib and scikit-learn keep their sample photographs."""
    from matplotlib import cbook

    matplotlib = [Path(cbook.get_sample_data(name, asfileobj=False)) for name in MATPLOTLIB_PICTURES]
    sklearn = [Path(str(files("sklearn.datasets.images").joinpath(name))) for name in SKLEARN_PICTURES]
    return matplotlib + sklearn


def copy_sample_pictures(folder: str | Path) -> list[Path]:
    """Copy the sample photographs into `folder` (made if needed); the copied paths."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(path, folder / path.name)) for path in sample_picture_paths()]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rsssl.data.sample_pictures FOLDER")
    for path in copy_sample_pictures(sys.argv[1]):
        print(path)
