"""Device-side view makers: shapes, randomness, identity, band safety, and replayable geometry."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from rsssl.data.scene import DataError
from rsssl.data.views import (
    PRESETS,
    ViewMaker,
    ViewParams,
    ViewRecipe,
    apply_geometry,
    preset,
    rgb_band_indices,
    sample_crop_boxes,
)

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
BANDS = {1: ("pan",), 3: ("red", "green", "blue"), 4: ("blue", "green", "red", "nir"), 13: S2_BANDS}
NO_RGB = ("nir", "swir1", "swir2", "rededge")
IDENTITY = {"hflip_p": 0.0, "vflip_p": 0.0, "rot90": False}


def batch(channels: int = 4, size: int = 32, n: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator)


def dihedral_images(image: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of one C×H×W image."""
    turns = [torch.rot90(image, k, dims=(-2, -1)) for k in range(4)]
    return turns + [t.flip(-1) for t in turns]


def test_rgb_band_indices():
    assert rgb_band_indices(["Red", "Green", "Blue"]) == (0, 1, 2)
    assert rgb_band_indices(["nir", "blue", "green", "red"]) == (3, 2, 1)
    assert rgb_band_indices(S2_BANDS) == (3, 2, 1)  # Sentinel-2's zero-padded names are unambiguous
    assert rgb_band_indices(NO_RGB) is None
    assert rgb_band_indices(["red", "green"]) is None


def test_rgb_roles_never_come_from_generic_or_ambiguous_names():
    # b1..bN are what unnamed files get; B4/B3/B2 is red/green/blue on Landsat 8 only
    assert rgb_band_indices(["b1", "b2", "b3", "b4"]) is None
    assert rgb_band_indices(["b1", "b2", "b3"]) is None
    assert rgb_band_indices(["B2", "B3", "B4", "B8"]) is None
    assert rgb_band_indices(["nir", "b", "g", "r"]) is None


def test_rgb_bands_setting_names_the_rgb_bands():
    assert rgb_band_indices(["b1", "b2", "b3", "b4"], ["b1", "b2", "b3"]) == (0, 1, 2)
    assert rgb_band_indices(["B2", "B3", "B4", "B8"], ["B4", "B3", "B2"]) == (2, 1, 0)
    assert rgb_band_indices(["blue", "green", "red", "nir"], ["B04", "B03", "B02"]) == (2, 1, 0)  # canonical
    with pytest.raises(DataError, match=r"data\.rgb_bands=\['b1', 'b2', 'b9'\].*b9.*b1, b2, b3, b4"):
        rgb_band_indices(["b1", "b2", "b3", "b4"], ["b1", "b2", "b9"])
    with pytest.raises(DataError, match=r"data\.rgb_bands.*3 names.*red, green and blue"):
        rgb_band_indices(["b1", "b2", "b3", "b4"], ["b1", "b2"])
    with pytest.raises(DataError, match=r"data\.rgb_bands.*b1 more than once"):
        rgb_band_indices(["b1", "b2", "b3", "b4"], ["b1", "b1", "b3"])


@pytest.mark.parametrize("channels", [1, 3, 4, 13])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shape_dtype_device_preserved(channels, name):
    x = batch(channels)
    for recipe, size in [(preset(name), 32), (preset(name, crop_size=24), 24)]:
        view = ViewMaker(recipe, BANDS[channels])(x)
        assert view.shape == (6, channels, size, size) and view.dtype == x.dtype and view.device == x.device
        assert torch.isfinite(view).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes_preserved(dtype):
    view = ViewMaker(preset("simclr", crop_size=16), BANDS[4])(batch().to(dtype))
    assert view.dtype == dtype and view.shape == (6, 4, 16, 16)


def test_random_between_calls_reproducible_under_seed():
    maker, x = ViewMaker(preset("moco_v2"), BANDS[4]), batch()
    torch.manual_seed(1)
    first, second = maker(x), maker(x)
    torch.manual_seed(1)
    again = maker(x)
    assert not torch.equal(first, second)
    assert torch.equal(first, again)


def test_all_off_is_identity():
    x = batch(13)
    assert torch.equal(ViewMaker(ViewRecipe(**IDENTITY), S2_BANDS)(x), x)
    full_crop = ViewRecipe(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), **IDENTITY)
    assert torch.equal(ViewMaker(full_crop, S2_BANDS)(x), x)


def test_geometric_is_a_dihedral_permutation():
    x = batch(4)
    view = ViewMaker(preset("geometric"), BANDS[4])(x)
    for image, out in zip(x, view, strict=True):
        assert torch.equal(image.flatten(1).sort(dim=1).values, out.flatten(1).sort(dim=1).values)
        assert any(torch.equal(out, candidate) for candidate in dihedral_images(image))


def jitter_only(**fields) -> ViewRecipe:
    return ViewRecipe(jitter_p=1.0, **IDENTITY, **fields)


def test_hue_saturation_skip_non_rgb_bands():
    x = batch(4)
    recipe = jitter_only(saturation=0.8, hue=0.5)
    assert torch.equal(ViewMaker(recipe, NO_RGB)(x), x)


