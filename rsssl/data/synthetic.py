"""Procedural synthetic land-cover scenes: the built-in data for demos, tests and benchmarks.

A scene is built like a remote-sensing acquisition, in three layers, so that a class is a
spatial structure made of shared materials rather than a mean colour:

1. **Layout** (fixed per scene): a map of landscape patches, each given a class by its region's
   class mix, and per class a spatial arrangement of materials: field parcels with crop rows and
   hedges, orchards (a lattice of crowns), forest canopy with gaps, grassland, street grids with
   roofs and building shadows, bare soil, water with waves, river corridors (channel, banks,
   riparian trees). Every patch, parcel and building draws a spectral variant (crop type, soil
   colour, roof material, conifer or broadleaf, turbidity), so classes overlap in spectrum and
   their mixes of the same materials overlap in histogram.
2. **Spectra** (per acquisition date): linear mixtures of material endmembers (water, green leaf,
   dry vegetation, soil, red soil, concrete, tile, metal, asphalt) at the sensor's band centres;
   vegetation greenness follows each variant's phenology, shifted by the region's climate.
3. **Nuisance** (per acquisition, never per class): per-band gain and offset, overall
   illumination, terrain shading under the date's sun, haze (path radiance), clouds and their
   shadows, sun glint on water, sensor noise. Every factor is a setting of `Nuisance`, drawn from
   its own random stream, so turning one off leaves every other pixel value as it was.

Scenes belong to regions (`num_regions`, properties drawn from `region_seed` alone, so scenes of
any seed share them): each region has its own class mix, soil colour, roof palette, crop mix
and phenology offset. Dates start in summer and step through the year, so date 0 is a summer
acquisition in every scene and later dates are other seasons (the date-shift protocols).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy.spatial import cKDTree

from rsssl.data.scene import ArrayScene, DataError

CLASSES = ("water", "forest", "cropland", "grassland", "urban", "bare soil", "orchard", "river")
WATER, FOREST, CROPLAND, GRASSLAND, URBAN, BARE_SOIL, ORCHARD, RIVER = range(len(CLASSES))
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
_PATCH_PX = 110  # mean landscape-patch diameter: 32 px tiles are mostly of one class
_FIRST_DOY = (150, 200)  # date 0 falls in this window of days of the year (summer)
PATCH_BRIGHTNESS = 0.2  # std of the log brightness of a landscape patch
PATCH_GREENNESS = 0.1  # std of a patch's green-fraction offset

# material endmembers, in the order of the abundance maps
MATERIALS = ("water", "leaf", "dry", "soil", "red soil", "concrete", "tile", "metal", "asphalt", "glint")
(M_WATER, M_LEAF, M_DRY, M_SOIL, M_RED, M_CONCRETE, M_TILE, M_METAL, M_ASPHALT, M_GLINT) = range(
    len(MATERIALS)
)
# vegetation phenologies: (base greenness, seasonal amplitude, day of peak greenness)
PHENOLOGY = {
    "winter cereal": (0.15, 0.8, 135), "summer crop": (0.1, 0.85, 215), "fallow": (0.0, 0.0, 0),
    "ley": (0.45, 0.4, 160), "broadleaf": (0.3, 0.65, 185), "conifer": (0.75, 0.1, 190),
    "lush grass": (0.4, 0.5, 150), "dry grass": (0.15, 0.45, 120), "orchard": (0.4, 0.5, 175),
    "riparian": (0.45, 0.45, 195),
}  # fmt: skip
_PHEN = tuple(PHENOLOGY)


@dataclass(frozen=True)
class Nuisance:
    """Per-acquisition nuisance factors (0 turns a factor off); reflectance units unless said.

    gain: std of the log per-band sensor gain; offset: std of the per-band offset;
    illumination: std of the log overall brightness (sun elevation, exposure); relief: strength
    of terrain shading under the date's sun; haze: largest path radiance (blue band, scaled by
    wavelength^-1.5); clouds: mean cloud cover fraction (clouds and their shadows);
    glint: largest sun-glint reflectance on water; season: phenology amplitude factor (0: every
    date has the same vegetation); noise: std of the sensor noise.
    """

    gain: float = 0.08
    offset: float = 0.01
    illumination: float = 0.15
    relief: float = 0.15
    haze: float = 0.05
    clouds: float = 0.04
    glint: float = 0.15
    season: float = 1.0
    noise: float = 0.004

    @classmethod
    def of(cls, settings: Nuisance | Mapping[str, float] | None) -> Nuisance:
        """A Nuisance from a mapping of some of its fields; DataError naming unknown keys."""
        if isinstance(settings, Nuisance):
            return settings
        settings = dict(settings or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise DataError(f"synthetic data: unknown nuisance {unknown}; known: {sorted(known)}")
        bad = [k for k, v in settings.items() if not float(v) >= 0]
        if bad:
            raise DataError(f"synthetic data: nuisance {bad} must be >= 0 (0 turns a factor off)")
        return cls(**{k: float(v) for k, v in settings.items()})

    @classmethod
    def none(cls) -> Nuisance:
        """Every factor off: the scene as the layout and the phenology make it."""
        return cls(**{f.name: 0.0 for f in fields(cls)})


# --- spectra ----------------------------------------------------------------------------------


def _bands(num_bands: int) -> tuple[tuple[str, ...], np.ndarray]:
    """Band names and centre wavelengths (nm): real names for 3, 4 and 13 bands, b1..bN otherwise."""
    if num_bands in _BANDS:
        names, wl = zip(*_BANDS[num_bands], strict=True)
        return names, np.array(wl, dtype=np.float64)
    wl = np.linspace(490.0, 2190.0, num_bands) if num_bands > 1 else np.array([842.0])
    return tuple(f"b{i + 1}" for i in range(num_bands)), wl


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def endmembers(wl: np.ndarray) -> np.ndarray:
    """M x C reflectance of the materials (order of MATERIALS) at wavelengths `wl` (nm).

    Leaf: green peak, red edge at 715 nm, NIR plateau, SWIR water absorption; dry vegetation:
    no red edge, bright SWIR; soils rise to the SWIR, red soil adds iron absorption in the blue;
    concrete is flat, tile red, metal bright, asphalt dark; water falls to ~0 beyond the red.
    """
    edge = _sigmoid((wl - 715) / 18)
    swir_water = 1 - 0.45 * _sigmoid((wl - 1300) / 60) - 0.3 * _sigmoid((wl - 1950) / 80)
    leaf = (0.03 + 0.05 * np.exp(-0.5 * ((wl - 560) / 35) ** 2)) * (1 - edge) + 0.42 * swir_water * edge
    dry = 0.06 + 0.28 * _sigmoid((wl - 620) / 90) - 0.06 * _sigmoid((wl - 2000) / 60)
    soil = 0.09 + 0.22 * _sigmoid((wl - 800) / 300)
    red = 0.06 * _sigmoid((wl - 580) / 25) - 0.04 * np.exp(-0.5 * ((wl - 450) / 40) ** 2)
    concrete = 0.24 + 0.04 * (wl - 400) / 1800
    tile = 0.07 + 0.2 * _sigmoid((wl - 590) / 30) + 0.05 * (wl - 700).clip(0) / 1500
    metal = 0.4 - 0.05 * (wl - 400) / 1800
    asphalt = 0.05 + 0.03 * (wl - 400) / 1800
    water = 0.06 * np.exp(-(wl - 440) / 110) + 0.004
    glint = np.ones_like(wl)
    out = np.stack([water, leaf, dry, soil, red, concrete, tile, metal, asphalt, glint])
    return out.astype(np.float32)


def _atmosphere(wl: np.ndarray) -> np.ndarray:
    """Two-way transmission: water vapour at 945 nm, near-total absorption at 1375 nm (cirrus band)."""
    return 1 - 0.35 * np.exp(-0.5 * ((wl - 945) / 25) ** 2) - 0.95 * np.exp(-0.5 * ((wl - 1375) / 45) ** 2)


def greenness(doy: float, phenology: int, shift: float, season: float) -> float:
    """Green fraction of a vegetation variant's canopy on day `doy` (region shift in days);
    `season` scales the swing around the annual mean (0: the mean on every date)."""
    base, amp, peak = PHENOLOGY[_PHEN[phenology]]
    swing = np.cos(2 * np.pi * (doy - peak - shift) / 365)
    return float(min(1.0, base + amp / 2 + season * amp / 2 * swing))


# --- random fields ----------------------------------------------------------------------------


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


def _cells(rng: np.random.Generator, size: int, mean_px: float, warp: float) -> np.ndarray:
    """H x W int ids of a warped Voronoi partition with cells about `mean_px` across."""
    n = max(2, int(round((size / mean_px) ** 2)))
    seeds = rng.uniform(0, size, (n, 2)).astype(np.float32)
    wy, wx = _fields(rng, size, [mean_px / 4, mean_px / 4]) * warp
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    points = np.stack([(yy + wy) % size, (xx + wx) % size], -1).reshape(-1, 2)
    # periodic distances: no seam effects at the scene's edges
    nearest = cKDTree(seeds, boxsize=size).query(np.minimum(points, np.nextafter(size, 0)))[1]
    return nearest.reshape(size, size).astype(np.int32)


# --- regions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """What a region's scenes share: class mix, materials' variants, climate."""

    class_mix: np.ndarray  # K probabilities
    soil: tuple[float, float]  # soil brightness, redness
    roofs: np.ndarray  # probabilities of concrete, tile, metal roofs
    crops: np.ndarray  # probabilities of winter cereal, summer crop, fallow, ley
    conifer: float  # share of conifer forest patches
    shift: float  # phenology shift in days (climate)
    rivers: int  # river corridors per scene


def make_region(region_seed: int, region: int, num_classes: int) -> Region:
    """Region `region`'s properties, from `region_seed` only (every scene seed shares them)."""
    rng = np.random.default_rng([region_seed, region, 7])
    mix = 0.35 / num_classes + 0.65 * rng.dirichlet(np.full(num_classes, 1.5))
    return Region(
        class_mix=mix,
        soil=(float(rng.uniform(0.75, 1.35)), float(rng.uniform(0, 1.5))),
        roofs=rng.dirichlet(np.full(3, 1.5)),
        crops=rng.dirichlet(np.full(4, 1.5)),
        conifer=float(rng.uniform(0, 1)),
        shift=float(rng.normal(0, 25)),
        rivers=int(rng.integers(1, 3)),
    )


