"""Scene-classification evaluation sets: synthetic tiles, image folders, torchgeo datasets.

Every builder returns a checked `EvalDataset(task="classification")` whose images stay uint8 /
uint16 (N x C x H x W) until they reach the device. Decoding happens once, here, on load.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rsssl.data.images import PILLOW_SUFFIXES, RASTERIO_SUFFIXES, image_header, read_image_pixels
from rsssl.data.scene import ArrayScene, DataError
from rsssl.data.synthetic import make_synthetic_scenes, scene_regions
from rsssl.data.tiles import TileIndex, build_tile_index
from rsssl.eval.data import EvalDataset, EvalSplit, check_splits, split_name
from rsssl.eval.linear import split_train_val

log = logging.getLogger(__name__)

# Pretraining's `data=synthetic` validates its online probe on scenes of seed + 100_003; the
# evaluation's test scenes come from a third seed, so they are unseen by pretraining and by it.
SYNTHETIC_TEST_SEED_OFFSET = 200_003

_RGB = ("red", "green", "blue")


# --- synthetic scenes -------------------------------------------------------------------------


def _cut_tiles(scenes: Sequence[ArrayScene], index: TileIndex, date: int = 0) -> np.ndarray:
    """Pixels at `date` of every indexed tile, N x C x T x T, gathered per scene with one fancy index."""
    offsets = np.arange(index.tile_size)
    parts = []
    for number, scene in enumerate(scenes):
        mine = index.scene == number
        rows = index.row[mine][:, None] + offsets  # n x T
        cols = index.col[mine][:, None] + offsets
        pixels = scene.images[date][:, rows[:, :, None], cols[:, None, :]]  # C x n x T x T
        parts.append(pixels.transpose(1, 0, 2, 3))
    return np.ascontiguousarray(np.concatenate(parts))


def _tiles(
    scenes: Sequence[ArrayScene], tile_size: int, date: int = 0, only: Sequence[int] | None = None
) -> EvalSplit:
    """Grid tiles of `scenes` at `date`, labelled with their majority class; `only`: the tiles of
    these scene numbers only."""
    index = build_tile_index(scenes, tile_size)
    split = EvalSplit(_cut_tiles(scenes, index, date), index.label.astype(np.int64))
    return split if only is None else split.subset(np.flatnonzero(np.isin(index.scene, only)))


def synthetic_classification(
    num_bands: int = 4,
    num_classes: int = 8,
    tile_size: int = 32,
    train_scenes: int = 8,
    test_scenes: int = 4,
    size: int = 512,
    seed: int = 0,
    num_dates: int = 3,
    bands: Sequence[str] | None = None,
    num_regions: int = 4,
    region_seed: int = 0,
    nuisance: Mapping[str, float] | None = None,
    splits: Sequence[str] = ("standard",),
    dtype: str = "uint16",
) -> list[EvalDataset]:
    """Tiles of synthetic land-cover scenes labelled with their majority class, one set per split.

    Train tiles come from the scenes `make_synthetic_scenes(seed=seed)` makes, i.e. the very
    scenes `data=synthetic` pretrains on when called with the same arguments (its defaults match
    these); test tiles come from scenes of seed + SYNTHETIC_TEST_SEED_OFFSET, which neither
    pretraining nor its probe validation (seed + 100_003) ever sees. `splits` (SPLITS):

    - `standard` (set `synthetic`): train on date 0 (summer) of every train scene, test on date 0
      of the test scenes (all regions);
    - `region` (`synthetic@region`): train on the train scenes of every region but the last, test
      on test scenes of the last region only (its own class mix, soils, roofs, crops, climate);
    - `date` (`synthetic@date`): train on date 0, test on the test scenes at date num_dates // 2,
      the acquisition farthest from summer.

    `num_dates` only has to match pretraining's so the generated pixels are identical. `bands`
    (`data.bands`) selects bands by name, in that order. `dtype`: uint16 (reflectance x 10000) or
    uint8 (8-bit optical imagery), as the pretraining source's.
    """
    check_splits(splits, num_regions, num_dates)
    settings = dict(
        size=size, num_bands=num_bands, num_classes=num_classes, num_dates=num_dates,
        num_regions=num_regions, region_seed=region_seed, nuisance=nuisance, dtype=dtype,
    )  # fmt: skip
    train_set = make_synthetic_scenes(num_scenes=train_scenes, seed=seed, **settings)
    test_seed = seed + SYNTHETIC_TEST_SEED_OFFSET
    held_out = num_regions - 1
    everywhere = None  # test scenes of every region, shared by the standard and date splits
    out = []
    for split in splits:
        if split == "region":
            seen = [i for i, r in enumerate(scene_regions(train_scenes, num_regions)) if r != held_out]
            train = _tiles(train_set, tile_size, only=seen)
            test_set = make_synthetic_scenes(
                num_scenes=test_scenes, seed=test_seed, regions=[held_out], **settings
            )
            test = _tiles(test_set, tile_size)
        else:
            train = _tiles(train_set, tile_size)
            everywhere = everywhere or make_synthetic_scenes(
                num_scenes=test_scenes, seed=test_seed, **settings
            )
            test = _tiles(everywhere, tile_size, date=num_dates // 2 if split == "date" else 0)
        scene = train_set[0]
        dataset = EvalDataset(
            name=split_name("synthetic", split),
            task="classification",
            bands=scene.bands,
            class_names=scene.class_names or (),
            train=train,
            test=test,
        )
        out.append(dataset.check().select_bands(bands))
    return out


# --- image folders ----------------------------------------------------------------------------


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area resize (an average over each output cell's input window; a copy when up-sampling)."""
    dtype = pixels.dtype
    out = F.interpolate(torch.from_numpy(pixels.astype(np.float32))[None], size=size, mode="area")[0]
    return out.round().clamp(0, np.iinfo(dtype).max).numpy().astype(dtype)


