"""The append-only results store: one CSV file, long format, one metric per row.

Every evaluation (kNN, linear probe, fine-tuning, segmentation, the online probe of a
pretraining run) appends rows here; the leaderboard is generated from this file only.
Writers may run concurrently (a Hydra sweep, several jobs on one file system) and may be
killed at any moment, so appends take a file lock, write whole lines in a single ``write``
on an ``O_APPEND`` descriptor and fsync. A partial last line (a writer killed inside its
``write``) is ignored on read and cut off by the next append before it writes.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

DEFAULT_RESULTS_PATH = Path("results/results.csv")

# Protocols in the order the leaderboard shows them. Others are allowed and sort after these.
PROTOCOLS = ("knn", "linear", "finetune", "segmentation_frozen", "segmentation_finetune", "online_linear")
# Online-probe numbers come from pretraining and are never shown beside offline ones.
ONLINE_PROTOCOLS = frozenset({"online_linear"})
AGGREGATE_SEED = -1
# Reference encoders reported beside every method (the leaderboard lists them after the methods).
BASELINES = ("random_init", "image_stats")


def utc_now() -> str:
    """The current UTC time as an ISO-8601 string (the ``time`` column)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One number with everything needed to know where it came from.

    ``budget`` is a label ("5/class", "1%", "" when not applicable), ``seed`` the seed of the
    labelled subset (``AGGREGATE_SEED`` for a row that already aggregates seeds) and
    ``interval`` the 95 % half-width of such an aggregate (``None``, stored as "", otherwise).
    """

    time: str = field(default_factory=utc_now)
    run_id: str
    method: str
    backbone: str
    pretrain_data: str
    eval_data: str
    protocol: str
    budget: str = ""
    seed: int
    metric: str
    value: float
    interval: float | None = None
    checkpoint_hash: str = ""
    git_commit: str = ""
    config_hash: str = ""

    def __post_init__(self) -> None:
        for name in (
            "time",
            "run_id",
            "method",
            "backbone",
            "pretrain_data",
            "eval_data",
            "protocol",
            "budget",
            "metric",
            "checkpoint_hash",
            "git_commit",
            "config_hash",
        ):
            text = getattr(self, name)
            if not isinstance(text, str) or "\n" in text or "\r" in text:
                raise ValueError(f"ResultRow.{name} must be a one-line string, got {text!r}")
        for name in ("method", "eval_data", "protocol", "metric"):
            if not getattr(self, name):
                raise ValueError(f"ResultRow.{name} must not be empty")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"ResultRow.seed must be an int, got {self.seed!r}")
        parse_budget(self.budget)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
HEADER = ",".join(COLUMNS) + "\n"
_VALUE, _INTERVAL = COLUMNS.index("value"), COLUMNS.index("interval")
_KEY_COLUMNS = tuple(c for c in COLUMNS if c not in {"time", "value", "interval", "git_commit"})

_PER_CLASS = re.compile(r"^(\d+)/class$")
_FRACTION = re.compile(r"^(\d+(?:\.\d+)?)%$")


def parse_budget(budget: str) -> tuple[str, float]:
    """Split a budget label into its kind and amount: ("per_class", 5), ("fraction", 1.0) or ("none", 0).

    Raises ``ValueError`` on any other label, so a typo cannot create a new column silently.
    """
    if budget == "":
        return "none", 0.0
    if m := _PER_CLASS.match(budget):
        return "per_class", float(m.group(1))
    if m := _FRACTION.match(budget):
        return "fraction", float(m.group(1))
    raise ValueError(f"budget must look like '20/class', '1%' or '' (not applicable), got {budget!r}")


def row_key(row: ResultRow) -> tuple:
    """Identity of a row: every column except time, value, interval and git commit.

    Two rows with the same key are the same measurement; a re-run sweep skips them.
    """
    return tuple(getattr(row, c) for c in _KEY_COLUMNS)


def _format_row(row: ResultRow) -> list[str]:
    """The row's CSV fields; floats as ``repr`` so they read back bit-identical."""
    out = [str(getattr(row, c)) for c in COLUMNS]
    out[_VALUE] = repr(float(row.value))
    out[_INTERVAL] = "" if row.interval is None else repr(float(row.interval))
    return out


