"""The overall ranking: normalised scores, their interquartile mean, its bootstrap interval, ranks.

Every expected number is computed by hand in the comments beside it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

import pytest

from rsssl.results.aggregate import aggregate
from rsssl.results.leaderboard import RANKING_CSV_COLUMNS, write_leaderboard
from rsssl.results.ranking import average_ranks, interquartile_mean, normalised, rank_entries
from rsssl.results.store import BASELINES, ResultRow


def _rows(
    method: str,
    values: dict[int | None, list[float]],
    *,
    eval_data: str = "eurosat",
    protocol: str = "linear",
    budget: str = "20/class",
    metric: str = "OA",
    backbone: str = "resnet18",
    pretrain_data: str = "ssl4eo",
) -> list[ResultRow]:
    """One row per (pretraining seed, label seed); ``values``: pretraining seed -> its label seeds' values."""
    return [
        ResultRow(
            run_id=f"{method}/seed{pretrain_seed}",
            method=method,
            backbone=backbone,
            pretrain_data=pretrain_data,
            eval_data=eval_data,
            protocol=protocol,
            budget=budget,
            seed=seed,
            metric=metric,
            value=value,
            config_hash=f"cfg-{method}",
            pretrain_seed=pretrain_seed,
        )
        for pretrain_seed, by_label in values.items()
        for seed, value in enumerate(by_label)
    ]


# ---- the pure functions --------------------------------------------------------------------------


def test_normalised_score_is_0_for_random_init_and_1_for_supervised() -> None:
    assert normalised(0.2, random_init=0.2, supervised=0.6) == 0.0
    assert normalised(0.6, random_init=0.2, supervised=0.6) == 1.0
    assert normalised(0.4, random_init=0.2, supervised=0.6) == pytest.approx(0.5)
    assert normalised(0.1, random_init=0.2, supervised=0.6) == pytest.approx(-0.25)  # worse than random
    # a loss: lower is better, the denominator's sign turns it round: 1.5 is halfway from 2 to 1
    assert normalised(1.5, random_init=2.0, supervised=1.0) == pytest.approx(0.5)
    assert normalised(1.0, random_init=2.0, supervised=1.0) == 1.0


