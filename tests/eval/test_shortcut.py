"""The acquisition-shortcut probe tells features of the land cover from features of the acquisition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rsssl.data.scene import ArrayScene, DataError
from rsssl.data.synthetic import make_synthetic_scenes
from rsssl.eval.shortcut import acquisition_tiles, main, probe_table, shortcut_probe
from rsssl.models.backbones import create_backbone
from rsssl.models.export import save_encoder


def small_scenes(bands: int = 4) -> list[ArrayScene]:
    return make_synthetic_scenes(num_scenes=4, size=128, num_bands=bands, num_classes=4, num_dates=2, seed=5)


def test_tiles_carry_their_class_scene_and_acquisition():
    scenes = small_scenes()
    images, classes, scene_ids, acquisitions = acquisition_tiles(scenes, 32)
    assert images.shape == (4 * 2 * 16, 4, 32, 32) and images.dtype == np.uint16
    assert acquisitions.unique().tolist() == list(range(8))  # scene x date
    i = 16 * 2 * 3 + 16 + 5  # scene 3, date 1, tile 5 of its 4 x 4 grid
    row, col = 32 * (5 // 4), 32 * (5 % 4)
    np.testing.assert_array_equal(images[i], scenes[3].images[1, :, row : row + 32, col : col + 32])
    mask = scenes[3].mask[row : row + 32, col : col + 32]
    assert classes[i] == np.bincount(mask.ravel()).argmax() and scene_ids[i] == 3 and acquisitions[i] == 7


def test_probe_tells_cover_features_from_acquisition_features():
    _, classes, scene_ids, acquisitions = acquisition_tiles(small_scenes(), 32)
    noise = 0.05 * torch.randn(len(classes), 16, generator=torch.Generator().manual_seed(0))
    cover = F.one_hot(classes, 16).float() + noise
    look = F.one_hot(acquisitions, 16).float() + noise
    by_cover = shortcut_probe(cover, classes, scene_ids, acquisitions)
    by_look = shortcut_probe(look, classes, scene_ids, acquisitions)
    assert by_cover["cover_same_scenes"] == by_cover["cover_other_scenes"] == 1.0
    assert by_look["acquisition"] == 1.0
    assert by_cover["acquisition"] < 0.5 and by_look["cover_other_scenes"] < 0.8


def test_table_for_an_exported_encoder(tmp_path):
    meta = {"timm_name": "test_resnet", "in_chans": 3, "bands": ["red", "green", "blue"], "tile_size": 32}
    meta |= {"mean": [900.0] * 3, "std": [600.0] * 3, "method": "moco"}
    path = save_encoder(create_backbone("test_resnet", in_chans=3), tmp_path, meta)
    table = probe_table({"mine": str(path)}, small_scenes).splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == ["mine", "random_init"]
    values = [float(v) for line in table[2:] for v in line.strip("| ").split("|")[1:]]
    assert len(values) == 6 and all(0.0 <= v <= 1.0 for v in values)


def test_unlabelled_scenes_are_refused():
    scene = ArrayScene("bare", np.zeros((1, 3, 64, 64), np.uint16))
    with pytest.raises(DataError, match="'bare' has no class mask"):
        acquisition_tiles([scene], 32)


@pytest.mark.parametrize("argv", [[], ["no-equals-sign"]])
def test_usage_is_explained(argv):
    with pytest.raises(SystemExit, match="usage: python -m rsssl.eval.shortcut NAME=ENCODER"):
        main(argv)
