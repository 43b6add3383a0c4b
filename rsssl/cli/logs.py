"""What a pretraining run says, and where: the terminal and the run folder's `pretrain.log`.

Hydra's job logging writes the root logger to both; Lightning keeps its own terminal handlers
(installed when it is imported before logging is configured), so its lines never reached the
log file. `route_lightning_logging` hands them to the root logger like every other line.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")  # each has its own handler
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"  # where every rank_zero_info goes


class ConsoleFormatter(logging.Formatter):
    """The message alone; warnings and errors prefixed with their level, so they stand out."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


class NoAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip: ... try installing ..." lines: product adverts, not run facts."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def route_lightning_logging() -> None:
    """Lightning's log lines (seed, devices, model summary, why fit stopped) go to the root logger."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    rank_zero = logging.getLogger(RANK_ZERO_LOGGER)
    if not any(isinstance(f, NoAdverts) for f in rank_zero.filters):
        rank_zero.addFilter(NoAdverts())


@contextlib.contextmanager
def harmless_lightning_warnings_silenced(run_dir: Path) -> Iterator[None]:
    """Silence, during a fit, the Lightning warnings whose cause is in Lightning and harmless here
    (targeted by message, and for this run's folder only where they name it).

    Lightning warns when the CSV logger's and the checkpoints' folder is not empty. The run folder
    is new (timestamped) and holds only Hydra's files and our config.yaml, none of which Lightning
    overwrites. Lightning 2.6's `_pytree` calls
    torch's deprecated `LeafSpec()` on every batch transfer (a FutureWarning under torch >= 2.10);
    nothing to change on our side. A resumed run writes into a new folder by design, so
    Lightning's notice that the checkpoint folder changed (best.ckpt then ranks this run's own
    epochs) is expected too.
    """
    folder = re.escape(str(run_dir).rstrip("/"))
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=f"Experiment logs directory {folder}/? exists and is not empty"
        )
        warnings.filterwarnings("ignore", message=f"Checkpoint directory {folder}/? exists and is not empty")
        warnings.filterwarnings("ignore", message=f"The dirpath has changed from .* to '{folder}'")
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
        )
        yield