def test_interquartile_mean_of_known_lists() -> None:
    # Each sorted value x_(i) (i = 1..n) holds one unit of mass on [i-1, i]; the IQM is the mean over
    # [n/4, 3n/4], a value weighted by the part of its unit inside that window (total weight n/2).
    assert interquartile_mean([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)  # n = 8: [2, 6] = x3..x6
    # n = 5: window [1.25, 3.75]: x1 0, x2 0.75, x3 1, x4 0.75, x5 0 -> (0.75*2 + 4 + 0.75*8) / 2.5 = 4.6
    assert interquartile_mean([16, 1, 8, 2, 4]) == pytest.approx(4.6)
    # n = 6: window [1.5, 4.5]: x2 0.5, x3 1, x4 1, x5 0.5 -> (0.5*2 + 4 + 8 + 0.5*16) / 3 = 7
    assert interquartile_mean([1, 2, 4, 8, 16, 32]) == pytest.approx(7.0)
    # n = 3: window [0.75, 2.25]: x1 0.25, x2 1, x3 0.25 -> (0.25*0 + 1*3 + 0.25*12) / 1.5 = 4
    assert interquartile_mean([12, 0, 3]) == pytest.approx(4.0)
    assert interquartile_mean([0.3, 0.5]) == pytest.approx(0.4)  # n = 2: both half-weighted, the mean
    assert interquartile_mean([0.7]) == 0.7
    with pytest.raises(ValueError):
        interquartile_mean([])


def test_ranks_share_ties_as_the_average_rank() -> None:
    assert average_ranks([0.9, 0.8, 0.8, 0.7], higher_is_better=True) == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([0.5, 0.5, 0.5], higher_is_better=True) == [2.0, 2.0, 2.0]
    assert average_ranks([0.3, 0.1, 0.2, 0.1], higher_is_better=False) == [4.0, 1.5, 3.0, 1.5]  # a loss


# ---- the ranking of aggregated entries ------------------------------------------------------------


def _entry(ranking, method: str):
    return next(e for e in ranking.entries if e.method == method)


def test_identical_seeds_give_a_zero_width_interval() -> None:
    """Three pretraining seeds with the same value: every resample draws 0.5 -> normalised 0.75."""
    rows = _rows("moco", {0: [0.5], 1: [0.5], 2: [0.5]})
    rows += _rows("random_init", {0: [0.2]}) + _rows("supervised", {0: [0.6]})
    ranking = rank_entries(aggregate(rows), resamples=200, seed=0)
    moco = _entry(ranking, "moco")
    assert moco.iqm == pytest.approx(0.75) and (moco.low, moco.high) == (moco.iqm, moco.iqm)
    assert moco.covers == "pretraining seeds"


def test_one_pretraining_seed_is_bootstrapped_over_its_label_seeds() -> None:
    """Label seeds 0.2 and 0.6, fixed references 0.2 and 0.6: a resample's mean is 0.2, 0.4 or 0.6 with
    probability 1/4, 1/2, 1/4, i.e. a score of 0, 0.5 or 1. With 1000 resamples both ends are drawn
    far more than 25 times, so the 2.5 % and 97.5 % percentiles are exactly 0 and 1."""
    rows = _rows("moco", {0: [0.2, 0.6]}) + _rows("random_init", {0: [0.2]}) + _rows("supervised", {0: [0.6]})
    ranking = rank_entries(aggregate(rows), resamples=1000, seed=0)
    moco = _entry(ranking, "moco")
    assert moco.iqm == pytest.approx(0.5) and (moco.low, moco.high) == (0.0, 1.0)
    assert moco.covers == "label seeds"
    again = _entry(rank_entries(aggregate(rows), resamples=1000, seed=0), "moco")
    assert (again.low, again.high) == (moco.low, moco.high)  # a fixed seed: reproducible


def test_the_references_are_resampled_and_stay_anchored_at_0_and_1() -> None:
    rows = _rows("moco", {0: [0.4, 0.5]}) + _rows("random_init", {0: [0.1, 0.3]})
    rows += _rows("supervised", {0: [0.7, 0.9]})
    ranking = rank_entries(aggregate(rows), resamples=300, seed=1)
    anchor_0, anchor_1 = _entry(ranking, "random_init"), _entry(ranking, "supervised")
    assert (anchor_0.iqm, anchor_0.low, anchor_0.high, anchor_0.anchor) == (0.0, 0.0, 0.0, "0")
    assert (anchor_1.iqm, anchor_1.low, anchor_1.high, anchor_1.anchor) == (1.0, 1.0, 1.0, "1")
    moco = _entry(ranking, "moco")  # (0.45 - 0.2) / (0.8 - 0.2) = 0.41667; the references move it
    assert moco.iqm == pytest.approx(0.25 / 0.6) and moco.low < moco.iqm < moco.high and moco.anchor == ""
    assert [e.method for e in ranking.entries] == ["supervised", "moco", "random_init"]


def test_columns_without_both_references_are_left_out_and_said_why() -> None:
    rows = _rows("moco", {0: [0.4]}) + _rows("random_init", {0: [0.2]}) + _rows("supervised", {0: [0.6]})
    rows += _rows("moco", {0: [0.5]}, budget="5/class") + _rows("random_init", {0: [0.3]}, budget="5/class")
    rows += _rows("moco", {0: [0.5]}, budget="1%") + _rows("supervised", {0: [0.6]}, budget="1%")
    rows += _rows("random_init", {0: [0.5]}, budget="10%") + _rows("supervised", {0: [0.5]}, budget="10%")
    rows += _rows("moco", {0: [0.9]}, protocol="online_linear", budget="")
    ranking = rank_entries(aggregate(rows))
    assert ranking.columns == (("eurosat", "linear", "", "20/class", "OA"),)
    assert dict(ranking.left_out) == {
        ("eurosat", "linear", "", "5/class", "OA"): "no supervised number",
        ("eurosat", "linear", "", "1%", "OA"): "no random_init number",
        ("eurosat", "linear", "", "10%", "OA"): "random_init and supervised are equal",
        ("eurosat", "online_linear", "", "", "OA"): "online probe, never ranked against offline evaluations",
    }


def test_a_column_where_supervised_does_not_beat_random_init_is_left_out() -> None:
    """Tree-crown fine-tuning: supervised 0.315 mIoU below random init's 0.352. Normalised, the
    denominator would be negative and every entry above random init would score below it (SimCLR's
    0.391 would be -1.05), turning the ranking round; such a column is left out and said why, in
    the metric's own direction (a loss is usable when supervised is the lower)."""
    rows = _rows("simclr", {0: [0.391]}) + _rows("random_init", {0: [0.352]})
    rows += _rows("supervised", {0: [0.315]})
    rows += _rows("simclr", {0: [0.5]}, budget="5/class") + _rows("random_init", {0: [0.3]}, budget="5/class")
    rows += _rows("supervised", {0: [0.7]}, budget="5/class")
    rows += _rows("simclr", {0: [1.5]}, metric="rmse") + _rows("random_init", {0: [2.0]}, metric="rmse")
    rows += _rows("supervised", {0: [1.0]}, metric="rmse")
    rows += _rows("simclr", {0: [1.5]}, metric="rmse", budget="5/class")
    rows += _rows("random_init", {0: [1.0]}, metric="rmse", budget="5/class")
    rows += _rows("supervised", {0: [2.0]}, metric="rmse", budget="5/class")
    ranking = rank_entries(aggregate(rows), resamples=50)
    assert ranking.columns == (
        ("eurosat", "linear", "", "20/class", "rmse"),
        ("eurosat", "linear", "", "5/class", "OA"),
    )
    reasons = dict(ranking.left_out)
    assert reasons == {
        ("eurosat", "linear", "", "20/class", "OA"): "supervised (0.315) is not above random_init (0.352)",
        ("eurosat", "linear", "", "5/class", "rmse"): "supervised (2.000) is not below random_init (1.000)",
    }
    # the two usable columns: (0.5 - 0.3) / 0.4 = 0.5 and (1.5 - 2) / (1 - 2) = 0.5
    assert _entry(ranking, "simclr").scores == {c: pytest.approx(0.5) for c in ranking.columns}


def test_resamples_that_turn_the_references_round_are_dropped() -> None:
    """random_init's label seeds 0.2 and 0.7 against supervised 0.6: a resample whose random_init mean
    is 0.7 (probability 1/4) has no scale and is dropped, as one whose references are equal."""
    rows = _rows("moco", {0: [0.4]}) + _rows("random_init", {0: [0.2, 0.7]})
    rows += _rows("supervised", {0: [0.6]})
    ranking = rank_entries(aggregate(rows), resamples=400, seed=0)
    assert 60 < ranking.dropped < 140  # about 100 of 400
    # kept: random_init 0.2 -> (0.4 - 0.2) / 0.4 = 0.5, 0.45 -> -0.05 / 0.15 = -1/3; a kept 0.7 would
    # score (0.4 - 0.7) / (0.6 - 0.7) = 3, far above the supervised reference
    moco = _entry(ranking, "moco")
    assert (moco.low, moco.high) == (pytest.approx(-1 / 3), pytest.approx(0.5))


def test_frozen_protocols_are_normalised_by_the_supervised_reference_of_their_set_and_budget() -> None:
    """The supervised reference has fine-tune numbers only: it is the ceiling of the kNN and linear
    columns of the same set, budget and metric too.

    eurosat 20/class      random_init  supervised  moco   moco normalised
      knn                 0.2          -           0.5    (0.5 - 0.2) / (0.8 - 0.2) = 0.5
      linear              0.3          -           0.4    (0.4 - 0.3) / (0.8 - 0.3) = 0.2
      finetune            0.4          0.8         0.7    (0.7 - 0.4) / (0.8 - 0.4) = 0.75
    IQM of [0.2, 0.5, 0.75] (n = 3, quartiles at 0.75 and 2.25): (0.25 * 0.2 + 0.5 + 0.25 * 0.75) / 1.5.
    """
    rows = []
    for protocol, (random_init, moco) in {
        "knn": (0.2, 0.5),
        "linear": (0.3, 0.4),
        "finetune": (0.4, 0.7),
    }.items():
        rows += _rows("random_init", {0: [random_init]}, protocol=protocol)
        rows += _rows("moco", {0: [moco]}, protocol=protocol)
    rows += _rows("supervised", {0: [0.8]}, protocol="finetune")
    for method in ("moco", "random_init"):  # no supervised number at 5/class
        rows += _rows(method, {0: [0.6]}, protocol="knn", budget="5/class")
    ranking = rank_entries(aggregate(rows))
    assert [c[1] for c in ranking.columns] == ["finetune", "knn", "linear"]
    moco = _entry(ranking, "moco")
    assert [moco.scores[c] for c in ranking.columns] == pytest.approx([0.75, 0.5, 0.2])
    assert moco.iqm == pytest.approx((0.25 * 0.2 + 0.5 + 0.25 * 0.75) / 1.5)
    assert _entry(ranking, "supervised").iqm == 1.0 and _entry(ranking, "random_init").iqm == 0.0
    assert dict(ranking.left_out) == {("eurosat", "knn", "", "5/class", "OA"): "no supervised number"}


def test_each_backbone_is_normalised_by_its_own_references() -> None:
    """A ResNet and a ViT in one leaderboard, each with its own random init and supervised reference;
    image statistics (no backbone) take those of the backbone most pretrained entries use.

    20/class        resnet18                       vit_tiny
      random_init   0.2                            0.4
      supervised    0.6                            0.8
      moco          0.4 -> (0.4 - 0.2) / 0.4 = 0.5
      simclr        0.5 -> 0.75
      last                                         0.7 -> (0.7 - 0.4) / 0.4 = 0.75
      image_stats   0.3 (backbone "-") -> by resnet18's: 0.25
    At 5/class the ViT has no supervised number: the ResNet entries are scored there (moco 0.3 ->
    (0.3 - 0.1) / 0.4 = 0.5), the ViT entries are not, and the reason names the backbone. Ranks
    are among the entries scored in a column: 20/class supervised 0.8 (1), last 0.7 (2), supervised
    0.6 (3), simclr 0.5 (4), moco and random_init 0.4 (5.5 each), image_stats 0.3 (7), random_init 0.2 (8).
    """
    resnet = {"random_init": 0.2, "supervised": 0.6, "moco": 0.4, "simclr": 0.5}
    vit = {"random_init": 0.4, "supervised": 0.8, "last": 0.7}
    rows = [r for m, x in resnet.items() for r in _rows(m, {0: [x]})]
    rows += [r for m, x in vit.items() for r in _rows(m, {0: [x]}, backbone="vit_tiny")]
    rows += _rows("image_stats", {0: [0.3]}, backbone="-")
    for method, x in {"random_init": 0.1, "supervised": 0.5, "moco": 0.3}.items():
        rows += _rows(method, {0: [x]}, budget="5/class")
    for method, x in {"random_init": 0.2, "last": 0.6}.items():
        rows += _rows(method, {0: [x]}, budget="5/class", backbone="vit_tiny")
    ranking = rank_entries(aggregate(rows), resamples=20)
    twenty, five = ("eurosat", "linear", "", "20/class", "OA"), ("eurosat", "linear", "", "5/class", "OA")
    assert set(ranking.columns) == {twenty, five}

    def entry(method: str, backbone: str):
        return next(e for e in ranking.entries if (e.method, e.backbone) == (method, backbone))

    assert entry("moco", "resnet18").scores == {twenty: pytest.approx(0.5), five: pytest.approx(0.5)}
    assert entry("simclr", "resnet18").scores == {twenty: pytest.approx(0.75)}
    assert entry("last", "vit_tiny").scores == {twenty: pytest.approx(0.75)}
    assert entry("image_stats", "-").scores == {twenty: pytest.approx(0.25)}
    for backbone in ("resnet18", "vit_tiny"):
        assert entry("random_init", backbone).scores[twenty] == 0.0
        assert entry("supervised", backbone).scores[twenty] == 1.0
    assert entry("random_init", "vit_tiny").scores.keys() == {twenty}
    assert dict(ranking.left_out) == {five: "vit_tiny (ssl4eo) entries not scored: no supervised number"}
    assert entry("last", "vit_tiny").ranks == {twenty: 2.0}
    assert entry("moco", "resnet18").ranks == {
        twenty: 5.5,
        five: 2.0,
    }  # 5/class: supervised, moco, random_init
    assert entry("image_stats", "-").ranks == {twenty: 7.0}


def test_each_stage_of_a_learning_path_is_normalised_by_the_references_of_its_data() -> None:
    """TOV's stages: the baselines of each stage carry its pretraining data's input normalisation,
    so each stage's entry takes its own: photos (random_init 0.30, supervised 0.70, moco 0.40 ->
    0.25) and synthetic (0.36, 0.76, moco 0.56 -> 0.5)."""
    rows = []
    for data, (random_init, supervised, moco) in {
        "photos": (0.3, 0.7, 0.4),
        "synthetic": (0.36, 0.76, 0.56),
    }.items():
        for method, x in {"random_init": random_init, "supervised": supervised, "moco": moco}.items():
            rows += _rows(method, {0: [x]}, pretrain_data=data)
    ranking = rank_entries(aggregate(rows), resamples=20)
    assert not ranking.left_out
    scores = {(e.method, e.pretrain_data): list(e.scores.values()) for e in ranking.entries}
    assert scores[("moco", "photos")] == [pytest.approx(0.25)]
    assert scores[("moco", "synthetic")] == [pytest.approx(0.5)]
    assert scores[("random_init", "synthetic")] == [0.0] and scores[("supervised", "photos")] == [1.0]


# ---- LEADERBOARD.md, ranking.csv, leaderboard.csv and the page -------------------------------------

# Two columns, one evaluation per cell (so every interval has zero width):
#                 5/class  20/class   normalised 5/class        normalised 20/class        IQM (n = 2: mean)
#   random_init   0.2      0.4        0                         0                          0
#   supervised    0.6      0.8        1                         1                          1
#   moco          0.4      0.7        (0.4-0.2)/0.4 = 0.5       (0.7-0.4)/0.4 = 0.75       0.625
#   image_stats   0.3      0.5        (0.3-0.2)/0.4 = 0.25      (0.5-0.4)/0.4 = 0.25       0.25
# Ranks (both columns): supervised 1, moco 2, image_stats 3, random_init 4. ucmerced has no supervised
# number, so its column is left out.
BOARD = {
    "random_init": (0.2, 0.4),
    "supervised": (0.6, 0.8),
    "moco": (0.4, 0.7),
    "image_stats": (0.3, 0.5),
}


def _board(tmp_path: Path) -> Path:
    rows = [
        r
        for method, (five, twenty) in BOARD.items()
        for r in _rows(method, {0: [five]}, budget="5/class") + _rows(method, {0: [twenty]})
    ]
    rows += _rows("moco", {0: [0.9]}, eval_data="ucmerced", protocol="knn")
    rows += _rows("random_init", {0: [0.1]}, eval_data="ucmerced", protocol="knn")
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False, ranking_resamples=50)
    return tmp_path


