"""Evaluation data meets the encoder: band identity by name, pixel scale, data.bands on eval sets
(issue 8 #6, issue 17 #12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rsssl.cli import CONF_DIR
from rsssl.data.scene import DataError
from rsssl.eval.cls_data import synthetic_classification
from rsssl.eval.data import EvalDataset, EvalSplit, conform_to_encoder
from rsssl.eval.features import extract_features
from rsssl.eval.suite import Suite, encoder_candidate
from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.export import load_encoder, save_encoder
from rsssl.results.store import read_rows

pytestmark = pytest.mark.usefixtures("single_thread")

RGBN = ("red", "green", "blue", "nir")
BGRN = ("blue", "green", "red", "nir")


@pytest.fixture(scope="module")
def ordered() -> EvalDataset:
    """Synthetic uint16 tiles with bands red, green, blue, nir."""
    return synthetic_classification(size=128, num_classes=4, train_scenes=2, test_scenes=1)[0]


def permuted(data: EvalDataset, order: list[int], bands: tuple[str, ...], name: str) -> EvalDataset:
    def split(s: EvalSplit) -> EvalSplit:
        return EvalSplit(np.ascontiguousarray(s.images[:, order]), s.targets)

    return EvalDataset(name, data.task, bands, data.class_names, split(data.train), split(data.test))


def export(folder: Path, data: EvalDataset, bands=RGBN, **extra) -> Path:
    torch.manual_seed(0)
    means = data.train.images.mean(axis=(0, 2, 3), dtype=np.float64).tolist()
    meta = {"timm_name": "test_resnet", "in_chans": len(bands), "bands": list(bands), "mean": means}
    meta.update(std=[500.0] * len(bands), method="moco", data="synthetic", run_dir=str(folder), **extra)
    return save_encoder(create_backbone("test_resnet", len(bands)), folder, meta)


def test_other_band_order_is_reordered_to_the_encoders(ordered, tmp_path):
    weights = export(tmp_path / "enc", ordered)
    encoder, meta = load_encoder(weights)
    swapped = permuted(ordered, [2, 1, 0, 3], BGRN, "swapped")  # the same pixels stored B, G, R, N
    said: list[str] = []
    fixed = conform_to_encoder(swapped, meta, said.append)
    assert fixed.bands == RGBN and fixed.name == "swapped"
    np.testing.assert_array_equal(fixed.train.images, ordered.train.images)
    np.testing.assert_array_equal(fixed.test.images, ordered.test.images)
    features = extract_features(encoder, meta, fixed.test.images)
    torch.testing.assert_close(features, extract_features(encoder, meta, ordered.test.images), rtol=0, atol=0)
    assert said == [
        "evaluation set 'swapped': bands reordered from (blue, green, red, nir) to the encoder's order "
        "(red, green, blue, nir)"
    ]
    assert conform_to_encoder(ordered, meta, said.append) is ordered and len(said) == 1  # nothing to say


def test_suite_reorders_so_both_orders_score_the_same(ordered, tmp_path):
    weights = export(tmp_path / "enc", ordered)
    said: list[str] = []
    suite = Suite(
        tmp_path / "results.csv",
        classification={"protocols": ["knn"], "budgets": [1.0], "seeds": [0], "knn_k": 5},
        log=said.append,
    )
    swapped = permuted(ordered, [2, 1, 0, 3], BGRN, "swapped")
    suite.evaluate([encoder_candidate(weights)], [ordered, swapped])
    values = {(r.eval_data, r.metric): r.value for r in read_rows(tmp_path / "results.csv")}
    for metric in ("oa", "aa", "kappa", "f1_macro"):
        assert values["swapped", metric] == values["synthetic", metric]
    assert any("'swapped': bands reordered" in line for line in said)


def test_suite_refuses_other_bands_before_any_row(ordered, tmp_path):
    weights = export(tmp_path / "enc", ordered)
    other = permuted(ordered, [0, 1, 2, 3], ("red", "green", "blue", "swir16"), "other")
    suite = Suite(
        tmp_path / "results.csv", classification={"protocols": ["knn"], "budgets": [1.0], "seeds": [0]}
    )
    with pytest.raises(ConfigError, match="'other' lacks nir"):
        suite.evaluate([encoder_candidate(weights)], [ordered, other])
    assert not (tmp_path / "results.csv").exists() or not read_rows(tmp_path / "results.csv")


def test_generic_names_are_warned_once(ordered, tmp_path):
    meta = load_encoder(export(tmp_path / "enc", ordered))[1]
    unnamed = permuted(ordered, [0, 1, 2, 3], ("b1", "b2", "b3", "b4"), "unnamed")
    said: list[str] = []
    assert conform_to_encoder(unnamed, meta, said.append) is unnamed
    (line,) = said
    assert line.startswith("warning: evaluation set 'unnamed'") and "cannot be checked" in line


def test_pixel_scale_is_checked_against_the_encoder(ordered, tmp_path):
    # a uint16 encoder (red mean 748) on uint8 pixels of value 100: refused, or warned when allowed,
    # with both numbers
    meta = {"bands": ["red"], "mean": [748.0], "std": [300.0], "dtype": "uint16", "in_chans": 1}
    split = EvalSplit(np.full((4, 1, 8, 8), 100, dtype=np.uint8), np.array([0, 1, 0, 1]))
    data = EvalDataset("neon", "classification", ("red",), ("a", "b"), split, split)
    said: list[str] = []
    with pytest.raises(
        DataError,
        match=r"pixel scale of evaluation set 'neon': it has uint8 pixels, .* eval.allow_other_units=true",
    ):
        conform_to_encoder(data, meta, said.append)
    assert said == []
    conform_to_encoder(data, meta, said.append, allow_other_units=True)
    (line,) = said
    assert "of evaluation set 'neon': it has uint8 pixels, the encoder was pretrained on uint16" in line
    assert "0.13 times" in line and "red mean 100 here, 748 in pretraining" in line
    said.clear()
    means = ordered.train.images.mean(axis=(0, 2, 3)).tolist()
    conform_to_encoder(ordered, dict(meta, bands=list(RGBN), mean=means, in_chans=4), said.append)
    assert said == []  # same type, same means: nothing to say


# --- data.bands selects (and orders) bands of evaluation sets ---------------------------------


def test_synthetic_sets_select_bands(ordered):
    chosen = synthetic_classification(
        size=128, num_classes=4, train_scenes=2, test_scenes=1, bands=["nir", "red"]
    )[0]
    assert chosen.bands == ("nir", "red")
    np.testing.assert_array_equal(chosen.train.images, ordered.train.images[:, [3, 0]])
    np.testing.assert_array_equal(chosen.test.images, ordered.test.images[:, [3, 0]])
    assert ordered.select_bands(["B04"]).bands == ("red",)  # canonical names match
    with pytest.raises(
        DataError, match=r"'synthetic' has no band 'swir16'.*red, green, blue, nir.*data\.bands"
    ):
        ordered.select_bands(["red", "swir16"])


def eval_set_from_config(task: str, overrides: list[str]) -> EvalDataset:
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("evaluate", ["encoder=x", *overrides])
    built = instantiate(cfg.data.eval_sets[task])
    return built[0] if isinstance(built, list) else built  # the synthetic builders return one set per split


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_data_bands_reaches_the_synthetic_eval_sets(task):
    small = ["data.source.size=128", "data.source.num_scenes=2", "data.num_classes=4"]
    full = eval_set_from_config(task, small)
    chosen = eval_set_from_config(task, [*small, "data.bands=[nir,red]"])
    assert chosen.bands == ("nir", "red")
    np.testing.assert_array_equal(chosen.test.images, full.test.images[:, [3, 0]])


def test_data_bands_reaches_the_npz_segmentation_set(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "seg.npz"
    tiles = rng.integers(0, 255, (8, 3, 64, 64), dtype=np.uint8)
    np.savez(path, tiles=tiles, tile_masks=rng.integers(0, 2, (8, 64, 64), dtype=np.uint8))
    base = ["data=npz_segmentation", f"data.path={path}"]
    full = eval_set_from_config("segmentation", base)
    chosen = eval_set_from_config("segmentation", [*base, "data.bands=[b3,b1]"])
    assert full.bands == ("b1", "b2", "b3") and chosen.bands == ("b3", "b1")
    np.testing.assert_array_equal(chosen.train.images, full.train.images[:, [2, 0]])


def test_the_suite_refuses_a_set_in_other_units_before_measuring_anything(tmp_path):
    encoder = create_backbone("test_resnet", 1)
    save_encoder(encoder, tmp_path / "enc", {"timm_name": "test_resnet", "in_chans": 1, "bands": ["red"],
                 "mean": [748.0], "std": [300.0], "dtype": "uint16", "method": "moco"})  # fmt: skip
    split = EvalSplit(
        np.random.default_rng(0).integers(0, 255, (8, 1, 8, 8)).astype(np.uint8), np.arange(8) % 2
    )
    data = EvalDataset("neon", "classification", ("red",), ("a", "b"), split, split)
    knn = {"protocols": ["knn"], "budgets": [1], "seeds": [0], "knn_k": 1}
    candidate = encoder_candidate(tmp_path / "enc", tmp_path)
    with pytest.raises(DataError, match="uint8 pixels"):
        Suite(tmp_path / "results.csv", classification=knn, log=lambda _: None).evaluate([candidate], [data])
    assert read_rows(tmp_path / "results.csv") == []
    Suite(tmp_path / "results.csv", classification=knn, log=lambda _: None, allow_other_units=True).evaluate(
        [candidate], [data]
    )
    assert {r.protocol for r in read_rows(tmp_path / "results.csv")} == {"knn"}
