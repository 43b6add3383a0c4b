"""What one leaderboard number is: one configuration, the right variance, an honest count.

Hand-computed values: the 95 % half-width of n values with sample standard deviation ``sd`` is
t(0.975, n - 1) * sd / sqrt(n), with t(0.975, 2) = 4.302653 and t(0.975, 1) = 12.706205.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from rsssl.results.leaderboard import aggregate, write_leaderboard
from rsssl.results.store import ResultRow

T1, T2 = 12.706205, 4.302653


def _half(t: float, sd: float, n: int) -> float:
    return t * sd / math.sqrt(n)


def _rows(
    by_pretrain_seed: dict[int | None, list[float]],
    *,
    method: str = "moco",
    config_hash: str = "cfgA",
    eval_hash: str = "e1",
    budget: str = "20/class",
    metric: str = "oa",
    run: str = "",
    protocol: str = "knn",
) -> list[ResultRow]:
    """One row per (pretraining seed, label seed); label seeds 0, 1, 2... in list order."""
    return [
        ResultRow(
            run_id=run or f"{method}/{config_hash}/seed{pretrain_seed}",
            method=method,
            backbone="resnet18",
            pretrain_data="ssl4eo",
            eval_data="eurosat",
            protocol=protocol,
            budget=budget,
            seed=seed,
            metric=metric,
            value=value,
            config_hash=config_hash,
            pretrain_seed=pretrain_seed,
            eval_hash=eval_hash,
        )
        for pretrain_seed, values in by_pretrain_seed.items()
        for seed, value in enumerate(values)
    ]


def _summary(agg) -> tuple:
    return agg.mean, agg.interval, agg.n_pretrain_seeds, agg.n_label_seeds, agg.interval_covers


# ---- #8: one row per configuration; pretraining seeds are the runs of one configuration ------------


def test_runs_of_one_configuration_are_its_pretraining_seeds() -> None:
    """Each run is averaged over its label seeds (0.80, 0.82, 0.84); the interval is over those means."""
    rows = _rows({0: [0.79, 0.80, 0.81], 1: [0.81, 0.82, 0.83], 2: [0.83, 0.84, 0.85]})
    (agg,) = aggregate(rows)
    assert agg.interval == pytest.approx(_half(T2, 0.02, 3))  # not the 9 values pooled as seeds
    assert agg.mean == pytest.approx(0.82)
    assert _summary(agg)[2:] == (3, 3, "pretraining seeds")
    assert agg.name == "moco"


def test_two_pretraining_seeds_use_the_t_quantile_of_one_degree_of_freedom() -> None:
    (agg,) = aggregate(_rows({0: [0.79, 0.80, 0.81], 1: [0.39, 0.40, 0.41]}))
    assert agg.mean == pytest.approx(0.60)
    assert agg.interval == pytest.approx(_half(T1, math.sqrt(2) * 0.2, 2))  # sd of (0.8, 0.4)
    assert (agg.n_pretrain_seeds, agg.n_label_seeds) == (2, 3)


SWEEP = {
    "cfgA": {"method": {"name": "moco", "temperature": 0.1, "queue_size": 4096}, "backbone": {"name": "r18"}},
    "cfgB": {"method": {"name": "moco", "temperature": 0.2, "queue_size": 4096}, "backbone": {"name": "r18"}},
}


def test_configurations_are_rows_named_by_the_keys_they_vary() -> None:
    rows = _rows({0: [0.79, 0.80, 0.81]}, config_hash="cfgA") + _rows(
        {0: [0.39, 0.40, 0.41]}, config_hash="cfgB"
    )
    aggs = aggregate(rows, SWEEP)
    assert [(a.name, a.config_hash) for a in aggs] == [
        ("moco (method.temperature=0.1)", "cfgA"),
        ("moco (method.temperature=0.2)", "cfgB"),
    ]
    assert [a.mean for a in aggs] == [pytest.approx(0.80), pytest.approx(0.40)]
    assert [a.interval for a in aggs] == [pytest.approx(_half(T2, 0.01, 3))] * 2
    assert [a.interval_covers for a in aggs] == ["label seeds"] * 2


def test_configurations_without_a_recorded_config_are_named_by_their_hash() -> None:
    rows = _rows({0: [0.8]}, config_hash="cfgA") + _rows({0: [0.4]}, config_hash="cfgB")
    assert [a.name for a in aggregate(rows)] == ["moco (config cfgA)", "moco (config cfgB)"]


def test_sweep_rows_in_the_markdown(tmp_path: Path) -> None:
    rows = _rows({0: [0.79, 0.80, 0.81]}, config_hash="cfgA") + _rows(
        {0: [0.39, 0.40, 0.41]}, config_hash="cfgB"
    )
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False, configs=SWEEP)
    table = [line for line in (tmp_path / "LEADERBOARD.md").read_text().splitlines() if line.startswith("| ")]
    assert table == [
        "| method | backbone | pretrain data | pretraining seeds | knn · 20/class · oa |",
        f"| moco (method.temperature=0.1) | resnet18 | ssl4eo | 1 | **0.800 ± {_half(T2, 0.01, 3):.3f}** |",
        f"| moco (method.temperature=0.2) | resnet18 | ssl4eo | 1 | 0.400 ± {_half(T2, 0.01, 3):.3f} |",
    ]


def test_a_rerun_of_one_pretraining_seed_replaces_it() -> None:
    """The same configuration and seed run twice is one pretraining seed: the later rows count."""
    first = _rows({0: [0.50, 0.60, 0.70]}, run="old")
    again = _rows({0: [0.80, 0.81, 0.82]}, run="new")
    (agg,) = aggregate(first + again)
    assert (agg.mean, agg.n_pretrain_seeds, agg.n_label_seeds) == (pytest.approx(0.81), 1, 3)


def test_rows_measured_under_other_protocol_settings_are_never_pooled(tmp_path: Path) -> None:
    rows = _rows({0: [0.8, 0.8, 0.8]}, eval_hash="aaaa1111bbbb") + _rows({0: [0.4]}, eval_hash="cccc2222dddd")
    aggs = aggregate(rows)
    assert sorted((a.eval_hash, a.mean) for a in aggs) == [("aaaa1111bbbb", 0.8), ("cccc2222dddd", 0.4)]
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False)
    header = next(
        line for line in (tmp_path / "LEADERBOARD.md").read_text().splitlines() if line.startswith("| m")
    )
    assert header.endswith("| knn · 20/class · oa · eval aaaa1111 | knn · 20/class · oa · eval cccc2222 |")


# ---- #9: which variance an interval covers, and honest counts ---------------------------------------


def test_identical_label_seed_evaluations_are_one_evaluation(tmp_path: Path) -> None:
    """At 100 % every label seed selects the same data and kNN is deterministic: n = 1, no interval."""
    rows = _rows({0: [0.408] * 3}, budget="100%") + _rows({0: [0.39] * 3}, budget="100%", metric="aa")
    oa = next(a for a in aggregate(rows) if a.metric == "oa")
    assert _summary(oa) == (0.408, None, 1, 1, "")
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    assert "| 0.408 |" in md.replace("**", "") and "± 0.000" not in md


def test_label_seeds_equal_in_one_metric_only_are_distinct_evaluations() -> None:
    """Seeds 0 and 1 share their OA by chance but not their AA: three evaluations, n = 3."""
    rows = _rows({0: [0.5, 0.5, 0.6]}) + _rows({0: [0.41, 0.42, 0.43]}, metric="aa")
    oa = next(a for a in aggregate(rows) if a.metric == "oa")
    assert oa.mean == pytest.approx(1.6 / 3)
    assert oa.interval == pytest.approx(_half(T2, math.sqrt(0.01 / 3), 3))
    assert (oa.n_label_seeds, oa.interval_covers) == (3, "label seeds")


def test_pretraining_seeds_with_one_evaluation_each() -> None:
    """100 % kNN of three pretraining runs: each run is one evaluation; the interval is over runs."""
    (agg,) = aggregate(_rows({0: [0.40] * 3, 1: [0.44] * 3, 2: [0.42] * 3}, budget="100%"))
    assert agg.interval == pytest.approx(_half(T2, 0.02, 3))
    assert _summary(agg)[::2] == (pytest.approx(0.42), 3, "pretraining seeds")
    assert agg.n_label_seeds == 1


def test_baselines_intervals_cover_label_seeds() -> None:
    rows = _rows(
        {0: [0.30, 0.31, 0.32]}, method="random_init", config_hash="", run="baseline:random_init:x:seed0"
    )
    rows += _rows(
        {None: [0.50, 0.52, 0.54]}, method="image_stats", config_hash="", run="baseline:image_stats:3"
    )
    aggs = {a.method: a for a in aggregate(rows)}
    assert _summary(aggs["random_init"])[2:] == (1, 3, "label seeds")
    assert _summary(aggs["image_stats"])[2:] == (1, 3, "label seeds")
    assert aggs["image_stats"].interval == pytest.approx(_half(T2, 0.02, 3))
    assert aggs["random_init"].name == "random_init"


@pytest.mark.parametrize("method", ["random_init", "supervised"])
def test_several_random_initialisations_are_initialisation_seeds(method: str) -> None:
    rows = _rows({0: [0.30], 1: [0.32]}, method=method, config_hash="")
    (agg,) = aggregate(rows)
    assert _summary(agg)[2:] == (2, 1, "initialisation seeds")


def test_csv_has_both_counts_and_what_the_interval_covers(tmp_path: Path) -> None:
    rows = _rows({0: [0.79, 0.80, 0.81], 1: [0.81, 0.82, 0.83], 2: [0.83, 0.84, 0.85]})
    rows += _rows({0: [0.7, 0.72, 0.74]}, config_hash="cfgB") + _rows({0: [0.6] * 3}, config_hash="cfgC")
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False)
    with (tmp_path / "leaderboard.csv").open(newline="") as f:
        got = {r["config_hash"]: r for r in csv.DictReader(f)}
    fields = ("configuration", "interval_covers", "n_pretrain_seeds", "n_label_seeds", "interval")
    assert [got["cfgA"][k] for k in fields[:4]] == ["moco (config cfgA)", "pretraining seeds", "3", "3"]
    assert float(got["cfgA"]["interval"]) == pytest.approx(_half(T2, 0.02, 3))
    assert [got["cfgB"][k] for k in fields[1:4]] == ["label seeds", "1", "3"]
    assert [got["cfgC"][k] for k in fields[1:]] == ["", "1", "1", ""]


def test_the_header_says_which_variance_each_interval_covers(tmp_path: Path) -> None:
    write_leaderboard(_rows({0: [0.8, 0.9]}), tmp_path, source="r.csv", command="c", plots=False)
    note = (tmp_path / "LEADERBOARD.md").read_text().split("\n## ", 1)[0]
    for sentence in VARIANCE_NOTE:
        assert sentence in note
    html = (tmp_path / "leaderboard.html").read_text()
    assert "rsssl-pretrain -m seed=0,1,2 ...</code>" in html


VARIANCE_NOTE = (
    "With two or more pretraining runs of a configuration (seeds: `rsssl-pretrain -m seed=0,1,2 ...`), "
    "each run is first averaged over its label seeds and the interval is over the pretraining seeds "
    "(label-subset variance nested inside).",
    "With one pretraining run, the interval covers label seeds only (which labelled subset, and the "
    "protocol's own randomness), not pretraining.",
    "A cell from one distinct evaluation (one label seed, or label seeds whose results are all identical, "
    "such as a deterministic protocol on the whole training set) has no interval.",
    "Baselines (supervised, random_init, image_stats) are not pretrained: their intervals cover label "
    "seeds (and the initialisation seeds of supervised and random_init, where they have several).",
    "`leaderboard.csv` gives each cell's `n_pretrain_seeds`, `n_label_seeds` and `interval_covers`.",
)


def test_two_label_seeds_alike_among_three_still_count_as_three() -> None:
    """Only a seed that changed nothing at all (every seed alike) makes one evaluation."""
    rows = _rows({0: [0.70, 0.70, 0.73]})
    (agg,) = aggregate(rows)
    assert agg.interval == pytest.approx(_half(T2, math.sqrt(0.0003), 3))
    assert (agg.n_label_seeds, agg.interval_covers) == (3, "label seeds")


def test_a_baseline_is_named_by_its_method_beside_the_random_init_method() -> None:
    """The suite's random_init rows carry no config hash; the random_init *method*'s online-probe
    rows carry its pretraining config's. They are one baseline, never "random_init (config unknown)"."""
    rows = _rows({0: [0.3]}, method="random_init", config_hash="", protocol="knn")
    rows += _rows(
        {0: [0.2]}, method="random_init", config_hash="cfgR", protocol="online_linear", budget="100%"
    )
    rows += _rows({0: [0.5]}, config_hash="cfgA") + _rows({0: [0.6]}, config_hash="cfgB")
    names = {(a.method, a.protocol): a.name for a in aggregate(rows)}
    assert names[("random_init", "knn")] == names[("random_init", "online_linear")] == "random_init"
    assert names[("moco", "knn")] in {"moco (config cfgA)", "moco (config cfgB)"}
