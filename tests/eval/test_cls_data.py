"""Classification evaluation sets (synthetic, image folders, torchgeo) and the image-statistics baseline."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.enums import ColorInterp

from rsssl.data.scene import DataError
from rsssl.data.sources import SyntheticSource
from rsssl.data.synthetic import make_synthetic_scenes
from rsssl.eval.cls_data import (
    SYNTHETIC_TEST_SEED_OFFSET,
    image_folder,
    synthetic_classification,
    torchgeo_classification,
)
from rsssl.eval.image_stats import image_statistics_features

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

# --- synthetic --------------------------------------------------------------------------------


def _tiles(scenes, size: int = 32, date: int = 0) -> np.ndarray:
    """Every grid tile (at `date`) of the scenes, by plain slicing: the reference cut."""
    return np.stack(
        [
            s.images[date][:, r : r + size, c : c + size]
            for s in scenes
            for r in range(0, s.height, size)
            for c in range(0, s.width, size)
        ]
    )


def test_synthetic_classification_matches_pretraining_scenes_and_tests_on_unseen_ones():
    data = synthetic_classification(size=128, num_classes=4, train_scenes=2, test_scenes=1)[0]
    assert data.task == "classification" and data.bands == ("red", "green", "blue", "nir")
    assert data.train.images.shape == (32, 4, 32, 32) and data.test.images.shape == (16, 4, 32, 32)
    assert data.train.images.dtype == np.uint16
    assert data.train.targets.dtype == np.int64 and data.train.targets.max() < data.num_classes == 4

    source = SyntheticSource(num_scenes=2, size=128, val_scenes=1, num_classes=4)
    pretrain = source.load()
    np.testing.assert_array_equal(data.train.images, _tiles(pretrain))  # the pretraining scenes
    mask_tiles = _tiles(
        [type("S", (), {"images": s.mask[None, None], "height": 128, "width": 128}) for s in pretrain]
    )
    majority = [np.bincount(m.ravel()).argmax() for m in mask_tiles[:, 0]]
    np.testing.assert_array_equal(data.train.targets, majority)

    seen = np.concatenate([_tiles(pretrain), _tiles(source.validation().load())])
    assert not (data.test.images[:, None] == seen[None]).all(axis=(2, 3, 4)).any()  # no test tile was seen
    assert SYNTHETIC_TEST_SEED_OFFSET != 100_003


def test_shift_splits_hold_out_a_region_and_a_season():
    settings = dict(size=128, num_classes=4, num_regions=2)
    standard, region, date = synthetic_classification(
        **settings, train_scenes=4, test_scenes=2, splits=["standard", "region", "date"]
    )
    assert (standard.name, region.name, date.name) == ("synthetic", "synthetic@region", "synthetic@date")
    pretrain = make_synthetic_scenes(num_scenes=4, **settings)  # regions 0, 1, 0, 1
    test_seed = SYNTHETIC_TEST_SEED_OFFSET
    # region: train on the scenes of region 0 only, test on new scenes of region 1 only
    np.testing.assert_array_equal(region.train.images, _tiles([pretrain[0], pretrain[2]]))
    held_out = make_synthetic_scenes(num_scenes=2, seed=test_seed, regions=[1], **settings)
    np.testing.assert_array_equal(region.test.images, _tiles(held_out))
    # date: the standard train tiles (summer), tested on the same test scenes in winter (date 1 of 3)
    everywhere = make_synthetic_scenes(num_scenes=2, seed=test_seed, **settings)
    np.testing.assert_array_equal(standard.train.images, _tiles(pretrain))
    np.testing.assert_array_equal(standard.test.images, _tiles(everywhere))
    np.testing.assert_array_equal(date.train.images, standard.train.images)
    np.testing.assert_array_equal(date.test.images, _tiles(everywhere, date=1))
    for dataset in (standard, region, date):  # no tile in both train and test
        assert not (dataset.test.images[:, None] == dataset.train.images[None]).all(axis=(2, 3, 4)).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splits": ["season"]}, r"unknown split \['season'\]"),
        ({"splits": []}, "splits is empty"),
        ({"splits": ["region"], "num_regions": 1}, "region split needs num_regions >= 2"),
        ({"splits": ["date"], "num_dates": 1}, "date split needs num_dates >= 2"),
    ],
)
def test_impossible_splits_are_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        synthetic_classification(size=64, num_classes=2, train_scenes=1, test_scenes=1, **kwargs)


# --- image folders ----------------------------------------------------------------------------


def _png_folder(root: Path) -> None:
    """3 classes x 5 RGB PNGs, each a constant 10 * class + i; one 10x10 among the 8x8 ones."""
    for k, name in enumerate(["water", "forest", "city"]):
        (root / name).mkdir(parents=True)
        for i in range(5):
            side = 10 if (k, i) == (1, 2) else 8
            Image.fromarray(np.full((side, side, 3), 10 * k + i, np.uint8)).save(root / name / f"{i}.png")


def _write_tif(path: Path, pixels: np.ndarray) -> None:
    with rasterio.open(
        path, "w", driver="GTiff", width=pixels.shape[2], height=pixels.shape[1], count=pixels.shape[0],
        dtype=pixels.dtype,
    ) as dst:  # fmt: skip
        dst.write(pixels)


def test_image_folder_reads_pngs_resizes_and_splits_stratified(tmp_path, caplog):
    _png_folder(tmp_path)
    with caplog.at_level(logging.WARNING):
        data = image_folder(tmp_path, test_fraction=0.2, seed=3)
    assert "most common size" in caplog.text
    assert data.class_names == ("city", "forest", "water")  # sorted folder names
    assert data.bands == ("red", "green", "blue")
    assert data.train.images.shape == (12, 3, 8, 8) and data.test.images.shape == (3, 3, 8, 8)
    assert data.train.images.dtype == np.uint8
    assert np.bincount(data.test.targets).tolist() == [1, 1, 1]
    for split in (data.train, data.test):  # every image constant, its value naming its class
        values = split.images.reshape(len(split), -1)
        assert (values == values[:, :1]).all()
        written_class = values[:, 0] // 10  # 0 water, 1 forest, 2 city
        np.testing.assert_array_equal(split.targets, 2 - written_class)
    again = image_folder(tmp_path, test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(again.test.images, data.test.images)
    assert image_folder(tmp_path, image_size=4).train.images.shape[2:] == (4, 4)


def test_image_folder_reads_five_band_uint16_geotiffs(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for name in ("crop", "urban"):
        (tmp_path / name).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 60000, (5, 6, 6), dtype=np.uint16)
            _write_tif(tmp_path / name / f"{i}.tif", pixels)
            written[pixels.tobytes()] = name
    data = image_folder(tmp_path, test_fraction=0.25, band_names=["b", "g", "r", "nir", "swir"])
    assert data.bands == ("b", "g", "r", "nir", "swir")
    assert data.train.images.dtype == np.uint16 and data.train.images.shape == (6, 5, 6, 6)
    for split in (data.train, data.test):
        for image, label in zip(split.images, split.targets):
            assert written[image.tobytes()] == data.class_names[label]
    assert image_folder(tmp_path).bands == ("b1", "b2", "b3", "b4", "b5")
    chosen = image_folder(
        tmp_path, test_fraction=0.25, band_names=["b", "g", "r", "nir", "swir"], bands=["nir", "b"]
    )
    assert chosen.bands == ("nir", "b")  # data.bands selects (and orders) bands of evaluation sets
    np.testing.assert_array_equal(chosen.train.images, data.train.images[:, [3, 0]])
    np.testing.assert_array_equal(chosen.test.images, data.test.images[:, [3, 0]])


def test_image_folder_drops_the_alpha_of_pngs(tmp_path):
    """RGBA and LA PNGs are RGB and gray sets: alpha is dropped, and the colour under alpha 0 is read
    as stored (a classification image has no invalid pixels)."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    rgba[..., 3] = 255
    rgba[0, :, 3] = 0  # a transparent top row: its colour is read all the same
    for name in ("a", "b"):
        (tmp_path / "rgb" / name).mkdir(parents=True)
        Image.fromarray(rgba, "RGBA").save(tmp_path / "rgb" / name / "0.png")
        Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "rgb" / name / "1.png")  # RGB beside RGBA
        (tmp_path / "gray" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "gray" / name / f"{i}.png")
    data = image_folder(tmp_path / "rgb", test_fraction=0.5)
    assert data.bands == ("red", "green", "blue")
    images = np.concatenate([data.train.images, data.test.images])
    np.testing.assert_array_equal(images, np.broadcast_to(rgba[..., :3].transpose(2, 0, 1), (4, 3, 4, 4)))
    gray = image_folder(tmp_path / "gray", test_fraction=0.5)
    assert gray.bands == ("b1",)
    np.testing.assert_array_equal(gray.train.images, np.broadcast_to(rgba[..., 0], (2, 1, 4, 4)))