def _assign(rng: np.random.Generator, mix: np.ndarray, n: int) -> np.ndarray:
    """`n` class ids in random order: one of each class when n allows, the rest following `mix`
    (largest remainder; ties go to the first class)."""
    each = int(n >= len(mix))
    quota = mix * (n - each * len(mix))
    counts = np.floor(quota).astype(int)
    counts[np.argsort(counts - quota, kind="stable")[: n - each * len(mix) - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.arange(len(mix)), counts + each))


# --- layout -----------------------------------------------------------------------------------


@dataclass
class Layout:
    """What stays the same at every date: class mask, abundances of the non-vegetation materials,
    vegetation cover with its phenology and green jitter, shade (object shadows, gaps), elevation."""

    mask: np.ndarray  # H x W uint8
    abundance: np.ndarray  # M x H x W, vegetation excluded (leaf/dry come from `cover` per date)
    cover: np.ndarray  # H x W vegetation fraction
    phenology: np.ndarray  # H x W index into PHENOLOGY
    jitter: np.ndarray  # H x W green-fraction jitter
    shade: np.ndarray  # H x W multiplicative shading (shadows, canopy gaps)
    slope: np.ndarray  # 2 x H x W terrain slope (d/dy, d/dx) in units of its std
    water: np.ndarray  # H x W open-water fraction (where glint can appear)


