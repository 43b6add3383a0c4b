"""Pretraining on a labelled segmentation file never reads the evaluation's test tiles: their
windows by hand, the pixels marked as no data, whole test images dropped, the switch off."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.pretrain import build_datamodule
from rsssl.cli.run_names import register_resolvers
from rsssl.data.sources import NpzSource
from rsssl.eval.seg_data import evaluation_test_windows, npz_segmentation, split_indices


def one_image_file(tmp_path) -> str:
    """A 64 x 64 RGB image whose pixel (r, c) is r * 64 + c (mod 256) in every band, with a mask."""
    rows, cols = np.mgrid[0:64, 0:64]
    image = np.stack([(rows * 64 + cols) % 256] * 3).astype(np.uint8)
    path = tmp_path / "one.npz"
    np.savez(path, image=image, mask=(rows > 31).astype(np.uint8))
    return str(path)


def test_windows_of_one_image_are_its_test_tiles_by_hand(tmp_path):
    path = one_image_file(tmp_path)
    _, test = split_indices(16, None, 0.25, 0)  # a 4 x 4 grid of 16 px tiles
    expected = [[int(i // 4) * 16, int(i % 4) * 16, 16, 16] for i in test]
    assert evaluation_test_windows(path, tile_size=16) == {"image": expected} and len(expected) == 4
    evaluation = npz_segmentation(path, tile_size=16)
    for row, col, _, _ in expected:  # each window holds one of the evaluation's test tiles, pixel for pixel
        tile = np.stack(
            [
                (
                    (np.mgrid[row : row + 16, col : col + 16][0]) * 64
                    + np.mgrid[row : row + 16, col : col + 16][1]
                )
                % 256
            ]
            * 3
        )
        assert any(np.array_equal(tile, t) for t in evaluation.test.images)
    assert evaluation_test_windows(path, tile_size=16, enabled=False) == {}


def test_the_source_marks_them_as_no_data_and_tiles_avoid_them(tmp_path):
    path = one_image_file(tmp_path)
    windows = evaluation_test_windows(path, tile_size=16)
    (scene,) = NpzSource(path, leave_out=windows).load()
    hidden = np.zeros((64, 64), bool)
    for row, col, height, width in windows["image"]:
        hidden[row : row + height, col : col + width] = True
    assert np.array_equal(scene.valid, ~hidden)
    assert scene.valid.sum() == 64 * 64 - 4 * 16 * 16


def config(path: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("pretrain", ["data=npz_segmentation", f"data.path={path}", *overrides])


def test_pretraining_tiles_never_overlap_a_test_tile(tmp_path):
    path = one_image_file(tmp_path)
    dm = build_datamodule(
        config(path, "data.eval_tile_size=16", "data.tile_size=8", f"data.stats_cache_dir={tmp_path}").data
    )
    dm.prepare()
    hidden = np.zeros((64, 64), bool)
    for row, col, height, width in evaluation_test_windows(path, tile_size=16)["image"]:
        hidden[row : row + height, col : col + width] = True
    index = dm.train_index
    for row, col in zip(index.row, index.col, strict=True):
        assert hidden[row : row + 8, col : col + 8].mean() <= 0.1  # min_valid 0.9
    assert len(index) == 64 - 4 * 4  # every 8 px tile outside the four test tiles


def test_test_images_of_the_tree_crowns_are_left_out_whole(data_dir, tmp_path):
    path = str(data_dir / "deepforest_treecrowns_dev.npz")
    with np.load(path) as archive:
        sources = archive["tile_source"]
    _, test = split_indices(len(sources), sources, 0.25, 0)
    test_images = {f"image_{s}" for s in sources[test]}
    dm = build_datamodule(config(path, f"data.stats_cache_dir={tmp_path}").data)
    dm.prepare()
    kept = {s.name for s in dm.train_scenes}
    assert kept and not kept & test_images and len(kept | test_images) == 3
    everything = build_datamodule(
        config(path, "data.leave_out_test=false", f"data.stats_cache_dir={tmp_path}").data
    )
    everything.prepare()
    assert {s.name for s in everything.train_scenes} == kept | test_images


def test_a_file_all_of_whose_images_are_test_is_refused(tmp_path):
    path = one_image_file(tmp_path)
    with pytest.raises(Exception, match="every scene lies in the evaluation's test split"):
        NpzSource(path, leave_out={"image": [[0, 0, 64, 64]]}).load()
