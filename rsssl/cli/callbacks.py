"""Callbacks the pretraining entry point adds to every run."""

from __future__ import annotations

import time

import lightning as L
import torch


def _now() -> float:
    """Wall time once the device has finished the work queued so far."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


class ThroughputMonitor(L.Callback):
    """Training images per second over the whole fit, after the first `warmup` steps.

    The images of every process over the wall time of the steps after the warm-up (worker start,
    allocator warm-up), each step timed from the end of the one before, so data loading counts and
    validation does not; the first step of an epoch is left out too (its time holds the epoch's end
    and the loaders' restart). `images_per_second` is the figure `summary.json` reports; each
    step's own rate is logged as `train/images_per_second` (a curve in metrics.csv).
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.images = 0
        self.seconds = 0.0
        self._last: float | None = None
        self._paused = 0.0
        self._seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = _now()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup:
            images = batch["image"].shape[0] * trainer.world_size
            self.images += images
            self.seconds += now - self._last
            pl_module.log(
                "train/images_per_second", images / (now - self._last), on_step=True, on_epoch=False
            )
        self._last = now

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # do not count the gap across epoch ends

    def on_validation_start(self, trainer, pl_module) -> None:
        self._paused = _now()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._last is not None:  # the step after validation is timed without it
            self._last += _now() - self._paused

    @property
    def images_per_second(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


class ValidateAtMaxSteps(L.Callback):
    """Validate the last step of a run that `trainer.max_steps` stops before its epoch ends.

    Lightning validates at epoch ends and when asked to stop, but not when max_steps ends an
    epoch early: such a run would end without `val/probe_acc`, the metric best.ckpt monitors.
    Asking to stop at the last step has that step validated.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
