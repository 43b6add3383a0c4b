"""Procedural synthetic land-cover scenes: the built-in data for demos, tests and benchmarks.

Each scene is a labelled multi-date raster built so that self-supervised learning has something
to learn and something to ignore:

- class regions are large irregular patches, so neighbouring tiles look alike (spatial SSL);
- every class has its own spectral signature *and* its own texture, and some pairs share almost
  the same mean spectrum (cropland / grassland, forest / wetland, urban / bare soil), so the mean
  colour of a tile is not enough: texture has to be learnt;
- illumination, haze, season and sensor noise change per scene and per date (nuisances), while
  the class mask stays the same at every date (temporal SSL).
"""

from __future__ import annotations

import datetime

import numpy as np

from rsssl.data.scene import ArrayScene, DataError

_CLASSES = ("water", "forest", "cropland", "grassland", "urban", "wetland", "bare soil", "snow")
# Texture strength per base class (relative brightness modulation).
_TEXTURE_AMP = np.array([0.25, 0.35, 0.35, 0.3, 0.4, 0.35, 0.3, 0.1], dtype=np.float32)
_BANDS = {
    3: (("red", 665), ("green", 560), ("blue", 490)),
    4: (("red", 665), ("green", 560), ("blue", 490), ("nir", 842)),
    13: (("B01", 443), ("B02", 490), ("B03", 560), ("B04", 665), ("B05", 705), ("B06", 740), ("B07", 783),
         ("B08", 842), ("B8A", 865), ("B09", 945), ("B10", 1375), ("B11", 1610), ("B12", 2190)),
}  # fmt: skip
_SCALE = {"uint16": 10000.0, "uint8": 255 / 0.8}  # reflectance -> digital numbers
_PIXEL_M = 10.0
_CRS = "EPSG:32631"
_MIN_SIZE = 64


