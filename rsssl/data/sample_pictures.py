"""A folder of ordinary pictures made without any download: the photographs matplotlib ships
(Grace Hopper's portrait, a photographed gift pack), for trying a learning path's general stage.

    python -m rsssl.data.sample_pictures runs/pictures
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PICTURES = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")


def copy_sample_pictures(folder: str | Path) -> list[Path]:
    """Copy matplotlib's sample photographs into `folder` (made if needed); the copied paths."""
    from matplotlib import cbook

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy(cbook.get_sample_data(name, asfileobj=False), folder / name)) for name in PICTURES
    ]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m rsssl.data.sample_pictures FOLDER")
    for path in copy_sample_pictures(sys.argv[1]):
        print(path)
