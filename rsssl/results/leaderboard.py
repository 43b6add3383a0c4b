"""Generate the leaderboard (markdown, CSV, plots, HTML page) from the results store.

Numbers are never typed by hand: every table is rebuilt from the long-format rows (see
``rsssl.results.aggregate`` for what one number is). One row per configuration; each column
names its protocol, and online-probe numbers (measured during pretraining) get their own table
so they are never ranked against offline evaluations. In each column the best mean is marked,
and so is every entry that cannot be told apart from it (overlapping intervals). Above them, the
overall ranking (``rsssl.results.ranking``) scores every entry across all columns at once.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rsssl.results.aggregate import (
    Aggregate,
    aggregate,
    column_marks,
    decimals,
    higher_is_better,
    mean_interval,
)
from rsssl.results.html import render_html
from rsssl.results.plots import Plot, label_efficiency_plots
from rsssl.results.ranking import Column, Ranking, rank_entries
from rsssl.results.store import BASELINES, ONLINE_PROTOCOLS, PROTOCOLS, ResultRow, parse_budget, utc_now

__all__ = ["Aggregate", "aggregate", "higher_is_better", "mean_interval", "write_leaderboard"]

LABEL_COLUMNS = ("method", "backbone", "pretrain data", "pretraining seeds")
CSV_TEXT_COLUMNS = (
    "method",
    "configuration",
    "backbone",
    "pretrain_data",
    "config_hash",
    "eval_data",
    "protocol",
    "eval_hash",
    "budget",
    "metric",
)
CSV_COLUMNS = (
    *CSV_TEXT_COLUMNS,
    "mean",
    "interval",
    "interval_covers",
    "n_pretrain_seeds",
    "n_label_seeds",
    "mark",
    "normalised",
    "rank",
)
RANKING_CSV_COLUMNS = (
    "method",
    "configuration",
    "backbone",
    "pretrain_data",
    "config_hash",
    "anchor",
    "iqm",
    "iqm_low",
    "iqm_high",
    "interval_covers",
    "n_columns",
    "mean_rank",
)
# A CSV cell starting with one of these is a formula to a spreadsheet (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


#: what the tables and plots show by default: overall accuracy, mean IoU, and a regression's
#: RMSE and R² (the pixel protocols' pixel_ridge and tile_ridge).
HEADLINE_METRICS = ("oa", "miou", "rmse", "r2")


def _protocol_rank(protocol: str) -> tuple[int, str]:
    return (PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)), protocol


def _column_order(column: tuple[str, str, str, str]) -> tuple:
    protocol, eval_hash, budget, metric = column
    kind, amount = parse_budget(budget)
    rank = ("per_class", "fraction", "none").index(kind)
    return _protocol_rank(protocol), eval_hash, rank, amount, metric.lower()


def _entry_order(a: Aggregate) -> tuple:
    """Methods first, then the baselines in their fixed order; configurations of a method together."""
    rank = BASELINES.index(a.method) + 1 if a.method in BASELINES else 0
    return rank, a.method, a.entry


def format_value(mean: float, interval: float | None) -> str:
    """``mean ± interval`` with a precision that suits the metric's scale (fractions or percent)."""
    if not math.isfinite(mean):
        return str(mean)
    d = decimals(mean)
    return f"{mean:.{d}f}" if interval is None else f"{mean:.{d}f} ± {interval:.{d}f}"


def _value_cell(a: Aggregate) -> Cell:
    return Cell(format_value(a.mean, a.interval), a.mean if math.isfinite(a.mean) else None, a.mark)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


SEGMENTATION_NOTE = (
    "No image_stats row: the image-statistics baseline is one feature vector per image, with nothing "
    "per pixel to segment, so the suite skips it on segmentation."
)


SUPERVISED_NOTE = (
    "supervised is the reference trained without pretraining: the same architecture from its random "
    "initialisation, trained on each budget's labels only with the fine-tune protocol (the encoder at the "
    "head's learning rate; its own settings: eval.classification.supervised, eval.segmentation.supervised), "
    "so it has numbers in the fine-tune columns only."
)


def _table_note(aggs: Sequence[Aggregate]) -> str:
    """What the table leaves out and why (image statistics have no segmentation numbers), and what
    the supervised reference is where it has a row."""
    segmentation = {a.method for a in aggs if a.protocol.startswith("segmentation")}
    notes = (
        SEGMENTATION_NOTE if segmentation and "image_stats" not in segmentation else "",
        SUPERVISED_NOTE if any(a.method == "supervised" for a in aggs) else "",
    )
    return " ".join(filter(None, notes))