UNNAMED_RGBN = ("b1", "b2", "b3", "b4")  # geotiff/rgbn without a preset: R, G, B, NIR as b1..b4


@pytest.mark.parametrize("fields", [{"saturation": 0.8}, {"hue": 0.5}])
def test_colour_ops_on_unnamed_rgbn_jitter_the_named_rgb_and_never_nir(fields):
    x = batch(4)
    view = ViewMaker(jitter_only(**fields), UNNAMED_RGBN, rgb_bands=["b1", "b2", "b3"])(x)
    assert torch.equal(view[:, 3], x[:, 3])  # NIR untouched
    assert not torch.allclose(view[:, 0], x[:, 0])  # the real red band is jittered
    torch.testing.assert_close(view[:, :3].mean(dim=1), x[:, :3].mean(dim=1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("bands", [UNNAMED_RGBN, ("b1", "b2", "b3")])
def test_colour_ops_without_known_rgb_are_skipped_with_one_warning(bands, caplog):
    x = batch(len(bands))
    with caplog.at_level(logging.WARNING, logger="rsssl.data.views"):
        maker = ViewMaker(jitter_only(saturation=0.8, hue=0.5), bands)
        first, second = maker(x), maker(x)
    assert torch.equal(first, x) and torch.equal(second, x)  # never NIR as "red"
    (record,) = caplog.records  # once per view maker, not per batch
    assert "hue and saturation are skipped" in record.message and "data.rgb_bands" in record.message
    assert ", ".join(bands) in record.message


def test_no_warning_when_the_recipe_needs_no_rgb(caplog):
    with caplog.at_level(logging.WARNING, logger="rsssl.data.views"):
        ViewMaker(preset("geometric"), UNNAMED_RGBN)
        ViewMaker(preset("moco_v2"), BANDS[4])
    assert not caplog.records


def test_hue_saturation_change_rgb_only_and_keep_grey_mean():
    x = batch(4)
    for fields in ({"saturation": 0.8}, {"hue": 0.5}):
        view = ViewMaker(jitter_only(**fields), BANDS[4])(x)
        rgb = [2, 1, 0]
        assert not torch.allclose(view[:, rgb], x[:, rgb])
        assert torch.equal(view[:, 3], x[:, 3])
        torch.testing.assert_close(view[:, rgb].mean(dim=1), x[:, rgb].mean(dim=1), atol=1e-5, rtol=0)


def test_hue_rotation_keeps_rgb_norm_around_grey_axis():
    x = batch(3)
    view = ViewMaker(jitter_only(hue=0.5), BANDS[3])(x)

    def chroma(t: torch.Tensor) -> torch.Tensor:
        return (t - t.mean(dim=1, keepdim=True)).norm(dim=1)

    torch.testing.assert_close(chroma(view), chroma(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("weights", [None, (1.0, 0.0, 3.0, 0.0)])
def test_grayscale_copies_weighted_mean_into_all_bands(weights):
    x = batch(4)
    view = ViewMaker(ViewRecipe(grayscale_p=1.0, grayscale_weights=weights, **IDENTITY), NO_RGB)(x)
    w = torch.tensor(weights or (1.0,) * 4)
    expected = (x * (w / w.sum()).view(1, 4, 1, 1)).sum(dim=1)
    for band in range(4):
        torch.testing.assert_close(view[:, band], expected, atol=1e-5, rtol=0)


def test_brightness_is_an_additive_shift_per_band():
    x = batch(4)
    shift = ViewMaker(jitter_only(brightness=0.5), NO_RGB)(x) - x
    per_band = shift.mean(dim=(2, 3))
    torch.testing.assert_close(shift, per_band[:, :, None, None].expand_as(shift), atol=1e-5, rtol=0)
    assert per_band.abs().max() <= 0.5
    assert (per_band.std(dim=1) > 1e-3).all()


def test_contrast_scales_each_band_around_its_mean():
    x = batch(4)
    view = ViewMaker(jitter_only(contrast=0.5), NO_RGB)(x)
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(view.mean(dim=(2, 3), keepdim=True), mean, atol=1e-5, rtol=0)
    factor = (view - mean).std(dim=(2, 3)) / (x - mean).std(dim=(2, 3))
    assert ((factor >= 0.5 - 1e-4) & (factor <= 1.5 + 1e-4)).all()
    assert (factor.std(dim=1) > 1e-3).all()


def test_solarize_mirrors_values_above_threshold():
    x = batch(4)
    view = ViewMaker(ViewRecipe(solarize_p=1.0, **IDENTITY), NO_RGB)(x)
    assert torch.equal(view, -x.abs())


def test_blur_smooths_and_keeps_constants():
    x = batch(4)
    maker = ViewMaker(ViewRecipe(blur_p=1.0, blur_sigma=(1.0, 2.0), **IDENTITY), NO_RGB)
    assert (maker(x).std(dim=(2, 3)) < 0.8 * x.std(dim=(2, 3))).all()
    flat = torch.full((2, 4, 16, 16), 3.0)
    torch.testing.assert_close(maker(flat), flat)


def test_crop_boxes_follow_scale_and_ratio():
    boxes = sample_crop_boxes(500, 40, 60, (0.2, 0.6), (0.5, 2.0), torch.device("cpu"))
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    assert torch.equal(boxes, boxes.round())
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 60).all() and (y2 <= 40).all()
    area = w * h / (40 * 60)
    assert (area > 0.18).all() and (area < 0.63).all()
    assert (w / h > 0.45).all() and (w / h < 2.2).all()
    fallback = sample_crop_boxes(3, 4, 4, (0.9, 1.0), (3.0, 4.0), torch.device("cpu"))
    assert fallback.tolist() == [[0.0, 1.0, 4.0, 2.0]] * 3


def test_params_replay_on_index_map():
    recipe = preset("moco_v2", crop_size=16, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    x = batch(4, size=32, n=16)
    view, params = ViewMaker(recipe, BANDS[4])(x, return_params=True)
    assert params.boxes.shape == (16, 4) and params.k.shape == (16,) and params.size == (16, 16)
    assert torch.equal(apply_geometry(x, params), view)

    index = torch.arange(32 * 32).view(1, 1, 32, 32).expand(16, 1, 32, 32)
    tracked = apply_geometry(index, params, mode="nearest")
    assert tracked.dtype == torch.long and tracked.shape == (16, 1, 16, 16)
    gathered = x.flatten(2).gather(2, tracked.flatten(2).expand(-1, 4, -1)).view(16, 4, 16, 16)
    assert torch.equal(apply_geometry(x, params, mode="nearest"), gathered)
    rows, cols = tracked // 32, tracked % 32
    x1, y1, x2, y2 = params.boxes.long().unbind(1)
    assert ((cols >= x1.view(-1, 1, 1, 1)) & (cols < x2.view(-1, 1, 1, 1))).all()
    assert ((rows >= y1.view(-1, 1, 1, 1)) & (rows < y2.view(-1, 1, 1, 1))).all()


def test_params_semantics_against_manual_slicing():
    x = batch(3, size=20, n=4)
    boxes = torch.tensor(
        [[2.0, 3.0, 12.0, 13.0], [0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0], [5, 1, 15, 11]]
    )
    hflip, vflip = torch.tensor([False, True, False, True]), torch.tensor([False, False, True, True])
    k = torch.tensor([0, 1, 2, 3])
    params = ViewParams(boxes, hflip, vflip, k, (10, 10))
    expected = []
    for image, (a, b, c, d), h, v, turns in zip(x, boxes.long().tolist(), hflip, vflip, k, strict=True):
        crop = image[:, b:d, a:c]
        crop = crop.flip(-1) if h else crop
        crop = crop.flip(-2) if v else crop
        expected.append(torch.rot90(crop, int(turns), dims=(-2, -1)))
    expected = torch.stack(expected)
    torch.testing.assert_close(apply_geometry(x, params), expected, atol=1e-6, rtol=0)
    assert torch.equal(apply_geometry(x, params, mode="nearest"), expected)


def test_recipe_from_hydra_config():
    yaml = "crop_size: 24\ncrop_scale: [0.3, 1.0]\nblur_sigma: [0.5, 1.0]\njitter_p: 0.5\n"
    recipe = ViewRecipe(**OmegaConf.create(yaml))
    assert recipe.crop_scale == (0.3, 1.0) and recipe.blur_sigma == (0.5, 1.0)
    schema = OmegaConf.merge(OmegaConf.structured(ViewRecipe), OmegaConf.create(yaml))
    assert OmegaConf.to_object(schema) == recipe
    assert preset("simclr", crop_size=24).brightness == 0.8


def test_errors_are_explicit():
    with pytest.raises(ValueError, match="expected 4 bands"):
        ViewMaker(preset("geometric"), BANDS[4])(batch(3))
    with pytest.raises(ValueError, match="grayscale_weights"):
        ViewMaker(ViewRecipe(grayscale_weights=(1.0, 2.0)), BANDS[4])
    with pytest.raises(ValueError, match="square"):
        ViewMaker(preset("geometric"), BANDS[4])(torch.randn(8, 4, 16, 24))
    with pytest.raises(ValueError, match="probability"):
        ViewRecipe(blur_p=1.5)
    with pytest.raises(ValueError, match="unknown view preset"):
        preset("byol")


@pytest.mark.gpu
def test_runs_on_cuda():
    x = batch(13).cuda()
    maker = ViewMaker(preset("simclr", crop_size=24), S2_BANDS)
    view, params = maker(x, return_params=True)
    assert view.is_cuda and params.boxes.is_cuda and view.shape == (6, 13, 24, 24)
    torch.manual_seed(3)
    first = maker(x.bfloat16())
    torch.manual_seed(3)
    assert torch.equal(first, maker(x.bfloat16())) and first.dtype == torch.bfloat16
