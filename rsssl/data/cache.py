"""Cache files that several processes share (DDP ranks, concurrent runs on one cache dir).

A writer writes a temporary file of its own and renames it over the entry in one atomic step,
so a reader sees the old entry or the new one, never half of one, and concurrent writers of
one entry all succeed (the last rename wins). An entry a killed writer or a full disk left
unreadable is reported and recomputed, never a crash.
"""

from __future__ import annotations

import logging
import os
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")

#: What reading a damaged entry raises: bad JSON or array data, a missing key, a wrong type.
CORRUPT = (ValueError, KeyError, TypeError, EOFError, OSError, zipfile.BadZipFile)

log = logging.getLogger(__name__)


def write_atomic(path: Path, write: Callable[[IO[Any]], None], mode: str = "w") -> None:
    """Write `path` through a temporary file unique to this writer, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, mode) as stream:
            write(stream)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_cached(path: Path, read: Callable[[Path], T]) -> T | None:
    """`read(path)`; None when the entry is missing, or corrupt (then with a warning)."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except CORRUPT as err:
        log.warning("cache entry %s is corrupt (%s: %s); recomputing it", path, type(err).__name__, err)
        return None