def _class_files(root: Path) -> tuple[list[str], list[list[Path]]]:
    suffixes = PILLOW_SUFFIXES + RASTERIO_SUFFIXES
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist: give the folder holding one sub-folder per class "
            "(EuroSAT / UC Merced layout: <root>/<class name>/<image>.tif|png|jpg)"
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(
            f"image folder {root} has no class sub-folders: put each class's images in a sub-folder named "
            "after the class (<root>/<class name>/<image>)"
        )
    files = []
    for name in classes:
        found = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        if not found:
            raise DataError(
                f"class folder {root / name} holds no image ({', '.join(suffixes)}): add images or "
                "remove the folder"
            )
        files.append(found)
    return classes, files


def image_folder(
    root: str | Path,
    image_size: int | tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    band_names: Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
) -> EvalDataset:
    """A classification set from a folder with one sub-folder per class (EuroSAT / UC Merced layout).

    Images are png/jpg (Pillow) or tif (rasterio: any band count, uint8/uint16); all must have
    the same band count and pixel type. Alpha is dropped, as it cannot mark pixels invalid in a
    classification image: an RGBA png or tif is an RGB image (a tif's bands of colour
    interpretation alpha are left out, LA pngs are gray), and its pixels under alpha 0 keep the
    colour they are stored with. Images not of `image_size` (default: the most common
    size, logged when some differ) are area-resized once on load. The train/test split is
    stratified and seeded (`test_fraction` of each class, at least one image to test and one to
    train when the class has two). Class names are the sorted folder names. `band_names` names
    the bands (default: the tif band descriptions, red/green/blue for RGB images, else b1..bN);
    `bands` (`data.bands`) then selects bands by name, in that order.
    """
    root = Path(root).expanduser()
    classes, files = _class_files(root)
    paths = [p for group in files for p in group]
    labels = np.repeat(np.arange(len(classes)), [len(group) for group in files])
    headers = [image_header(path) for path in paths]  # a bad file: UnreadableFile naming it
    for key, what, fix in (
        (0, "band counts", "keep one sensor per folder"),
        (3, "pixel types", "use one type"),
    ):
        first: dict = {}
        for path, header in zip(paths, headers):
            first.setdefault(header[key], path)
        if len(first) > 1:
            detail = ", ".join(f"{path} has {value}" for value, path in first.items())
            raise DataError(f"images in {root} have different {what} ({detail}): {fix}")
    num_bands, dtype = headers[0][0], headers[0][3]

    sizes = Counter((h[1], h[2]) for h in headers)
    if image_size is None:
        target = sizes.most_common(1)[0][0]
        if len(sizes) > 1:
            log.warning(
                "%s: %d of %d images are not %dx%d (the most common size); resizing them (area) on load, "
                "set image_size to choose the size",
                root, len(paths) - sizes[target], len(paths), *target,
            )  # fmt: skip
    else:
        target = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)

    images = np.empty((len(paths), num_bands, *target), dtype=dtype)
    for i, path in enumerate(paths):
        pixels = read_image_pixels(path)
        images[i] = pixels if pixels.shape[1:] == target else _resize(pixels, target)

    names = tuple(band_names) if band_names is not None else _default_band_names(headers, num_bands)
    if len(names) != num_bands:
        raise DataError(
            f"band_names names {len(names)} bands but the images in {root} have {num_bands}: "
            "give one name per band"
        )
    train_idx, test_idx = (i.numpy() for i in split_train_val(labels, test_fraction, seed))
    return (
        EvalDataset(
            name=root.name,
            task="classification",
            bands=names,
            class_names=tuple(classes),
            train=EvalSplit(images[train_idx], labels[train_idx]),
            test=EvalSplit(images[test_idx], labels[test_idx]),
        )
        .check()
        .select_bands(bands)
    )


def _default_band_names(headers: list, num_bands: int) -> tuple[str, ...]:
    named = {h[4] for h in headers}
    if len(named) == 1 and (only := named.pop()) is not None and len(set(only)) == num_bands:
        return only
    return tuple(f"b{i + 1}" for i in range(num_bands))


# --- torchgeo datasets ------------------------------------------------------------------------

