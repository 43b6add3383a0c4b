"""Synthetic land-cover scenes: determinism, layout, class structure, nuisances and validation."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from rsssl.data.scene import DataError
from rsssl.data.synthetic import make_synthetic_scenes

WATER, FOREST, CROPLAND, GRASSLAND, URBAN, WETLAND = range(6)


@pytest.fixture(scope="module")
def scenes():
    """Four 4-band scenes of 256 px at 3 dates, shared by the tests that only read them."""
    return make_synthetic_scenes(num_scenes=4, size=256, num_bands=4, num_dates=3, seed=1)


def _class_means(scenes, k: int) -> np.ndarray:
    """S x T x C mean pixel value of class k per scene and date."""
    return np.array([[s.images[t][:, s.mask == k].mean(1) for t in range(3)] for s in scenes])


def _lag_corr(image: np.ndarray, inside: np.ndarray, lag: int) -> float:
    """Correlation of pixel pairs `lag` px apart horizontally, both inside the class."""
    both = inside[:, lag:] & inside[:, :-lag]
    return float(np.corrcoef(image[:, lag:][both], image[:, :-lag][both])[0, 1])


def test_same_seed_same_bytes_other_seed_differs():
    a = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=3)
    b = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=3)
    c = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=4)
    for x, y, z in zip(a, b, c, strict=True):
        assert x.images.tobytes() == y.images.tobytes()
        assert np.array_equal(x.mask, y.mask)
        assert x.dates == y.dates and x.transform == y.transform
        assert not np.array_equal(x.images, z.images)
        assert not np.array_equal(x.mask, z.mask)
    assert not np.array_equal(a[0].images, a[1].images)


@pytest.mark.parametrize(
    ("num_bands", "bands"),
    [
        (3, ("red", "green", "blue")),
        (4, ("red", "green", "blue", "nir")),
        (13, ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")),
        (1, ("b1",)),
        (6, ("b1", "b2", "b3", "b4", "b5", "b6")),
    ],
)
def test_layout_and_band_names(num_bands, bands):
    scenes = make_synthetic_scenes(num_scenes=2, size=64, num_bands=num_bands, num_dates=2)
    for s in scenes:
        assert s.images.shape == (2, num_bands, 64, 64) and s.images.dtype == np.uint16
        assert s.bands == bands
        assert s.mask.shape == (64, 64) and s.mask.dtype == np.uint8
        assert s.class_names == ("water", "forest", "cropland", "grassland", "urban", "wetland")
        assert len(s.dates) == 2 and s.dates[0] < s.dates[1]
        assert all(datetime.date.fromisoformat(d).year == 2021 for d in s.dates)
        assert s.crs is not None and s.pixel_size == 10.0
        assert s.images.min() >= 1 and s.images.max() < 20000  # reflectance x 10000, 0 kept for nodata
    assert len({s.name for s in scenes}) == 2
    assert scenes[0].pixel_to_map(0, 0) != scenes[1].pixel_to_map(0, 0)


def test_uint8_values_use_the_range():
    s = make_synthetic_scenes(num_scenes=1, size=64, dtype="uint8")[0]
    assert s.images.dtype == np.uint8 and s.images.min() >= 1 and s.images.max() > 100


def test_more_classes_than_names_are_suffixed():
    s = make_synthetic_scenes(num_scenes=1, size=128, num_classes=10)[0]
    assert s.class_names[8:] == ("water 2", "forest 2") and len(set(s.class_names)) == 10
    assert s.mask.max() < 10


def test_every_class_has_at_least_five_percent_in_every_scene(scenes):
    for s in scenes:
        share = np.bincount(s.mask.ravel(), minlength=6) / s.mask.size
        assert share.min() >= 0.05, (s.name, share)


def test_classes_are_spatially_autocorrelated(scenes):
    for s in scenes:
        chance = np.sum((np.bincount(s.mask.ravel(), minlength=6) / s.mask.size) ** 2)
        same = (np.mean(s.mask[:, 8:] == s.mask[:, :-8]) + np.mean(s.mask[8:] == s.mask[:-8])) / 2
        assert chance < 0.3 and same > 0.7, (s.name, chance, same)
        # tiles of 32 px mostly have a clear majority, but mixed tiles exist too
        tiles = s.mask.reshape(8, 32, 8, 32).transpose(0, 2, 1, 3).reshape(64, -1)
        purity = np.array([np.bincount(t).max() / t.size for t in tiles])
        assert np.mean(purity >= 0.6) > 0.6 and purity.min() < 0.6


def test_dates_change_pixels_seasonally_with_the_same_mask(scenes):
    for s in scenes:
        assert np.abs(s.images[0].astype(np.int32) - s.images[1]).mean() > 50
    # seasonal change: cropland NDVI swings over the year, urban stays put
    swing = {}
    for k in (CROPLAND, URBAN):
        means = _class_means(scenes, k)
        ndvi = (means[..., 3] - means[..., 0]) / (means[..., 3] + means[..., 0])
        swing[k] = (ndvi.max(1) - ndvi.min(1)).min()
    assert swing[CROPLAND] > 0.2 and swing[URBAN] < 0.1, swing


def test_mean_spectra_overlap_only_for_the_confusable_pairs(scenes):
    spectra = np.stack([_class_means(scenes, k).mean((0, 1)) for k in range(6)])

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(spectra[a] - spectra[b]) / np.linalg.norm(spectra[[a, b]], axis=1).mean())

    close = [dist(CROPLAND, GRASSLAND), dist(FOREST, WETLAND)]
    far = [dist(WATER, k) for k in (FOREST, CROPLAND, GRASSLAND, URBAN, WETLAND)]
    far += [dist(URBAN, k) for k in (FOREST, CROPLAND, GRASSLAND, WETLAND)]
    assert max(close) < 0.25 and min(far) > 0.4, (close, far)


def test_confusable_pairs_differ_in_texture(scenes):
    for s in scenes:
        nir = s.images[0, 3].astype(np.float64)
        # grassland is fine isotropic noise, cropland smooth rows: they differ at 1 px
        assert _lag_corr(nir, s.mask == CROPLAND, 1) > _lag_corr(nir, s.mask == GRASSLAND, 1) + 0.1
        # forest canopy is blobby at ~3 px, wetland pools are larger: they differ at 4 px
        assert _lag_corr(nir, s.mask == WETLAND, 4) > _lag_corr(nir, s.mask == FOREST, 4) + 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bands": 0}, "num_bands=0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"size": 32}, "size=32"),
        ({"num_scenes": 0}, "num_scenes=0"),
        ({"num_dates": 0}, "num_dates=0"),
        ({"dtype": "float32"}, "dtype='float32'"),
    ],
)
def test_invalid_arguments_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_synthetic_scenes(**kwargs)
