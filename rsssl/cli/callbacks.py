"""Callbacks the pretraining entry point adds to every run."""

from __future__ import annotations

import time

import lightning as L
import torch

from rsssl.models.backbones import ConfigError


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

    `loader_wait_fraction`: the share of that time between a step's end and the next one's start,
    where the loop fetches the next batch and moves it to the device: near 0 when the loader keeps
    ahead of the model, large when the model waits for data. (On a GPU the host runs ahead of the
    device, so a step's device time is never counted as waiting; waiting here is the host blocked
    on the loader.)
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.images = 0
        self.seconds = 0.0
        self.waiting = 0.0
        self._last: float | None = None
        self._started = 0.0
        self._paused = 0.0
        self._seen = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._started = _now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = _now()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup:
            images = batch["image"].shape[0] * trainer.world_size
            self.images += images
            self.seconds += now - self._last
            self.waiting += max(0.0, self._started - self._last)
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

    @property
    def loader_wait_fraction(self) -> float | None:
        return self.waiting / self.seconds if self.seconds > 0 else None


class ValidateAtMaxSteps(L.Callback):
    """Validate the last step of a run that `trainer.max_steps` stops before its epoch ends.

    Lightning validates at epoch ends and when asked to stop, but not when max_steps ends an
    epoch early: such a run would end without `val/probe_acc`, the metric best.ckpt monitors.
    Asking to stop at the last step has that step validated.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class SpeedSettings(L.Callback):
    """How the steps run, not what they compute (`speed:` in the pretraining config).

    `channels_last`: the method's weights and every image batch in channels-last memory layout,
    which cuDNN's convolutions (and bf16 tensor cores) run fastest in. `compile`: `torch.compile`
    in place (`nn.Module.compile`, so state-dict keys and checkpoints are unchanged) of the
    backbone and of every module an EMA pairs; the first steps pay the compilation.
    """

    def __init__(self, channels_last: bool = False, compile: bool = False) -> None:
        self.channels_last = channels_last
        self.compile = compile

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
        if self.compile:
            for module in compiled_modules(pl_module):
                module.compile()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if not self.channels_last:
            return
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.ndim == 4:
                batch[key] = value.contiguous(memory_format=torch.channels_last)


def compiled_modules(method: L.LightningModule) -> list[torch.nn.Module]:
    """The backbone and the online and target module of every EMA pair, each once."""
    modules = [method.backbone, *(m for pair in getattr(method, "momentum_pairs", []) for m in pair)]
    return list({id(m): m for m in modules}.values())


def resolve_channels_last(setting: bool | str, accelerator: str | None) -> bool:
    """`speed.channels_last`: true | false | auto (on a GPU, where it pays)."""
    if setting == "auto":
        return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"speed.channels_last must be true, false or auto, got {setting!r}")