def _bands(num_bands: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Band names and centre wavelengths (nm): real names for 3, 4 and 13 bands, b1..bN otherwise."""
    if num_bands in _BANDS:
        names, wl = zip(*_BANDS[num_bands], strict=True)
        return names, np.array(wl, dtype=np.float64)
    wl = np.linspace(490.0, 2190.0, num_bands) if num_bands > 1 else np.array([842.0])
    return tuple(f"b{i + 1}" for i in range(num_bands)), wl


def _fields(rng: np.random.Generator, size: int, scales: list[float]) -> np.ndarray:
    """Zero-mean, unit-std periodic Gaussian random fields (one per smoothing scale in px), via FFT."""
    f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None] ** 2
    spec = np.zeros((len(scales), size, size // 2 + 1), dtype=np.complex64)
    for scale in dict.fromkeys(scales):  # one filter per distinct scale, in a fixed order
        # Gaussian low-pass, relative to the lowest non-zero frequency so it never underflows to 0
        filt = np.exp(-2 * np.pi**2 * scale**2 * (f2 - 1 / size**2)).astype(np.float32)
        keep = filt > 1e-3  # large scales need only a few low frequencies: draw only those
        keep[0, 0] = False  # no DC term: zero mean
        for i in (i for i, s in enumerate(scales) if s == scale):
            re, im = rng.standard_normal((2, int(keep.sum())), dtype=np.float32)
            spec[i][keep] = filt[keep] * (re + 1j * im)
    out = np.fft.irfft2(spec, s=(size, size)).astype(np.float32)
    return out / out.std(axis=(1, 2), keepdims=True)


def _class_map(rng: np.random.Generator, size: int, num_classes: int) -> np.ndarray:
    """H x W class ids: argmax of smooth fields (patches tens of px across, rough edges), balanced."""
    f = _fields(rng, size, [32.0] * num_classes + [4.0, 4.0])
    rough = rng.normal(0, 0.08, (num_classes, 2))  # per-class share of two fine fields: irregular edges
    logits = f[:num_classes] + np.einsum("kj,jhw->khw", rough, f[num_classes:])
    target = 0.5 / num_classes + 0.5 * rng.dirichlet(np.full(num_classes, 4.0))
    bias, coarse = np.zeros(num_classes), logits[:, ::8, ::8]
    for _ in range(20):  # shift per-class offsets until class shares match the target shares
        share = np.bincount((coarse + bias[:, None, None]).argmax(0).ravel(), minlength=num_classes)
        bias += 0.5 * np.log(target / np.maximum(share / coarse[0].size, 1e-3))
    return (logits + bias[:, None, None].astype(np.float32)).argmax(0).astype(np.uint8)


def _textures(rng: np.random.Generator, size: int) -> np.ndarray:
    """8 x H x W unit-std textures, one per base class (order of _CLASSES)."""
    scales = [1.5, 0.6, 4, 5, 20, 25, 30, 30]
    canopy, fine, coarse, pools, swell, drift, warp_y, warp_x = _fields(rng, size, scales)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    # cropland: parcels on a warped grid, each with its own row orientation, period, phase and brightness
    p = rng.uniform(28, 48)
    n = int(size / p) + 4
    pid = (np.floor((yy + 8 * warp_y) / p) + 2) * n + np.floor((xx + 8 * warp_x) / p) + 2
    pid = pid.astype(np.int64).clip(0, n * n - 1)
    theta, wavenumber = rng.uniform(0, np.pi, n * n), 2 * np.pi / rng.uniform(4, 10, n * n)
    kx, ky = (wavenumber * np.cos(theta)).astype(np.float32), (wavenumber * np.sin(theta)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n * n).astype(np.float32)
    rows = np.tanh(2 * np.sin(kx[pid] * xx + ky[pid] * yy + phase[pid]))
    crop = rows + rng.normal(0, 0.6, n * n).astype(np.float32)[pid]
    # urban: blocks of roofs of random brightness separated by dark streets
    s, oy, ox = rng.uniform(10, 18), rng.uniform(0, 18), rng.uniform(0, 18)
    m = int(size / s) + 3
    cell = (np.floor((yy + oy) / s) * m + np.floor((xx + ox) / s)).astype(np.int64)
    street = ((yy + oy) % s < 2) | ((xx + ox) % s < 2)
    urban = np.where(street, -2.0, rng.uniform(-1, 1, m * m).astype(np.float32)[cell])
    # water: smooth swell with faint ripples of one direction
    a = rng.uniform(0, np.pi)
    water = swell + 0.5 * np.sin(2 * np.pi / 5 * (xx * float(np.cos(a)) + yy * float(np.sin(a))))
    tex = np.stack(
        [water, np.tanh(1.5 * canopy), crop, fine, urban, np.tanh(2.5 * pools) + 0.4 * fine, coarse, drift]
    )
    return tex / tex.std(axis=(1, 2), keepdims=True)


def _veg(wl: np.ndarray, green: float, nir: float) -> np.ndarray:
    """Vegetation reflectance: green peak, red edge at 715 nm, NIR plateau, SWIR water absorption."""
    edge = 1 / (1 + np.exp(-(wl - 715) / 18))
    vis = 0.025 + green * np.exp(-0.5 * ((wl - 560) / 35) ** 2)
    ir = nir * (1 - 0.45 / (1 + np.exp(-(wl - 1300) / 60)) - 0.3 / (1 + np.exp(-(wl - 1950) / 80)))
    return vis * (1 - edge) + ir * edge


def _signatures(wl: np.ndarray, num_classes: int, doy: np.ndarray) -> np.ndarray:
    """T x K x C reflectance: (green, senescent) endmembers mixed by a per-class seasonal greenness."""
    water = 0.07 * np.exp(-(wl - 440) / 180) + 0.008
    soil = 0.3 * (0.45 + 0.55 / (1 + np.exp(-(wl - 900) / 350)))
    urban = 0.19 + 0.03 * (wl - 400) / 1800
    snow = 0.75 * (1 - 0.93 / (1 + np.exp(-(wl - 1250) / 100))) + 0.02
    brown = 0.5 * _veg(wl, 0.03, 0.2) + 0.4 * soil
    pairs = [  # (green, senescent, seasonal amplitude, day of peak greenness)
        (water, water, 0.0, 0), (_veg(wl, 0.035, 0.30), _veg(wl, 0.025, 0.24), 0.4, 190),
        (_veg(wl, 0.05, 0.36), 0.8 * soil, 0.8, 175), (_veg(wl, 0.045, 0.34), brown, 0.75, 185),
        (urban, urban, 0.0, 0),
        (0.9 * _veg(wl, 0.035, 0.3) + 0.15 * water, 0.9 * _veg(wl, 0.025, 0.24), 0.4, 200),
        (0.75 * soil + 0.06, 0.75 * soil + 0.06, 0.0, 0), (snow, snow, 0.0, 0),
    ]  # fmt: skip
    trans = 1 - 0.35 * np.exp(-0.5 * ((wl - 945) / 25) ** 2) - 0.93 * np.exp(-0.5 * ((wl - 1375) / 45) ** 2)
    out = np.empty((len(doy), num_classes, len(wl)))
    for k in range(num_classes):
        green, senescent, amp, peak = pairs[k % len(pairs)]
        g = 1 - amp * (0.5 - 0.5 * np.cos(2 * np.pi * (doy - peak) / 365))[:, None]
        tilt = (wl / 900) ** (0.3 * (k // len(pairs)) * (-1) ** (k // len(pairs)))  # extra classes: reshaped
        out[:, k] = (g * green + (1 - g) * senescent) * tilt * trans
    return out.astype(np.float32)


def _class_names(num_classes: int) -> tuple[str, ...]:
    """water, forest, ..., snow, then 'water 2', 'forest 2', ... for more classes."""
    n = len(_CLASSES)
    return tuple(_CLASSES[k % n] + (f" {k // n + 1}" if k >= n else "") for k in range(num_classes))


def _validate(scenes: int, size: int, bands: int, classes: int, dates: int, dtype: str) -> None:
    """Raise DataError naming the first bad argument and its allowed range."""
    problems = [
        (scenes < 1, f"num_scenes={scenes}: need at least 1 scene"),
        (size < _MIN_SIZE, f"size={size}: scenes must be at least {_MIN_SIZE} px so class patches fit"),
        (bands < 1, f"num_bands={bands}: need at least 1 band"),
        (not 2 <= classes <= 255, f"num_classes={classes}: need 2 to 255 classes (uint8 mask)"),
        (dates < 1, f"num_dates={dates}: need at least 1 date"),
        (dtype not in _SCALE, f"dtype={dtype!r}: use one of {sorted(_SCALE)}"),
    ]
    for bad, message in problems:
        if bad:
            raise DataError(f"synthetic data: {message}")


def make_synthetic_scenes(
    num_scenes: int = 8,
    size: int = 512,
    num_bands: int = 4,
    num_classes: int = 6,
    num_dates: int = 3,
    seed: int = 0,
    dtype: str = "uint16",
) -> list[ArrayScene]:
    """Labelled multi-date land-cover scenes (T x C x size x size), deterministic from `seed`.

    Values are reflectance x 10000 for uint16, or reflectance scaled so 0.8 -> 255 for uint8.
    Scenes are georeferenced (10 m pixels, UTM 31N) side by side with gaps, so tile positions
    exist in map units. Raises DataError on invalid arguments.
    """
    _validate(num_scenes, size, num_bands, num_classes, num_dates, dtype)
    names, wl = _bands(num_bands)
    class_names = _class_names(num_classes)
    base = np.arange(num_classes) % len(_CLASSES)
    amp = _TEXTURE_AMP[base] * (1 + 0.3 * (np.arange(num_classes) // len(_CLASSES)))
    scale = _SCALE[dtype]
    noise_step = np.float32(0.005 * scale / 73.9)  # a uniform int8 draw has std 73.9: noise std 0.005
    haze_shape = (490 / wl) ** 1.5 * (1 - 0.9 * np.exp(-0.5 * ((wl - 1375) / 45) ** 2))
    scenes = []
    for i in range(num_scenes):
        rng = np.random.default_rng([seed, i])
        start = rng.uniform(0, 365 / num_dates)
        doy = start + np.arange(num_dates) * 365 / num_dates
        mask = _class_map(rng, size, num_classes)
        texture = np.take_along_axis(_textures(rng, size), base[mask][None], 0)[0]
        gain_f, haze_f = _fields(rng, size, [100.0] * num_dates), _fields(rng, size, [80.0] * num_dates)
        variation = _fields(rng, size, [40.0])[0]
        mod = (1 + amp.astype(np.float32)[mask] * texture) * (1 + 0.06 * variation)
        regional = rng.lognormal(0, 0.08, (1, num_classes, 1))  # per-scene class brightness
        sig = _signatures(wl, num_classes, doy) * regional.astype(np.float32)
        images = np.empty((num_dates, num_bands, size, size), dtype=dtype)
        for t in range(num_dates):
            gain = rng.lognormal(0, 0.25) * rng.lognormal(0, 0.06, num_bands)  # illumination, calibration
            haze = rng.uniform(0.0, 0.06) * haze_shape * scale
            img = np.take((sig[t] * (gain * scale).astype(np.float32)).T, mask, axis=1)
            img *= mod * (1 + 0.08 * gain_f[t])
            img += np.multiply.outer(haze.astype(np.float32), np.exp(0.5 * haze_f[t]))
            img += rng.integers(-128, 128, img.shape, dtype=np.int8) * noise_step  # uniform sensor noise
            np.clip(img, 1, np.iinfo(dtype).max, out=img)  # 0 is left free for nodata conventions
            images[t] = np.rint(img, out=img)
        day0 = datetime.date(2021, 1, 1)
        dates = tuple((day0 + datetime.timedelta(days=int(d))).isoformat() for d in doy)
        x0 = 300000.0 + i * (size + 64) * _PIXEL_M + rng.integers(0, 32) * _PIXEL_M
        y0 = 5000000.0 + rng.integers(0, 4096) * _PIXEL_M
        scenes.append(
            ArrayScene(
                name=f"synthetic-{i:03d}",
                images=images,
                bands=names,
                mask=mask,
                dates=dates,
                transform=(_PIXEL_M, 0.0, x0, 0.0, -_PIXEL_M, y0),
                crs=_CRS,
                class_names=class_names,
            )
        )
    return scenes
