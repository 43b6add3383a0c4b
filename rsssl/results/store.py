"""The append-only results store: one CSV file, long format, one metric per row.

Every evaluation (kNN, linear probe, fine-tuning, segmentation, the online probe of a
pretraining run) appends rows here; the leaderboard is generated from this file only.
Writers may run concurrently (a Hydra sweep, several jobs on one file system) and may be
killed at any moment, so appends take a file lock, write whole lines in a single ``write``
on an ``O_APPEND`` descriptor and fsync. A partial last line (a writer killed inside its
``write``) is ignored on read and cut off by the next append before it writes.

Columns only ever grow at the end: a store written with fewer columns (an older schema) is
read with the missing columns at their defaults, and the next append rewrites it atomically
under the new header. Beside the store, ``<store>.configs.json`` maps each ``config_hash`` to
the pretraining configuration it hashes (see ``record_config``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

DEFAULT_RESULTS_PATH = Path("results/results.csv")

# Protocols in the order the leaderboard shows them. Others are allowed and sort after these.
PROTOCOLS = (
    "knn",
    "linear",
    "finetune",
    "segmentation_frozen",
    "segmentation_finetune",
    "segmentation_frozen_pretrained_decoder",
    "segmentation_finetune_pretrained_decoder",
    "pixel_linear",
    "pixel_ridge",
    "tile_ridge",
    "online_linear",
)
# Online-probe numbers come from pretraining and are never shown beside offline ones.
ONLINE_PROTOCOLS = frozenset({"online_linear"})
AGGREGATE_SEED = -1
# Reference encoders reported beside every method (the leaderboard lists them after the methods, in
# this order: the supervised reference, trained from scratch on the labels, is the upper one).
BASELINES = ("supervised", "random_init", "image_stats")


def utc_now() -> str:
    """The current UTC time as an ISO-8601 string (the ``time`` column)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True, kw_only=True)
class ResultRow:
    """One number with everything needed to know where it came from.

    ``budget`` is a label ("5/class", "1%", "" when not applicable), ``seed`` the seed of the
    labelled subset (``AGGREGATE_SEED`` for a row that already aggregates seeds) and
    ``interval`` the 95 % half-width of such an aggregate (``None``, stored as "", otherwise).
    ``run_id`` is the run folder relative to the runs folder (never a machine path).
    ``config_hash`` hashes the pretraining configuration without its seed, so the pretraining
    seeds of one configuration share it (the supervised reference's hashes its training recipe);
    ``pretrain_seed`` tells them apart (the init seed for the random-init baseline and the
    supervised reference, ``None``, stored as "", when unknown). ``eval_hash`` identifies what was
    measured: the evaluation set's content and the protocol's settings.
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
    pretrain_seed: int | None = None
    eval_hash: str = ""

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
            "eval_hash",
        ):
            text = getattr(self, name)
            if not isinstance(text, str) or "\n" in text or "\r" in text:
                raise ValueError(f"ResultRow.{name} must be a one-line string, got {text!r}")
        for name in ("method", "eval_data", "protocol", "metric"):
            if not getattr(self, name):
                raise ValueError(f"ResultRow.{name} must not be empty")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"ResultRow.seed must be an int, got {self.seed!r}")
        if self.pretrain_seed is not None and (
            not isinstance(self.pretrain_seed, int) or isinstance(self.pretrain_seed, bool)
        ):
            raise ValueError(f"ResultRow.pretrain_seed must be an int or None, got {self.pretrain_seed!r}")
        parse_budget(self.budget)


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
HEADER = ",".join(COLUMNS) + "\n"
# The first schema's columns: every store since starts with them (columns are only appended).
LEGACY_COLUMNS = COLUMNS[: COLUMNS.index("config_hash") + 1]
_VALUE, _INTERVAL = COLUMNS.index("value"), COLUMNS.index("interval")
_PRETRAIN_SEED = COLUMNS.index("pretrain_seed")
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
    out[_PRETRAIN_SEED] = "" if row.pretrain_seed is None else str(row.pretrain_seed)
    return out


def _encode(rows: Sequence[ResultRow]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(_format_row(r) for r in rows)
    return buf.getvalue()


def _decode(record: dict[str, str]) -> ResultRow:
    """A row from its CSV fields; columns an older schema lacks keep their defaults."""
    values: dict[str, object] = dict(record)
    values["seed"] = int(record["seed"])
    values["value"] = float(record["value"])
    values["interval"] = None if record["interval"] == "" else float(record["interval"])
    if "pretrain_seed" in record:
        values["pretrain_seed"] = None if record["pretrain_seed"] == "" else int(record["pretrain_seed"])
    return ResultRow(**values)


def _complete_text(path: Path) -> str:
    """The file's text up to its last newline: a partial last line is not a row yet.

    Read with ``newline=""`` so no character but the CSV's own terminator can end a line.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    return text[: text.rfind("\n") + 1]


def _schema_columns(header: list[str], path: Path) -> tuple[str, ...]:
    """The columns of a store's header: the current schema or an older one (a shorter prefix)."""
    columns = tuple(header)
    if len(columns) >= len(LEGACY_COLUMNS) and COLUMNS[: len(columns)] == columns:
        return columns
    raise ValueError(f"{path}: header {','.join(header)!r} is not the results schema {HEADER.strip()!r}")


