"""Synthetic land-cover scenes: determinism, layout, structure-defined classes, each nuisance
factor alone, regions and seasons, validation."""

from __future__ import annotations

import datetime
from dataclasses import fields

import numpy as np
import pytest

from rsssl.data.scene import DataError
from rsssl.data.synthetic import (
    CLASSES,
    FOREST,
    GRASSLAND,
    URBAN,
    WATER,
    Nuisance,
    _assign,
    acquisition_days,
    make_region,
    make_synthetic_scenes,
    scene_regions,
)

CROPLAND, ORCHARD = CLASSES.index("cropland"), CLASSES.index("orchard")
OFF = {f.name: 0.0 for f in fields(Nuisance)}
CLEAN = OFF | {"season": 1.0}  # every acquisition nuisance off, the seasons on


def _scenes(**kwargs):
    settings = dict(num_scenes=2, size=512, num_bands=4, num_dates=3, seed=1) | kwargs
    return make_synthetic_scenes(**settings)


@pytest.fixture(scope="module")
def clean():
    """Two 512 px scenes (the configured size) with every acquisition nuisance off: the layout and
    the phenology only."""
    return _scenes(nuisance=CLEAN)


@pytest.fixture(scope="module")
def scenes():
    """Two 4-band scenes of 512 px at 3 dates with the default nuisance."""
    return _scenes()


def _alone(factor: str, value: float | None = None, **kwargs):
    """Scenes with only `factor` on (its default strength, or `value`)."""
    return _scenes(
        nuisance=CLEAN | {factor: getattr(Nuisance(), factor) if value is None else value}, **kwargs
    )


def _float(scene, date: int = 0) -> np.ndarray:
    return scene.images[date].astype(np.float64)


def test_same_seed_same_bytes_other_seed_differs():
    a = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=3)
    b = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=3)
    c = make_synthetic_scenes(num_scenes=2, size=64, num_bands=5, seed=4)
    for x, y, z in zip(a, b, c, strict=True):
        assert x.images.tobytes() == y.images.tobytes()
        assert np.array_equal(x.mask, y.mask)
        assert x.dates == y.dates and x.transform == y.transform
        assert not np.array_equal(x.images, z.images)
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
        assert s.class_names == CLASSES
        first, second = (datetime.date.fromisoformat(d) for d in s.dates)
        assert 150 <= first.timetuple().tm_yday <= 200 and (second - first).days in (182, 183)
        assert s.crs is not None and s.pixel_size == 10.0
        assert s.images.min() >= 1 and s.images.max() < 20000  # reflectance x 10000, 0 kept for nodata
    assert len({s.name for s in scenes}) == 2
    assert scenes[0].pixel_to_map(0, 0) != scenes[1].pixel_to_map(0, 0)


def test_uint8_values_use_the_range():
    s = make_synthetic_scenes(num_scenes=1, size=64, dtype="uint8")[0]
    assert s.images.dtype == np.uint8 and s.images.min() >= 1 and s.images.max() > 100


def test_more_classes_than_names_are_suffixed():
    s = make_synthetic_scenes(num_scenes=2, size=256, num_classes=10)[0]
    assert s.class_names[8:] == ("water 2", "forest 2") and len(set(s.class_names)) == 10
    assert s.mask.max() < 10


def test_fewer_classes_leave_the_others_out():
    scenes = make_synthetic_scenes(num_scenes=4, size=128, num_classes=3, nuisance=OFF)
    assert scenes[0].class_names == ("water", "forest", "cropland")
    assert set(np.unique(np.concatenate([s.mask.ravel() for s in scenes]))) == {0, 1, 2}


