"""Segmentation evaluation sets: image tiles with per-pixel class masks, split into train and test.

Two sources:

- `npz_segmentation`: a labelled npz file, either already tiled (``tiles`` + ``tile_masks``, e.g.
  the DeepForest tree crowns) or one large image with a mask (e.g. the SpaceNet footprints), cut
  into non-overlapping tiles. Tiles cut from the same source image overlap, so the split keeps
  whole source images apart whenever the file names them (``tile_source``).
- `synthetic_segmentation`: tiles of procedural land-cover scenes, train and test from
  different scenes.

Mask value 255 marks unlabelled pixels (`IGNORE_INDEX`, the convention of `eval.metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rsssl.data.npz import _class_ids, _pixels, _strings, _to_nchw
from rsssl.data.scene import DataError
from rsssl.data.synthetic import make_synthetic_scenes, scene_regions
from rsssl.eval.data import EvalDataset, EvalSplit, check_splits, split_name

IGNORE_INDEX = 255
MASK_KEYS = ("footprint_mask", "mask", "label_mask")
DEFAULT_TILE_SIZE = 128


def tile_grid(image: np.ndarray, mask: np.ndarray, tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping tiles of a C x H x W image and its H x W mask, in row-major grid order.

    Tile i covers rows (i // cols) * t ... and columns (i % cols) * t ..., with
    cols = W // t; the right and bottom remainders (< t pixels) are dropped.
    """
    channels, height, width = image.shape
    rows, cols, t = height // tile_size, width // tile_size, tile_size
    tiles = image[:, : rows * t, : cols * t].reshape(channels, rows, t, cols, t).transpose(1, 3, 0, 2, 4)
    masks = mask[: rows * t, : cols * t].reshape(rows, t, cols, t).transpose(0, 2, 1, 3)
    return (
        np.ascontiguousarray(tiles.reshape(rows * cols, channels, t, t)),
        np.ascontiguousarray(masks.reshape(rows * cols, t, t)),
    )