def _parse(path: Path, text: str) -> tuple[tuple[str, ...], list[ResultRow]]:
    """The header's columns and the rows of a store's complete text (the csv module splits lines)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    columns = _schema_columns(next(reader), path)
    rows = []
    for record in reader:
        if len(record) != len(columns):
            raise ValueError(f"{path}:{reader.line_num}: expected {len(columns)} fields, got {len(record)}")
        try:
            rows.append(_decode(dict(zip(columns, record, strict=True))))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}:{reader.line_num}: bad row: {err}") from err
    return columns, rows


def read_rows(path: str | os.PathLike) -> list[ResultRow]:
    """All complete rows of the store, in file order; a missing or empty store gives ``[]``.

    A malformed complete line is an error (naming file and line), never silently dropped.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = _complete_text(path)
    return _parse(path, text)[1] if text else []


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


def _replace_atomically(path: Path, text: str) -> None:
    """Write `text` to a unique temporary file beside `path`, fsync it, and rename it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _migrate(path: Path) -> None:
    """Rewrite a store of an older schema under the current header, keeping every complete row.

    Call under the store's lock. A store already current, empty or without a complete header
    line is left alone; a foreign header is refused (by ``_parse``) before anything is written.
    """
    if not path.is_file():
        return
    with open(path, encoding="utf-8", newline="") as handle:
        first = handle.readline()
    if first == HEADER or not first.endswith("\n"):
        return
    text = _complete_text(path)
    try:
        _, rows = _parse(path, text)
    except ValueError as err:
        raise ValueError(f"{err}; refusing to append") from err
    _replace_atomically(path, HEADER + _encode(rows))


def append_rows(path: str | os.PathLike, rows: Iterable[ResultRow], *, skip_existing: bool = False) -> int:
    """Append rows to the store under its lock; return how many were written.

    The header is written when the file is new. With ``skip_existing`` the check against the
    rows already present happens under the same lock, so concurrent re-runs cannot duplicate.
    """
    path = Path(path)
    rows = list(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        _migrate(path)
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
            _write_whole_or_nothing(fd, data, size, path, len(rows))
        finally:
            os.close(fd)
    return len(rows)


class ResultsNotWritten(OSError):
    """Rows that could not be appended (a full disk, a quota); none of them is in the store."""


def _write_whole_or_nothing(fd: int, data: bytes, size: int, path: Path, count: int) -> None:
    """Append `data` at `size` and fsync; on a failure (a full disk, a quota) cut the file back to
    `size`, so a batch of rows is stored whole or not at all, and say so."""
    try:
        written = os.write(fd, data)
        while written < len(data):  # a short write (a signal, a nearly full disk) continues where it stopped
            written += os.write(fd, data[written:])
        os.fsync(fd)
    except OSError as err:
        os.ftruncate(fd, size)
        raise ResultsNotWritten(
            err.errno,
            f"appending to {path} failed ({err.strerror or err}): none of its {count} rows was written; "
            "free space and run the evaluation again (rows already stored are skipped)",
        ) from err


def _lock(path: Path) -> FileLock:
    """The store's lock, shared by appends, migrations and the configs sidecar."""
    return FileLock(str(path) + ".lock")


def configs_path(results: str | os.PathLike) -> Path:
    """The configs sidecar of a store: ``results.csv`` -> ``results.configs.json``."""
    results = Path(results)
    return results.with_name(results.stem + ".configs.json")


def read_configs(results: str | os.PathLike) -> dict[str, dict]:
    """``config_hash`` -> the pretraining configuration it hashes; ``{}`` when there is no sidecar."""
    path = configs_path(results)
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def record_config(results: str | os.PathLike, config_hash: str, config: dict) -> None:
    """Add ``config_hash -> config`` to the store's sidecar (under the store's lock, atomically).

    The same hash with a different configuration is refused: the hash would no longer say
    which configuration produced a row.
    """
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(config, sort_keys=True, default=str))
    with _lock(results):
        configs = read_configs(results)
        if configs.get(config_hash, config) != config:
            raise ValueError(
                f"{configs_path(results)}: config_hash {config_hash!r} already names another configuration; "
                "the hash function changed or the sidecar was edited: move the sidecar away and re-run"
            )
        if config_hash in configs:
            return
        configs[config_hash] = config
        _replace_atomically(configs_path(results), json.dumps(configs, indent=2, sort_keys=True) + "\n")


def relative_run_id(run_dir: str | os.PathLike, runs_dir: str | os.PathLike) -> str:
    """A run folder as a portable run id: its path relative to the runs folder (POSIX form).

    A folder outside the runs folder is refused with the fix: results must never carry machine paths.
    """
    run_dir, runs_dir = Path(run_dir).expanduser().resolve(), Path(runs_dir).expanduser().resolve()
    if not run_dir.is_relative_to(runs_dir):
        raise ValueError(
            f"run folder {run_dir} is not inside the runs folder {runs_dir}: give the runs folder "
            "that holds it (runs_dir=...)"
        )
    return run_dir.relative_to(runs_dir).as_posix()


def make_run_ids_relative(results: str | os.PathLike, runs_dir: str | os.PathLike) -> int:
    """Rewrite a store's absolute run ids relative to `runs_dir` (atomically, under its lock).

    For stores written before run ids were portable, e.g. with ``runs_dir=/work/main/runs``:
    ``/work/main/runs/synthetic_benchmark/moco_x/2026...`` -> ``synthetic_benchmark/moco_x/2026...``.
    Relative ids and baseline ids are kept; an absolute id outside `runs_dir` is an error and
    nothing is written. The store is also brought to the current schema. Returns the count changed.
    """
    results = Path(results)
    with _lock(results):
        rows = read_rows(results)
        changed = [
            replace(r, run_id=relative_run_id(r.run_id, runs_dir)) if Path(r.run_id).is_absolute() else r
            for r in rows
        ]
        count = sum(a.run_id != b.run_id for a, b in zip(rows, changed, strict=True))
        if rows:
            _replace_atomically(results, HEADER + _encode(changed))
    return count
