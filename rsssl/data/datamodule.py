"""The one LightningDataModule every method shares.

CPU side: workers slice uint tiles (plus a spatial neighbour and/or the same place at another
date when the method requires `neighbor` / `other_time`) and collate them (pinned). Device side
(`on_after_batch_transfer`): uint -> float and per-band normalisation, in batch. Views and
every other float operation happen after that, on the device, in the method.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from rsssl.data.balance import SamplingSettings, equal_share_weights, geographic_cells
from rsssl.data.bands import canonical_band_name
from rsssl.data.sampling import (
    EpochSampler,
    PairSampling,
    ResumableLoader,
    check_multi_date,
    neighbour_radii,
    tile_pixels,
)
from rsssl.data.scene import BandSubsetScene, DataError, Scene
from rsssl.data.sources import Source
from rsssl.data.stats import STATS_VERSION, BandStats, cached_band_stats, compute_band_stats, standardise
from rsssl.data.tiles import TileDataset, TileIndex, build_tile_index

IMAGE_KEYS = ("image", "neighbor", "other_time")


def _band_position(scene: Scene, band: str) -> int | None:
    """Where `band` sits in `scene`: by exact name, else by canonical name (`B04` finds `red`)."""
    if band in scene.bands:
        return scene.bands.index(band)
    common = canonical_band_name(band)
    matches = [i for i, name in enumerate(scene.bands) if canonical_band_name(name) == common]
    if len(matches) > 1:
        raise DataError(
            f"band {band!r} matches several bands of scene {scene.name!r} "
            f"({', '.join(scene.bands[i] for i in matches)}): name the band exactly in data.bands"
        )
    return matches[0] if matches else None


def _canonical_bands(scene: Scene) -> tuple[str, ...]:
    return tuple(canonical_band_name(b) for b in scene.bands)


def resolve_bands(
    scenes: Sequence[Scene], wanted: Sequence[str] | None
) -> tuple[tuple[str, ...], list[Scene]]:
    """The band names every scene is read with, and the scenes with `wanted` selected by name.

    Without `wanted` all scenes must carry the same bands. With it, each scene keeps those bands
    in that order wherever they sit in its file, so different sensors share their common bands.
    """
    first = scenes[0]
    if not wanted:
        for scene in scenes[1:]:
            if _canonical_bands(scene) != _canonical_bands(first):
                counts = "different band counts" if scene.num_bands != first.num_bands else "different bands"
                raise DataError(
                    f"scenes have {counts}: {first.name!r} has {first.num_bands} "
                    f"({', '.join(first.bands)}), {scene.name!r} has {scene.num_bands} "
                    f"({', '.join(scene.bands)}); use one sensor per source or select common bands by "
                    "name with data.bands=[...]"
                )
        return first.bands, list(scenes)
    selected = []
    for scene in scenes:
        positions = [_band_position(scene, b) for b in wanted]
        missing = [b for b, i in zip(wanted, positions, strict=True) if i is None]
        if missing:
            raise DataError(
                f"scene {scene.name!r} has no band {', '.join(map(repr, missing))}; its bands are "
                f"{', '.join(scene.bands)}: fix data.bands"
            )
        identity = positions == list(range(scene.num_bands))
        selected.append(scene if identity else BandSubsetScene(scene, positions))
    return tuple(wanted), selected


class RSDataModule(L.LightningDataModule):
    """Tiles from a `Source`, normalised on the device with statistics computed from the data.

    `tile_size` and `stride` are in `tile_units` (px, or m converted with the scenes' pixel
    size); after `prepare` they hold pixels. `neighbor_radius` (in `neighbor_units`, px or m
    converted per scene) is the SauMoCo neighbourhood D used when a method requires `neighbor`.
    """

    def __init__(
        self,
        source: Source,
        tile_size: int = 64,
        stride: int | None = None,
        min_valid: float = 0.9,
        bands: Sequence[str] | None = None,
        batch_size: int = 64,
        num_workers: int = 2,
        stats_tiles: int = 256,
        stats_cache_dir: str | None = "~/.cache/rsssl",
        pin_memory: bool = True,
        name: str | None = None,
        neighbor_radius: float = 100.0,
        neighbor_units: str = "px",
        tile_units: str = "px",
        sampling: SamplingSettings | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.seed = seed
        if tile_units == "px":
            self._check_tile_size(tile_size)
        self.source = source
        self.name = name or source.name
        self.tile_size = tile_size
        self.stride = stride
        self.min_valid = min_valid
        self.wanted_bands = list(bands) if bands else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.stats_tiles = stats_tiles
        self.stats_cache_dir = Path(stats_cache_dir).expanduser() if stats_cache_dir else None
        self.pin_memory = pin_memory
        self.neighbor_radius = neighbor_radius
        self.neighbor_units = neighbor_units
        self.tile_units = tile_units
        self.sampling = sampling or SamplingSettings()
        #: per-tile weights of an epoch's draws (None: every tile once, shuffled); set at `prepare`
        #: for `geographic`, by `PseudoLabelBalancer` for `balanced`
        self.sample_weights: np.ndarray | None = None
        self.sampling_cells: int | None = None  # geographic: the ground cells drawn evenly
        self.required_keys: set[str] = {"image"}
        self._prepared = False
        self._norm: tuple[torch.Tensor, torch.Tensor] | None = None

    # ---- building -------------------------------------------------------------------------
    def require(self, keys: Sequence[str]) -> None:
        """Batch keys a method needs beyond `image` (e.g. `mask`, `neighbor`, `other_time`).

        Once the data is prepared, settings it cannot meet fail here, before any training."""
        self.required_keys.update(keys)
        if self._prepared:
            self._pair_sampling(seed=0)

    @staticmethod
    def _check_tile_size(pixels: int) -> None:
        if pixels < 8:
            raise DataError(f"data.tile_size={pixels} px is too small: use at least 8 px")

    def prepare(self) -> None:
        """Load scenes, index tiles and compute statistics once (idempotent)."""
        if self._prepared:
            return
        train_scenes = self.source.load()
        val_source = self.source.validation()
        val_scenes = val_source.load() if val_source is not None else []
        self.bands, scenes = resolve_bands(train_scenes + val_scenes, self.wanted_bands)
        self.train_scenes, self.val_scenes = scenes[: len(train_scenes)], scenes[len(train_scenes) :]
        self.tile_size = tile_pixels(scenes, self.tile_size, self.tile_units, "data.tile_size")
        self._check_tile_size(self.tile_size)
        if self.stride is not None:
            self.stride = tile_pixels(scenes, self.stride, self.tile_units, "data.stride")
        self.train_index = build_tile_index(self.train_scenes, self.tile_size, self.stride, self.min_valid)
        self.val_index = None
        if self.val_scenes:
            self.val_index = build_tile_index(self.val_scenes, self.tile_size, self.stride, self.min_valid)
        self.stats = self._stats()
        if self.sampling.strategy == "geographic":
            cells = geographic_cells(self.train_scenes, self.train_index, self.sampling.cell_size)
            self.sample_weights = equal_share_weights(cells)
            self.sampling_cells = int(cells.max()) + 1
        self._prepared = True

    def _pair_sampling(self, seed: int) -> PairSampling | None:
        """The neighbour / other-date sampling the required keys ask for, checked against the data."""
        neighbor, other_time = "neighbor" in self.required_keys, "other_time" in self.required_keys
        if not (neighbor or other_time):
            return None
        radii = None
        if neighbor:
            radii = neighbour_radii(self.train_scenes, self.neighbor_radius, self.neighbor_units)
        if other_time:
            check_multi_date(self.train_scenes)
        return PairSampling(seed, radii, other_time, self.min_valid)

    def _stats(self) -> BandStats:
        description = {
            "source": self.source.describe(),
            "bands": list(self.bands),
            "tile_size": self.tile_size,
            "stride": self.stride,
            "min_valid": self.min_valid,
            "tiles": self.stats_tiles,
            "stats_version": STATS_VERSION,
        }
        return cached_band_stats(
            self.stats_cache_dir,
            description,
            lambda: compute_band_stats(self.train_scenes, self.train_index, max_tiles=self.stats_tiles),
        )

    def setup(self, stage: str | None = None) -> None:
        self.prepare()

    # ---- what methods read ----------------------------------------------------------------
    @property
    def num_bands(self) -> int:
        self.prepare()
        return len(self.bands)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        self.prepare()
        return self.train_scenes[0].class_names if self.train_index.labelled else None

    @property
    def num_classes(self) -> int:
        names = self.class_names
        return len(names) if names else 0

    def info(self) -> dict:
        """What an exported encoder records about its data."""
        self.prepare()
        return {
            "data": self.name,
            "bands": list(self.bands),
            "mean": list(self.stats.mean),
            "std": list(self.stats.std),
            "tile_size": self.tile_size,
            "dtype": str(self.train_scenes[0].dtype),
        }

    @property
    def has_labelled_validation(self) -> bool:
        """Whether the online probe is trained and has labelled validation tiles to be judged on."""
        self.prepare()
        return self.num_classes > 0 and self.val_index is not None and self.val_index.labelled

    def summary(self) -> dict:
        """What a run trains on, told to the user before training (`format_data_summary`)."""
        self.prepare()
        scenes, overviews = self.train_scenes, self.train_index.overviews
        cells = sum(o.size for o in overviews)
        return {
            "name": self.name,
            "train_scenes": len(scenes),
            "val_scenes": len(self.val_scenes),
            "classes": list(self.class_names) if self.class_names else None,
            "bands": list(self.bands),
            "dtypes": sorted({str(s.dtype) for s in scenes}),
            "sizes": sorted({(s.height, s.width) for s in scenes}, key=lambda hw: hw[0] * hw[1]),
            "dates": sorted({len(s.dates) for s in scenes}),
            "pixel_sizes": sorted({s.pixel_size for s in scenes if s.pixel_size is not None}),
            "crs": sorted({s.crs for s in scenes if s.crs}),
            "tile_size": self.tile_size,
            "stride": self.stride or self.tile_size,
            "train_tiles": len(self.train_index),
            "val_tiles": len(self.val_index) if self.val_index is not None else 0,
            "valid_fraction": sum(int(o.sum()) for o in overviews) / cells if cells else None,
            "min_valid": self.min_valid,
            "sampling": self.sampling.strategy,
            "sampling_cells": self.sampling_cells,
        }

    # ---- loaders ---------------------------------------------------------------------------
    def _dataset(
        self, scenes: Sequence[Scene], index: TileIndex, sampling: PairSampling | None = None
    ) -> TileDataset:
        with_mask = "mask" in self.required_keys
        return TileDataset(scenes, index, with_mask=with_mask, sampling=sampling)

    def _current_epoch(self) -> int:
        return self.trainer.current_epoch

    def _loader(self, dataset: TileDataset, train: bool, seed: int = 0) -> DataLoader:
        batch_size = self.batch_size
        if train and len(dataset) < batch_size:
            raise DataError(
                f"only {len(dataset)} tiles of {self.tile_size}px in the data, fewer than one batch of "
                f"{batch_size}: lower data.batch_size or data.tile_size / data.stride"
            )
        workers = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
            "persistent_workers": self.num_workers > 0,
        }
        if not train:
            return DataLoader(dataset, batch_size=batch_size, **workers)
        # shuffled (index, epoch) pairs: per-sample randomness follows the epoch
        epoch = self._current_epoch if self.trainer is not None else None
        sampler = EpochSampler(len(dataset), seed, epoch, weights=lambda: self.sample_weights)
        return ResumableLoader(
            dataset, batch_size, sampler=sampler, drop_last=True, position=self._training_position, **workers
        )

    def _training_position(self) -> tuple[int, int]:
        """(epoch, batches done in it) of the training loop now: what a resumed run skips."""
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return self.trainer.current_epoch, progress.processed

    def train_dataloader(self) -> DataLoader:
        """Shuffled training tiles with the extras the method requires; the seed of the shuffle
        and of the extras is the run's (`seed`: the same on every process, whatever each drew
        before), else one from torch's RNG (so `seed_everything` reproduces it)."""
        self.prepare()
        seed = self.seed if self.seed is not None else int(torch.randint(2**31 - 1, ()).item())
        dataset = self._dataset(self.train_scenes, self.train_index, self._pair_sampling(seed))
        return self._loader(dataset, train=True, seed=seed)

    def val_dataloader(self) -> DataLoader | list:
        self.prepare()
        if self.val_index is None or not self.val_index.labelled:
            return []
        return self._loader(self._dataset(self.val_scenes, self.val_index), train=False)

    @torch.no_grad()
    def train_features(self, backbone: torch.nn.Module, device: torch.device | str = "cpu") -> torch.Tensor:
        """N x D features of every training tile, in index order: `backbone` in eval mode (its
        training mode restored after), the tiles normalised on `device` as in training."""
        self.prepare()
        loader = self._loader(self._dataset(self.train_scenes, self.train_index), train=False)
        was_training = backbone.training
        backbone.eval()
        try:
            features = [backbone(self.normalise(batch["image"].to(device))).float().cpu() for batch in loader]
        finally:
            backbone.train(was_training)
        return torch.cat(features)

    # ---- device side ---------------------------------------------------------------------
    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint B x C x H x W -> float, standardised per band; runs wherever `pixels` is."""
        if self._norm is None or self._norm[0].device != pixels.device:
            mean = torch.tensor(self.stats.mean, device=pixels.device, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(self.stats.std, device=pixels.device, dtype=torch.float32).view(1, -1, 1, 1)
            self._norm = (mean, std)
        return standardise(pixels, *self._norm)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        for key in IMAGE_KEYS:
            if key in batch:
                batch[key] = self.normalise(batch[key])
        return batch


def _count(number: int, noun: str, plural: str = "") -> str:
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def _span(values: Sequence, unit: str = "") -> str:
    """One value, or the smallest to the largest, with their unit."""
    first, last = (f"{v:g}" if isinstance(v, float) else str(v) for v in (values[0], values[-1]))
    text = first if len(values) == 1 else f"{first} to {last}"
    return f"{text} {unit}".rstrip()


def _crs_unit(crs: str) -> str:
    """The unit of a CRS's coordinates: m, degrees, or its linear unit's name."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        parsed = CRS.from_string(crs)
    except CRSError:
        return "CRS units"
    if parsed.is_geographic:
        return "degrees"
    return "m" if parsed.linear_units in ("metre", "meter") else parsed.linear_units


