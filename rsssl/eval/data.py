"""Labelled evaluation sets: what every downstream protocol reads.

An evaluation set is held as uint arrays (N x C x H x W) with a label per image
(classification) or a mask per image (segmentation), split into train and test. Pixels stay
unsigned integers until they reach the device, where the encoder's own statistics (from
`encoder.json`) normalise them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from rsssl.data.bands import find_band
from rsssl.data.scene import DataError
from rsssl.models.export import match_encoder_bands, pixel_scale_warning

# How a synthetic set is split into train and test: the standard split, or a shift in which the
# test tiles come from a region or a season the probe never saw (`<set>@region`, `<set>@date`).
# (npz segmentation sets of several source images already test on held-out images.)
SPLITS = ("standard", "region", "date")


def split_name(base: str, split: str) -> str:
    """The set name a split is reported under: `base` for the standard split, else `base@split`."""
    return base if split == "standard" else f"{base}@{split}"


def check_splits(splits: Sequence[str], num_regions: int, num_dates: int) -> None:
    """DataError naming the problem when a synthetic set cannot make the asked splits."""
    if not splits:
        raise DataError(f"splits is empty: ask for at least one of {list(SPLITS)}")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise DataError(f"unknown split {unknown}: choose from {list(SPLITS)}")
    if "region" in splits and num_regions < 2:
        raise DataError(
            f"the region split needs num_regions >= 2 (got {num_regions}): one region is held out"
        )
    if "date" in splits and num_dates < 2:
        raise DataError(f"the date split needs num_dates >= 2 (got {num_dates}): it tests on another date")


@dataclass
class EvalSplit:
    """One split: images N x C x H x W (uint), and labels (N,) or masks (N x H x W)."""

    images: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: np.ndarray) -> EvalSplit:
        return EvalSplit(self.images[indices], self.targets[indices])

    def take_bands(self, positions: Sequence[int]) -> EvalSplit:
        return EvalSplit(np.ascontiguousarray(self.images[:, list(positions)]), self.targets)


@dataclass
class EvalDataset:
    """A labelled set for one task: `classification` (targets are labels) or `segmentation`."""

    name: str
    task: str
    bands: tuple[str, ...]
    class_names: tuple[str, ...]
    train: EvalSplit
    test: EvalSplit
    ignore_index: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check(self) -> EvalDataset:
        """Reject sets that no protocol can use, naming the problem."""
        if self.task not in ("classification", "segmentation"):
            raise DataError(f"evaluation set {self.name!r}: unknown task {self.task!r}")
        for split_name, split in (("train", self.train), ("test", self.test)):
            if len(split) == 0:
                raise DataError(f"evaluation set {self.name!r} has an empty {split_name} split")
            if split.images.ndim != 4 or split.images.shape[1] != len(self.bands):
                raise DataError(
                    f"evaluation set {self.name!r} {split_name} images have shape {split.images.shape}; "
                    f"expected N x {len(self.bands)} x H x W"
                )
        if self.task == "classification":
            present = set(np.unique(self.train.targets).tolist())
            empty = [n for i, n in enumerate(self.class_names) if i not in present]
            if empty:
                raise DataError(
                    f"evaluation set {self.name!r}: class {', '.join(map(repr, empty))} has no training "
                    "sample; add samples or drop the class"
                )
        return self

    def take_bands(self, positions: Sequence[int]) -> EvalDataset:
        """The set with only the bands at `positions`, in that order."""
        return replace(
            self,
            bands=tuple(self.bands[i] for i in positions),
            train=self.train.take_bands(positions),
            test=self.test.take_bands(positions),
        )

    def select_bands(self, wanted: Sequence[str] | None) -> EvalDataset:
        """The `wanted` bands (`data.bands`), in that order, matched by exact or canonical name;
        the set itself when `wanted` is None."""
        if not wanted:
            return self
        positions = [find_band(self.bands, name) for name in wanted]
        missing = [name for name, i in zip(wanted, positions, strict=True) if i is None]
        if missing:
            raise DataError(
                f"evaluation set {self.name!r} has no band {', '.join(map(repr, missing))}; its bands are "
                f"{', '.join(self.bands)}: fix data.bands"
            )
        return self.take_bands(positions)


def conform_to_encoder(
    dataset: EvalDataset, meta: dict, log: Callable[[str], None], allow_other_units: bool = False
) -> EvalDataset:
    """The set as an encoder (`encoder.json` meta) must see it: its bands checked by name and put
    in the encoder's order. Pixels in other units than the encoder's pretraining data are refused
    (the encoder's normalisation would flatten or blow them up, so no number would mean anything),
    or, with `allow_other_units`, only warned about (to `log`)."""
    where = f"evaluation set {dataset.name!r}"
    match = match_encoder_bands(meta, dataset.bands, where)
    if match.note:
        log(match.note)
    if match.order is not None:
        dataset = dataset.take_bands(match.order)
    means = dataset.train.images.mean(axis=(0, 2, 3), dtype=np.float64)
    warning = pixel_scale_warning(meta, dataset.train.images.dtype, means.tolist(), where)
    if warning and not allow_other_units:
        raise DataError(
            warning.removeprefix("warning: ")
            + ". Nothing was measured on it; eval.allow_other_units=true measures it anyway, warned"
        )
    if warning:
        log(warning)
    return dataset


def to_device_batches(images: np.ndarray, batch_size: int, device: torch.device | str):
    """Yield uint batches moved to `device` (pinned when the device is a GPU)."""
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        if torch.device(device).type == "cuda":
            batch = batch.pin_memory()
        yield batch.to(device, non_blocking=True)
