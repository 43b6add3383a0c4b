"""Spectral views keep the band-count contract and do what each setting says, per sample."""

from __future__ import annotations

import pytest
import torch

from rsssl.data.spectral_views import SpectralRecipe, SpectralViewMaker, band_groups


def banded(batch: int, bands: int) -> torch.Tensor:
    """Sample b, band c holds 1 + c + 100 b everywhere: any band's origin is readable."""
    values = 1.0 + torch.arange(bands)[None, :] + 100.0 * torch.arange(batch)[:, None]
    return values[:, :, None, None].expand(batch, bands, 4, 4).contiguous()


@pytest.mark.parametrize("bands", [3, 13, 120])
def test_every_view_keeps_shape_dtype_and_is_per_sample(bands):
    recipe = SpectralRecipe(subset_p=0.5, dropout_p=0.5, gain_p=0.5, shuffle_p=0.5, smooth_p=0.5)
    x = torch.randn(32, bands, 8, 8)
    torch.manual_seed(0)
    view = SpectralViewMaker(recipe, bands)(x)
    assert view.shape == x.shape and view.dtype == x.dtype
    changed = ~(view == x).flatten(1).all(dim=1)
    assert 0 < int(changed.sum()) < 32 or bands == 3  # some samples changed, not necessarily all


def test_band_subset_keeps_the_drawn_fraction_and_zeroes_the_rest():
    torch.manual_seed(0)
    view = SpectralViewMaker(SpectralRecipe(subset_p=1.0, subset_fraction=(0.5, 0.5)), 10)(banded(8, 10))
    kept = view[:, :, 0, 0] != 0
    assert (kept.sum(dim=1) == 5).all()
    assert torch.equal(view[:, :, 0, 0][kept], banded(8, 10)[:, :, 0, 0][kept])  # kept bands untouched


def test_group_shuffle_permutes_within_groups_only():
    torch.manual_seed(0)
    recipe = SpectralRecipe(shuffle_p=1.0, groups=[[0, 1, 2], [5, 6, 7, 8]])
    view = SpectralViewMaker(recipe, 10)(banded(16, 10))[:, :, 0, 0]
    source_band = (view - 1 - 100 * torch.arange(16)[:, None]).long()  # which input band each slot holds
    for sample in source_band.tolist():
        assert sorted(sample[0:3]) == [0, 1, 2] and sorted(sample[5:9]) == [5, 6, 7, 8]
        assert sample[3:5] == [3, 4] and sample[9] == 9  # ungrouped bands stay
    assert any(s[0:3] != [0, 1, 2] for s in source_band.tolist())  # really permuted


def test_gain_offset_and_smoothing_by_hand():
    torch.manual_seed(0)
    x = banded(4, 6)
    gained = SpectralViewMaker(SpectralRecipe(gain_p=1.0, gain=0.0, offset=0.0), 6)(x)
    assert torch.equal(gained, x)  # zero strength: identity
    smooth = SpectralViewMaker(SpectralRecipe(smooth_p=1.0, smooth_sigma=(1.0, 1.0)), 6)(x)
    bands = torch.arange(6.0)
    weights = torch.exp(-((bands[:, None] - bands[None, :]) ** 2) / 2)
    expected = (weights / weights.sum(1, keepdim=True)) @ x[0, :, 0, 0]
    torch.testing.assert_close(smooth[0, :, 0, 0], expected)


def test_groups_and_settings_are_checked():
    assert band_groups(7, SpectralRecipe(group_size=3)).tolist() == [0, 0, 0, 1, 1, 1, 2]
    with pytest.raises(ValueError, match="outside 0..4"):
        band_groups(5, SpectralRecipe(groups=[[0, 7]]))
    with pytest.raises(ValueError, match="already in another group"):
        band_groups(5, SpectralRecipe(groups=[[0, 1], [1, 2]]))
    with pytest.raises(ValueError, match="dropout_p=1.5 must be a probability"):
        SpectralRecipe(dropout_p=1.5)
    with pytest.raises(ValueError, match="expected 4 bands, got 3"):
        SpectralViewMaker(SpectralRecipe(), 4)(torch.zeros(1, 3, 2, 2))


def test_band_dropout_zeroes_bands_at_its_rate():
    torch.manual_seed(0)
    view = SpectralViewMaker(SpectralRecipe(dropout_p=1.0, dropout=0.25), 20)(banded(200, 20))[:, :, 0, 0]
    dropped = view == 0
    assert abs(dropped.float().mean().item() - 0.25) < 0.02
    assert torch.equal(view[~dropped], banded(200, 20)[:, :, 0, 0][~dropped])
