"""Generate the leaderboard (markdown, CSV, plots, HTML page) from the results store.

Numbers are never typed by hand: every table is rebuilt from the long-format rows. Each
column names its protocol, and online-probe numbers (measured during pretraining) get their
own table so they are never ranked against offline evaluations. In each column the best mean
is marked, and so is every entry that cannot be told apart from it (overlapping intervals).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rsssl.eval import intervals
from rsssl.results.html import render_html
from rsssl.results.plots import Plot, label_efficiency_plots
from rsssl.results.store import (
    AGGREGATE_SEED,
    BASELINES,
    ONLINE_PROTOCOLS,
    PROTOCOLS,
    ResultRow,
    parse_budget,
    row_key,
    utc_now,
)

LABEL_COLUMNS = ("method", "backbone", "pretrain data")
CSV_COLUMNS = (
    "method",
    "backbone",
    "pretrain_data",
    "eval_data",
    "protocol",
    "budget",
    "metric",
    "mean",
    "interval",
    "n_seeds",
    "mark",
)
# A CSV cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# Two-sided 95 % Student-t quantiles t(0.975, df) for df = 1..30; larger df use a series.
# fmt: off
# fmt: on
# Metric names (as whole words: "val_loss", "top1_err") that rank low-first.
_LOWER_IS_BETTER = re.compile(r"(?<![a-z])(loss|error|err|rmse|mae|mse|ece)(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Aggregate:
    """One leaderboard number: mean and 95 % half-width over the seeds of one configuration.

    ``n_seeds`` is 0 when the store only held an aggregate row (its stored interval is used).
    """

    method: str
    backbone: str
    pretrain_data: str
    eval_data: str
    protocol: str
    budget: str
    metric: str
    mean: float
    interval: float | None
    n_seeds: int
    mark: str = ""  # "best" in its column, "tied" with the best, or ""

    @property
    def entry(self) -> tuple[str, str, str]:
        """The leaderboard row this number belongs to: (method, backbone, pretrain data)."""
        return self.method, self.backbone, self.pretrain_data


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the value it sorts by (``None``: empty) and its mark ("best", "tied", "")."""

    text: str
    sort: float | str | None
    mark: str = ""


@dataclass(frozen=True)
class Table:
    """A rendered-format-independent table; ``better[i]`` is "high"/"low" for value columns, "" for labels.

    ``note`` is said right under the table (what it leaves out and why); "" for none.
    """

    id: str
    title: str
    headers: tuple[str, ...]
    better: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    note: str = ""


#: what the tables and plots show by default: overall accuracy and mean IoU.
HEADLINE_METRICS = ("oa", "miou")


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and 95 % t-interval half-width of per-seed values (``None`` with a single value)."""
    mean, half_width = intervals.mean_interval(values, confidence=0.95)
    return mean, None if len(values) < 2 else half_width


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics rank high-first; losses and errors low-first."""
    return not _LOWER_IS_BETTER.search(metric)


def aggregate(rows: Iterable[ResultRow]) -> list[Aggregate]:
    """Aggregate per-seed rows into one number per (entry, eval data, protocol, budget, metric).

    A row recorded twice (same key) counts once, the later one winning. With at least two
    per-seed rows the mean and t-interval are computed here; otherwise a stored aggregate row
    (seed -1) is used; a single seed alone gives its value with no interval.
    """
    latest = {row_key(r): r for r in rows}
    seeds: dict[tuple, list[float]] = defaultdict(list)
    stored: dict[tuple, ResultRow] = {}
    for r in latest.values():
        group = (r.method, r.backbone, r.pretrain_data, r.eval_data, r.protocol, r.budget, r.metric)
        if r.seed == AGGREGATE_SEED:
            stored[group] = r
        else:
            seeds[group].append(r.value)
    out = []
    for group in sorted(seeds.keys() | stored.keys()):
        values = seeds.get(group, [])
        if len(values) < 2 and group in stored:
            mean, interval, n = stored[group].value, stored[group].interval, 0
        else:
            (mean, interval), n = mean_interval(values), len(values)
        out.append(Aggregate(*group, mean=mean, interval=interval, n_seeds=n))
    return mark_columns(out)


def _shown(a: Aggregate) -> float:
    """The mean as the tables print it."""
    return round(a.mean, _decimals(a.mean))


def tied(a: Aggregate, best: Aggregate) -> bool:
    """Whether ``a`` cannot be told apart from ``best``: their 95 % intervals overlap or, where either
    has no interval, they are equal at the precision shown."""
    if _shown(a) == _shown(best):
        return True
    if a.interval is None or best.interval is None:
        return False
    return abs(a.mean - best.mean) <= a.interval + best.interval