def _section(md: str, title: str) -> str:
    return md.split(f"\n{title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


SUPERVISED_SEEDS = "-" if "supervised" in BASELINES else "1"


def test_the_ranking_tables_in_the_markdown(tmp_path: Path) -> None:
    md = (_board(tmp_path) / "LEADERBOARD.md").read_text()
    assert md.index("## Overall ranking") < md.index("## eurosat — offline evaluation")
    ranking = [line for line in _section(md, "### Normalised IQM").splitlines() if line.startswith("|")]
    s = SUPERVISED_SEEDS
    assert ranking == [
        "| method | backbone | pretrain data | pretraining seeds | anchor | normalised IQM [95 % interval] "
        "| interval covers | columns | mean rank |",
        "|---|---|---|---|---|---:|---|---:|---:|",
        f"| supervised | resnet18 | ssl4eo | {s} | 1 by construction | 1.000 [1.000, 1.000] |  | 2 | 1.00 |",
        "| moco | resnet18 | ssl4eo | 1 |  | 0.625 [0.625, 0.625] |  | 2 | 2.00 |",
        "| image_stats | resnet18 | ssl4eo | - |  | 0.250 [0.250, 0.250] |  | 2 | 3.00 |",
        "| random_init | resnet18 | ssl4eo | - | 0 by construction | 0.000 [0.000, 0.000] |  | 2 | 4.00 |",
    ]
    ranks = [line for line in _section(md, "### Rank per column").splitlines() if line.startswith("|")]
    assert ranks == [
        "| method | backbone | pretrain data "
        "| eurosat · linear · 5/class · OA | eurosat · linear · 20/class · OA | mean rank |",
        "|---|---|---|---:|---:|---:|",
        "| supervised | resnet18 | ssl4eo | 1 | 1 | 1.00 |",
        "| moco | resnet18 | ssl4eo | 2 | 2 | 2.00 |",
        "| image_stats | resnet18 | ssl4eo | 3 | 3 | 3.00 |",
        "| random_init | resnet18 | ssl4eo | 4 | 4 | 4.00 |",
    ]
    note = _section(md, "## Overall ranking")
    assert (
        "Columns used (2): eurosat · linear · 5/class · OA; eurosat · linear · 20/class · OA. "
        "Left out (1): ucmerced · knn · 20/class · OA (no supervised number)." in note
    )
    assert "50 bootstrap resamples (RNG seed 0)" in note and "interval covers label seeds" in note


def test_ranking_csv_has_one_row_per_entry(tmp_path: Path) -> None:
    out = _board(tmp_path)
    with (out / "ranking.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert (
            tuple(reader.fieldnames)
            == RANKING_CSV_COLUMNS
            == (
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
        )
        got = list(reader)
    assert [r["method"] for r in got] == ["supervised", "moco", "image_stats", "random_init"]
    moco = got[1]
    assert (float(moco["iqm"]), float(moco["iqm_low"]), float(moco["iqm_high"])) == pytest.approx(
        (0.625, 0.625, 0.625)
    )
    assert (moco["anchor"], moco["n_columns"], float(moco["mean_rank"]), moco["config_hash"]) == (
        "",
        "2",
        2.0,
        "cfg-moco",
    )
    assert [r["anchor"] for r in got] == ["1", "", "", "0"]


def test_leaderboard_csv_gives_each_ranked_cell_its_score_and_rank(tmp_path: Path) -> None:
    with (_board(tmp_path) / "leaderboard.csv").open(newline="") as f:
        got = {(r["eval_data"], r["method"], r["budget"]): r for r in csv.DictReader(f)}
    assert float(got["eurosat", "moco", "20/class"]["normalised"]) == pytest.approx(0.75)
    assert got["eurosat", "moco", "20/class"]["rank"] == "2.0"
    assert float(got["eurosat", "image_stats", "5/class"]["normalised"]) == pytest.approx(0.25)
    assert (
        got["ucmerced", "moco", "20/class"]["normalised"],
        got["ucmerced", "moco", "20/class"]["rank"],
    ) == (
        "",
        "",
    )  # a column left out of the ranking


def test_the_page_has_both_ranking_tables(tmp_path: Path) -> None:
    html = (_board(tmp_path) / "leaderboard.html").read_text()
    assert html.index('<table id="ranking">') < html.index('<table id="ranking-ranks">')
    assert html.index('<table id="ranking-ranks">') < html.index('<table id="eurosat-offline">')
    # the cell sorts by the IQM itself (0.2/0.39999999999999997 and 0.3/0.4 are not exactly 0.5, 0.75)
    cell = re.search(r'<td class="num" data-v="([^"]*)">0.625 \[0.625, 0.625\]</td>', html)
    assert cell and float(cell.group(1)) == pytest.approx(0.625)
    assert "Left out (1): ucmerced · knn · 20/class · OA (no supervised number)." in html


def test_without_any_normalisable_column_the_section_says_why(tmp_path: Path) -> None:
    rows = _rows("moco", {0: [0.5, 0.6]}) + _rows("random_init", {0: [0.2]})
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    note = _section(md, "## Overall ranking")
    assert "No column can be normalised, so there is no overall ranking." in note
    assert "Left out (1): eurosat · linear · 20/class · OA (no supervised number)." in note
    assert (
        "### Normalised IQM" not in md and 'id="ranking"' not in (tmp_path / "leaderboard.html").read_text()
    )


def test_the_cli_passes_the_bootstrap_settings(tmp_path: Path) -> None:
    from rsssl.results.store import append_rows
    from tests.results.test_leaderboard import _cli

    rows = _rows("moco", {0: [0.4, 0.5]}) + _rows("random_init", {0: [0.2]}) + _rows("supervised", {0: [0.6]})
    append_rows(tmp_path / "results.csv", rows)
    done = _cli(
        tmp_path, "results=results.csv", "out=site", "plots=false", "ranking_resamples=7", "ranking_seed=3"
    )
    assert done.returncode == 0, done.stderr
    assert "of 7 bootstrap resamples (RNG seed 3)" in (tmp_path / "site" / "LEADERBOARD.md").read_text()


# ---- the difficulty table ------------------------------------------------------------------------


def test_the_difficulty_table_puts_every_entry_beside_the_references(tmp_path: Path) -> None:
    """Per set and split, at 5/class and 100 %: a frozen entry's linear probe (not its kNN), the
    supervised reference's fine-tuning; the 20/class budget is left out; the standard set first."""
    rows = []
    for eval_data, shift in (("synthetic", 0.0), ("synthetic@region", -0.1)):
        for budget, (knn, linear, supervised) in {
            "5/class": (0.5, 0.3, 0.45),
            "100%": (0.9, 0.6, 0.85),
        }.items():
            for method, offset in (("moco", 0.05), ("image_stats", 0.1), ("random_init", 0.0)):
                rows += _rows(method, {0: [knn + shift]}, eval_data=eval_data, protocol="knn", budget=budget)
                rows += _rows(
                    method,
                    {0: [linear + offset + shift]},
                    eval_data=eval_data,
                    protocol="linear",
                    budget=budget,
                )
            rows += _rows(
                "supervised",
                {0: [supervised + shift]},
                eval_data=eval_data,
                protocol="finetune",
                budget=budget,
            )
        rows += _rows("moco", {0: [0.99]}, eval_data=eval_data, protocol="linear", budget="20/class")
    rows = [replace(r, metric="oa") for r in rows]
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False, ranking_resamples=10)
    md = (tmp_path / "LEADERBOARD.md").read_text()
    section = _section(md, "## Difficulty: every entry between the references")
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0] == (
        "| method | backbone | pretrain data | protocol | synthetic · 5/class · oa | synthetic · 100% · oa "
        "| synthetic@region · 5/class · oa | synthetic@region · 100% · oa |"
    )
    assert table[2:] == [
        "| moco | resnet18 | ssl4eo | linear | 0.350 | 0.650 | 0.250 | 0.550 |",
        "| supervised | resnet18 | ssl4eo | finetune | **0.450** | **0.850** | **0.350** | **0.750** |",
        "| random_init | resnet18 | ssl4eo | linear | 0.300 | 0.600 | 0.200 | 0.500 |",
        "| image_stats | resnet18 | ssl4eo | linear | 0.400 | 0.700 | 0.300 | 0.600 |",
    ]


def test_no_difficulty_table_without_a_supervised_number(tmp_path: Path) -> None:
    rows = [replace(r, metric="oa") for r in _rows("moco", {0: [0.5]}) + _rows("random_init", {0: [0.4]})]
    write_leaderboard(rows, tmp_path, source="r.csv", command="c", plots=False, ranking_resamples=10)
    assert "Difficulty" not in (tmp_path / "LEADERBOARD.md").read_text()