def test_image_folder_drops_the_alpha_bands_of_tifs(tmp_path):
    pixels = np.arange(4 * 3 * 5, dtype=np.uint16).reshape(4, 3, 5)
    pixels[3] = [0, 65535, 1, 0, 7]  # alpha: 0 in two columns, where the bands are read as stored
    for path in (tmp_path / name / f"{i}.tif" for name in ("a", "b") for i in range(2)):
        path.parent.mkdir(exist_ok=True)
        _write_tif(path, pixels)
        with rasterio.open(path, "r+") as ds:
            ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
            ds.descriptions = ("red", "green", "blue", "alpha")
    data = image_folder(tmp_path, test_fraction=0.5)
    assert data.bands == ("red", "green", "blue")
    for split in (data.train, data.test):
        np.testing.assert_array_equal(split.images, np.broadcast_to(pixels[:3], (2, 3, 3, 5)))
    only_alpha = tmp_path / "a" / "alpha.tif"
    _write_tif(only_alpha, pixels[3:])
    with rasterio.open(only_alpha, "r+") as ds:
        ds.colorinterp = [ColorInterp.alpha]
    with pytest.raises(DataError, match=f"^{only_alpha}: every band is an alpha band, so it holds no data"):
        image_folder(tmp_path)


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "loose.png").write_bytes(b"")
    with pytest.raises(DataError, match="no class sub-folders"):
        image_folder(tmp_path)

    _png_folder(tmp_path / "a")
    (tmp_path / "a" / "empty").mkdir()
    with pytest.raises(DataError, match=r"a/empty holds no image"):
        image_folder(tmp_path / "a")
    (tmp_path / "a" / "empty" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot decode .*empty/broken\.png.*truncated or corrupt"):
        image_folder(tmp_path / "a")

    (tmp_path / "b" / "one").mkdir(parents=True)
    (tmp_path / "b" / "two").mkdir()
    _write_tif(tmp_path / "b" / "one" / "x.tif", np.zeros((3, 4, 4), np.uint16))
    _write_tif(tmp_path / "b" / "two" / "y.tif", np.zeros((5, 4, 4), np.uint16))
    with pytest.raises(DataError, match=r"different band counts .*x\.tif has 3, .*y\.tif has 5"):
        image_folder(tmp_path / "b")


# --- torchgeo ---------------------------------------------------------------------------------

EUROSAT_DIR = Path("ds", "images", "remote_sensing", "otherDatasets", "sentinel_2", "tif")


def _fake_eurosat(root: Path) -> dict[str, np.ndarray]:
    """torchgeo's EuroSAT layout: split lists (names as .jpg) + 13-band uint16 tifs per class."""
    images = {}
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for k, name in enumerate(["AnnualCrop", "Forest"]):
        (root / EUROSAT_DIR / name).mkdir(parents=True)
        for i in range(5):
            pixels = (1000 * k + 10 * i + np.arange(13, dtype=np.uint16)[:, None, None]).repeat(16, 1)
            pixels = pixels.reshape(13, 4, 4) + np.uint16(40000)
            _write_tif(root / EUROSAT_DIR / name / f"{name}_{i}.tif", pixels)
            images[f"{name}_{i}"] = pixels
            lists["train" if i < 3 else "test"].append(f"{name}_{i}.jpg")
    for split, names in lists.items():
        (root / f"eurosat-{split}.txt").write_text("\n".join(names) + "\n")
    return images


def test_torchgeo_eurosat_from_a_fake_dataset_on_disk(tmp_path):
    written = _fake_eurosat(tmp_path)
    data = torchgeo_classification("eurosat", tmp_path)
    assert data.class_names == ("AnnualCrop", "Forest")
    assert len(data.bands) == 13 and data.bands[3] == "B04"
    assert data.train.images.dtype == np.uint16 and data.train.images.shape == (6, 13, 4, 4)
    assert data.test.images.shape == (4, 13, 4, 4)
    np.testing.assert_array_equal(data.train.targets, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(data.train.images[4], written["Forest_1"])
    np.testing.assert_array_equal(data.test.images[0], written["AnnualCrop_3"])

    rgb = torchgeo_classification("eurosat_rgb", tmp_path)
    assert rgb.bands == ("B04", "B03", "B02")
    np.testing.assert_array_equal(rgb.test.images[0], written["AnnualCrop_3"][[3, 2, 1]])


@pytest.mark.parametrize(
    "name, expected",
    [
        ("eurosat", ["eurosat-train.txt", "eurosat-test.txt", str(EUROSAT_DIR), "EuroSATallBands.zip"]),
        (
            "ucmerced",
            ["uc_merced-train.txt", "uc_merced-test.txt", "UCMerced_LandUse/Images", "UCMerced_LandUse.zip"],
        ),
        ("resisc45", ["resisc45-train.txt", "resisc45-test.txt", "NWPU-RESISC45", "NWPU-RESISC45.zip"]),
    ],
)
def test_torchgeo_missing_files_message_names_every_file(tmp_path, name, expected):
    with pytest.raises(DataError) as error:
        torchgeo_classification(name, tmp_path)
    message = str(error.value)
    for part in expected:
        assert part in message
    assert "MISSING" in message and "never downloads" in message
    assert str(tmp_path) in message


def test_torchgeo_missing_split_list_is_reported_when_images_exist(tmp_path):
    (tmp_path / "UCMerced_LandUse" / "Images" / "beach").mkdir(parents=True)
    with pytest.raises(DataError) as error:
        torchgeo_classification("ucmerced", tmp_path)
    lines = str(error.value).splitlines()
    assert any("uc_merced-train.txt" in line and "MISSING" in line for line in lines)
    assert any("UCMerced_LandUse/Images" in line and "[present]" in line for line in lines)


# --- image statistics -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_image_statistics_features_match_numpy(dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 5000, (7, 3, 5, 6)).astype(dtype)
    percentiles = (5, 25, 50, 75, 95)
    flat = images.reshape(7, 3, -1).astype(np.float64)
    expected = np.concatenate(
        [
            flat.mean(-1)[..., None],
            flat.std(-1)[..., None],
            np.percentile(flat, percentiles, axis=-1).transpose(1, 2, 0),
        ],
        axis=-1,
    ).reshape(7, -1)
    for source in (images, torch.from_numpy(images)):
        got = image_statistics_features(source, percentiles, max_elements=200)  # chunks of 2 images
        assert got.shape == (7, 3 * 7) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-2)