class _Builder:
    """Writes each class's arrangement of materials into the layout, inside the class's pixels."""

    def __init__(self, rng: np.random.Generator, size: int, region: Region, scale: np.ndarray) -> None:
        self.rng, self.size, self.region, self.scale = rng, size, region, scale
        self.yy, self.xx = np.mgrid[:size, :size].astype(np.float32)
        m = len(MATERIALS)
        self.abundance = np.zeros((m, size, size), np.float32)
        self.cover = np.zeros((size, size), np.float32)
        self.phen = np.zeros((size, size), np.int16)
        self.shade = np.ones((size, size), np.float32)
        self.fine, self.canopy, self.patchy, self.coarse = _fields(rng, size, [0.7, 1.1, 5.0, 12.0])

    def _soil(self, where: np.ndarray, amount: np.ndarray | float, bright: np.ndarray | float = 1.0) -> None:
        """Soil of the region's colour (brightness x `bright`) filling `amount` of `where`."""
        b, redness = self.region.soil
        self.abundance[M_SOIL][where] = np.broadcast_to(amount * b * bright, where.shape)[where]
        self.abundance[M_RED][where] = np.broadcast_to(amount * b * redness * bright, where.shape)[where]

    def _veg(self, where: np.ndarray, cover: np.ndarray, phen: np.ndarray | int) -> None:
        self.cover[where] = cover[where]
        self.phen[where] = phen[where] if np.ndim(phen) else phen

    def _lattice(self, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-pixel offsets (du, dv) from the centre of its node of a lattice rotated and spaced
        per patch, and the node's id (unique per patch and node)."""
        angle = self.rng.uniform(0, np.pi / 2, self.cell_count).astype(np.float32)[self.cells]
        s = spacing[self.cells]
        u = (self.xx * np.cos(angle) + self.yy * np.sin(angle)) / s
        v = (-self.xx * np.sin(angle) + self.yy * np.cos(angle)) / s
        iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        node = (iu * 1_000_003 + iv) * 10_007 + self.cells
        return (
            (u - iu - 0.5) * s,
            (v - iv - 0.5) * s,
            np.unique(node, return_inverse=True)[1].reshape(u.shape),
        )

    def water(self, where: np.ndarray, k_scale: float) -> None:
        n = self.cell_count
        turbid = self.rng.uniform(0, 0.25, n).astype(np.float32)[self.cells]  # sediment per lake
        a = self.rng.uniform(0, np.pi)
        waves = np.sin(2 * np.pi / (5 * k_scale) * (self.xx * np.cos(a) + self.yy * np.sin(a)) + self.patchy)
        self.abundance[M_WATER][where] = (1 - turbid)[where]
        self._soil(where, turbid * 0.5)
        self.shade[where] = (1 + 0.06 * waves)[where]

    def forest(self, where: np.ndarray, k_scale: float) -> None:
        conifer = self.rng.uniform(0, 1, self.cell_count)[self.cells] < self.region.conifer
        crowns = _sigmoid(2.5 * (self.canopy if k_scale == 1 else self.patchy) + 1.2)
        self._veg(
            where, 0.7 + 0.3 * crowns, np.where(conifer, _PHEN.index("conifer"), _PHEN.index("broadleaf"))
        )
        self._soil(where, 0.3 * (1 - crowns))
        self.shade[where] = (np.where(conifer, 0.5, 0.62) + 0.45 * crowns)[where]  # gaps are in shadow

    def cropland(self, where: np.ndarray, k_scale: float) -> None:
        parcels = self.parcels
        n = parcels.max() + 1
        crop = self.rng.choice(4, n, p=self.region.crops)
        theta = self.rng.uniform(0, np.pi, n).astype(np.float32)
        wavenumber = (2 * np.pi / (k_scale * self.rng.uniform(4, 9, n))).astype(np.float32)
        duty = self.rng.uniform(0.35, 0.8, n).astype(np.float32)
        phase = self.rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        kx, ky = wavenumber * np.cos(theta), wavenumber * np.sin(theta)
        stripe = 0.5 + 0.5 * np.sin(kx[parcels] * self.xx + ky[parcels] * self.yy + phase[parcels])
        rows = _sigmoid(10 * (stripe - (1 - duty[parcels])))
        fallow = crop[parcels] == 2
        ley = crop[parcels] == 3
        cover = np.where(fallow, 0.0, np.where(ley, 0.8 + 0.1 * self.fine, 0.15 + 0.85 * rows))
        phen = np.array([_PHEN.index(c) for c in ("winter cereal", "summer crop", "fallow", "ley")])[crop][
            parcels
        ]
        edge = self.parcel_edges  # hedges and field margins
        cover = np.where(edge, 0.9, cover)
        phen = np.where(edge, _PHEN.index("lush grass"), phen)
        self._veg(where, cover.astype(np.float32), phen)
        furrows = np.where(fallow, 0.85 + 0.3 * stripe, 1.0)  # ploughed bare parcels show their furrows
        self._soil(where, 1 - cover, furrows)

    def grassland(self, where: np.ndarray, k_scale: float) -> None:
        dry = self.rng.uniform(0, 1, self.cell_count)[self.cells] < 0.4
        cover = np.clip(0.72 + 0.12 * self.fine + 0.1 * self.patchy, 0.3, 1)
        self._veg(where, cover, np.where(dry, _PHEN.index("dry grass"), _PHEN.index("lush grass")))
        self._soil(where, 1 - cover)

    def urban(self, where: np.ndarray, k_scale: float) -> None:
        spacing = (k_scale * self.rng.uniform(9, 16, self.cell_count)).astype(np.float32)
        du, dv, building = self._lattice(spacing)
        half = spacing[self.cells] / 2
        street = (np.abs(du) > half - 1.5) | (np.abs(dv) > half - 1.5)
        count = int(building.max()) + 1
        roof = self.rng.choice(3, count, p=self.region.roofs)[building]
        bright = self.rng.uniform(0.7, 1.3, count).astype(np.float32)[building]
        for material, code in ((M_CONCRETE, 0), (M_TILE, 1), (M_METAL, 2)):
            on = where & ~street & (roof == code)
            self.abundance[material][on] = bright[on]
        self.abundance[M_ASPHALT][where & street] = 1.0
        # building shadows: the strip of street beside a roof's sun-away edges is darkened
        shadow = street & ((du > half - 1.5) & (du < half) | (dv > half - 1.5) & (dv < half))
        self.shade[where] = np.where(shadow, 0.45, 1.0)[where]
        trees = where & street & (self.canopy > 1.6)  # street trees
        self.abundance[M_ASPHALT][trees] = 0.3
        self._veg(trees, np.full_like(self.cover, 0.7), _PHEN.index("broadleaf"))

    def bare_soil(self, where: np.ndarray, k_scale: float) -> None:
        bright = self.rng.uniform(0.7, 1.4, self.cell_count).astype(np.float32)[self.cells]  # sand .. loam
        texture = 1 + 0.12 * self.coarse + 0.05 * self.fine
        shrubs = np.where(self.canopy > 1.8, 0.5, 0.0).astype(np.float32)
        self._veg(where, shrubs, _PHEN.index("dry grass"))
        self._soil(where, 1 - shrubs, bright * texture)

    def orchard(self, where: np.ndarray, k_scale: float) -> None:
        spacing = (k_scale * self.rng.uniform(5, 9, self.cell_count)).astype(np.float32)
        du, dv, _ = self._lattice(spacing)
        radius = (spacing * self.rng.uniform(0.22, 0.4, self.cell_count).astype(np.float32))[self.cells]
        crown = np.clip(radius - np.hypot(du, dv) + 0.5, 0, 1)
        grass_floor = self.rng.uniform(0, 1, self.cell_count)[self.cells] < 0.5
        floor = np.where(grass_floor, 0.5, 0.05).astype(np.float32)
        cover = crown + (1 - crown) * floor
        phen = np.where(crown > 0.5, _PHEN.index("orchard"), _PHEN.index("dry grass"))
        self._veg(where, cover, phen)
        self._soil(where, 1 - cover)
        behind = np.clip(radius - np.hypot(du + 1.5, dv + 1.5) + 0.5, 0, 1) * (1 - crown)  # crown shadows
        self.shade[where] = (1 - 0.5 * behind)[where]

    def river_corridors(self, count: int, half_width: float) -> tuple[np.ndarray, np.ndarray]:
        """(corridor mask, distance to the nearest channel centreline) of `count` meandering rivers."""
        dist = np.full((self.size, self.size), np.inf, np.float32)
        for _ in range(count):
            angle = self.rng.uniform(0, np.pi)
            along = self.xx * np.cos(angle) + self.yy * np.sin(angle)
            across = -self.xx * np.sin(angle) + self.yy * np.cos(angle)
            t = along / self.size * 2 * np.pi
            amp, waves = self.rng.uniform(15, 40, 2), self.rng.uniform(1, 4, 2)
            ph = self.rng.uniform(0, 2 * np.pi, 2)
            middle = (
                self.size / 2 * (np.cos(angle) - np.sin(angle)) + self.rng.uniform(-0.25, 0.25) * self.size
            )
            curve = middle + amp[0] * np.sin(waves[0] * t + ph[0]) + amp[1] * np.sin(waves[1] * t + ph[1])
            slope = amp[0] * waves[0] * np.cos(waves[0] * t + ph[0]) + amp[1] * waves[1] * np.cos(
                waves[1] * t + ph[1]
            )
            d = np.abs(across - curve) / np.sqrt(1 + (slope * 2 * np.pi / self.size) ** 2)
            dist = np.minimum(dist, d)
        return dist < half_width, dist

    def river(self, where: np.ndarray, dist: np.ndarray, k_scale: float) -> None:
        width = k_scale * (1.5 + 1.2 * (1 + np.tanh(self.coarse)))  # channel half-width 1.5 .. 4 px
        channel = dist < width
        bank = ~channel & (dist < width + 1.5)
        trees = ~channel & ~bank & (dist < width + 7)
        crowns = _sigmoid(2.5 * self.canopy + 1.0)
        cover = np.where(channel | bank, 0.0, np.where(trees, 0.6 + 0.4 * crowns, 0.8 + 0.1 * self.fine))
        phen = np.where(trees, _PHEN.index("riparian"), _PHEN.index("lush grass"))
        self._veg(where, cover.astype(np.float32), phen)
        self.abundance[M_WATER][where & channel] = 1.0
        self._soil(
            where & ~channel, np.where(bank, 1.0, 1 - cover).astype(np.float32), np.where(bank, 1.5, 1.0)
        )
        self.shade[where & trees] = (0.65 + 0.35 * crowns)[where & trees]


def make_layout(rng: np.random.Generator, size: int, num_classes: int, region: Region) -> Layout:
    """A scene's class mask and its material layout, from one random stream."""
    base = np.arange(num_classes) % len(CLASSES)
    has_river = RIVER in base.tolist()
    land = np.flatnonzero(base != RIVER)  # rivers are corridors drawn over the patches, not patches
    patch_px = min(_PATCH_PX, size / np.sqrt(2 * len(land)))  # small scenes: still 2 patches a class
    cells = _cells(rng, size, patch_px, warp=12.0 * patch_px / _PATCH_PX)
    count = int(cells.max()) + 1
    cell_class = land[_assign(rng, region.class_mix[land] / region.class_mix[land].sum(), count)]
    mask = cell_class[cells].astype(np.uint8)
    scale = 1 + 0.5 * (np.arange(num_classes) // len(CLASSES))  # extra classes: coarser patterns
    b = _Builder(rng, size, region, scale)
    b.cells, b.cell_count = cells, count
    b.parcels = _cells(rng, size, 36.0, warp=4.0)
    b.parcel_edges = (b.parcels != np.roll(b.parcels, 1, 0)) | (b.parcels != np.roll(b.parcels, 1, 1))
    dist = None
    if has_river:
        rivers = [k for k in range(num_classes) if base[k] == RIVER]
        corridor, dist = b.river_corridors(region.rivers * len(rivers), half_width=18.0)
        mask[corridor] = rivers[0]
    for k in range(num_classes):
        where = mask == k
        if not where.any():
            continue
        kind = CLASSES[base[k]].replace(" ", "_")
        if base[k] == RIVER:
            b.river(where, dist, float(scale[k]))
        else:
            getattr(b, kind)(where, float(scale[k]))
    slope = np.stack(np.gradient(_fields(rng, size, [60.0])[0]))
    slope /= slope.std()
    # within-class variety per landscape patch: brightness (soil moisture, canopy density, roof age)
    # and greenness (vigour, local phenology), so a class's histogram spreads over its patches
    brightness = rng.lognormal(0, PATCH_BRIGHTNESS, count).astype(np.float32)[cells]
    vigour = rng.normal(0, PATCH_GREENNESS, count).astype(np.float32)[cells]
    jitter = (0.08 * b.patchy + vigour) * (b.cover > 0)
    return Layout(
        mask, b.abundance, b.cover, b.phen, jitter, b.shade * brightness, slope, b.abundance[M_WATER].copy()
    )


# --- acquisition ------------------------------------------------------------------------------


def _stream(seed: int, scene: int, factor: str, date: int = 0) -> np.random.Generator:
    """The random stream of one nuisance factor of one acquisition: toggling a factor leaves the
    streams of the others, hence their pixels, unchanged."""
    code = int.from_bytes(factor.encode()[:8].ljust(8, b"\0"), "little")
    return np.random.default_rng([seed, scene, code, date])


def acquisition_reflectance(
    layout: Layout, ends: np.ndarray, wl: np.ndarray, doy: float, shift: float, nuisance: Nuisance,
    seed: int, scene: int, date: int,
) -> np.ndarray:  # fmt: skip
    """C x H x W top-of-atmosphere reflectance of one acquisition (date `date`, day `doy`)."""
    size = layout.mask.shape[0]
    by_phenology = [greenness(doy, p, shift, nuisance.season) for p in range(len(_PHEN))]
    green = np.clip(np.array(by_phenology, np.float32)[layout.phenology] + layout.jitter, 0, 1)
    abundance = layout.abundance.copy()
    abundance[M_LEAF] = layout.cover * green
    abundance[M_DRY] = layout.cover * (1 - green)
    if nuisance.glint > 0:  # sun glint: bright specks on open water, how bright per acquisition
        rng = _stream(seed, scene, "glint", date)
        level = rng.uniform(0, nuisance.glint)
        abundance[M_GLINT] = layout.water * level * np.clip(_fields(rng, size, [0.6])[0] - 1.5, 0, None)
    # einsum's own loop, not BLAS (optimize=True): a BLAS product splits its sums by thread count, so
    # its rounding, and some uint16 pixels, depended on the machine's threads
    surface = np.einsum("mhw,mc->chw", abundance, ends, optimize=False) * layout.shade
    if nuisance.relief > 0:  # terrain shading under the date's sun azimuth
        azimuth = _stream(seed, scene, "relief", date).uniform(0, 2 * np.pi)
        facing = np.cos(azimuth) * layout.slope[1] + np.sin(azimuth) * layout.slope[0]
        surface *= np.clip(1 + nuisance.relief * facing, 0.2, None)
    image = surface * _atmosphere(wl).astype(np.float32)[:, None, None]
    if nuisance.haze > 0:  # path radiance, strongest in the blue, smooth over the scene
        rng = _stream(seed, scene, "haze", date)
        amount = rng.uniform(0, nuisance.haze)
        shape = ((490 / wl) ** 1.5 * _atmosphere(wl)).astype(np.float32)
        image += amount * shape[:, None, None] * np.exp(0.4 * _fields(rng, size, [80.0])[0])
    if nuisance.clouds > 0:  # clouds above the absorbing atmosphere, their shadows offset by the sun
        rng = _stream(seed, scene, "clouds", date)
        fraction = min(0.9, rng.exponential(nuisance.clouds))
        body = _fields(rng, size, [25.0, 3.0])
        body = body[0] + 0.25 * body[1]
        alpha = np.clip((body - np.quantile(body, 1 - fraction)) / 0.6, 0, 1)
        shadow = np.roll(alpha, tuple(int(v) for v in rng.integers(8, 24, 2)), (0, 1))
        cloud = (0.55 - 0.25 * _sigmoid((wl - 1500) / 200)).astype(np.float32)[:, None, None]
        image = image * (1 - 0.6 * shadow) * (1 - alpha) + alpha * cloud
    rng = _stream(seed, scene, "sensor", date)
    gain = np.exp(rng.normal(0, 1, len(wl)) * nuisance.gain + rng.normal() * nuisance.illumination)
    offset = rng.normal(0, 1, len(wl)) * nuisance.offset
    image = image * gain.astype(np.float32)[:, None, None] + offset.astype(np.float32)[:, None, None]
    if nuisance.noise > 0:
        image += (
            _stream(seed, scene, "noise", date).standard_normal(image.shape, dtype=np.float32)
            * nuisance.noise
        )
    return image


def _class_names(num_classes: int) -> tuple[str, ...]:
    """water, forest, ..., river, then 'water 2', 'forest 2', ... for more classes."""
    n = len(CLASSES)
    return tuple(CLASSES[k % n] + (f" {k // n + 1}" if k >= n else "") for k in range(num_classes))


def scene_regions(num_scenes: int, num_regions: int, regions: Sequence[int] | None = None) -> list[int]:
    """The region of each scene: scenes cycle through `regions` (default: all of them)."""
    chosen = list(range(num_regions)) if regions is None else [int(r) for r in regions]
    return [chosen[i % len(chosen)] for i in range(num_scenes)]


def acquisition_days(seed: int, scene: int, num_dates: int) -> np.ndarray:
    """Days of the year of a scene's acquisitions: date 0 in summer, then evenly through the year."""
    start = np.random.default_rng([seed, scene, 11]).uniform(*_FIRST_DOY)
    return start + np.arange(num_dates) * 365 / num_dates


def _validate(scenes: int, size: int, bands: int, classes: int, dates: int, dtype: str, num_regions: int,
              regions: Sequence[int] | None) -> None:  # fmt: skip
    """Raise DataError naming the first bad argument and its allowed range."""
    problems = [
        (scenes < 1, f"num_scenes={scenes}: need at least 1 scene"),
        (size < _MIN_SIZE, f"size={size}: scenes must be at least {_MIN_SIZE} px so class patches fit"),
        (bands < 1, f"num_bands={bands}: need at least 1 band"),
        (not 2 <= classes <= 255, f"num_classes={classes}: need 2 to 255 classes (uint8 mask)"),
        (dates < 1, f"num_dates={dates}: need at least 1 date"),
        (dtype not in _SCALE, f"dtype={dtype!r}: use one of {sorted(_SCALE)}"),
        (num_regions < 1, f"num_regions={num_regions}: need at least 1 region"),
        (
            regions is not None and (not regions or not all(0 <= r < num_regions for r in regions)),
            f"regions={list(regions or [])}: choose region ids in 0..{num_regions - 1}",
        ),
    ]
    for bad, message in problems:
        if bad:
            raise DataError(f"synthetic data: {message}")


def make_synthetic_scenes(
    num_scenes: int = 8,
    size: int = 512,
    num_bands: int = 4,
    num_classes: int = 8,
    num_dates: int = 3,
    seed: int = 0,
    dtype: str = "uint16",
    num_regions: int = 4,
    regions: Sequence[int] | None = None,
    region_seed: int = 0,
    nuisance: Nuisance | Mapping[str, float] | None = None,
) -> list[ArrayScene]:
    """Labelled multi-date land-cover scenes (T x C x size x size), deterministic from the seeds.

    Scene i belongs to region `scene_regions(...)[i]`; `regions` restricts scenes to those
    regions (e.g. held-out regions for a region-shift test set). `nuisance` sets the
    per-acquisition factors (`Nuisance` fields; default: `Nuisance()`). Values are reflectance
    x 10000 for uint16, or reflectance scaled so 0.8 -> 255 for uint8; 0 is never written (left
    free for nodata). Scenes are georeferenced (10 m pixels, UTM 31N) side by side with gaps.
    Raises DataError on invalid arguments.
    """
    _validate(num_scenes, size, num_bands, num_classes, num_dates, dtype, num_regions, regions)
    nuisance = Nuisance.of(nuisance)
    names, wl = _bands(num_bands)
    ends = endmembers(wl)
    scale = _SCALE[dtype]
    top = np.iinfo(dtype).max
    scenes = []
    for i, r in enumerate(scene_regions(num_scenes, num_regions, regions)):
        region = make_region(region_seed, r, num_classes)
        layout = make_layout(np.random.default_rng([seed, i]), size, num_classes, region)
        doy = acquisition_days(seed, i, num_dates)
        images = np.empty((num_dates, num_bands, size, size), dtype=dtype)
        for t in range(num_dates):
            reflectance = acquisition_reflectance(
                layout, ends, wl, doy[t], region.shift, nuisance, seed, i, t
            )
            images[t] = np.rint(np.clip(reflectance * scale, 1, top))
        day0 = datetime.date(2021, 1, 1)
        dates = tuple((day0 + datetime.timedelta(days=int(d))).isoformat() for d in doy)
        place = np.random.default_rng([seed, i, 13])
        x0 = 300000.0 + i * (size + 64) * _PIXEL_M + place.integers(0, 32) * _PIXEL_M
        y0 = 5000000.0 + place.integers(0, 4096) * _PIXEL_M
        scenes.append(
            ArrayScene(
                name=f"synthetic-{i:03d}",
                images=images,
                bands=names,
                mask=layout.mask,
                dates=dates,
                transform=(_PIXEL_M, 0.0, x0, 0.0, -_PIXEL_M, y0),
                crs=_CRS,
                class_names=_class_names(num_classes),
            )
        )
    return scenes
