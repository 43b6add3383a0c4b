"""Segmentation protocol and segmentation evaluation sets (synthetic checks and the real dev files)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import timm
import torch

from rsssl.data.scene import DataError
from rsssl.data.synthetic import make_synthetic_scenes
from rsssl.eval.data import EvalDataset, EvalSplit
from rsssl.eval.seg_data import npz_segmentation, split_indices, synthetic_segmentation, tile_grid
from rsssl.eval.segmentation import (
    SegmentationNet,
    _dihedral,
    evaluate_segmentation,
    fresh_encoder,
    run_segmentation,
    train_segmentation,
)
from rsssl.models.backbones import ConfigError, create_backbone
from tests.eval.test_finetune import largest_move

pytestmark = pytest.mark.usefixtures("single_thread")

META = {
    "timm_name": "test_resnet",
    "in_chans": 2,
    "bands": ["a", "b"],
    "mean": [130.0, 130.0],
    "std": [80.0, 80.0],
}
ROW_KEYS = {"protocol", "budget", "seed", "metric", "value", "train_count"}


def blocks(n: int, seed: int, random_labels: bool = False, tile: int = 32, cell: int = 8) -> EvalSplit:
    """2-band tiles of 8 x 8 cells; the class of a cell is which band is bright (or random, unrelated)."""
    rng = np.random.default_rng(seed)

    def cells() -> np.ndarray:
        return rng.integers(0, 2, (n, tile // cell, tile // cell)).repeat(cell, 1).repeat(cell, 2)

    bright = cells()
    masks = cells() if random_labels else bright
    images = np.stack([np.where(bright == 0, 200, 30), np.where(bright == 1, 200, 30)], 1)
    return EvalSplit((images + rng.integers(0, 40, images.shape)).astype(np.uint8), masks.astype(np.uint8))


def block_set(train: int = 64, test: int = 32, random_labels: bool = False) -> EvalDataset:
    return EvalDataset(
        "blocks", "segmentation", ("a", "b"), ("c0", "c1"),
        blocks(train, 0, random_labels), blocks(test, 1, random_labels), ignore_index=255,
    )  # fmt: skip


def tiny_encoder() -> torch.nn.Module:
    return create_backbone("test_resnet", 2)


def by_metric(rows: list[dict]) -> dict[str, float]:
    return {r["metric"]: r["value"] for r in rows}


# ---- protocol ------------------------------------------------------------------------------


def test_frozen_tiny_encoder_segments_a_separable_set():
    rows = run_segmentation(
        tiny_encoder, META, block_set(), fractions=(1.0,), seeds=(0,), modes=("frozen",), steps=100
    )
    metrics = by_metric(rows)
    assert metrics["miou"] > 0.9 and metrics["oa"] > 0.95 and metrics["kappa"] > 0.9
    assert min(metrics["iou_c0"], metrics["iou_c1"]) > 0.9


def test_random_labels_stay_at_chance():
    data = block_set(test=64, random_labels=True)
    rows = run_segmentation(
        tiny_encoder, META, data, fractions=(1.0,), seeds=(0,), modes=("frozen",), steps=60
    )
    metrics = by_metric(rows)
    assert abs(metrics["kappa"]) < 0.15 and metrics["oa"] < 0.6 and metrics["miou"] < 0.45


def test_frozen_keeps_the_encoder_bit_identical_and_finetune_changes_it():
    data = block_set(train=8)
    for frozen in (True, False):
        torch.manual_seed(0)
        net = SegmentationNet(tiny_encoder(), 2, frozen=frozen)
        before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
        decoder_before = net.classifier.weight.clone()
        train_segmentation(net, data.train, META, steps=3, batch_size=4)
        after = net.encoder.state_dict()
        same = [torch.equal(before[k], after[k]) for k in before]
        assert not torch.equal(decoder_before, net.classifier.weight)
        if frozen:
            assert all(same), "frozen mode changed encoder weights or BN statistics"
            assert not net.encoder.training and not any(p.requires_grad for p in net.encoder.parameters())
        else:
            assert not any(same[k] for k, name in enumerate(before) if name.endswith(".weight"))


def test_fractions_pick_tiles_and_rows_are_documented():
    data = block_set(train=40, test=4)
    rows = run_segmentation(tiny_encoder, META, data, fractions=(0.01, 0.1, 1.0), seeds=(0, 1), steps=2)
    assert all(set(r) == ROW_KEYS for r in rows)
    assert all(isinstance(r["value"], float) and isinstance(r["train_count"], int) for r in rows)
    assert len(rows) == 2 * 3 * 2 * 5  # modes x fractions x seeds x (oa, miou, kappa, 2 IoUs)
    assert {r["metric"] for r in rows} == {"oa", "miou", "kappa", "iou_c0", "iou_c1"}
    assert {r["protocol"] for r in rows} == {"segmentation_frozen", "segmentation_finetune"}
    counts = {(r["budget"], r["train_count"]) for r in rows}
    assert counts == {("1%", 1), ("10%", 4), ("100%", 40)}


def test_same_seed_same_rows_and_seeds_differ():
    def run(seed: int) -> list[dict]:
        data = block_set(train=16, test=4)
        return run_segmentation(
            tiny_encoder, META, data, fractions=(0.5,), seeds=(seed,), modes=("finetune",), steps=4
        )

    assert run(0) == run(0)
    assert by_metric(run(0))["oa"] != by_metric(run(1))["oa"]


def test_bad_arguments_are_named():
    data = block_set(train=4, test=2)
    with pytest.raises(ConfigError, match="fractions"):
        run_segmentation(tiny_encoder, META, data, fractions=(1,), steps=1)
    with pytest.raises(ConfigError, match="modes"):
        run_segmentation(tiny_encoder, META, data, modes=("linear",), steps=1)
    with pytest.raises(ConfigError, match="bands"):
        run_segmentation(tiny_encoder, dict(META, in_chans=3), data, steps=1)


def test_augmentation_moves_image_and_mask_together():
    images = torch.randint(0, 255, (64, 2, 8, 8), dtype=torch.uint8)
    masks = (images[:, 0] > 127).to(torch.uint8)
    out_images, out_masks = _dihedral(images, masks, torch.Generator().manual_seed(0))
    assert torch.equal(out_masks, (out_images[:, 0] > 127).to(torch.uint8))
    changed = (out_images != images).flatten(1).any(1)
    assert 0.7 < changed.float().mean() < 1.0  # 7 of the 8 symmetries move pixels


def test_decoder_fits_cnns_and_vits_at_the_input_size():
    for name, kwargs in (("test_convnext", {}), ("test_efficientnet", {}), ("test_vit", {"img_size": 32})):
        net = SegmentationNet(create_backbone(name, 2, **kwargs), 3).eval()
        assert net(torch.randn(2, 2, 32, 32)).shape == (2, 3, 32, 32), name


def test_encoder_features_equal_timm_features_only():
    encoder = tiny_encoder().eval()
    reference = timm.create_model("test_resnet", features_only=True, in_chans=2).eval()
    reference.load_state_dict(encoder.state_dict(), strict=False)
    net = SegmentationNet(encoder, 2)
    x = torch.randn(2, 2, 32, 32)
    ours = encoder.forward_intermediates(x, indices=net.indices, intermediates_only=True)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference(x)[1:]))


def test_state_dict_factory_loads_every_key_or_names_the_missing_one():
    state = tiny_encoder().state_dict()
    loaded = fresh_encoder(lambda: state, META).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    del state["layer1.0.conv1.weight"]
    with pytest.raises(ConfigError, match="missing 1 keys"):
        fresh_encoder(lambda: state, META)


def test_evaluation_skips_ignored_pixels():
    data = block_set(train=4, test=4)
    net = SegmentationNet(tiny_encoder(), 2)
    with torch.no_grad():  # a decoder that predicts class 1 at every pixel
        net.classifier.weight.zero_()
        net.classifier.bias.copy_(torch.tensor([0.0, 1.0]))
    test = EvalSplit(data.test.images, np.full_like(data.test.targets, 255))
    test.targets[:, 0, 0] = 1
    test.targets[0, 0, 0] = 0
    metrics = evaluate_segmentation(net, test, META, 2, ignore_index=255)
    # Only the 4 labelled pixels count: 3 of class 1 right, 1 of class 0 predicted as 1.
    # IoU c0 = 0 / 1, IoU c1 = 3 / 4; kappa: p_o = 3/4 = p_e = (1 * 0 + 3 * 4) / 16.
    assert metrics["oa"] == 0.75 and metrics["per_class_iou"] == [0.0, 0.75]
    assert metrics["miou"] == 0.375 and metrics["kappa"] == 0.0


# ---- evaluation sets -----------------------------------------------------------------------


def test_synthetic_segmentation_tiles_scenes():
    data = synthetic_segmentation(
        num_bands=3, num_classes=4, tile_size=32, train_scenes=2, test_scenes=1, size=64
    )[0]
    assert data.train.images.shape == (8, 3, 32, 32) and data.test.images.shape == (4, 3, 32, 32)
    assert data.train.targets.shape == (8, 32, 32) and data.train.targets.max() < 4
    assert data.num_classes == 4 and len(data.bands) == 3
    assert not np.array_equal(data.train.images[:4], data.test.images)


def test_synthetic_segmentation_shift_splits():
    settings = dict(num_bands=3, num_classes=4, num_regions=2, size=64)
    standard, region, date = synthetic_segmentation(
        **settings, tile_size=32, train_scenes=2, test_scenes=1, splits=["standard", "region", "date"]
    )
    assert (standard.name, region.name, date.name) == (
        "synthetic_segmentation_3b_4c",
        "synthetic_segmentation_3b_4c@region",
        "synthetic_segmentation_3b_4c@date",
    )
    train = make_synthetic_scenes(num_scenes=2, seed=0, **settings)  # regions 0 and 1
    held_out = make_synthetic_scenes(num_scenes=1, seed=1, regions=[1], **settings)[0]
    test = make_synthetic_scenes(num_scenes=1, seed=1, **settings)[0]

    def grid(scene, date: int = 0) -> np.ndarray:
        return tile_grid(scene.images[date], scene.mask, 32)[0]

    np.testing.assert_array_equal(region.train.images, grid(train[0]))  # region 1's scene left out
    np.testing.assert_array_equal(region.test.images, grid(held_out))
    np.testing.assert_array_equal(standard.test.images, grid(test))
    np.testing.assert_array_equal(date.test.images, grid(test, 1))
    np.testing.assert_array_equal(date.test.targets, standard.test.targets)  # same ground, other season
    assert not np.array_equal(date.test.images, standard.test.images)


def test_tile_grid_is_row_major_and_aligned():
    image = np.arange(2 * 7 * 9).reshape(2, 7, 9)
    tiles, masks = tile_grid(image, image[0], 3)
    assert tiles.shape == (6, 2, 3, 3) and masks.shape == (6, 3, 3)
    assert np.array_equal(tiles[4], image[:, 3:6, 3:6]) and np.array_equal(masks[5], image[0, 3:6, 6:9])


def test_split_keeps_groups_apart_and_splits_tiles_otherwise():
    groups = np.array(["a"] * 25 + ["b"] * 4 + ["c"] * 4)
    for seed in range(5):
        train, test = split_indices(33, groups, 0.25, seed)
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == 33 and len(test) == 8
    train, test = split_indices(40, None, 0.25, 0)
    assert len(test) == 10 and not set(train) & set(test)


def digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_deepforest_split_keeps_source_images_apart(data_dir):
    path = data_dir / "deepforest_treecrowns_dev.npz"
    data = npz_segmentation(path)
    with np.load(path) as archive:
        tiles, sources = archive["tiles"], archive["tile_source"]
    source_of = {digest(tile.transpose(2, 0, 1)): source for tile, source in zip(tiles, sources)}
    train = {source_of[digest(tile)] for tile in data.train.images}
    test = {source_of[digest(tile)] for tile in data.test.images}
    assert train and test and not train & test
    assert len(data.train) + len(data.test) == len(tiles)
    assert data.train.images.shape[1:] == (3, 256, 256) and data.train.targets.shape[1:] == (256, 256)
    assert data.class_names == ("background", "tree_crown_box") and data.task == "segmentation"


@pytest.mark.parametrize("tile_size", [128, 100])
def test_spacenet_tiles_are_aligned_with_the_footprints(data_dir, tile_size):
    path = data_dir / "spacenet_buildings_solaris_dev.npz"
    data = npz_segmentation(path, tile_size=tile_size)
    with np.load(path) as archive:
        image, footprints = archive["image"], archive["footprint_mask"]
    t = tile_size
    cols = 900 // t
    assert len(data.train) + len(data.test) == cols**2
    assert data.bands == ("pan",) and data.class_names == ("background", "building")
    position = {digest(tile): i for i, tile in enumerate(tile_grid(image[None], footprints, tile_size)[0])}
    checked = 0
    for split in (data.train, data.test):
        for tile, mask in zip(split.images, split.targets):
            row, col = divmod(position[digest(tile)], cols)
            window = footprints[row * t : (row + 1) * t, col * t : (col + 1) * t]
            assert np.array_equal(mask, window)
            checked += int(window.sum())
    assert checked > 0  # footprint pixels were compared, not only background


def save(tmp_path, **arrays) -> str:
    path = tmp_path / "seg.npz"
    np.savez(path, **arrays)
    return path


def test_npz_errors_name_the_problem(tmp_path):
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(DataError, match=r"keys found: \['pixels'\]"):
        npz_segmentation(save(tmp_path, pixels=image))
    with pytest.raises(DataError, match="no mask key.*keys found"):
        npz_segmentation(save(tmp_path, image=image))
    with pytest.raises(DataError, match="shape \\(64, 60\\).*64 x 64"):
        npz_segmentation(save(tmp_path, image=image, mask=np.zeros((64, 60), np.uint8)))
    with pytest.raises(DataError, match="tile_size=128 does not fit"):
        npz_segmentation(save(tmp_path, image=image, mask=np.zeros((64, 64), np.uint8)))
    tiles = np.zeros((4, 64, 64, 3), np.uint8)
    with pytest.raises(DataError, match="no 'tile_masks'"):
        npz_segmentation(save(tmp_path, tiles=tiles))
    with pytest.raises(DataError, match="'tile_masks' has shape"):
        npz_segmentation(save(tmp_path, tiles=tiles, tile_masks=np.zeros((4, 16, 16), np.uint8)))
    with pytest.raises(DataError, match="class id 2"):
        masks = np.full((4, 64, 64), 2, np.uint8)
        npz_segmentation(save(tmp_path, tiles=tiles, tile_masks=masks, class_names=np.array(["a", "b"])))


def test_npz_image_with_named_mask_key(tmp_path):
    image = np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64)
    labels = (np.arange(64 * 64).reshape(64, 64) % 3).astype(np.uint8)
    data = npz_segmentation(save(tmp_path, image=image, lc=labels), tile_size=32, mask_key="lc", name="x")
    assert data.name == "x" and data.class_names == ("class_0", "class_1", "class_2")
    assert len(data.train) == 3 and len(data.test) == 1 and data.train.images.dtype == np.uint16


def test_pre_cut_tiles_can_be_recut_smaller(data_dir):
    whole = npz_segmentation(data_dir / "deepforest_treecrowns_dev.npz")
    quarters = npz_segmentation(data_dir / "deepforest_treecrowns_dev.npz", tile_size=128)
    assert len(quarters.train) == 4 * len(whole.train) and len(quarters.test) == 4 * len(whole.test)
    np.testing.assert_array_equal(quarters.train.images[1], whole.train.images[0][:, :128, 128:])
    np.testing.assert_array_equal(quarters.train.targets[2], whole.train.targets[0][128:, :128])
    with pytest.raises(DataError, match="must divide"):
        npz_segmentation(data_dir / "deepforest_treecrowns_dev.npz", tile_size=100)


@pytest.mark.parametrize("factor", [0.1, 1.0])
def test_one_fine_tuning_step_moves_the_encoder_by_its_learning_rate(factor):
    """AdamW's first step moves a weight by lr * g / (|g| + eps), i.e. by lr wherever it has a
    gradient (weight decay 0; the cosine starts at 1): the encoder's largest move is lr * factor."""
    torch.manual_seed(0)
    net = SegmentationNet(tiny_encoder(), 2)
    before = {name: p.detach().clone() for name, p in net.encoder.named_parameters()}
    train_segmentation(
        net, block_set(train=8).train, META, steps=1, batch_size=4, lr=1e-2, weight_decay=0.0,
        encoder_lr_factor=factor,
    )  # fmt: skip
    assert largest_move(before, net.encoder) == pytest.approx(1e-2 * factor, rel=1e-4)
