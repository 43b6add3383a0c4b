"""The overall ranking: every leaderboard entry scored across all the columns of a leaderboard.

A column is one evaluation set, protocol, protocol settings (``eval_hash``), budget and metric
(``Aggregate.column``). In each column an entry's mean ``x`` is normalised between the two
references, ``(x - random_init) / (supervised - random_init)`` with their means: random_init's
in the same column, and the supervised reference's on the same set, budget and metric (its own
column when it has one there, else its one number at that set and budget: it is measured by its
fine-tune protocol only, and it is the same ceiling for a kNN, linear or fine-tune column). So
random_init scores 0 and the supervised reference 1 by construction. The denominator's sign
turns lower-is-better metrics round, so one formula serves both. A column without exactly one
random_init and one supervised number (of the entry's backbone: see below), or where the
supervised reference does not beat random_init in the metric's direction (the scale would be
empty or turned round, ranking every entry above random init below it), cannot be normalised and
is left out (and so is the online probe, never ranked against offline evaluations). A bootstrap
resample in which the references tie or turn round is dropped, and the count of those is reported.

Each backbone is normalised by its own references: a ViT entry by the ViT's random init and
supervised reference, a ResNet entry by the ResNet's, so that a score says what pretraining adds
to that architecture; and so is each pretraining set, whose input normalisation the references
carry (a learning path's stages). An entry without references of its own (image statistics have
no backbone) takes those of the leaderboard's main backbone and set, the one most pretrained
entries use. A column where one backbone's references are missing still scores the others'
entries, and says which were not.

An entry's scores are aggregated by their interquartile mean (``interquartile_mean``), and its
95 % interval is a percentile bootstrap over seeds: each resample draws, with replacement and
independently per cell (rliable's stratified bootstrap), a configuration's pretraining seeds where
it has two or more, else its one run's label seeds; the references are drawn the same way, and
the scores and the IQM recomputed. The RNG is seeded, so the leaderboard is reproducible.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rsssl.results.aggregate import (
    COVERS_INITIALISATION,
    COVERS_LABELS,
    COVERS_PRETRAINING,
    Aggregate,
    decimals,
    higher_is_better,
)
from rsssl.results.store import BASELINES, ONLINE_PROTOCOLS

RANDOM_INIT = "random_init"
SUPERVISED = "supervised"
#: the score each reference has by construction (the ``anchor`` of its row).
ANCHORS = {RANDOM_INIT: "0", SUPERVISED: "1"}
BASELINE_METHODS = frozenset(BASELINES)
ONLINE_REASON = "online probe, never ranked against offline evaluations"

Column = tuple[str, str, str, str, str]  # Aggregate.column
Entry = tuple[str, str, str]  # Aggregate.entry
Scale = tuple[str, str]  # (backbone, pretrain data): whose references normalise an entry


def normalised(x: float, *, random_init: float, supervised: float) -> float:
    """``x`` on the scale where random_init is 0 and supervised 1 (lower-is-better included)."""
    return (x - random_init) / (supervised - random_init)


def interquartile_mean(values: Sequence[float]) -> float:
    """The mean of the middle 50 % of ``values``, with fractional weights at the quartiles.

    Sorted, the i-th value (i = 1..n) holds one unit of weight on [i - 1, i]; the IQM is the
    weighted mean over [n/4, 3n/4], each value weighted by the part of its unit inside (total
    n/2). n = 8: the mean of the 3rd to 6th values; n = 5: (¾ x2 + x3 + ¾ x4) / 2.5. For n a
    multiple of 4 this is scipy's ``trim_mean(values, 0.25)``, which rliable uses.
    """
    if not values:
        raise ValueError("no values to average")
    xs, n = sorted(values), len(values)
    low, high = n / 4, 3 * n / 4
    weights = [max(0.0, min(i + 1, high) - max(i, low)) for i in range(n)]
    return math.fsum(w * x for w, x in zip(weights, xs)) / (n / 2)


def average_ranks(values: Sequence[float], *, higher_is_better: bool) -> list[float]:
    """Rank of each value, 1 = best; tied values share the mean of the ranks they span."""
    sign = 1 if higher_is_better else -1
    return [
        1 + sum(sign * w > sign * v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values
    ]


def percentile_interval(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """The central ``confidence`` percentile range of ``samples``, interpolating linearly between
    order statistics (numpy's default)."""
    xs, alpha = sorted(samples), (1 - confidence) / 2

    def at(q: float) -> float:
        position = q * (len(xs) - 1)
        i = math.floor(position)
        fraction = position - i
        return xs[i] if fraction == 0 else xs[i] + fraction * (xs[i + 1] - xs[i])

    return at(alpha), at(1 - alpha)


def resampled_mean(a: Aggregate, rng: random.Random) -> float:
    """One bootstrap draw of a cell's mean at the level of its interval: its pretraining runs with
    two or more (each run's label-seed mean), else its one run's label seeds; a single evaluation
    or a stored aggregate stays fixed."""
    if len(a.runs) >= 2:
        runs = rng.choices(a.runs, k=len(a.runs))
        return math.fsum(math.fsum(r) / len(r) for r in runs) / len(runs)
    if a.runs and len(a.runs[0]) >= 2:
        values = rng.choices(a.runs[0], k=len(a.runs[0]))
        return math.fsum(values) / len(values)
    return a.mean


def _resampled_level(a: Aggregate) -> str:
    """What ``resampled_mean`` draws for this cell ("" when it stays fixed)."""
    return a.interval_covers if a.runs and a.interval_covers else ""


@dataclass(frozen=True)
class RankedEntry:
    """One row of the ranking: an entry's normalised IQM with its bootstrap interval (``None``
    where no resample was kept), what that interval covers, and its per-column scores and ranks.
    ``anchor`` is "0" for random_init, "1" for the supervised reference, "" otherwise."""

    method: str
    name: str
    backbone: str
    pretrain_data: str
    config_hash: str
    anchor: str
    iqm: float
    low: float | None
    high: float | None
    covers: str
    mean_rank: float
    scores: Mapping[Column, float]
    ranks: Mapping[Column, float]
    cells: tuple[Aggregate, ...]

    @property
    def entry(self) -> Entry:
        """(name, backbone, pretrain data), as ``Aggregate.entry``."""
        return self.name, self.backbone, self.pretrain_data


@dataclass(frozen=True)
class Ranking:
    """The ranked entries (best first), the columns used, those left out with the reason, and
    the bootstrap's settings; ``dropped`` counts resamples whose references coincided in a column."""

    columns: tuple[Column, ...]
    left_out: tuple[tuple[Column, str], ...]
    entries: tuple[RankedEntry, ...]
    resamples: int
    seed: int
    dropped: int


def _same_set_and_budget(column: Column) -> tuple[str, str, str]:
    """(evaluation set, budget, metric): where the supervised reference of a column is looked up."""
    return column[0], column[3], column[4]


def _scale_of(a: Aggregate) -> Scale:
    return a.backbone, a.pretrain_data


def supervised_cells(
    column: Column, by_column: Mapping[Column, Sequence[Aggregate]], scale: Scale
) -> list[tuple[Column, Aggregate]]:
    """The supervised reference's candidate cells of `scale` for `column`, with their own columns:
    the one in `column` itself when there is one, else every supervised cell of the same set,
    budget and metric."""
    own = [(column, a) for a in by_column.get(column, ()) if a.method == SUPERVISED and _scale_of(a) == scale]
    if own:
        return own
    key = _same_set_and_budget(column)
    return [
        (c, a)
        for c, cells in by_column.items()
        if c[1] not in ONLINE_PROTOCOLS and _same_set_and_budget(c) == key
        for a in cells
        if a.method == SUPERVISED and _scale_of(a) == scale
    ]


def entry_scales(aggs: Sequence[Aggregate]) -> dict[Entry, Scale]:
    """Each entry's scale, the (backbone, pretrain data) of the references that normalise it: its
    own where references were measured with them (the random init of a backbone carries the input
    normalisation of its pretraining data), else the main one, that of most pretrained entries among
    those with references (ties: the first by name); ("", "") when no reference was measured."""
    with_references = {_scale_of(a) for a in aggs if a.method in (RANDOM_INIT, SUPERVISED)}
    pretrained = {a.entry: _scale_of(a) for a in aggs if a.method not in BASELINE_METHODS}
    counts = Counter(s for s in pretrained.values() if s in with_references)
    ordered = sorted(with_references, key=lambda s: (-counts[s], s))
    main = ordered[0] if ordered else ("", "")
    return {a.entry: _scale_of(a) if _scale_of(a) in with_references else main for a in aggs}


def _unusable(column: Column, by_column: Mapping[Column, Sequence[Aggregate]], scale: Scale) -> str:
    """Why a column cannot be normalised for the entries of `scale` ("" when it can)."""
    if column[1] in ONLINE_PROTOCOLS:
        return ONLINE_REASON
    references = {
        RANDOM_INIT: [a for a in by_column[column] if a.method == RANDOM_INIT and _scale_of(a) == scale],
        SUPERVISED: [a for _, a in supervised_cells(column, by_column, scale)],
    }
    for reference, cells in references.items():
        if len(cells) != 1:
            return f"no {reference} number" if not cells else f"{len(cells)} {reference} entries, one needed"
    random_init, supervised = references[RANDOM_INIT][0].mean, references[SUPERVISED][0].mean
    if random_init == supervised:
        return "random_init and supervised are equal"
    if not beats(supervised, random_init, column[4]):
        side = "above" if higher_is_better(column[4]) else "below"
        places = decimals(random_init)
        return f"supervised ({supervised:.{places}f}) is not {side} random_init ({random_init:.{places}f})"
    return ""


def _left_out_reason(reasons: Mapping[Scale, str], usable: bool) -> str:
    """One column's reason, from its scales' reasons: plain where all agree and the column is
    unused, else naming the backbones (and pretraining data) whose entries were not scored."""
    failing = {s: r for s, r in sorted(reasons.items()) if r}
    if not usable and len(set(failing.values())) == 1:
        return next(iter(failing.values()))
    return "; ".join(f"{b} ({d}) entries not scored: {r}" for (b, d), r in failing.items())


def beats(supervised: float, random_init: float, metric: str) -> bool:
    """Whether the supervised reference is better than random init in `metric`'s direction."""
    return supervised > random_init if higher_is_better(metric) else supervised < random_init


def _covers(cells: Sequence[Aggregate]) -> str:
    levels = {_resampled_level(a) for a in cells}
    return " + ".join(c for c in (COVERS_PRETRAINING, COVERS_INITIALISATION, COVERS_LABELS) if c in levels)


def rank_entries(
    aggs: Sequence[Aggregate], *, resamples: int = 1000, seed: int = 0, confidence: float = 0.95
) -> Ranking:
    """Rank the entries of ``aggs`` (one leaderboard's shown numbers) across their columns."""
    by_column: dict[Column, list[Aggregate]] = defaultdict(list)
    for a in aggs:
        if math.isfinite(a.mean):
            by_column[a.column].append(a)
    scale = entry_scales([a for cells in by_column.values() for a in cells])
    reasons = {
        column: {b: _unusable(column, by_column, b) for b in sorted({scale[a.entry] for a in cells})}
        for column, cells in sorted(by_column.items())
    }
    usable = {column: {b for b, r in per.items() if not r} for column, per in reasons.items()}
    used = tuple(column for column in reasons if usable[column])
    # each usable (column, scale)'s references as (column, entry) cells: random_init's own,
    # supervised's found
    references = {
        (column, b): (
            (
                column,
                next(a.entry for a in by_column[column] if a.method == RANDOM_INIT and _scale_of(a) == b),
            ),
            next((c, a.entry) for c, a in supervised_cells(column, by_column, b)),
        )
        for column in used
        for b in sorted(usable[column])
    }
    needed = sorted({c for pair in references.values() for c, _ in pair} | set(used))

    def scores(means: Mapping[Column, Mapping[Entry, float]]) -> dict[Entry, dict[Column, float]]:
        out: dict[Entry, dict[Column, float]] = defaultdict(dict)
        for column in used:
            for entry, x in means[column].items():
                if scale[entry] in usable[column]:
                    random_init, supervised = (means[c][e] for c, e in references[column, scale[entry]])
                    out[entry][column] = normalised(x, random_init=random_init, supervised=supervised)
        return out

    point = scores({c: {a.entry: a.mean for a in by_column[c]} for c in needed})
    rng, samples, dropped = random.Random(seed), defaultdict(list), 0
    for _ in range(resamples):
        draws = {c: {a.entry: resampled_mean(a, rng) for a in by_column[c]} for c in needed}
        if not all(
            beats(draws[sup[0]][sup[1]], draws[ri[0]][ri[1]], column[4])
            for (column, _), (ri, sup) in references.items()
        ):  # the references tie or turn round: no scale in this resample
            dropped += 1
            continue
        for entry, mine in scores(draws).items():
            samples[entry].append(interquartile_mean(list(mine.values())))
    ranks: dict[Entry, dict[Column, float]] = defaultdict(dict)
    for column in used:
        cells = [a for a in by_column[column] if scale[a.entry] in usable[column]]
        better = higher_is_better(column[4])
        for a, rank in zip(cells, average_ranks([a.mean for a in cells], higher_is_better=better)):
            ranks[a.entry][column] = rank
    entries = []
    for entry, mine in point.items():
        cells = tuple(a for c in used for a in by_column[c] if a.entry == entry and c in mine)
        low, high = percentile_interval(samples[entry], confidence) if samples[entry] else (None, None)
        first = cells[0]
        entries.append(
            RankedEntry(
                method=first.method,
                name=first.name,
                backbone=first.backbone,
                pretrain_data=first.pretrain_data,
                config_hash=first.config_hash,
                anchor=ANCHORS.get(first.method, ""),
                iqm=interquartile_mean(list(mine.values())),
                low=low,
                high=high,
                covers=_covers(cells),
                mean_rank=math.fsum(ranks[entry].values()) / len(ranks[entry]),
                scores=mine,
                ranks=ranks[entry],
                cells=cells,
            )
        )
    entries.sort(key=lambda e: (-e.iqm, e.mean_rank, e.entry))
    left_out = tuple(
        (column, _left_out_reason(per, bool(usable[column])))
        for column, per in reasons.items()
        if any(per.values())
    )
    return Ranking(used, left_out, tuple(entries), resamples, seed, dropped)
