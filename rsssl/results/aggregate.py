"""Leaderboard numbers: one mean and 95 % interval per configuration and measurement.

A *cell* is one configuration (method, backbone, pretraining data, ``config_hash``) measured
one way (evaluation set, protocol, ``eval_hash``, budget, metric): rows of different
configurations or protocol settings are never pooled. Inside a cell:

- the pretraining runs of the configuration are its pretraining seeds (``pretrain_seed``); a
  rerun of one seed replaces it (the run that wrote last counts);
- label seeds of one run whose results are all identical, in every metric, are one evaluation
  (at a 100 % budget every seed selects the same data, and kNN is deterministic);
- with two or more pretraining runs, each is averaged over its label seeds and the t-interval
  is over the runs (label-subset variance nested inside); with one run, it is over the run's
  distinct label-seed evaluations; a single evaluation has no interval.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from rsssl.eval import intervals
from rsssl.results.store import AGGREGATE_SEED, BASELINES, ResultRow

# What an interval covers (the ``interval_covers`` column of leaderboard.csv; "" = no interval).
COVERS_PRETRAINING = "pretraining seeds"
COVERS_INITIALISATION = "initialisation seeds"  # random_init's counterpart of pretraining seeds
COVERS_LABELS = "label seeds"
COVERS_STORED = "stored"  # the interval of an aggregate row of the store, taken as recorded

# Metric names (as whole words: "val_loss", "top1_err") that rank low-first.
_LOWER_IS_BETTER = re.compile(r"(?<![a-z])(loss|error|err|rmse|mae|mse|ece)(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Spread:
    """Mean, 95 % half-width (``None``: none), what it covers, the counts behind it and the
    values themselves: each pretraining run's distinct label-seed values (empty: a stored aggregate)."""

    mean: float
    interval: float | None
    covers: str
    n_pretrain_seeds: int
    n_label_seeds: int
    runs: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class Aggregate:
    """One leaderboard number: a configuration's mean and 95 % half-width in one column.

    ``name`` is the method, with the configuration keys that differ from its other
    configurations where there are several (a sweep). The counts are 0 for a number taken
    from a stored aggregate row. ``mark`` is "best" in its column, "tied" with it, or "".
    ``runs`` are the values behind the mean (``Spread.runs``), which the ranking's bootstrap resamples.
    """

    method: str
    name: str
    backbone: str
    pretrain_data: str
    config_hash: str
    eval_data: str
    protocol: str
    eval_hash: str
    budget: str
    metric: str
    mean: float
    interval: float | None
    interval_covers: str
    n_pretrain_seeds: int
    n_label_seeds: int
    mark: str = ""
    runs: tuple[tuple[float, ...], ...] = field(default=(), repr=False)

    @property
    def entry(self) -> tuple[str, str, str]:
        """The leaderboard row this number belongs to: (name, backbone, pretrain data)."""
        return self.name, self.backbone, self.pretrain_data

    @property
    def column(self) -> tuple[str, str, str, str, str]:
        """What was measured: (eval data, protocol, eval hash, budget, metric)."""
        return self.eval_data, self.protocol, self.eval_hash, self.budget, self.metric


