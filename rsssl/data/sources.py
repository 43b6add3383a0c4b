"""Data sources: where scenes come from. Each is selected by a `conf/data/*.yaml` file.

A source loads its scenes, describes itself for the statistics cache, and may offer a
labelled held-out source that the online probe is validated on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from rsssl.data.scene import DataError, Scene


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime": int(stat.st_mtime)}


class Source(ABC):
    """A set of scenes with a stable description (used to key cached statistics)."""

    name: str = "source"

    @abstractmethod
    def load(self) -> list[Scene]:
        """Every scene of the source."""

    @abstractmethod
    def describe(self) -> dict:
        """What identifies the data (paths, sizes, times, generator settings)."""

    def validation(self) -> Source | None:
        """A labelled held-out source for validating the online probe, when there is one."""
        return None


class SyntheticSource(Source):
    """Procedural land-cover scenes; validation uses scenes generated from another seed."""

    name = "synthetic"

    def __init__(
        self,
        num_scenes: int = 8,
        size: int = 512,
        num_bands: int = 4,
        num_classes: int = 6,
        num_dates: int = 3,
        seed: int = 0,
        val_scenes: int = 2,
    ) -> None:
        self.settings = dict(
            num_scenes=num_scenes,
            size=size,
            num_bands=num_bands,
            num_classes=num_classes,
            num_dates=num_dates,
            seed=seed,
        )
        self.val_scenes = val_scenes

    def load(self) -> list[Scene]:
        from rsssl.data.synthetic import make_synthetic_scenes

        return list(make_synthetic_scenes(**self.settings))

    def describe(self) -> dict:
        return {"synthetic": self.settings}

    def validation(self) -> Source | None:
        if self.val_scenes <= 0:
            return None
        settings = dict(self.settings, num_scenes=self.val_scenes, seed=self.settings["seed"] + 100_003)
        return SyntheticSource(**settings, val_scenes=0)


class NpzSource(Source):
    """Scenes stored in one .npz file (layout documented in `rsssl.data.npz`)."""

    name = "npz"

    def __init__(self, path: str, band_names: list[str] | None = None) -> None:
        if not path:
            raise DataError("data.path is empty: give the .npz file, e.g. data.path=/data/scene.npz")
        self.path = Path(path).expanduser()
        self.band_names = list(band_names) if band_names else None

    def load(self) -> list[Scene]:
        from rsssl.data.npz import load_npz_scenes

        return list(load_npz_scenes(self.path, band_names=self.band_names))

    def describe(self) -> dict:
        if not self.path.exists():
            return {"npz": str(self.path)}
        return {"npz": _file_identity(self.path), "band_names": self.band_names}


class GeoTiffSource(Source):
    """A folder of GeoTIFF scenes read with windowed reads."""

    name = "geotiff"

    def __init__(self, root: str, nodata: float | None = None) -> None:
        if not root:
            raise DataError("data.root is empty: give a folder of GeoTIFF scenes, e.g. data.root=/data/tifs")
        self.root = Path(root).expanduser()
        self.nodata = nodata

    def load(self) -> list[Scene]:
        from rsssl.data.geotiff import load_geotiff_folder

        return list(load_geotiff_folder(self.root, nodata=self.nodata))

    def describe(self) -> dict:
        if not self.root.is_dir():
            return {"geotiff": str(self.root)}
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in (".tif", ".tiff"))
        return {"geotiff": [_file_identity(p) for p in files], "nodata": self.nodata}