def _encode(rows: Sequence[ResultRow]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(_format_row(r) for r in rows)
    return buf.getvalue()


def _decode(record: dict[str, str]) -> ResultRow:
    values: dict[str, object] = dict(record)
    values["seed"] = int(record["seed"])
    values["value"] = float(record["value"])
    values["interval"] = None if record["interval"] == "" else float(record["interval"])
    return ResultRow(**values)


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline: a partial last line is not a row yet."""
    text = path.read_text(encoding="utf-8")
    return text[: text.rfind("\n") + 1]


def read_rows(path: str | os.PathLike) -> list[ResultRow]:
    """All complete rows of the store, in file order; a missing or empty store gives ``[]``.

    A malformed complete line is an error (naming file and line), never silently dropped.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = _complete_text(path)
    if not text:
        return []
    lines = text.splitlines(keepends=True)
    if lines[0] != HEADER:
        raise ValueError(f"{path}: header {lines[0].strip()!r} is not the results schema {HEADER.strip()!r}")
    rows = []
    for lineno, record in enumerate(csv.reader(lines[1:]), start=2):
        if len(record) != len(COLUMNS):
            raise ValueError(f"{path}:{lineno}: expected {len(COLUMNS)} fields, got {len(record)}")
        try:
            rows.append(_decode(dict(zip(COLUMNS, record, strict=True))))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}:{lineno}: bad row: {err}") from err
    return rows


def read_table(path: str | os.PathLike) -> dict[str, list]:
    """The store as columns (``{column: [values...]}``), e.g. for ``pandas.DataFrame(read_table(p))``."""
    rows = read_rows(path)
    return {c: [getattr(r, c) for r in rows] for c in COLUMNS}


def existing_keys(path: str | os.PathLike) -> set[tuple]:
    """Keys (``row_key``) of every row already in the store."""
    return {row_key(r) for r in read_rows(path)}


def _drop_known(rows: Iterable[ResultRow], known: set[tuple]) -> list[ResultRow]:
    seen = set(known)
    out = []
    for row in rows:
        key = row_key(row)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def filter_new(path: str | os.PathLike, rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The rows whose key is neither in the store nor earlier in ``rows`` (a re-run sweep skips the rest)."""
    return _drop_known(rows, existing_keys(path))


def _cut_partial_tail(fd: int) -> int:
    """Truncate a partial last line left by a killed writer; return the file size after it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    end = size
    while end > 0:
        start = max(0, end - 65536)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            end = start + cut + 1
            break
        end = start
    os.ftruncate(fd, end)
    return end


def _check_header(fd: int, path: Path) -> None:
    head = os.pread(fd, len(HEADER), 0).decode("utf-8", errors="replace")
    if head != HEADER:
        raise ValueError(f"{path}: not a results store with columns {HEADER.strip()!r}; refusing to append")


def append_rows(path: str | os.PathLike, rows: Iterable[ResultRow], *, skip_existing: bool = False) -> int:
    """Append rows to the store under its lock; return how many were written.

    The header is written when the file is new. With ``skip_existing`` the check against the
    rows already present happens under the same lock, so concurrent re-runs cannot duplicate.
    """
    path = Path(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if skip_existing:
            rows = filter_new(path, rows)
        if not rows:
            return 0
        body = _encode(rows).encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = _cut_partial_tail(fd)
            if size:
                _check_header(fd, path)
            data = body if size else HEADER.encode("utf-8") + body
            written = os.write(fd, data)
            while written < len(data):  # a short write (signal, full disk) continues where it stopped
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
    return len(rows)
