"""Device-side view makers: batched, per-sample random augmentations for any band count.

Input is a float batch B×C×H×W already normalised per band (zero mean, unit std), on any device.
Every random parameter is drawn per sample through `rsssl.data.draws` (the same for a sample
whatever the number of processes; torch's global RNG outside a training step, so
`torch.manual_seed` reproduces a view) and applied in batch: no Python loop over samples.

Pipeline of one view, in order:
  1. geometry: random resized crop (crop box per sample, antialiased resize with `roi_align`),
     h-flip, v-flip, then k counter-clockwise quarter turns (`torch.rot90`). Overhead imagery has
     no "up", so flips and rot90 are on by default. The parameters are explicit (`ViewParams`)
     and `apply_geometry` replays them on another tensor, e.g. an index map (GLCNet).
  2. colour, as one per-sample affine map x ↦ A·x + t over the bands (all ops are linear in
     normalised space, so nothing is clamped): per-band brightness (additive shift, in std units),
     per-band contrast (scale around the sample's own band mean), saturation (blend of the RGB
     bands with their grey mean) and hue (rotation of the RGB bands around the grey axis
     (1,1,1)), then grayscale (weighted mean of all bands copied into every band). Saturation and
     hue need known RGB bands (`rgb_band_indices`: unambiguous names or `data.rgb_bands`);
     without them they are skipped, with one warning. The jitter ops run in the fixed order
     brightness, contrast, saturation, hue (brightness/contrast commute, as do saturation/hue).
  3. Gaussian blur (kornia, per-sample sigma in output pixels), then solarize (values above a
     threshold mirrored around it: the normalised-space form of x ↦ 1 − x above 0.5).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor
from torchvision.ops import roi_align

from rsssl.data import draws
from rsssl.data.bands import canonical_band_name, find_band
from rsssl.data.scene import DataError

log = logging.getLogger(__name__)

RGB = ("red", "green", "blue")


def rgb_band_indices(
    bands: Sequence[str], rgb_bands: Sequence[str] | None = None
) -> tuple[int, int, int] | None:
    """Positions of the red, green and blue bands, or None when they are not known.

    `rgb_bands` (the `data.rgb_bands` setting) names them explicitly, in the order red, green,
    blue, by a band's exact or canonical name. Otherwise only canonical names say it: `red`,
    Sentinel-2's zero-padded `B04`, or the names `data.band_preset` gave. Generic names (`b1`..,
    what unnamed files get) and a sensor's ambiguous numbers (Landsat `B4`) never do.
    """
    if rgb_bands is not None:
        return _named_rgb(bands, rgb_bands)
    common = [canonical_band_name(name) for name in bands]
    if not all(role in common for role in RGB):
        return None
    red, green, blue = (common.index(role) for role in RGB)
    return red, green, blue


def _named_rgb(bands: Sequence[str], rgb_bands: Sequence[str]) -> tuple[int, int, int]:
    """Positions of the bands `data.rgb_bands` names; DataError naming the fix when it cannot."""
    setting = f"data.rgb_bands={list(rgb_bands)}"
    if len(rgb_bands) != 3:
        raise DataError(f"{setting} must hold 3 names, the red, green and blue bands in that order")
    repeated = sorted({name for name in rgb_bands if list(rgb_bands).count(name) > 1})
    if repeated:
        raise DataError(f"{setting} names {', '.join(repeated)} more than once: name three different bands")
    positions = [find_band(bands, name) for name in rgb_bands]
    missing = [name for name, i in zip(rgb_bands, positions, strict=True) if i is None]
    if missing:
        raise DataError(
            f"{setting}: the data has no band {', '.join(map(repr, missing))}; its bands are "
            f"{', '.join(bands)}: name three of them, red first"
        )
    red, green, blue = positions
    return red, green, blue


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name} must be (min, max), got {value}")
    return low, high


@dataclass
class ViewRecipe:
    """Parameters of one view; every field can be set from a Hydra YAML.

    The defaults are the geometric recipe (flips + rot90, no crop, no colour).
    crop_size: output side in pixels (square); None keeps the input size.
    crop_scale: (min, max) area fraction of the random resized crop; None = no crop (the whole
        input, resized to crop_size if that differs).
    crop_ratio: (min, max) aspect ratio w/h of the crop box.
    brightness: half-width of the per-band additive shift, in std units.
    contrast, saturation: the factor is drawn from [max(0, 1 − v), 1 + v].
    hue: half-width of the hue rotation, as a fraction of a full turn (0.5 = ±180°).
    grayscale_weights: one weight per band (normalised to sum 1); None = equal weights.
    blur_sigma: (min, max) Gaussian sigma in output pixels.
    solarize_threshold: in std units; values above it are mirrored around it.
    """

    crop_size: int | None = None
    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    rot90: bool = True
    jitter_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    grayscale_p: float = 0.0
    grayscale_weights: tuple[float, ...] | None = None
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    solarize_threshold: float = 0.0

    def __post_init__(self) -> None:
        # Hydra passes lists (ListConfig): store tuples and check ranges once, here.
        if self.crop_scale is not None:
            self.crop_scale = _pair(self.crop_scale, "crop_scale")
        self.crop_ratio = _pair(self.crop_ratio, "crop_ratio")
        self.blur_sigma = _pair(self.blur_sigma, "blur_sigma")
        if self.grayscale_weights is not None:
            self.grayscale_weights = tuple(float(w) for w in self.grayscale_weights)
        for name in ("hflip_p", "vflip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        if self.crop_size is not None and self.crop_size < 1:
            raise ValueError(f"crop_size must be positive, got {self.crop_size}")
        if min(self.brightness, self.contrast, self.saturation, self.hue) < 0 or self.blur_sigma[0] <= 0:
            raise ValueError("jitter strengths must be >= 0 and blur_sigma > 0")


def geometric() -> ViewRecipe:
    """SauMoCo: h/v flips and rot90 only, no crop, no colour."""
    return ViewRecipe()


def moco_v2() -> ViewRecipe:
    """MoCo v2 `--aug-plus`, plus v-flip and rot90 for overhead imagery."""
    return ViewRecipe(
        crop_scale=(0.2, 1.0),
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        grayscale_p=0.2,
        blur_p=0.5,
    )


def simclr() -> ViewRecipe:
    """SimCLR colour distortion strength 1 (jitter 0.8/0.8/0.8/0.2), crop scale 0.08–1."""
    return replace(moco_v2(), crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2)


def dino() -> ViewRecipe:
    """DINO's colour recipe (jitter 0.4/0.4/0.2/0.1 at p 0.8, grayscale 0.2), flips and rot90;
    its crops, blur and solarize are per crop (`rsssl.data.multicrop`)."""
    return replace(moco_v2(), crop_scale=(0.4, 1.0), saturation=0.2, blur_p=0.0)


PRESETS: dict[str, Callable[[], ViewRecipe]] = {
    "geometric": geometric,
    "moco_v2": moco_v2,
    "simclr": simclr,
    "dino": dino,
}


def preset(name: str, **overrides: object) -> ViewRecipe:
    """A preset recipe with some fields overridden (a Hydra `_target_` for `conf/`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown view preset {name!r}; choose from {sorted(PRESETS)}")
    return replace(PRESETS[name](), **overrides)


@dataclass
class ViewParams:
    """Per-sample geometry of a batch of views, applied in this order.

    boxes: B×4 crop boxes (x1, y1, x2, y2) in input pixel edges (pixel i spans [i, i+1)).
    hflip, vflip: B booleans (flip of the width / height axis after the crop).
    k: B counter-clockwise quarter turns in 0..3 (`torch.rot90` on dims (-2, -1)), last.
    size: (height, width) of the output.
    """

    boxes: Tensor
    hflip: Tensor
    vflip: Tensor
    k: Tensor
    size: tuple[int, int]


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    device: torch.device,
    attempts: int = 10,
) -> Tensor:
    """torchvision's RandomResizedCrop box sampling, vectorised: the first of `attempts` draws
    (area fraction in `scale`, log-uniform aspect in `ratio`) that fits, else a centred crop with
    the aspect ratio clamped into `ratio`. Integer boxes (x1, y1, x2, y2), B×4 float."""
    area = height * width * draws.uniform(batch, attempts, bounds=scale, device=device)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(draws.uniform(batch, attempts, bounds=log_ratio, device=device))
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w >= 1) & (w <= width) & (h >= 1) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    x1 = torch.floor(draws.rand(batch, device=device) * (width - w + 1))
    y1 = torch.floor(draws.rand(batch, device=device) * (height - h + 1))

    in_ratio = width / height
    fallback_w, fallback_h = width, height
    if in_ratio < ratio[0]:
        fallback_h = round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fallback_w = round(height * ratio[1])
    fallback = torch.tensor(
        [(width - fallback_w) // 2, (height - fallback_h) // 2, fallback_w, fallback_h],
        dtype=w.dtype,
        device=device,
    )
    sampled = torch.stack([x1, y1, w, h], dim=1)
    x1, y1, w, h = torch.where(fits.any(dim=1, keepdim=True), sampled, fallback).unbind(1)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


def crop_resize(x: Tensor, boxes: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Crop each sample to its box and resize to `size`.

    "bilinear": `roi_align` with adaptive sampling, i.e. bilinear when up-sampling and averaged
    over the box (antialiased) when down-sampling; float input. "nearest": the input pixel under
    each output pixel centre, exact for any dtype (index maps, masks).
    """
    if mode == "bilinear":
        batch_index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)[:, None]
        rois = torch.cat([batch_index, boxes.to(x.dtype)], dim=1)
        return roi_align(x, rois, size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if mode != "nearest":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    x1, y1, x2, y2 = boxes.float().unbind(1)

    def centres(start: Tensor, stop: Tensor, count: int, limit: int) -> Tensor:
        steps = torch.arange(count, device=x.device, dtype=torch.float32) + 0.5
        return torch.floor(start[:, None] + steps * ((stop - start) / count)[:, None]).clamp(0, limit - 1)

    rows = centres(y1, y2, size[0], x.shape[-2]).long()
    cols = centres(x1, x2, size[1], x.shape[-1]).long()
    batch_index = torch.arange(x.shape[0], device=x.device)[:, None, None]
    return x[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def dihedral(x: Tensor, hflip: Tensor, vflip: Tensor, k: Tensor) -> Tensor:
    """Per-sample h-flip, v-flip, then k quarter turns; exact (a permutation of the pixels).

    Sync-free: each op is computed for the whole batch and selected per sample with `where`.
    """

    def select(mask: Tensor, changed: Tensor, unchanged: Tensor) -> Tensor:
        return torch.where(mask.view(-1, 1, 1, 1), changed, unchanged)

    x = select(hflip, x.flip(-1), x)
    x = select(vflip, x.flip(-2), x)
    if x.shape[-1] != x.shape[-2]:
        if bool(k.any()):
            raise ValueError(f"rot90 needs square views, got {tuple(x.shape[-2:])}")
        return x
    x = select(k % 2 == 1, x.rot90(1, dims=(-2, -1)), x)
    return select(k >= 2, x.flip(-2, -1), x)


def apply_geometry(x: Tensor, params: ViewParams, mode: str = "bilinear") -> Tensor:
    """Replay the geometry of a batch of views on another B×C×H×W tensor (e.g. a B×1×H×W map of
    pixel indices with mode="nearest"), so pixel correspondences between views can be tracked."""
    return dihedral(crop_resize(x, params.boxes, params.size, mode), params.hflip, params.vflip, params.k)


def _embed(block: Tensor, rgb: Tensor, channels: int) -> Tensor:
    """B×3×3 matrices acting on the RGB bands, as B×C×C matrices (identity on the other bands)."""
    matrix = torch.eye(channels, dtype=block.dtype, device=block.device).repeat(block.shape[0], 1, 1)
    matrix[:, rgb[:, None], rgb[None, :]] = block
    return matrix


def _hue_rotation(angle: Tensor) -> Tensor:
    """B×3×3 rotations by `angle` around the grey axis (1,1,1)/√3 (Rodrigues' formula)."""
    u = 1 / math.sqrt(3)
    cross = torch.tensor([[0, -u, u], [u, 0, -u], [-u, u, 0]], dtype=angle.dtype, device=angle.device)
    outer = torch.full((3, 3), 1 / 3, dtype=angle.dtype, device=angle.device)
    eye = torch.eye(3, dtype=angle.dtype, device=angle.device)
    cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
    return cos * eye + sin * cross + (1 - cos) * outer


class ViewMaker(torch.nn.Module):
    """Makes one random view of a normalised batch; call it twice for two views.

    `bands` are the band names of the input (their count is checked); they and `rgb_bands`
    (`data.rgb_bands`) decide whether the RGB-only ops (saturation, hue) can run: without known
    RGB bands they are skipped, with one warning when the recipe asks for them.
    """

    def __init__(
        self, recipe: ViewRecipe, bands: Sequence[str], rgb_bands: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.recipe = recipe
        self.bands = tuple(bands)
        rgb = rgb_band_indices(self.bands, rgb_bands)
        if rgb is None and recipe.jitter_p > 0 and recipe.saturation + recipe.hue > 0:
            log.warning(
                "views: hue and saturation are skipped: no red, green and blue bands are known among the "
                "bands (%s); name them with data.rgb_bands=[<red>,<green>,<blue>] (or name the bands with "
                "data.band_preset / data.band_names)",
                ", ".join(self.bands),
            )
        self.register_buffer("rgb", torch.tensor(rgb if rgb else [], dtype=torch.long), persistent=False)
        weights = recipe.grayscale_weights or (1.0,) * len(self.bands)
        if len(weights) != len(self.bands):
            raise ValueError(f"grayscale_weights has {len(weights)} entries for {len(self.bands)} bands")
        weights_t = torch.tensor(weights, dtype=torch.float32)
        self.register_buffer("grayscale_weights", weights_t / weights_t.sum(), persistent=False)

    def forward(
        self, x: Tensor, return_params: bool = False, side: int | None = None
    ) -> Tensor | tuple[Tensor, ViewParams]:
        """One view of x (B×C×H×W), same dtype/device/bands, side `side` (None: the recipe's
        `crop_size`); with `return_params` also the per-sample geometry (`ViewParams`)."""
        batch, channels, height, width = x.shape
        if channels != len(self.bands):
            raise ValueError(f"expected {len(self.bands)} bands {self.bands}, got {channels}")
        params = self.sample_geometry(batch, height, width, x.device, side)
        view = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        if self.recipe.crop_scale is not None or params.size != (height, width):
            view = crop_resize(view, params.boxes, params.size)
        view = dihedral(view, params.hflip, params.vflip, params.k)
        view = self._colour(view)
        view = self._blur(view)
        view = self._solarize(view).to(x.dtype)
        return (view, params) if return_params else view

    def sample_geometry(
        self, batch: int, height: int, width: int, device: torch.device, side: int | None = None
    ) -> ViewParams:
        """Draw the per-sample crop boxes, flips and quarter turns of one batch of views (output
        side `side`, else the recipe's `crop_size`, else the input's size)."""
        r = self.recipe
        if r.crop_scale is None:
            full = torch.tensor([0.0, 0.0, width, height], device=device)
            boxes = full.expand(batch, 4).clone()
        else:
            boxes = sample_crop_boxes(batch, height, width, r.crop_scale, r.crop_ratio, device)
        hflip, vflip = draws.chance(batch, r.hflip_p, device), draws.chance(batch, r.vflip_p, device)
        k = draws.randint(0, 4, batch, device=device) if r.rot90 else torch.zeros(batch, dtype=torch.long)
        side = side or r.crop_size
        size = (side, side) if side else (height, width)
        return ViewParams(boxes, hflip, vflip, k.to(device), size)

    def _colour(self, x: Tensor) -> Tensor:
        """Jitter and grayscale as one per-sample affine band map A·x + t."""
        r = self.recipe
        batch, channels = x.shape[:2]
        rgb = self.rgb.to(x.device)
        has_rgb = rgb.numel() == 3
        jitter = r.jitter_p > 0 and (
            r.brightness > 0 or r.contrast > 0 or (has_rgb and r.saturation + r.hue > 0)
        )
        if not jitter and r.grayscale_p == 0:
            return x
        dtype, device = x.dtype, x.device
        eye = torch.eye(channels, dtype=dtype, device=device).expand(batch, channels, channels)
        matrix, offset = eye, torch.zeros(batch, channels, dtype=dtype, device=device)
        mean = x.mean(dim=(2, 3))

        def compose(a: Tensor, c: Tensor | None = None) -> None:
            # (a, c) after (matrix, offset); the band means follow so contrast uses the current ones.
            nonlocal matrix, offset, mean
            c = torch.zeros_like(offset) if c is None else c
            matrix = a @ matrix
            offset = (a @ offset[..., None]).squeeze(-1) + c
            mean = (a @ mean[..., None]).squeeze(-1) + c

        def uniform(low: float, high: float, shape: tuple[int, ...], on: Tensor, neutral: float) -> Tensor:
            drawn = draws.uniform(*shape, bounds=(low, high), device=device).to(dtype)
            return torch.where(on.view(-1, *[1] * (len(shape) - 1)), drawn, torch.full_like(drawn, neutral))

        if jitter:
            on = draws.chance(batch, r.jitter_p, device)
            if r.brightness > 0:
                compose(eye, uniform(-r.brightness, r.brightness, (batch, channels), on, 0.0))
            if r.contrast > 0:
                f = uniform(max(0.0, 1 - r.contrast), 1 + r.contrast, (batch, channels), on, 1.0)
                compose(torch.diag_embed(f), (1 - f) * mean)
            if has_rgb and r.saturation > 0:
                s = uniform(max(0.0, 1 - r.saturation), 1 + r.saturation, (batch,), on, 1.0)[:, None, None]
                grey_mean = torch.full((3, 3), 1 / 3, dtype=dtype, device=device)
                keep = torch.eye(3, dtype=dtype, device=device)
                compose(_embed(s * keep + (1 - s) * grey_mean, rgb, channels))
            if has_rgb and r.hue > 0:
                angle = 2 * math.pi * uniform(-r.hue, r.hue, (batch,), on, 0.0)
                compose(_embed(_hue_rotation(angle), rgb, channels))
        if r.grayscale_p > 0:
            weights = self.grayscale_weights.to(x).expand(channels, channels)
            compose(torch.where(draws.chance(batch, r.grayscale_p, device)[:, None, None], weights, eye))
        return torch.einsum("bij,bjhw->bihw", matrix, x) + offset[:, :, None, None]

    def _blur(self, x: Tensor) -> Tensor:
        r = self.recipe
        if r.blur_p == 0:
            return x
        on = draws.chance(x.shape[0], r.blur_p, x.device)
        sigma = draws.uniform(x.shape[0], 1, bounds=r.blur_sigma, device=x.device)
        sigma = sigma.expand(-1, 2).to(x.dtype)
        largest_odd = 2 * ((min(x.shape[-2:]) - 1) // 2) + 1
        kernel = min(2 * math.ceil(3 * r.blur_sigma[1]) + 1, largest_odd)
        return torch.where(on.view(-1, 1, 1, 1), gaussian_blur2d(x, kernel, sigma), x)

    def _solarize(self, x: Tensor) -> Tensor:
        r = self.recipe
        if r.solarize_p == 0:
            return x
        on = draws.chance(x.shape[0], r.solarize_p, x.device).view(-1, 1, 1, 1)
        t = r.solarize_threshold
        return torch.where(on & (x >= t), 2 * t - x, x)