def _seed_count(aggs: Sequence[Aggregate]) -> str:
    """The pretraining seeds behind one row ("2–3" where its cells differ; "-" for baselines)."""
    if aggs[0].method in BASELINES:
        return "-"
    counts = sorted({a.n_pretrain_seeds for a in aggs if a.n_pretrain_seeds})
    return "" if not counts else str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def _headers(columns: Sequence[tuple[str, str, str, str]]) -> list[str]:
    """Column headers "protocol · budget · metric", with the eval hash where a protocol was measured
    under several settings (their numbers are never pooled)."""
    hashes: dict[str, set[str]] = defaultdict(set)
    for protocol, eval_hash, _, _ in columns:
        hashes[protocol].add(eval_hash)
    return [
        " · ".join(p for p in (protocol, budget, metric) if p)
        + (f" · eval {eval_hash[:8] or 'unknown'}" if len(hashes[protocol]) > 1 else "")
        for protocol, eval_hash, budget, metric in columns
    ]


def _table(table_id: str, title: str, aggs: Sequence[Aggregate]) -> Table:
    columns = sorted({(a.protocol, a.eval_hash, a.budget, a.metric) for a in aggs}, key=_column_order)
    by_entry: dict[tuple, list[Aggregate]] = defaultdict(list)
    for a in sorted(aggs, key=_entry_order):
        by_entry[a.entry].append(a)
    rows = []
    for entry, mine in by_entry.items():
        by_column = {(a.protocol, a.eval_hash, a.budget, a.metric): a for a in mine}
        labels = (*entry, _seed_count(mine))
        values = (_value_cell(by_column[c]) if c in by_column else Cell("", None) for c in columns)
        rows.append((*(Cell(label, label) for label in labels), *values))
    better = tuple("high" if higher_is_better(col[3]) else "low" for col in columns)
    return Table(
        table_id,
        title,
        (*LABEL_COLUMNS, *_headers(columns)),
        ("",) * len(LABEL_COLUMNS) + better,
        tuple(rows),
        _table_note(aggs),
    )


#: the difficulty table's budgets and the protocol that stands for each kind of entry in it
DIFFICULTY_BUDGETS = ("5/class", "100%")
DIFFICULTY_PROTOCOLS = ("linear", "finetune")  # a frozen encoder's linear probe, else its training
DIFFICULTY_TITLE = "Difficulty: every entry between the references"


def _split_order(eval_data: str) -> tuple[str, int, str]:
    """A set before its shift splits (`name@region`, `name@date`), then the splits by name."""
    base, _, split = eval_data.partition("@")
    return base, int(bool(split)), split


def difficulty_table(aggs: Sequence[Aggregate]) -> Table | None:
    """One row per entry, one column per classification set x budget (DIFFICULTY_BUDGETS): overall
    accuracy by the entry's linear probe or, for an entry without one (the supervised reference),
    by its fine-tuning; so the supervised reference, image statistics, random init and every method
    sit side by side on the standard and the shift splits. None without a supervised number."""
    picked: dict[tuple, Aggregate] = {}
    for a in aggs:
        if a.metric != "oa" or a.budget not in DIFFICULTY_BUDGETS or a.protocol not in DIFFICULTY_PROTOCOLS:
            continue
        key = (a.entry, a.eval_data, a.budget)
        if key not in picked or DIFFICULTY_PROTOCOLS.index(a.protocol) < DIFFICULTY_PROTOCOLS.index(
            picked[key].protocol
        ):
            picked[key] = a
    if not any(a.method == "supervised" for a in picked.values()):
        return None
    columns = sorted(
        {(a.eval_data, a.budget) for a in picked.values()},
        key=lambda c: (_split_order(c[0]), DIFFICULTY_BUDGETS.index(c[1])),
    )
    marks = {}
    for column in columns:
        members = [a for k, a in picked.items() if (k[1], k[2]) == column]
        marks.update({id(a): m for a, m in zip(members, column_marks(members), strict=True)})
    entries = sorted({a.entry: a for a in picked.values()}.values(), key=_entry_order)
    rows = []
    for first in entries:
        mine = {(k[1], k[2]): a for k, a in picked.items() if k[0] == first.entry}
        protocols = "/".join(p for p in DIFFICULTY_PROTOCOLS if any(a.protocol == p for a in mine.values()))
        labels = (*first.entry, protocols)
        cells = [
            replace(_value_cell(mine[c]), mark=marks[id(mine[c])]) if c in mine else Cell("", None)
            for c in columns
        ]
        rows.append((*(Cell(label, label) for label in labels), *cells))
    return Table(
        "difficulty",
        DIFFICULTY_TITLE,
        ("method", "backbone", "pretrain data", "protocol", *(f"{d} · {b} · oa" for d, b in columns)),
        ("", "", "", "") + ("high",) * len(columns),
        tuple(rows),
        "Each cell is the entry's linear probe (frozen encoders, image statistics) or, for the supervised "
        "reference, its training on that budget's labels (the fine-tune protocol); the set's own table "
        "below has every protocol. The supervised reference is the upper and random init the lower "
        "reference a method lands between.",
    )


