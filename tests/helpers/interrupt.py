"""A Lightning callback that stops a run abruptly at a given step, as a crash or a kill would."""

from __future__ import annotations

import os
import signal

import lightning as L


class Interrupted(RuntimeError):
    """Raised by `StopAt` in place of a kill, where the run shares the test's process."""


class StopAt(L.Callback):
    """Before optimiser step `step + 1` starts: SIGKILL the process (`kill: true`, for a run in its
    own process) or raise `Interrupted`. Nothing runs after it: no hook, no checkpoint."""

    def __init__(self, step: int, kill: bool = False) -> None:
        self.step = step
        self.kill = kill

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.step:
            if self.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise Interrupted(f"stopped before step {self.step + 1}")