def column_marks(column: Sequence[Aggregate]) -> list[str]:
    """Marks of one column's numbers: "best" for the best mean, "tied" for those tied with it, else ""."""
    finite = [a for a in column if math.isfinite(a.mean)]
    if not finite:
        return [""] * len(column)
    top = (max if higher_is_better(finite[0].metric) else min)(a.mean for a in finite)
    best = [a for a in finite if a.mean == top]

    def mark(a: Aggregate) -> str:
        if not math.isfinite(a.mean):
            return ""
        return "best" if a.mean == top else "tied" if any(tied(a, b) for b in best) else ""

    return [mark(a) for a in column]


def mark_columns(aggs: Sequence[Aggregate]) -> list[Aggregate]:
    """The aggregates with their marks set, each compared within its column.

    A column is one (evaluation set, protocol, budget, metric).
    """
    columns: dict[tuple, list[int]] = defaultdict(list)
    for i, a in enumerate(aggs):
        columns[a.eval_data, a.protocol, a.budget, a.metric].append(i)
    marks = [""] * len(aggs)
    for members in columns.values():
        for i, mark in zip(members, column_marks([aggs[i] for i in members]), strict=True):
            marks[i] = mark
    return [replace(a, mark=mark) for a, mark in zip(aggs, marks, strict=True)]


def _protocol_rank(protocol: str) -> tuple[int, str]:
    return (PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)), protocol


def _column_order(column: tuple[str, str, str]) -> tuple:
    protocol, budget, metric = column
    kind, amount = parse_budget(budget)
    return _protocol_rank(protocol), ("per_class", "fraction", "none").index(kind), amount, metric.lower()


def _entry_order(entry: tuple[str, str, str]) -> tuple:
    method = entry[0]
    rank = BASELINES.index(method) + 1 if method in BASELINES else 0
    return rank, entry


def _decimals(value: float) -> int:
    return 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0


def format_value(mean: float, interval: float | None) -> str:
    """``mean ± interval`` with a precision that suits the metric's scale (fractions or percent)."""
    if not math.isfinite(mean):
        return str(mean)
    d = _decimals(mean)
    return f"{mean:.{d}f}" if interval is None else f"{mean:.{d}f} ± {interval:.{d}f}"


def _value_cell(a: Aggregate) -> Cell:
    return Cell(format_value(a.mean, a.interval), a.mean if math.isfinite(a.mean) else None, a.mark)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


SEGMENTATION_NOTE = (
    "No image_stats row: the image-statistics baseline is one feature vector per image, with nothing "
    "per pixel to segment, so the suite skips it on segmentation."
)


def _table_note(aggs: Sequence[Aggregate]) -> str:
    """What the table leaves out and why: image statistics have no segmentation numbers."""
    segmentation = [a for a in aggs if a.protocol.startswith("segmentation")]
    return SEGMENTATION_NOTE if segmentation and "image_stats" not in {a.method for a in segmentation} else ""


def _table(table_id: str, title: str, aggs: Sequence[Aggregate]) -> Table:
    columns = sorted({(a.protocol, a.budget, a.metric) for a in aggs}, key=_column_order)
    entries = sorted({a.entry for a in aggs}, key=_entry_order)
    by_cell = {(a.entry, (a.protocol, a.budget, a.metric)): a for a in aggs}
    rows = [
        (
            *(Cell(part, part) for part in e),
            *(_value_cell(by_cell[e, c]) if (e, c) in by_cell else Cell("", None) for c in columns),
        )
        for e in entries
    ]
    headers = [" · ".join(p for p in col if p) for col in columns]
    better = tuple("high" if higher_is_better(col[2]) else "low" for col in columns)
    return Table(
        table_id,
        title,
        (*LABEL_COLUMNS, *headers),
        ("",) * len(LABEL_COLUMNS) + better,
        tuple(rows),
        _table_note(aggs),
    )


def headline(aggs: Sequence[Aggregate], metrics: Sequence[str] | None) -> list[Aggregate]:
    """Only the named metrics (case-insensitive), for every evaluation set that has any of them."""
    if metrics is None:
        return list(aggs)
    wanted = {m.lower() for m in metrics}
    covered = {a.eval_data for a in aggs if a.metric.lower() in wanted}
    return [a for a in aggs if a.metric.lower() in wanted or a.eval_data not in covered]