def headline(aggs: Sequence[Aggregate], metrics: Sequence[str] | None) -> list[Aggregate]:
    """Only the named metrics (case-insensitive), for every protocol of a set that has any of
    them; a protocol with none of them shows all of its own."""
    if metrics is None:
        return list(aggs)
    wanted = {m.lower() for m in metrics}
    covered = {(a.eval_data, a.protocol) for a in aggs if a.metric.lower() in wanted}
    return [a for a in aggs if a.metric.lower() in wanted or (a.eval_data, a.protocol) not in covered]


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


def _md_table(table: Table, level: str) -> list[str]:
    parts = [f"{level} {table.title}", ""]
    parts.append("| " + " | ".join(h.replace("|", "\\|") for h in table.headers) + " |")
    parts.append("|" + "|".join("---" if b == "" else "---:" for b in table.better) + "|")
    parts += ["| " + " | ".join(_md_text(c) for c in row) + " |" for row in table.rows]
    parts.append("")
    return parts + [table.note, ""] if table.note else parts


def render_markdown(
    tables: Sequence[Table],
    note: str,
    plots: Sequence[Plot],
    out_dir: Path,
    ranking_note: str = "",
    ranking: Sequence[Table] = (),
) -> str:
    """The whole LEADERBOARD.md: note, the overall ranking, one section per table, then the plots."""
    parts = ["# rsssl leaderboard", "", note, ""]
    if ranking_note:
        parts += [f"## {RANKING_TITLE}", "", ranking_note, ""]
        for table in ranking:
            parts += _md_table(table, "###")
    for table in tables:
        parts += _md_table(table, "##")
    if plots:
        parts += ["## Label efficiency", ""]
        parts += [f"![{p.title}]({p.path.relative_to(out_dir).as_posix()})" for p in plots]
        parts.append("")
    return "\n".join(parts)


