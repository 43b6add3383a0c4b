"""What makes a pretraining run resumable exactly: atomic checkpoint files, `last.ckpt` at a step
interval as well as at every epoch end, and random streams that are a function of the step.

With these and the data module's resumable training loader (`rsssl.data.sampling.ResumableLoader`)
a run killed at any point and resumed from its `last.ckpt` continues as if it had never stopped:
the same batches in the same order, the same augmentations, bitwise on the CPU with
deterministic settings."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from rsssl import __version__
from rsssl.data import draws
from rsssl.eval.suite import git_commit
from rsssl.models.backbones import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, flushes it to disk, then renames
    it over the target: a kill or a full disk mid-write leaves the previous checkpoint whole (and
    at worst a `*.tmp-<pid>` file), never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if get_filesystem(path).protocol not in ("file", ("file", "local")):
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as stream:
                torch.save(checkpoint, stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


#: the layout of what rsssl puts in a checkpoint; raised when a change needs older ones migrated
CHECKPOINT_FORMAT = 1


class CheckpointStamp(L.Callback):
    """Records in every checkpoint the rsssl that wrote it (`checkpoint["rsssl"]`: version,
    checkpoint format, commit), so a resume by another rsssl can say which one wrote it."""

    @staticmethod
    def stamp() -> dict[str, Any]:
        """What this rsssl writes into a checkpoint about itself."""
        return {"version": __version__, "format": CHECKPOINT_FORMAT, "git_commit": git_commit()}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint["rsssl"] = self.stamp()


def written_by(checkpoint: dict[str, Any]) -> str:
    """The rsssl that wrote `checkpoint`, in words (from its stamp, `CheckpointStamp`)."""
    stamp = checkpoint.get("rsssl")
    if not isinstance(stamp, dict):
        return "an rsssl older than its checkpoints' version stamp"
    commit = f", commit {stamp['git_commit']}" if stamp.get("git_commit") else ""
    return f"rsssl {stamp.get('version')} (checkpoint format {stamp.get('format')}{commit})"


def this_rsssl() -> str:
    """This rsssl, in words: its version and commit."""
    commit = f" (commit {git_commit()})" if git_commit() else ""
    return f"rsssl {__version__}{commit}"


def check_checkpoint_format(checkpoint: dict[str, Any], path: Path) -> None:
    """ConfigError for a checkpoint of a newer checkpoint format than this rsssl reads."""
    stamp = checkpoint.get("rsssl")
    written = stamp.get("format") if isinstance(stamp, dict) else 0
    if not isinstance(written, int) or written > CHECKPOINT_FORMAT:
        raise ConfigError(
            f"resume={path}: written by {written_by(checkpoint)}, but this is {this_rsssl()}, which reads "
            f"checkpoint formats up to {CHECKPOINT_FORMAT}: upgrade rsssl (pip install -U rsssl, or git "
            "pull in its checkout) to resume it"
        )


class LastCheckpoint(L.Callback):
    """`last.ckpt`, the newest state: every `every_n_steps` optimiser steps (None: none between
    epochs), at every epoch end and when training ends, the one file overwritten each time."""

    def __init__(self, dirpath: Path, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ConfigError(
                f"checkpoint_every_n_steps={every_n_steps}: give a positive step count, or null"
            )
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps
        self._saved_at: int | None = None

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or self._saved_at == trainer.global_step:
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state: optimiser, loops, callbacks
        self._saved_at = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(trainer)


def _seed_of(key: tuple[int, ...]) -> int:
    return int(np.random.SeedSequence(key).generate_state(2, dtype=np.uint32).view(np.uint64)[0])


def step_seed(seed: int, rank: int, step: int) -> int:
    """The seed of optimiser step `step` on process `rank` of a run seeded `seed` (64 bits)."""
    return _seed_of((seed, rank, step))


def sample_seed(seed: int, step: int) -> int:
    """The seed of step `step`'s per-sample draws (`rsssl.data.draws`): one for every process."""
    return _seed_of((seed, step))


class StepSeeds(L.Callback):
    """Reseeds before each training batch from (run seed, step): the per-sample stream of
    `rsssl.data.draws` (augmentations, masks, labels, partners; the same on every process), and
    from (run seed, process rank, step) torch (every device), numpy and Python's `random` (what
    each process draws for itself: dropout, drop-path). A step's draws are then the same whether
    or not the run was stopped and resumed before it, whatever the loaders' prefetching or the
    validation in between consumed, and whatever the number of processes."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        draws.reseed(sample_seed(self.seed, trainer.global_step))
        value = step_seed(self.seed, trainer.global_rank, trainer.global_step)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)

    def on_train_end(self, trainer, pl_module) -> None:
        draws.reseed(None)  # evaluation and anything after the fit draw from torch's RNG again

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        draws.reseed(None)