def test_counts_follow_the_mix_by_largest_remainder():
    counts = np.bincount(_assign(np.random.default_rng(0), np.array([0.5, 0.3, 0.2]), 10), minlength=3)
    assert counts.tolist() == [5, 3, 2]
    counts = np.bincount(_assign(np.random.default_rng(0), np.array([0.34, 0.33, 0.33]), 10), minlength=3)
    assert counts.tolist() == [4, 3, 3]  # one each, then 7 x mix: floors 2, 2, 2, the last seat to 0
    counts = np.bincount(_assign(np.random.default_rng(0), np.array([0.6, 0.3, 0.1]), 2), minlength=3)
    assert counts.tolist() == [1, 1, 0]  # fewer seats than classes: floors 1, 0, 0, then remainder .6


def test_tiles_are_mostly_of_one_class_and_every_class_occurs(clean):
    masks = np.stack([s.mask for s in clean])
    assert set(np.unique(masks)) == set(range(8))
    tiles = masks.reshape(2, 16, 32, 16, 32).transpose(0, 1, 3, 2, 4).reshape(-1, 32 * 32)
    purity = np.array([np.bincount(t).max() / t.size for t in tiles])
    assert np.mean(purity >= 0.6) > 0.8 and purity.min() < 0.6  # mixed tiles exist too


def _mean_spectrum(scenes, k: int, date: int = 0) -> np.ndarray:
    return np.mean([s.images[date][:, s.mask == k].mean(1) for s in scenes if (s.mask == k).any()], axis=0)


def test_sentinel2_spectra_are_sensible():
    s = _scenes(num_bands=13, nuisance=CLEAN)
    band = {name: i for i, name in enumerate(s[0].bands)}
    forest, water, urban = (_mean_spectrum(s, k) for k in (FOREST, WATER, URBAN))
    ndvi = (forest[band["B08"]] - forest[band["B04"]]) / (forest[band["B08"]] + forest[band["B04"]])
    assert ndvi > 0.5  # summer forest
    assert water[band["B08"]] < water[band["B04"]] < water[band["B02"]]  # water darkens to the infrared
    assert forest[band["B06"]] > 1.5 * forest[band["B05"]] * 0.9  # the red edge
    assert forest[band["B10"]] < 0.05 * forest[band["B08"]]  # the cirrus band sees no surface
    assert urban[band["B10"]] < 0.05 * urban[band["B11"]]


def test_classes_sharing_materials_differ_in_structure_not_in_mean_colour(clean):
    """Cropland rows and orchard crowns mix the same leaf and soil: their mean spectra are close,
    relative to water's distance (what tells them apart is the arrangement: rows or a lattice)."""
    spectra = {k: _mean_spectrum(clean, k) for k in (WATER, CROPLAND, ORCHARD)}
    close = np.linalg.norm(spectra[CROPLAND] - spectra[ORCHARD])
    assert close < 0.35 * np.linalg.norm(spectra[CROPLAND] - spectra[WATER])


def test_classes_vary_within_themselves(clean):
    """Patches of one class draw their own variant (crop, soil, conifer/broadleaf): per-tile NIR
    means of a class spread widely."""
    for k in (FOREST, CROPLAND, GRASSLAND):
        tiles = []
        for s in clean:
            for r in range(0, 512, 32):
                for c in range(0, 512, 32):
                    if (s.mask[r : r + 32, c : c + 32] == k).mean() > 0.9:
                        tiles.append(s.images[0, 3, r : r + 32, c : c + 32].mean())
        assert len(tiles) >= 3 and np.std(tiles) / np.mean(tiles) > 0.04, (CLASSES[k], tiles)


def test_season_changes_vegetation_not_water_or_roofs(clean):
    nir = {k: [_mean_spectrum(clean, k, t)[3] for t in range(3)] for k in (WATER, URBAN, CROPLAND, FOREST)}
    swing = {k: (max(v) - min(v)) / np.mean(v) for k, v in nir.items()}
    # crops of different calendars (winter cereal, summer crop, fallow) partly cancel in the mean
    assert swing[CROPLAND] > 0.05 and swing[FOREST] > 0.08, swing
    assert swing[WATER] < 0.01 and swing[URBAN] < 0.01, swing
    still = _scenes(nuisance=OFF | {"season": 0.0})
    assert all(np.array_equal(s.images[0], s.images[t]) for s in still for t in (1, 2))


