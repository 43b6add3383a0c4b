"""Multi-crop views: G global and L local crops per image, grouped by size, view-major, any bands."""

from __future__ import annotations

import pytest
import torch

from rsssl.data.multicrop import MultiCropRecipe, MultiCropViewMaker
from rsssl.data.scene import DataError
from rsssl.data.views import ViewRecipe, preset


def constant_images(batch: int, bands: int, side: int = 64) -> torch.Tensor:
    """Image b holds the value b + 0.1 * band everywhere: any crop of it tells where it came from."""
    values = torch.arange(batch, dtype=torch.float32)[:, None] + 0.1 * torch.arange(bands)[None, :]
    return values[:, :, None, None].expand(batch, bands, side, side).contiguous()


def maker(bands: int, colour: ViewRecipe | None = None, **recipe) -> MultiCropViewMaker:
    names = [f"b{i}" for i in range(bands)]
    return MultiCropViewMaker(MultiCropRecipe(**recipe), colour or ViewRecipe(), names)


@pytest.mark.parametrize("bands", [3, 4, 13])
def test_crops_are_grouped_by_size_and_view_major(bands):
    images = constant_images(5, bands)
    crops = maker(bands, num_global=2, num_local=3, local_size=24, global_solarize_p=[0.0, 0.0])(images)
    assert crops.globals_.shape == (10, bands, 64, 64) and crops.locals_.shape == (15, bands, 24, 24)
    assert [g.shape[-1] for g in crops.groups()] == [64, 24]
    # geometry only (no colour): every crop of image b still holds image b's values, in view-major order
    for group, count in ((crops.globals_, 2), (crops.locals_, 3)):
        expected = constant_images(5, bands, group.shape[-1]).repeat(count, 1, 1, 1)
        torch.testing.assert_close(group, expected)


def test_every_crop_draws_its_own_geometry():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 64, 64)
    crops = maker(3, num_global=2, num_local=2, local_size=16, global_blur_p=[0.0, 0.0])(images)
    globals_ = crops.globals_.view(2, 4, 3, 64, 64)
    locals_ = crops.locals_.view(2, 4, 3, 16, 16)
    assert not torch.allclose(globals_[0], globals_[1]) and not torch.allclose(locals_[0], locals_[1])


def test_the_recipes_are_dinos_asymmetric_ones():
    m = maker(3, colour=preset("dino"))
    first, second = (g.recipe for g in m.global_makers)
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert m.local_maker.recipe.blur_p == 0.5 and m.local_maker.recipe.solarize_p == 0.0
    assert first.crop_scale == (0.4, 1.0) and m.local_maker.recipe.crop_scale == (0.05, 0.4)
    assert m.local_maker.recipe.crop_size is None and first.jitter_p == 0.8 and first.saturation == 0.2


@pytest.mark.parametrize(
    ("side", "global_size", "local_side"), [(64, None, 32), (32, None, 16), (64, 48, 24)]
)
def test_local_crops_default_to_half_the_global_side(side, global_size, local_side):
    """DINO's 96 of 224 px: a local crop is about half a global one, whatever the tile size (a fixed
    32 px would make the locals of 32 px tiles as large as the globals)."""
    crops = maker(3, num_local=2, global_size=global_size)(torch.randn(2, 3, side, side))
    assert crops.globals_.shape[-1] == (global_size or side) and crops.locals_.shape[-2:] == (local_side,) * 2


def test_no_local_crops_give_globals_only():
    crops = maker(3, num_local=0)(torch.randn(2, 3, 32, 32))
    assert crops.locals_ is None and [g.shape[0] for g in crops.groups()] == [4]


def test_bad_settings_name_the_fix():
    with pytest.raises(DataError, match="48 px is larger than the 32 px tiles"):
        maker(3, local_size=48)(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="global_blur_p has 2 entries for num_global=3"):
        MultiCropRecipe(num_global=3, global_solarize_p=[0, 0, 0])
    with pytest.raises(ValueError, match="at least one global crop"):
        MultiCropRecipe(num_global=0, global_blur_p=[], global_solarize_p=[])
