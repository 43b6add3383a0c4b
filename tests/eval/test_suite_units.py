"""When the suite counts a unit (candidate, set, protocol, budget, seed) as done: only when the
store holds every metric row of it from the same weights, the same set content and the same
protocol settings (issue 8 #7, issue 17 #8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.eval.cls_data import synthetic_classification
from rsssl.eval.features import state_dict_digest
from rsssl.eval.suite import CLASSIFICATION_METRICS, Suite, baseline_candidates
from rsssl.models.export import backbone_like
from rsssl.results.store import HEADER, read_rows
from tests.helpers.encoders import TINY_META

pytestmark = pytest.mark.usefixtures("single_thread")

META = TINY_META
KNN = {"protocols": ["knn"], "budgets": [2], "seeds": [0], "knn_k": 3}
UNIT_METRICS = {*CLASSIFICATION_METRICS, "train_count"}


def _set(seed: int = 0):
    return synthetic_classification(
        num_bands=3, num_classes=2, train_scenes=1, test_scenes=1, size=64, seed=seed
    )[0]


def _image_stats():
    return baseline_candidates(META)[1]


def _evaluate(results: Path, dataset, **classification) -> list:
    Suite(results, classification={**KNN, **classification}, log=lambda _: None).evaluate(
        [_image_stats()], [dataset]
    )
    return read_rows(results)


def test_a_unit_is_done_only_under_the_same_protocol_settings(tmp_path):
    results, dataset = tmp_path / "results.csv", _set()
    first = _evaluate(results, dataset)
    assert {r.metric for r in first} == UNIT_METRICS and len(first) == len(UNIT_METRICS)
    assert _evaluate(results, dataset) == first  # the same settings: nothing to do
    both = _evaluate(results, dataset, knn_k=1)  # another k is another measurement
    assert len(both) == 2 * len(UNIT_METRICS)
    assert len({r.eval_hash for r in both}) == 2 and all(r.eval_hash for r in both)


def test_a_set_with_other_content_under_the_same_name_is_measured(tmp_path):
    results = tmp_path / "results.csv"
    first = _evaluate(results, _set(0))
    both = _evaluate(results, _set(1))
    assert {r.eval_data for r in both} == {"synthetic"} and len(both) == 2 * len(first)


def test_a_unit_missing_a_metric_row_is_completed(tmp_path):
    results, dataset = tmp_path / "results.csv", _set()
    first = _evaluate(results, dataset)
    lines = results.read_text().splitlines(keepends=True)
    torn = [line for line in lines if ",kappa," not in line]  # what a torn append can leave
    assert len(torn) == len(lines) - 1
    results.write_text("".join(torn))
    again = _evaluate(results, dataset)
    assert sorted(r.metric for r in again) == sorted(UNIT_METRICS)
    assert {r.metric: r.value for r in again} == {r.metric: r.value for r in first}


def test_settings_left_at_their_default_hash_like_the_default_and_others_do_not():
    dataset = _set()
    demo = Suite(Path("unused.csv"), classification={"finetune": {"steps": 30, "budgets": [20]}})
    full = Suite(Path("unused.csv"), classification={"finetune": {"steps": 300}})
    explicit = Suite(Path("unused.csv"), classification={"finetune": {"steps": 300, "lr": 1e-3}})
    assert demo.eval_hash(dataset, "finetune") != full.eval_hash(dataset, "finetune")
    assert full.eval_hash(dataset, "finetune") == explicit.eval_hash(
        dataset, "finetune"
    )  # lr=1e-3 is the default
    assert full.protocol_settings("finetune") == {
        "steps": 300,
        "batch_size": 64,
        "lr": 1e-3,
        "weight_decay": 1e-4,
    }


def test_random_init_rows_carry_its_init_seed_and_weights_hash(tmp_path):
    results = tmp_path / "results.csv"
    random_init = baseline_candidates(META, seed=1)[0]
    assert random_init.checkpoint_hash == state_dict_digest(backbone_like(META, 1))[:16]
    assert random_init.checkpoint_hash != baseline_candidates(META, seed=0)[0].checkpoint_hash
    Suite(results, classification=KNN, log=lambda _: None).evaluate([random_init], [_set()])
    rows = read_rows(results)
    assert {(r.pretrain_seed, r.checkpoint_hash) for r in rows} == {(1, random_init.checkpoint_hash)}
    assert results.read_text().startswith(HEADER)


def test_each_finished_unit_says_its_headline_number_once(tmp_path):
    """One line per unit measured (method, set, protocol, budget, seed, OA); none when skipped."""
    results, lines, settings = tmp_path / "results.csv", [], {**KNN, "seeds": [0, 1]}
    Suite(results, classification=settings, log=lines.append).evaluate([_image_stats()], [_set()])
    oa = {r.seed: r.value for r in read_rows(results) if r.metric == "oa"}
    assert lines == [
        "evaluating image_stats on synthetic (classification)",
        f"image_stats on synthetic: knn 2/class seed 0: oa {oa[0]:.4f}",
        f"image_stats on synthetic: knn 2/class seed 1: oa {oa[1]:.4f}",
    ]
    lines.clear()
    Suite(results, classification=settings, log=lines.append).evaluate([_image_stats()], [_set()])
    assert lines == ["evaluating image_stats on synthetic (classification)"]  # every unit was done


def test_the_linear_solver_is_part_of_the_protocol_and_path_hashes_as_before_it_existed(tmp_path):
    dataset = _set()
    absent, path, batched = (
        Suite(Path("unused.csv"), classification=c)
        for c in ({}, {"linear_solver": "path"}, {"linear_solver": "batched"})
    )
    assert absent.eval_hash(dataset, "linear") == path.eval_hash(dataset, "linear")
    assert batched.eval_hash(dataset, "linear") != path.eval_hash(dataset, "linear")
    # The published synthetic benchmark keeps its solver; every other suite fits the grid batched.
    assert eval_config("benchmark").classification.linear_solver == "path"
    assert eval_config("classification").classification.linear_solver == "batched"
    rows = _evaluate(tmp_path / "r.csv", dataset, protocols=["linear"], linear_solver="batched")
    assert {r.metric for r in rows} == UNIT_METRICS and {r.protocol for r in rows} == {"linear"}
    assert {r.eval_hash for r in rows} == {batched.eval_hash(dataset, "linear")}


def eval_config(name: str):
    """`conf/eval/<name>.yaml` as the CLI composes it."""
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        return compose("evaluate", ["encoder=x", f"eval={name}"]).eval


def test_an_unknown_linear_solver_is_refused_before_anything_is_measured(tmp_path):
    with pytest.raises(ValueError, match="unknown linear-probe solver 'newton': use one of path, batched"):
        Suite(tmp_path / "r.csv", classification={"linear_solver": "newton"})
    assert not (tmp_path / "r.csv").exists()


def test_the_ridge_folds_are_part_of_the_ridge_protocols_only():
    """`ridge_folds` came after the first pixel_linear rows: it changes what pixel_ridge and
    tile_ridge measure (new hashes), never pixel_linear's."""
    dataset = _set()
    three, five = (Suite(Path("unused.csv"), pixel={"ridge_folds": folds}) for folds in (3, 5))
    assert "ridge_folds" not in five.protocol_settings("pixel_linear")
    assert three.eval_hash(dataset, "pixel_linear") == five.eval_hash(dataset, "pixel_linear")
    for protocol in ("pixel_ridge", "tile_ridge"):
        assert five.protocol_settings(protocol)["ridge_folds"] == 5
        assert three.eval_hash(dataset, protocol) != five.eval_hash(dataset, protocol)