def test_gain_scales_each_band_and_nothing_else(clean):
    gained = _alone("gain", 0.3)
    for a, b in zip(clean, gained, strict=True):
        assert np.array_equal(a.mask, b.mask)
        bright = a.images[0] > 500
        ratio = np.array([np.median(_float(b)[c][bright[c]] / _float(a)[c][bright[c]]) for c in range(4)])
        spread = np.array([np.std(_float(b)[c][bright[c]] / _float(a)[c][bright[c]]) for c in range(4)])
        assert spread.max() < 0.01  # one factor per band ...
        assert ratio.max() / ratio.min() > 1.05  # ... that differs between bands


def test_illumination_scales_every_band_alike(clean):
    lit = _alone("illumination", 0.3)
    for a, b in zip(clean, lit, strict=True):
        bright = a.images[0] > 500
        ratio = [np.median(_float(b)[c][bright[c]] / _float(a)[c][bright[c]]) for c in range(4)]
        assert abs(ratio[0] - 1) > 0.01 and np.ptp(ratio) < 0.005


def test_offset_shifts_each_band_by_a_constant(clean):
    shifted = _alone("offset", 0.02)
    for a, b in zip(clean, shifted, strict=True):
        inside = (a.images[0] > 300) & (b.images[0] > 300)  # away from the clip at 1
        diff = [(_float(b)[c] - _float(a)[c])[inside[c]] for c in range(4)]
        assert max(np.ptp(d) for d in diff) <= 1.0  # one constant per band, up to rounding
        assert np.ptp([np.median(d) for d in diff]) > 20


def test_haze_brightens_blue_more_than_nir(clean):
    hazy = _alone("haze", 0.08)
    for a, b in zip(clean, hazy, strict=True):
        added = (_float(b) - _float(a)).mean((1, 2))
        blue, nir = added[2], added[3]
        assert (_float(b) >= _float(a) - 0.5).all() and np.array_equal(a.mask, b.mask)
        assert blue > 2 * nir > 0


def test_relief_shades_bands_alike_and_moves_with_the_sun(clean):
    shaded = _alone("relief")
    a, b = clean[0], shaded[0]
    bright = (a.images[0] > 800).all(0)
    ratio = _float(b)[:, bright] / _float(a)[:, bright]
    assert ratio[0].std() > 0.02  # varies over the scene ...
    assert np.abs(ratio[0] - ratio[3]).mean() < 0.01  # ... but not between bands
    ratio_later = _float(b, 1)[:, bright] / _float(a, 1)[:, bright]
    assert np.corrcoef(ratio[0], ratio_later[0])[0, 1] < 0.9  # another date, another sun azimuth


def test_clouds_cover_part_of_a_date_and_light_up_the_cirrus_band():
    clear = _scenes(num_bands=13, nuisance=CLEAN)
    cloudy = _alone("clouds", 0.3, num_bands=13)
    changed = [
        np.any(c.images[t] != k.images[t], 0) for c, k in zip(cloudy, clear, strict=True) for t in range(3)
    ]
    share = np.array([m.mean() for m in changed])
    assert share.max() > 0.1 and share.min() < 0.99  # clouds and their shadows cover part of a date
    b10 = clear[0].bands.index("B10")
    for c, k in zip(cloudy, clear, strict=True):
        assert np.array_equal(c.mask, k.mask)
        for t in range(3):
            lit = c.images[t, b10].astype(float) - k.images[t, b10]
            assert lit.max() > 2000 or not changed[0].any()  # thick cloud is bright in the cirrus band


def test_glint_brightens_open_water_only(clean):
    glinting = _alone("glint", 0.5)
    water_anywhere = False
    for a, b in zip(clean, glinting, strict=True):
        changed = np.any(a.images != b.images, axis=(0, 1))
        assert changed.any()
        open_water = a.images[0, 3] < 600  # NIR-dark pixels: lakes and river channels
        assert open_water[changed].all()
        water_anywhere |= bool(changed.any())
    assert water_anywhere