# name -> (torchgeo class, constructor arguments, pixel type, band names or None = the dataset's)
_TORCHGEO: dict[str, tuple[str, dict, type, tuple[str, ...] | None]] = {
    "eurosat": ("EuroSAT", {}, np.uint16, None),
    "eurosat_rgb": ("EuroSAT", {"bands": ("B04", "B03", "B02")}, np.uint16, None),
    "eurosat_spatial": ("EuroSATSpatial", {}, np.uint16, None),
    "eurosat100": ("EuroSAT100", {}, np.uint16, None),
    "ucmerced": ("UCMerced", {}, np.uint8, _RGB),
    "resisc45": ("RESISC45", {}, np.uint8, _RGB),
}
TORCHGEO_CLASSIFICATION = tuple(_TORCHGEO)


def _torchgeo_layout(cls: type, splits: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(path to check, path to show, what it is, where to get it) under root, for every file a
    torchgeo dataset reads.

    Read from the class attributes of torchgeo 0.8: the image folder is `base_dir` (EuroSAT,
    UCMerced) or `directory` (RESISC45); the split lists are `split_filenames` or, for RESISC45,
    the file names of `split_urls`; the archive is `filename`.
    """
    archive_url = cls.url if cls.url.endswith(cls.filename) else cls.url + cls.filename
    image_dir = getattr(cls, "base_dir", None) or cls.directory
    layout = []
    for split in splits:
        if hasattr(cls, "split_filenames"):
            name, url = cls.split_filenames[split], cls.url + cls.split_filenames[split]
        else:
            url = cls.split_urls[split]
            name = url.rsplit("/", 1)[-1]
        layout.append((name, name, f"the {split} split list", url))
    layout.append(
        (
            image_dir,
            os.path.join(image_dir, "<class>", "<images>"),
            f"the images, one folder per class, as extracted from {cls.filename} (or put {cls.filename} "
            "itself in the root and torchgeo extracts it)",
            archive_url,
        )
    )
    return layout


def _missing_message(name: str, cls: type, root: Path, splits: Sequence[str], error: Exception) -> str:
    lines = []
    for check, show, what, url in _torchgeo_layout(cls, splits):
        state = "present" if (root / check).exists() else "MISSING"
        lines.append(f"  {root / show}: {what} [{state}], from {url}")
    return (
        f"torchgeo dataset {name!r} ({cls.__name__}) is not complete under {root}; rsssl never downloads. "
        "Place these files there:\n" + "\n".join(lines) + f"\n(torchgeo said: {error})"
    )


def _load_torchgeo_split(dataset, dtype: type, num_workers: int) -> EvalSplit:
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, num_workers=num_workers)
    images, labels = [], []
    limit = np.iinfo(dtype).max
    for batch in loader:
        pixels = batch["image"].round()
        if pixels.numel() and (pixels.min() < 0 or pixels.max() > limit):
            raise DataError(
                f"{type(dataset).__name__} pixels leave the {np.dtype(dtype).name} range [0, {limit}]"
            )
        images.append(pixels.numpy().astype(dtype))
        labels.append(batch["label"].numpy().astype(np.int64))
    return EvalSplit(np.concatenate(images), np.concatenate(labels))


def torchgeo_classification(
    name: str,
    root: str | Path,
    split_test: str = "test",
    split_train: str = "train",
    num_workers: int = 0,
    bands: Sequence[str] | None = None,
) -> EvalDataset:
    """A torchgeo scene-classification dataset already on disk (`download=False`, always).

    `name` is one of TORCHGEO_CLASSIFICATION. When files are missing, the DataError lists every
    file and folder torchgeo reads under `root`, which are missing, and where to get them.
    Pixels become uint16 (EuroSAT multispectral) or uint8 (RGB sets). `bands` (`data.bands`)
    selects bands by name, in that order.
    """
    if name not in _TORCHGEO:
        raise DataError(
            f"unknown torchgeo dataset {name!r}: choose from {', '.join(TORCHGEO_CLASSIFICATION)}"
        )
    import torchgeo.datasets

    class_name, kwargs, dtype, band_names = _TORCHGEO[name]
    cls = getattr(torchgeo.datasets, class_name)
    root = Path(root).expanduser()
    splits = {}
    for split in (split_train, split_test):
        if split not in cls.splits:
            raise DataError(f"{name} has no split {split!r}: choose from {', '.join(cls.splits)}")
        try:
            splits[split] = cls(root=str(root), split=split, download=False, **kwargs)
        except FileNotFoundError as error:  # DatasetNotFoundError, or a missing split list / class folder
            raise DataError(_missing_message(name, cls, root, (split_train, split_test), error)) from error
    train_set = splits[split_train]
    return (
        EvalDataset(
            name=name,
            task="classification",
            bands=band_names or tuple(train_set.bands),
            class_names=tuple(train_set.classes),
            train=_load_torchgeo_split(train_set, dtype, num_workers),
            test=_load_torchgeo_split(splits[split_test], dtype, num_workers),
        )
        .check()
        .select_bands(bands)
    )