def mean_interval(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and 95 % t-interval half-width of values (``None`` with a single value)."""
    mean, half_width = intervals.mean_interval(values, confidence=0.95)
    return mean, None if len(values) < 2 else half_width


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics rank high-first; losses and errors low-first."""
    return not _LOWER_IS_BETTER.search(metric)


def decimals(value: float) -> int:
    """Digits shown after the point: 3 for fractions, 1 for percentages, 0 for large values."""
    return 3 if abs(value) < 10 else 1 if abs(value) < 1000 else 0


def nested_spread(runs: Sequence[Sequence[float]], *, pretrained: bool = True) -> Spread:
    """The spread of one cell from its runs' distinct label-seed values (one list per run).

    Two or more runs: each run's mean, then the t-interval over those means. One run: the
    t-interval over its values; a single value has none. ``pretrained=False`` (random_init)
    names the runs initialisation seeds.
    """
    kept = tuple(tuple(r) for r in runs)
    if len(runs) >= 2:
        mean, interval = mean_interval([math.fsum(r) / len(r) for r in runs])
        covers = COVERS_PRETRAINING if pretrained else COVERS_INITIALISATION
        return Spread(mean, interval, covers, len(runs), min(len(r) for r in runs), kept)
    (values,) = runs
    mean, interval = mean_interval(values)
    return Spread(mean, interval, "" if interval is None else COVERS_LABELS, 1, len(values), kept)


def distinct_evaluations(by_seed: Mapping[int, Mapping[str, float]]) -> list[Mapping[str, float]]:
    """The label seeds' results (metric -> value) in seed order; one result where every seed's is
    identical in every metric: the seed changed nothing, so it was one evaluation, not several."""
    results = [by_seed[seed] for seed in sorted(by_seed)]
    return results[:1] if all(r == results[0] for r in results) else results


def _flatten(config: Mapping, prefix: str = "") -> dict[str, str]:
    """Dotted keys to their values as text (``{"method": {"lr": 0.1}}`` -> ``{"method.lr": "0.1"}``)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def varied_keys(configs: Sequence[Mapping]) -> list[str]:
    """The dotted keys whose values differ among ``configs`` (a key some lack counts as differing)."""
    flat = [_flatten(c) for c in configs]
    keys = sorted(set().union(*flat))
    return [k for k in keys if len({f.get(k) for f in flat}) > 1]


def configuration_names(
    configurations: Iterable[tuple[str, str, str, str]], configs: Mapping[str, Mapping]
) -> dict[tuple[str, str, str, str], str]:
    """A row name per (method, backbone, pretrain data, config hash).

    The suite's baseline rows (no config hash) are named by their method, beside the baseline
    *method*'s own runs. The only configuration of its method, backbone and data is named by the
    method; several
    (a sweep) by the method and the keys they vary, from ``configs`` (config hash -> config,
    the store's sidecar), e.g. ``moco (method.temperature=0.1)``; by the hash where a config
    was not recorded.
    """
    groups: dict[tuple, list[tuple[str, str, str, str]]] = defaultdict(list)
    names = {}
    for key in configurations:
        if key[0] in BASELINES and not key[3]:  # the suite's own baseline rows: no configuration
            names[key] = key[0]
        else:
            groups[key[:3]].append(key)
    for (method, *_), members in groups.items():
        if len(members) == 1:
            names[members[0]] = method
            continue
        labels = {k: f"config {k[3] or 'unknown'}" for k in members}
        if all(k[3] in configs for k in members):
            varied = varied_keys([configs[k[3]] for k in members])
            flat = {k: _flatten(configs[k[3]]) for k in members}
            by_keys = {k: ", ".join(f"{v}={flat[k].get(v, 'unset')}" for v in varied) for k in members}
            if varied and len(set(by_keys.values())) == len(members):
                labels = by_keys
        names.update({k: f"{method} ({labels[k]})" for k in members})
    return names


def _cell(r: ResultRow) -> tuple[str, ...]:
    """Configuration and measurement of a row: everything but pretraining seed, label seed and metric."""
    return (
        r.method,
        r.backbone,
        r.pretrain_data,
        r.config_hash,
        r.eval_data,
        r.protocol,
        r.eval_hash,
        r.budget,
    )


def latest_runs(rows: Sequence[ResultRow]) -> list[ResultRow]:
    """The rows of the run that wrote last, per cell and pretraining seed: a rerun of one
    configuration and seed replaces the earlier run instead of counting as another seed."""
    last = {(_cell(r), r.pretrain_seed): (r.run_id, r.checkpoint_hash) for r in rows}
    return [r for r in rows if last[_cell(r), r.pretrain_seed] == (r.run_id, r.checkpoint_hash)]


def _spreads(rows: Sequence[ResultRow]) -> dict[tuple, Spread]:
    """(cell, metric) -> its spread; a stored aggregate row stands in where no interval is computed."""
    results: dict[tuple, dict] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    stored: dict[tuple, ResultRow] = {}
    for r in latest_runs(rows):
        if r.seed == AGGREGATE_SEED:
            stored[_cell(r), r.metric] = r
        else:  # a row recorded twice counts once, the later one winning
            results[_cell(r)][r.pretrain_seed][r.seed][r.metric] = r.value
    out = {}
    for cell, by_run in results.items():
        runs = [distinct_evaluations(by_seed) for by_seed in by_run.values()]
        for metric in {m for run in runs for result in run for m in result}:
            values = [v for run in runs if (v := [result[metric] for result in run if metric in result])]
            out[cell, metric] = nested_spread(values, pretrained=cell[0] not in BASELINES)
    for key, r in stored.items():
        if key not in out or out[key].interval is None:
            out[key] = Spread(r.value, r.interval, "" if r.interval is None else COVERS_STORED, 0, 0)
    return out


def aggregate(rows: Iterable[ResultRow], configs: Mapping[str, Mapping] | None = None) -> list[Aggregate]:
    """One marked ``Aggregate`` per configuration and column; ``configs`` names a sweep's rows."""
    spreads = _spreads(list(rows))
    names = configuration_names({cell[:4] for cell, _ in spreads}, configs or {})
    out = [
        Aggregate(
            method=cell[0],
            name=names[cell[:4]],
            backbone=cell[1],
            pretrain_data=cell[2],
            config_hash=cell[3],
            eval_data=cell[4],
            protocol=cell[5],
            eval_hash=cell[6],
            budget=cell[7],
            metric=metric,
            mean=s.mean,
            interval=s.interval,
            interval_covers=s.covers,
            n_pretrain_seeds=s.n_pretrain_seeds,
            n_label_seeds=s.n_label_seeds,
            runs=s.runs,
        )
        for (cell, metric), s in sorted(spreads.items())
    ]
    return mark_columns(out)


def _shown(a: Aggregate) -> float:
    """The mean as the tables print it."""
    return round(a.mean, decimals(a.mean))


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
    """The aggregates with their marks set, each compared within its column (``Aggregate.column``)."""
    columns: dict[tuple, list[int]] = defaultdict(list)
    for i, a in enumerate(aggs):
        columns[a.column].append(i)
    marks = [""] * len(aggs)
    for members in columns.values():
        for i, mark in zip(members, column_marks([aggs[i] for i in members]), strict=True):
            marks[i] = mark
    return [replace(a, mark=mark) for a, mark in zip(aggs, marks, strict=True)]