def test_noise_is_zero_mean_with_its_std(clean):
    noisy = _alone("noise", 0.01)
    diff = _float(noisy[0]) - _float(clean[0])
    assert abs(diff.mean()) < 2 and abs(diff.std() - 100) < 5  # 0.01 reflectance = 100 DN


def test_each_factor_has_its_own_stream(scenes):
    """Turning the noise off changes pixels by the noise alone: every other factor stays."""
    quiet = _scenes(nuisance={"noise": 0.0})
    diff = _float(scenes[0]) - _float(quiet[0])
    assert abs(diff.mean()) < 1 and abs(diff.std() - 40) < 3


def test_scenes_cycle_through_regions_and_regions_hold_out():
    assert scene_regions(5, 4) == [0, 1, 2, 3, 0]
    assert scene_regions(3, 4, regions=[3]) == [3, 3, 3]
    a, b = make_region(0, 1, 8), make_region(0, 1, 8)
    assert np.array_equal(a.class_mix, b.class_mix) and a.soil == b.soil
    assert not np.allclose(make_region(0, 1, 8).class_mix, make_region(0, 2, 8).class_mix)
    held = make_synthetic_scenes(num_scenes=2, size=64, regions=[3], seed=5)
    again = make_synthetic_scenes(num_scenes=4, size=64, seed=5)
    assert not np.array_equal(held[0].images, again[0].images)  # region 3's scene 0 is not region 0's


def test_regions_have_their_own_class_mix():
    shares = {}
    for region in (0, 1):
        scenes = make_synthetic_scenes(
            num_scenes=6, size=256, regions=[region], seed=9, nuisance=OFF, num_dates=1
        )
        counts = sum(np.bincount(s.mask.ravel(), minlength=8) for s in scenes)
        shares[region] = counts / counts.sum()
    assert np.abs(shares[0] - shares[1]).sum() > 0.2


def test_date_zero_is_summer_and_dates_step_through_the_year():
    days = acquisition_days(0, 3, 4)
    assert 150 <= days[0] <= 200 and np.allclose(np.diff(days), 365 / 4)


def test_date_zero_does_not_depend_on_the_number_of_dates():
    one = make_synthetic_scenes(num_scenes=1, size=64, num_dates=1, seed=2)[0]
    three = make_synthetic_scenes(num_scenes=1, size=64, num_dates=3, seed=2)[0]
    assert np.array_equal(one.images[0], three.images[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_bands": 0}, "num_bands=0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"size": 32}, "size=32"),
        ({"num_scenes": 0}, "num_scenes=0"),
        ({"num_dates": 0}, "num_dates=0"),
        ({"dtype": "float32"}, "dtype='float32'"),
        ({"num_regions": 0}, "num_regions=0"),
        ({"regions": [4]}, r"regions=\[4\]: choose region ids in 0..3"),
        ({"nuisance": {"fog": 0.1}}, r"unknown nuisance \['fog'\]"),
        ({"nuisance": {"haze": -0.1}}, r"nuisance \['haze'\] must be >= 0"),
    ],
)
def test_invalid_arguments_raise_data_error(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_synthetic_scenes(**kwargs)


def test_the_scenes_do_not_depend_on_the_number_of_blas_threads():
    """The published benchmarks' pixels must be what any machine generates: a BLAS product splits its
    sums by thread count, and rounding then moved some uint16 pixels (one thread against two gave
    another eval-set digest, so another eval_hash, for the same config)."""
    from threadpoolctl import threadpool_limits

    scenes = {}
    for threads in (1, 2):
        with threadpool_limits(limits=threads):
            scenes[threads] = make_synthetic_scenes(num_scenes=2, size=256, num_bands=13, num_dates=2, seed=3)
    for one, two in zip(scenes[1], scenes[2], strict=True):
        np.testing.assert_array_equal(one.images, two.images)