def spreadsheet_text(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def _number(value: float | None) -> str:
    return "" if value is None else repr(value)


def aggregates_csv(aggs: Sequence[Aggregate], ranking: Ranking | None = None) -> str:
    """The aggregated numbers in long form (one row per leaderboard cell), with each ranked cell's
    normalised score and rank in its column (empty outside the overall ranking).

    Text cells that a spreadsheet would run as formulas are quoted (``spreadsheet_text``);
    numbers are written as numbers, negative ones included.
    """
    ranked = (
        {(e.entry, c): (e.scores[c], e.ranks[c]) for e in ranking.entries for c in e.scores}
        if ranking
        else {}
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in aggs:
        text = [a.name if c == "configuration" else getattr(a, c) for c in CSV_TEXT_COLUMNS]
        numbers = [repr(a.mean), _number(a.interval), a.interval_covers, a.n_pretrain_seeds, a.n_label_seeds]
        score, rank = ranked.get((a.entry, a.column), (None, None))
        writer.writerow([*map(spreadsheet_text, text), *numbers, a.mark, _number(score), _number(rank)])
    return buf.getvalue()


def ranking_csv(ranking: Ranking) -> str:
    """The overall ranking, one row per entry, best first (``RANKING_CSV_COLUMNS``); only a header
    when no column could be normalised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RANKING_CSV_COLUMNS)
    for e in ranking.entries:
        text = [e.method, e.name, e.backbone, e.pretrain_data, e.config_hash]
        numbers = [repr(e.iqm), _number(e.low), _number(e.high), e.covers, len(e.scores), repr(e.mean_rank)]
        writer.writerow([*map(spreadsheet_text, text), e.anchor, *numbers])
    return buf.getvalue()


RANKING_TITLE = "Overall ranking"
_ANCHOR_TEXT = {"0": "0 by construction", "1": "1 by construction", "": ""}


def _ranking_column_order(column: Column) -> tuple:
    eval_data, *rest = column
    return eval_data, _column_order(tuple(rest))


def _column_labels(columns: Sequence[Column]) -> dict[Column, str]:
    """ "eval data · protocol · budget · metric", with the eval hash where an evaluation set's protocol
    was measured under several settings."""
    hashes: dict[tuple[str, str], set[str]] = defaultdict(set)
    for eval_data, protocol, eval_hash, _, _ in columns:
        hashes[eval_data, protocol].add(eval_hash)
    return {
        (eval_data, protocol, eval_hash, budget, metric): " · ".join(
            p for p in (eval_data, protocol, budget, metric) if p
        )
        + (f" · eval {eval_hash[:8] or 'unknown'}" if len(hashes[eval_data, protocol]) > 1 else "")
        for eval_data, protocol, eval_hash, budget, metric in columns
    }


def ranking_tables(ranking: Ranking) -> list[Table]:
    """The normalised-IQM table and the rank-per-column table, entries best first; none without columns."""
    if not ranking.columns:
        return []
    columns = sorted(ranking.columns, key=_ranking_column_order)
    labels = _column_labels([*ranking.columns, *(c for c, _ in ranking.left_out)])
    iqm_rows, rank_rows = [], []
    for e in ranking.entries:
        names = (Cell(e.name, e.name), Cell(e.backbone, e.backbone), Cell(e.pretrain_data, e.pretrain_data))
        text = f"{e.iqm:.3f}" if e.low is None else f"{e.iqm:.3f} [{e.low:.3f}, {e.high:.3f}]"
        seeds, anchor = _seed_count(e.cells), _ANCHOR_TEXT[e.anchor]
        mean_rank = Cell(f"{e.mean_rank:.2f}", e.mean_rank)
        iqm_rows.append(
            (
                *names,
                Cell(seeds, seeds),
                Cell(anchor, anchor),
                Cell(text, e.iqm),
                Cell(e.covers, e.covers),
                Cell(str(len(e.scores)), len(e.scores)),
                mean_rank,
            )
        )
        ranks = (Cell(f"{e.ranks[c]:g}", e.ranks[c]) if c in e.ranks else Cell("", None) for c in columns)
        rank_rows.append((*names, *ranks, mean_rank))
    iqm_headers = (*LABEL_COLUMNS, "anchor", "normalised IQM [95 % interval]", "interval covers", "columns")
    return [
        Table(
            "ranking",
            "Normalised IQM",
            (*iqm_headers, "mean rank"),
            ("", "", "", "", "", "high", "", "high", "low"),
            tuple(iqm_rows),
        ),
        Table(
            "ranking-ranks",
            "Rank per column",
            (*LABEL_COLUMNS[:3], *(labels[c] for c in columns), "mean rank"),
            ("",) * 3 + ("low",) * (len(columns) + 1),
            tuple(rank_rows),
        ),
    ]


RANKING_NOTE = (
    "One row per entry, ranked across every column of the tables below that can be normalised. In a "
    "column an entry's score is (x − random_init) / (supervised − random_init), with the means of the "
    "two references in that column: random_init scores 0 and the supervised reference 1 by construction "
    "(the anchors, kept as rows), and the denominator's sign turns lower-is-better metrics round; a "
    "column where the supervised reference does not beat random_init has no scale and is left out. "
    "An entry's normalised IQM is the interquartile mean of its scores: sorted, each score holds one unit "
    "of weight, and the IQM is the mean over the middle half of that weight, a score at the 25th or 75th "
    "percentile counting with the part of its unit inside (8 scores: the mean of the 3rd to 6th; 5: "
    "(¾ x2 + x3 + ¾ x4) / 2.5). "
    "Its 95 % interval is the 2.5–97.5 % percentile range of {resamples} bootstrap resamples (RNG seed "
    "{seed}): in each, every cell, the references' included, is redrawn with replacement over its "
    "configuration's pretraining seeds where it has two or more, else over its one run's label seeds "
    "(then the interval covers label seeds, as the `interval covers` column says), and the scores and "
    "the IQM are recomputed; a cell of one evaluation, or a stored aggregate, stays fixed. "
    "`columns` counts the columns an entry has (it is ranked on those); the rank table gives its rank in "
    "each column (1 = best, ties share the average rank) and their mean. `ranking.csv` has these numbers, "
    "`leaderboard.csv` each ranked cell's `normalised` score and `rank`."
)
NO_RANKING_NOTE = (
    "No column can be normalised, so there is no overall ranking. A column needs one random_init "
    "and one supervised number, the supervised one the better."
)


def ranking_note(ranking: Ranking) -> str:
    """What the ranking is, its bootstrap settings, and which columns it used and left out (and why)."""
    if not ranking.columns and not ranking.left_out:
        return ""
    labels = _column_labels([*ranking.columns, *(c for c, _ in ranking.left_out)])
    used = sorted(ranking.columns, key=_ranking_column_order)
    left_out = sorted(ranking.left_out, key=lambda item: _ranking_column_order(item[0]))
    head = RANKING_NOTE.format(resamples=ranking.resamples, seed=ranking.seed) if used else NO_RANKING_NOTE
    parts = [head]
    if used:
        parts.append(f"Columns used ({len(used)}): {'; '.join(labels[c] for c in used)}.")
    if left_out:
        parts.append(
            f"Left out ({len(left_out)}): {'; '.join(f'{labels[c]} ({why})' for c, why in left_out)}."
        )
    if ranking.dropped:
        parts.append(
            f"{ranking.dropped} of {ranking.resamples} resamples drew references that tie or turn round "
            "in a column and were dropped."
        )
    return " ".join(parts)


TIE_NOTE = (
    "In each column the best mean is in **bold**; entries in *italics* are tied with it: their 95 % "
    "interval overlaps the best's, or, where either has no interval, they are equal at the precision shown."
)
ONLINE_NOTE = (
    "Online-probe numbers (measured during pretraining) are in their own tables, never ranked against "
    "offline evaluations."
)


VARIANCE_NOTE = (
    "Each row is one configuration (a sweep's rows name the keys they vary); each cell is its mean "
    "± the 95 % t-interval half-width. "
    "With two or more pretraining runs of a configuration (seeds: `rsssl-pretrain -m seed=0,1,2 ...`), "
    "each run is first averaged over its label seeds and the interval is over the pretraining seeds "
    "(label-subset variance nested inside). "
    "With one pretraining run, the interval covers label seeds only (which labelled subset, and the "
    "protocol's own randomness), not pretraining. "
    "A cell from one distinct evaluation (one label seed, or label seeds whose results are all identical, "
    "such as a deterministic protocol on the whole training set) has no interval. "
    f"Baselines ({', '.join(BASELINES)}) are not pretrained: their intervals cover label seeds "
    "(and the initialisation seeds of supervised and random_init, where they have several). "
    "The `pretraining seeds` column counts the pretraining runs behind each row; "
    "`leaderboard.csv` gives each cell's `n_pretrain_seeds`, `n_label_seeds` and `interval_covers`."
)


def _note(n_rows: int, source: str, command: str, generated_at: str, tables: Sequence[Table]) -> str:
    online = any(t.id.endswith("-online") for t in tables)
    return (
        f"Generated by `{command}` at {generated_at} from {n_rows} rows of `{source}`. "
        "Do not edit by hand: re-run the command.\n\n"
        f"{VARIANCE_NOTE}\n\n"
        f"{TIE_NOTE} Every header names its protocol. {ONLINE_NOTE if online else ''}"
    ).rstrip()


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
    configs: Mapping[str, Mapping] | None = None,
    ranking_resamples: int = 1000,
    ranking_seed: int = 0,
) -> list[Path]:
    """Write LEADERBOARD.md, leaderboard.csv, ranking.csv, leaderboard.html (and plots/*.png);
    return the paths.

    ``source`` and ``command`` only go into the note that says how the files were generated.
    Tables, plots and the overall ranking show ``metrics`` (None = all); leaderboard.csv always has
    every metric. ``configs`` (config hash -> config: the store's sidecar, ``read_configs``) names a
    sweep's rows by the keys they vary; without it they are named by their config hash. The
    ranking's bootstrap draws ``ranking_resamples`` resamples from an RNG seeded with ``ranking_seed``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    aggs = aggregate(rows, configs)
    shown = headline(aggs, metrics)
    tables = build_tables(shown)
    difficulty = difficulty_table(shown)
    tables = [difficulty, *tables] if difficulty is not None else tables
    ranking = rank_entries(shown, resamples=ranking_resamples, seed=ranking_seed)
    ranked, about_ranking = ranking_tables(ranking), ranking_note(ranking)
    figures = label_efficiency_plots(shown, out / "plots") if plots else []
    note = _note(len(rows), source, command, generated_at or utc_now(), tables)
    images = [(p.path.relative_to(out).as_posix(), p.title) for p in figures]
    page = render_html("rsssl leaderboard", note, tables, images, about_ranking, ranked, RANKING_TITLE)
    written = [
        _write_atomic(
            out / "LEADERBOARD.md", render_markdown(tables, note, figures, out, about_ranking, ranked)
        ),
        _write_atomic(out / "leaderboard.csv", aggregates_csv(aggs, ranking)),
        _write_atomic(out / "ranking.csv", ranking_csv(ranking)),
        _write_atomic(out / "leaderboard.html", page),
    ]
    return written + [p.path for p in figures]