def build_tables(aggs: Sequence[Aggregate]) -> list[Table]:
    """One offline table per evaluation dataset, and a separate online-probe table where there is one."""
    tables = []
    for i, eval_data in enumerate(sorted({a.eval_data for a in aggs})):
        mine = [a for a in aggs if a.eval_data == eval_data]
        offline = [a for a in mine if a.protocol not in ONLINE_PROTOCOLS]
        online = [a for a in mine if a.protocol in ONLINE_PROTOCOLS]
        slug = _slug(eval_data)
        if {t.id for t in tables} & {f"{slug}-offline", f"{slug}-online"}:  # "EuroSAT" and "eurosat"
            slug = f"{slug}-{i}"
        if offline:
            tables.append(_table(f"{slug}-offline", f"{eval_data} — offline evaluation", offline))
        if online:
            title = f"{eval_data} — online probe during pretraining (not comparable with offline protocols)"
            tables.append(_table(f"{slug}-online", title, online))
    return tables


_MD_MARKS = {"best": "**", "tied": "*", "": ""}


def _md_text(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    mark = _MD_MARKS[cell.mark] if text else ""
    return f"{mark}{text}{mark}"


def render_markdown(tables: Sequence[Table], note: str, plots: Sequence[Plot], out_dir: Path) -> str:
    """The whole LEADERBOARD.md: note, one section per table, then the plots."""
    parts = ["# rsssl leaderboard", "", note, ""]
    for table in tables:
        parts += [f"## {table.title}", ""]
        parts.append("| " + " | ".join(h.replace("|", "\\|") for h in table.headers) + " |")
        parts.append("|" + "|".join("---" if b == "" else "---:" for b in table.better) + "|")
        parts += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in table.rows]
        parts.append("")
        if table.note:
            parts += [table.note, ""]
    if plots:
        parts += ["## Label efficiency", ""]
        parts += [f"![{p.title}]({p.path.relative_to(out_dir).as_posix()})" for p in plots]
        parts.append("")
    return "\n".join(parts)


def spreadsheet_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def aggregates_csv(aggs: Sequence[Aggregate]) -> str:
    """The aggregated numbers in long form (one row per leaderboard cell).

    Text cells that a spreadsheet would run as formulas are quoted (``spreadsheet_text``);
    numbers are written as numbers, negative ones included.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in aggs:
        text = [a.method, a.backbone, a.pretrain_data, a.eval_data, a.protocol, a.budget, a.metric]
        numbers = [repr(a.mean), "" if a.interval is None else repr(a.interval), a.n_seeds]
        writer.writerow([*map(spreadsheet_text, text), *numbers, a.mark])
    return buf.getvalue()


TIE_NOTE = (
    "In each column the best mean is in **bold**; entries in *italics* are tied with it: their 95 % "
    "interval overlaps the best's, or, where either has no interval, they are equal at the precision shown."
)
ONLINE_NOTE = (
    "Online-probe numbers (measured during pretraining) are in their own tables, never ranked against "
    "offline evaluations."
)


def _note(n_rows: int, source: str, command: str, generated_at: str, tables: Sequence[Table]) -> str:
    online = any(t.id.endswith("-online") for t in tables)
    return (
        f"Generated by `{command}` at {generated_at} from {n_rows} rows of `{source}`. "
        "Do not edit by hand: re-run the command.\n\n"
        "Cells are mean ± 95 % t-interval half-width over seeds (seed counts in `leaderboard.csv`). "
        f"{TIE_NOTE} Every header names its protocol. {ONLINE_NOTE + ' ' if online else ''}"
        f"Baselines: {', '.join(BASELINES)}."
    )


def _write_atomic(path: Path, text: str) -> Path:
    """Write via a temporary file and rename, so a reader never sees a half-written page."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_leaderboard(
    rows: Sequence[ResultRow],
    out_dir: str | os.PathLike,
    *,
    source: str,
    command: str,
    plots: bool = True,
    generated_at: str | None = None,
    metrics: Sequence[str] | None = HEADLINE_METRICS,
) -> list[Path]:
    """Write LEADERBOARD.md, leaderboard.csv, leaderboard.html (and plots/*.png); return the paths.

    ``source`` and ``command`` only go into the note that says how the files were generated.
    Tables and plots show ``metrics`` (None = all); leaderboard.csv always has every metric.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aggs = aggregate(rows)
    shown = headline(aggs, metrics)
    tables = build_tables(shown)
    figures = label_efficiency_plots(shown, out / "plots") if plots else []
    note = _note(len(rows), source, command, generated_at or utc_now(), tables)
    images = [(p.path.relative_to(out).as_posix(), p.title) for p in figures]
    written = [
        _write_atomic(out / "LEADERBOARD.md", render_markdown(tables, note, figures, out)),
        _write_atomic(out / "leaderboard.csv", aggregates_csv(aggs)),
        _write_atomic(out / "leaderboard.html", render_html("rsssl leaderboard", note, tables, images)),
    ]
    return written + [p.path for p in figures]