def _resolution(summary: dict) -> str:
    sizes, crs = summary["pixel_sizes"], summary["crs"]
    if not sizes:
        return "unknown (no georeference)"
    if not crs:
        return f"{_span(sizes)} (no CRS)"
    return f"{_span(sizes, _crs_unit(crs[0]))} ({', '.join(crs)})"


def format_data_summary(summary: dict) -> list[str]:
    """The lines a run prints about its data (`RSDataModule.summary`): scenes, bands, grid, tiles."""
    val = (
        _count(summary["val_scenes"], "validation scene") if summary["val_scenes"] else "no validation scenes"
    )
    classes = summary["classes"]
    labels = f"labelled ({_count(len(classes), 'class', 'classes')})" if classes else "unlabelled"
    (h0, w0), (h1, w1) = summary["sizes"][0], summary["sizes"][-1]
    grid = f"{h0} x {w0} px" if (h0, w0) == (h1, w1) else f"{h0} x {w0} to {h1} x {w1} px"
    dates = summary["dates"]
    dated = f"{_count(dates[0], 'date')} each" if len(dates) == 1 else f"{dates[0]} to {dates[-1]} dates"
    tiles = f"{summary['train_tiles']} training tiles"
    if summary["val_tiles"]:
        tiles += f", {summary['val_tiles']} validation tiles"
    bands, fraction = summary["bands"], summary["valid_fraction"]
    valid = f"{100 * fraction:.1f} % of the training scenes" if fraction is not None else "unknown"
    lines = [
        f"data {summary['name']}: {_count(summary['train_scenes'], 'training scene')}, {val}; {labels}",
        f"  bands ({len(bands)}): {', '.join(bands)}; dtype {'/'.join(summary['dtypes'])}",
        f"  scenes: {grid}, {dated}; pixel size {_resolution(summary)}",
        f"  tiles: {summary['tile_size']} px, stride {summary['stride']} px; {tiles}; valid pixels {valid} "
        f"(tiles kept with >= {100 * summary['min_valid']:g} % valid)",
    ]
    if summary["sampling"] == "geographic":
        cells = _count(summary["sampling_cells"], "cell")
        lines.append(f"  sampling: geographic, {cells} drawn equally often")
    elif summary["sampling"] == "balanced":
        lines.append("  sampling: balanced, k-means pseudo-classes of the features drawn equally often")
    return lines
