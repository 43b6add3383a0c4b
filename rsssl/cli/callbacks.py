"""Callbacks the pretraining entry point adds to every run."""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch


class ThroughputMonitor(L.Callback):
    """Training images per second, from the wall time between consecutive steps.

    The first `warmup` steps (worker start, allocator warm-up) are left out; the median of
    the rest is reported, and logged as `train/images_per_second`.
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.rates: list[float] = []
        self._last: float | None = None
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.perf_counter()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup:
            rate = batch["image"].shape[0] / (now - self._last)
            self.rates.append(rate)
            pl_module.log("train/images_per_second", rate, on_step=True, on_epoch=False)
        self._last = now

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # do not count the gap across validation / epoch ends

    @property
    def images_per_second(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None
