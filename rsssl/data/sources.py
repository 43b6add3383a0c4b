"""Data sources: where scenes come from. Each is selected by a `conf/data/*.yaml` file.

A source loads its scenes, describes itself for the statistics cache, and may offer a
labelled held-out source that the online probe is validated on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rsssl.data.scene import DataError, Scene, UnreadableFile, check_unreadable_policy, report_unreadable


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
        num_classes: int = 8,
        num_dates: int = 3,
        seed: int = 0,
        val_scenes: int = 2,
        num_regions: int = 4,
        region_seed: int = 0,
        nuisance: Mapping[str, float] | None = None,
        dtype: str = "uint16",
    ) -> None:
        self.settings = dict(
            num_scenes=num_scenes,
            size=size,
            num_bands=num_bands,
            num_classes=num_classes,
            num_dates=num_dates,
            seed=seed,
            num_regions=num_regions,
            region_seed=region_seed,
            nuisance=dict(nuisance or {}),
        )
        if dtype != "uint16":  # uint8: 8-bit optical imagery (the default's description stays as it was)
            self.settings["dtype"] = dtype
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

    def __init__(
        self,
        path: str,
        band_names: list[str] | None = None,
        leave_out: Mapping[str, Sequence[Sequence[int]]] | None = None,
    ) -> None:
        if not path:
            raise DataError("data.path is empty: give the .npz file, e.g. data.path=/data/scene.npz")
        self.path = Path(path).expanduser()
        self.band_names = list(band_names) if band_names else None
        #: per scene key, [row, col, height, width] windows marked as no data (an evaluation split's
        #: test tiles, `rsssl.eval.seg_data.evaluation_test_windows`): no training tile or statistic uses them
        self.leave_out = {k: [list(map(int, w)) for w in v] for k, v in (leave_out or {}).items()}

    def load(self) -> list[Scene]:
        from rsssl.data.npz import load_npz_scenes

        kept = []
        for scene in load_npz_scenes(self.path, band_names=self.band_names):
            windows = self.leave_out.get(scene.name, [])
            if windows:
                valid = (
                    np.ones((scene.height, scene.width), bool) if scene.valid is None else scene.valid.copy()
                )
                for row, col, height, width in windows:
                    valid[row : row + height, col : col + width] = False
                if not valid.any():  # a test image as a whole: no scene of pretraining at all
                    continue
                scene.valid = valid
            kept.append(scene)
        if not kept:
            raise DataError(
                f"{self.path}: every scene lies in the evaluation's test split, none is left to pretrain on: "
                "pretrain on other data, or set data.leave_out_test=false"
            )
        return kept

    def describe(self) -> dict:
        from rsssl.data.index import file_identity

        if not self.path.exists():
            return {"npz": str(self.path)}
        described = {"npz": file_identity(self.path), "band_names": self.band_names}
        return described | ({"leave_out": self.leave_out} if self.leave_out else {})


class GeoTiffSource(Source):
    """GeoTIFF scenes of one folder or several, indexed once (cached) and read by window.

    `root`: a folder or a list of folders. `band_preset`: names the bands of files that carry
    none (`rsssl.data.bands.PRESETS`), one for all folders or a list aligned with `root`.
    `date_pattern`: a regular expression whose group 'date' finds each file's date in its name
    (every file must match). `bands`: keep only these bands, matched by canonical name, so
    folders of different sensors share their common bands. `cache_dir`: where the folder index
    and validity overviews are cached (None: not cached). `resampling`: bilinear | nearest, how
    bands coarser than a scene's grid are read onto it. `unreadable`: fail | skip, what a scene
    with a truncated or corrupt file does (`rsssl.data.geotiff.load_geotiff_folder`).
    """

    name = "geotiff"

    def __init__(
        self,
        root: str | Sequence[str],
        nodata: float | None = None,
        band_preset: str | Sequence[str | None] | None = None,
        date_pattern: str | None = None,
        bands: Sequence[str] | None = None,
        cache_dir: str | None = None,
        resampling: str = "bilinear",
        unreadable: str = "fail",
    ) -> None:
        roots = [root] if isinstance(root, (str, Path)) else list(root)
        if not roots or not all(roots):
            raise DataError("data.root is empty: give a folder of GeoTIFF scenes, e.g. data.root=/data/tifs")
        self.roots = [Path(r).expanduser() for r in roots]
        self.nodata = nodata
        self.band_preset = (
            band_preset if band_preset is None or isinstance(band_preset, str) else list(band_preset)
        )
        self.date_pattern = date_pattern
        self.bands = list(bands) if bands else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.resampling = resampling
        self.unreadable = check_unreadable_policy(unreadable)

    def load(self) -> list[Scene]:
        from rsssl.data.geotiff import load_geotiff_folders

        return list(
            load_geotiff_folders(
                self.roots,
                self.nodata,
                self.band_preset,
                self.date_pattern,
                self.cache_dir,
                self.bands,
                self.resampling,
                self.unreadable,
            )
        )

    def describe(self) -> dict:
        from rsssl.data.index import folder_identity

        return {
            "geotiff": [folder_identity(r) if r.is_dir() else str(r) for r in self.roots],
            "nodata": self.nodata,
            "band_preset": self.band_preset,
            "date_pattern": self.date_pattern,
            "bands": self.bands,
            "resampling": self.resampling,
        }


class PhotoFolderSource(Source):
    """Ordinary photographs (png/jpg, or tif) anywhere under `root`, one unreferenced scene each:
    the general-knowledge stage of a learning path (TOV), or any picture collection. Every image
    is decoded once and held in memory (uint8/uint16, C x H x W); all must have the same bands.
    `band_names` names them (default: red, green, blue for RGB pictures, else b1..bN).
    `unreadable`: fail | skip, what a truncated or corrupt picture does (all are named either way)."""

    name = "photos"

    def __init__(self, root: str, band_names: Sequence[str] | None = None, unreadable: str = "fail") -> None:
        if not root:
            raise DataError("data.root is empty: give a folder of pictures, e.g. data.root=/data/photos")
        self.root = Path(root).expanduser()
        self.band_names = list(band_names) if band_names else None
        self.unreadable = check_unreadable_policy(unreadable)

    def files(self) -> list[Path]:
        from rsssl.data.images import PILLOW_SUFFIXES, RASTERIO_SUFFIXES

        if not self.root.is_dir():
            raise DataError(f"data.root={self.root} is not a folder: give a folder of pictures")
        suffixes = PILLOW_SUFFIXES + RASTERIO_SUFFIXES
        found = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not found:
            raise DataError(
                f"{self.root} holds no picture ({', '.join(suffixes)}): add some or fix data.root"
            )
        return found

    def load(self) -> list[Scene]:
        from rsssl.data.images import image_header, read_image_pixels
        from rsssl.data.scene import ArrayScene

        scenes, first, failures = [], None, []
        files = self.files()
        for path in files:
            try:
                count, _, _, dtype, names = image_header(path)
                pixels = read_image_pixels(path)
            except UnreadableFile as err:
                failures.append(err)
                continue
            if first is None:
                first = (path, count, dtype, self.band_names or names)
            elif (count, dtype) != first[1:3]:
                raise DataError(
                    f"{path} has {count} bands of {dtype}, {first[0]} {first[1]} of {first[2]}: every "
                    "picture of data.root needs the same bands (convert them, or keep them apart)"
                )
            scene_name = str(path.relative_to(self.root))
            scenes.append(ArrayScene(scene_name, pixels, bands=first[3]))
        report_unreadable(str(self.root), failures, len(files), self.unreadable)
        return scenes

    def describe(self) -> dict:
        from rsssl.data.index import file_identity

        if not self.root.is_dir():
            return {"photos": str(self.root)}
        return {"photos": [file_identity(p) for p in self.files()], "band_names": self.band_names}
