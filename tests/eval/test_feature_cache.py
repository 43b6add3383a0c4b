"""The feature cache is keyed by content: encoder weights, architecture, normalisation, the
set's pixels and the extraction, never by names (issue 8 #7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rsssl.eval import features
from rsssl.eval.cls_data import synthetic_classification
from rsssl.eval.features import array_digest, cached_features, set_digests
from rsssl.eval.suite import baseline_candidates, encoder_candidate
from rsssl.models.backbones import create_backbone
from rsssl.models.export import save_encoder
from tests.helpers.encoders import TINY_META

pytestmark = pytest.mark.usefixtures("single_thread")

META = TINY_META


def _set(seed: int):
    return synthetic_classification(
        num_bands=3, num_classes=2, train_scenes=1, test_scenes=1, size=64, seed=seed
    )[0]


@pytest.fixture(autouse=True)
def empty_memory_cache():
    features._MEMORY.clear()
    yield
    features._MEMORY.clear()


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_two_sets_of_one_name_and_shape_get_their_own_features(cache, tmp_path):
    set_a, set_b = _set(0), _set(1)
    assert set_a.name == set_b.name and set_a.train.images.shape == set_b.train.images.shape
    assert not np.array_equal(set_a.train.images, set_b.train.images)
    cache_dir = str(tmp_path) if cache == "disk" else None
    for candidate in baseline_candidates(META):
        a = candidate.features(set_a, "train", "cpu", cache_dir)
        if cache == "disk":
            features._MEMORY.clear()  # only the disk cache can answer now
        b = candidate.features(set_b, "train", "cpu", cache_dir)
        features._MEMORY.clear()
        fresh_b = candidate.features(set_b, "train", "cpu", None)
        assert torch.equal(b, fresh_b), candidate.method
        assert not torch.equal(a, b), candidate.method


def _export(folder, seed: int, mean: float = 1000.0):
    torch.manual_seed(seed)
    meta = dict(META, mean=[mean] * 3, method="moco", run_id="moco_x/1")  # one run id for all
    return save_encoder(create_backbone("test_resnet", 3), folder, meta)


def test_other_weights_or_normalisation_under_one_run_id_get_their_own_features(tmp_path):
    dataset = _set(0)
    first = encoder_candidate(_export(tmp_path / "a", seed=0))
    retrained = encoder_candidate(_export(tmp_path / "b", seed=1))
    renormalised = encoder_candidate(_export(tmp_path / "c", seed=0, mean=0.0))
    assert first.run_id == retrained.run_id == renormalised.run_id == "moco_x/1"
    got = [
        c.features(dataset, "train", "cpu", str(tmp_path / "cache")) for c in (first, retrained, renormalised)
    ]
    assert not torch.equal(got[0], got[1]) and not torch.equal(got[0], got[2])
    features._MEMORY.clear()
    again = encoder_candidate(_export(tmp_path / "d", seed=0))  # the same weights exported again
    assert torch.equal(again.features(dataset, "train", "cpu", None), got[0])


def test_the_same_content_under_another_name_is_a_cache_hit(tmp_path):
    dataset, renamed = _set(0), _set(0)
    renamed.name = "another_name"
    (random_init, image_stats) = baseline_candidates(META, supervised=False)
    for candidate in (random_init, image_stats):
        first = candidate.features(dataset, "train", "cpu", None)
        key = candidate.features_key(set_digests(renamed)["train"], "cpu")
        assert torch.equal(cached_features(key, lambda: pytest.fail("recomputed"), None), first)


def test_disk_entries_are_named_by_content_and_read_back(tmp_path):
    dataset = _set(0)
    (random_init, _) = baseline_candidates(META, supervised=False)
    first = random_init.features(dataset, "test", "cpu", str(tmp_path))
    key = random_init.features_key(set_digests(dataset)["test"], "cpu")
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.safetensors"]  # no name, no temporary left
    features._MEMORY.clear()
    assert torch.equal(cached_features(key, lambda: pytest.fail("recomputed"), str(tmp_path)), first)


def test_array_digest_covers_bytes_shape_and_dtype():
    pixels = np.arange(24, dtype=np.uint16).reshape(2, 3, 2, 2)
    assert array_digest(pixels) == array_digest(pixels.copy())
    changed = pixels.copy()
    changed[1, 2, 1, 1] += 1
    assert array_digest(changed) != array_digest(pixels)
    assert array_digest(pixels.reshape(3, 2, 2, 2)) != array_digest(pixels)
    assert array_digest(pixels.view(np.int16)) != array_digest(pixels)
    assert array_digest(pixels[:, ::-1]) == array_digest(np.ascontiguousarray(pixels[:, ::-1]))