def split_indices(
    count: int, groups: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices of `count` tiles; whole groups go to one side when there are >= 2.

    Groups (source images) are visited in a seeded order and moved to the test side while that
    brings the test share closer to `test_fraction`; if none does, the smallest group is the
    test set. Without groups (or with one), tiles are split at random.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction={test_fraction}: must lie strictly between 0 and 1")
    if count < 2:
        raise DataError(f"{count} tile(s): need at least 2 to make a train and a test split")
    rng = np.random.default_rng(seed)
    if groups is not None and len(np.unique(groups)) >= 2:
        _, group_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        target, taken, chosen = test_fraction * count, 0, []
        for g in rng.permutation(len(sizes)):
            grown = taken + sizes[g]
            if grown < count and abs(grown - target) < abs(taken - target):
                chosen.append(g)
                taken = grown
        is_test = np.isin(group_of, chosen or [int(np.argmin(sizes))])
    else:
        is_test = np.zeros(count, dtype=bool)
        is_test[rng.permutation(count)[: min(max(round(test_fraction * count), 1), count - 1)]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _class_names(archive: np.lib.npyio.NpzFile, masks: np.ndarray, path: Path) -> tuple[str, ...]:
    """The file's ``class_names``, else class_0 .. class_<max id>; every mask id must have a name."""
    labelled = masks[masks != IGNORE_INDEX]
    top = int(labelled.max()) if labelled.size else 0
    if "class_names" not in archive.files:
        return tuple(f"class_{i}" for i in range(max(top + 1, 2)))
    names = _strings(archive["class_names"], "class_names", path)
    if top >= len(names):
        raise DataError(
            f"{path}: the mask holds class id {top} but 'class_names' names only {len(names)} classes "
            f"({list(names)}); add the missing names or mark unlabelled pixels {IGNORE_INDEX}"
        )
    return names


def _recut(images: np.ndarray, masks: np.ndarray, groups, size: int, path: Path):
    """Cut every pre-cut tile into (H/size)^2 smaller ones (cheaper steps on a CPU); groups follow."""
    n, c, h, w = images.shape
    if h % size or w % size:
        raise DataError(f"{path} holds {h}x{w}-pixel tiles; tile_size={size} must divide them")
    rows, cols = h // size, w // size
    images = (
        images.reshape(n, c, rows, size, cols, size).transpose(0, 2, 4, 1, 3, 5).reshape(-1, c, size, size)
    )
    masks = masks.reshape(n, rows, size, cols, size).transpose(0, 1, 3, 2, 4).reshape(-1, size, size)
    groups = np.repeat(groups, rows * cols) if groups is not None else None
    return np.ascontiguousarray(images), np.ascontiguousarray(masks), groups


def _read_tiles(archive: np.lib.npyio.NpzFile, path: Path, bands, tile_size: int | None):
    """Pre-cut ``tiles`` + ``tile_masks`` (+ optional ``tile_source``) as N x C x t x t, N x t x t, groups."""
    keys = archive.files
    if "tile_masks" not in keys:
        raise DataError(
            f"{path} has 'tiles' but no 'tile_masks' (keys found: {keys}); store one mask per tile"
        )
    raw = archive["tiles"]
    if raw.ndim != 4:
        raise DataError(
            f"{path}: 'tiles' has shape {raw.shape}; store N x H x W x C or N x C x H x W tiles "
            "(add a band axis to single-band tiles)"
        )
    images, _ = _to_nchw(_pixels(raw, "tiles", path), bands, "tiles", path)
    masks = archive["tile_masks"]
    if masks.shape != (images.shape[0], *images.shape[2:]):
        raise DataError(
            f"{path}: 'tile_masks' has shape {masks.shape} but the tiles are {images.shape} (N x C x H x W); "
            f"store one {images.shape[2]} x {images.shape[3]} mask per tile"
        )
    groups = archive["tile_source"] if "tile_source" in keys else None
    if groups is not None and groups.shape != (len(images),):
        raise DataError(f"{path}: 'tile_source' has shape {groups.shape}; give one source name per tile")
    masks = _class_ids(masks, "tiles", path)
    if tile_size is not None and tile_size != images.shape[2]:
        return _recut(images, masks, groups, tile_size, path)
    return images, masks, groups


def _read_image(
    archive: np.lib.npyio.NpzFile, path: Path, bands, tile_size: int | None, mask_key: str | None
):
    """One large ``image`` + mask cut into non-overlapping tiles (no groups: tiles never overlap)."""
    keys = archive.files
    candidates = (mask_key,) if mask_key else MASK_KEYS
    found = [k for k in candidates if k in keys]
    if not found:
        raise DataError(
            f"{path} has 'image' but no mask key {' / '.join(map(repr, candidates))} (keys found: {keys}); "
            "name the mask with mask_key=..."
        )
    images, stacked = _to_nchw(_pixels(archive["image"], "image", path), bands, "image", path)
    if stacked:
        raise DataError(
            f"{path}: 'image' is a stack {archive['image'].shape}; store tiles under 'tiles' instead"
        )
    mask = archive[found[0]]
    height, width = images.shape[2:]
    if mask.shape != (height, width):
        raise DataError(
            f"{path}: mask {found[0]!r} has shape {mask.shape} but the image is {height} x {width}; "
            "store one class id per image pixel"
        )
    size = DEFAULT_TILE_SIZE if tile_size is None else tile_size
    if not 1 <= size <= min(height, width):
        raise DataError(
            f"tile_size={size} does not fit the {height} x {width} image of {path}; "
            f"use a tile size between 1 and {min(height, width)}"
        )
    tiles, masks = tile_grid(images[0], _class_ids(mask, found[0], path), size)
    return tiles, masks, None


def npz_segmentation(
    path: str | Path,
    tile_size: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    name: str | None = None,
    mask_key: str | None = None,
    band_names: Sequence[str] | None = None,
    bands: Sequence[str] | None = None,
) -> EvalDataset:
    """A segmentation set from a labelled npz file (pre-cut ``tiles`` or one large ``image``).

    ``tiles`` (N x H x W x C or N x C x H x W) + ``tile_masks`` (N x H x W) are used as they are;
    ``tile_source`` (one name per tile) keeps tiles of the same source image on one side of the
    split. Otherwise ``image`` (H x W, C x H x W or H x W x C) and its mask (`mask_key`, default
    the first of ``footprint_mask``, ``mask``, ``label_mask``) are cut into `tile_size` tiles
    (default 128) and split at random. ``band_names`` and ``class_names`` are read when present
    (`band_names`, as `data.band_names` names the bands for pretraining, overrides the file's);
    `bands` (`data.bands`) then selects bands by name, in that order.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"npz file {path} does not exist; give the path of a labelled segmentation npz")
    with np.load(path, allow_pickle=False) as archive:
        keys = archive.files
        names = tuple(band_names) if band_names else None
        if names is None and "band_names" in keys:
            names = _strings(archive["band_names"], "band_names", path)
        if "tiles" in keys:
            images, masks, groups = _read_tiles(archive, path, names, tile_size)
        elif "image" in keys:
            images, masks, groups = _read_image(archive, path, names, tile_size, mask_key)
        else:
            raise DataError(
                f"{path} holds no segmentation data (keys found: {keys}); store 'tiles' + 'tile_masks', "
                f"or one 'image' + a mask ({' / '.join(MASK_KEYS)})"
            )
        class_names = _class_names(archive, masks, path)
    train, test = split_indices(len(images), groups, test_fraction, seed)
    return (
        EvalDataset(
            name=name or path.stem,
            task="segmentation",
            bands=names or tuple(f"b{i + 1}" for i in range(images.shape[1])),
            class_names=class_names,
            train=EvalSplit(images[train], masks[train]),
            test=EvalSplit(images[test], masks[test]),
            ignore_index=IGNORE_INDEX,
        )
        .check()
        .select_bands(bands)
    )


def evaluation_test_windows(
    path: str | Path,
    tile_size: int | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    mask_key: str | None = None,
    enabled: bool = True,
) -> dict[str, list[list[int]]]:
    """Where the test tiles of `npz_segmentation(path, ...)` (same settings) lie in the scenes that
    pretraining reads from the same file: {scene key: [[row, col, height, width], ...]}. With
    them the pretraining source leaves the test imagery out (`NpzSource(leave_out=...)`), so an
    encoder is never pretrained on the pixels it is then judged on.

    Pre-cut ``tiles`` are traced back by ``tile_source`` (the scene ``image_<source>``) and
    ``tile_offset_rc`` (without offsets, the whole source image); one ``image`` by its tile grid.
    `enabled` false (`data.leave_out_test=false`) gives none.
    """
    if not enabled:
        return {}
    path = Path(path).expanduser()
    with np.load(path, allow_pickle=False) as archive:
        keys = archive.files
        if "tiles" in keys:
            if "tile_source" not in keys:
                raise DataError(
                    f"{path}: its 'tiles' carry no 'tile_source', so where they lie in the file's images is "
                    "unknown and pretraining cannot leave the test tiles out: add 'tile_source' (and "
                    "'tile_offset_rc'), or set data.leave_out_test=false (pretraining then sees the test "
                    "imagery)"
                )
            groups = archive["tile_source"]
            _, test = split_indices(len(groups), groups, test_fraction, seed)
            offsets = archive["tile_offset_rc"] if "tile_offset_rc" in keys else None
            side = _to_nchw(_pixels(archive["tiles"], "tiles", path), None, "tiles", path)[0].shape[-1]
            windows: dict[str, list[list[int]]] = {}
            for i in test:
                scene = f"image_{groups[i]}"
                if scene not in keys:
                    continue
                if offsets is None:
                    height, width = _to_nchw(_pixels(archive[scene], scene, path), None, scene, path)[
                        0
                    ].shape[-2:]
                    windows[scene] = [[0, 0, height, width]]
                else:
                    windows.setdefault(scene, []).append([int(offsets[i][0]), int(offsets[i][1]), side, side])
            return windows
        if "image" not in keys:
            return {}
        found = [k for k in ((mask_key,) if mask_key else MASK_KEYS) if k in keys]
        if not found:
            return {}
        height, width = archive[found[0]].shape
    size = DEFAULT_TILE_SIZE if tile_size is None else tile_size
    rows, cols = height // size, width // size
    _, test = split_indices(rows * cols, None, test_fraction, seed)
    return {"image": [[int(i // cols) * size, int(i % cols) * size, size, size] for i in test]}


def synthetic_segmentation(
    num_bands: int = 4,
    num_classes: int = 8,
    tile_size: int = 32,
    train_scenes: int = 4,
    test_scenes: int = 2,
    size: int = 256,
    seed: int = 0,
    bands: Sequence[str] | None = None,
    num_regions: int = 4,
    region_seed: int = 0,
    nuisance: Mapping[str, float] | None = None,
    splits: Sequence[str] = ("standard",),
    num_dates: int = 3,
) -> list[EvalDataset]:
    """Non-overlapping tiles of synthetic land-cover scenes; train and test come from different scenes.

    Train scenes use seed 2 * seed and test scenes 2 * seed + 1, so no two seeds share a scene.
    `splits` as `synthetic_classification`: `standard` trains and tests on date 0 of every region;
    `region` trains on every region but the last and tests on scenes of the last; `date` tests
    at date num_dates // 2. `bands` (`data.bands`) selects bands by name, in that order.
    """
    if not 1 <= tile_size <= size:
        raise DataError(f"tile_size={tile_size} does not fit {size}-pixel synthetic scenes")
    check_splits(splits, num_regions, num_dates)
    settings = dict(
        size=size, num_bands=num_bands, num_classes=num_classes, num_dates=num_dates,
        num_regions=num_regions, region_seed=region_seed, nuisance=nuisance,
    )  # fmt: skip
    held_out = num_regions - 1

    def cut(scenes, date: int = 0) -> EvalSplit:
        parts = [tile_grid(scene.images[date], scene.mask, tile_size) for scene in scenes]
        return EvalSplit(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))

    train_set = make_synthetic_scenes(num_scenes=train_scenes, seed=2 * seed, **settings)
    everywhere = None
    out = []
    for split in splits:
        if split == "region":
            seen = [s for s, r in zip(train_set, scene_regions(train_scenes, num_regions)) if r != held_out]
            train = cut(seen)
            test = cut(
                make_synthetic_scenes(
                    num_scenes=test_scenes, seed=2 * seed + 1, regions=[held_out], **settings
                )
            )
        else:
            train = cut(train_set)
            everywhere = everywhere or make_synthetic_scenes(
                num_scenes=test_scenes, seed=2 * seed + 1, **settings
            )
            test = cut(everywhere, num_dates // 2 if split == "date" else 0)
        dataset = EvalDataset(
            name=split_name(f"synthetic_segmentation_{num_bands}b_{num_classes}c", split),
            task="segmentation",
            bands=train_set[0].bands,
            class_names=train_set[0].class_names,
            train=train,
            test=test,
            ignore_index=IGNORE_INDEX,
        )
        out.append(dataset.check().select_bands(bands))
    return out
