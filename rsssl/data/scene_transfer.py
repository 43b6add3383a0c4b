"""Optimal-transport scene transfer (STICL, Huang et al., GRSL 2022), batched on the device.

Each image of a batch is recoloured into the spectral distribution of a style image (another
image of the batch, or the same place at another date): `num_samples` pixels of both are drawn,
the transport plan between the two point clouds (all bands are the feature, any band count,
squared Euclidean cost, uniform weights) is solved, and every pixel x of the image moves with
the sample nearest to it, as POT's out-of-sample mapping does:

    T(x) = x − x_s(i) + n · Σ_j γ_ij x_t(j),   i = argmin_i ‖x − x_s(i)‖

Solvers (`solver`):

- "sinkhorn" (default): entropic OT, batched over the images on their device, in the scaling
  form with absorption into log-domain potentials whenever the scalings grow (Schmitzer's
  stabilisation, POT's `sinkhorn_stabilized`), so a small regularisation neither under- nor
  overflows. `reg` is relative to each problem's mean cost (scale-free across band counts and
  normalisations), `iterations` is fixed (no host sync on a GPU), and `relaxation` ω over-relaxes
  every update (ω = 1: plain Sinkhorn; 1 < ω < 2 converges in fewer iterations, Thibault et al. 2021).
- "emd": POT's exact network-simplex plan (`ot.emd`), one image at a time on the CPU: the
  official code's solver, for fidelity checks.

The official code draws its pixel subsample from `np.random.RandomState(42)` re-created in every
call, so every image pair uses the same pixel positions: `fixed_subsample` reproduces that; by
default each image draws its own. Pixels stay unclipped: in normalised space there is no [0, 1]
to clip to, and a barycentre of target pixels stays inside their range anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rsssl.data import draws
from rsssl.data.scene import DataError

SOLVERS = ("sinkhorn", "emd")
FIXED_SEED = 42  # the official code's RandomState(42)
ABSORB_ABOVE = 1e6  # scalings beyond this are absorbed into the potentials (float32-safe: see
# sinkhorn_scalings)
REBUILD_AFTER = 50.0  # log-factors absorbed into the kernel in place before it is recomputed
ASSIGN_CHUNK = 1 << 22  # pixel-to-sample scores formed this many at a time on a GPU
CPU_ASSIGN_ENTRIES = 1 << 19  # ... and on a CPU (2 MB: one core's L2 cache and a little more)
ARGMIN_GROUP = 100  # columns per group of the nearest-sample search (`grouped_argmin`)
CPU_CACHE_BYTES = 8 << 20  # kernels solved together on a CPU (two 1000 x 1000 problems)


@dataclass(frozen=True)
class TransferSettings:
    """How the scene transfer samples and solves (see the module docstring)."""

    num_samples: int = 1000
    solver: str = "sinkhorn"
    reg: float = 0.05
    iterations: int = 20
    relaxation: float = 1.6
    fixed_subsample: bool = False

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"scene transfer solver {self.solver!r} is unknown; use one of {list(SOLVERS)}")
        if self.num_samples < 1 or self.iterations < 1 or self.reg <= 0:
            raise ValueError(
                f"scene transfer: num_samples={self.num_samples}, iterations={self.iterations} and "
                f"reg={self.reg} must all be positive"
            )
        if not 1.0 <= self.relaxation < 2.0:
            raise ValueError(
                f"scene transfer: relaxation={self.relaxation} must lie in [1, 2) (1: plain Sinkhorn)"
            )


def sample_pixels(images: Tensor, num_samples: int, fixed: bool = False) -> Tensor:
    """B x n x C pixels drawn with replacement from each B x C x H x W image (the official code's
    `randint`); `fixed`: the same positions for every image and call."""
    batch, channels, height, width = images.shape
    if fixed:
        positions = np.random.RandomState(FIXED_SEED).randint(0, height * width, num_samples)
        index = torch.as_tensor(positions, device=images.device).expand(batch, -1)
    else:
        index = draws.randint(0, height * width, batch, num_samples, device=images.device)
    flat = images.flatten(2)  # B x C x HW
    return flat.gather(2, index[:, None, :].expand(-1, channels, -1)).transpose(1, 2)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """B x n x m squared Euclidean distances between B x n x C and B x m x C points (>= 0).

    One batched product of points with two extra coordinates, [x, |x|², 1] · [−2y, 1, |y|²],
    writes |x|² − 2 x·y + |y|² in one pass over the B x n x m result."""
    ones_x, ones_y = x.new_ones(x.shape[:-1] + (1,)), y.new_ones(y.shape[:-1] + (1,))
    left = torch.cat([x, (x * x).sum(-1, keepdim=True), ones_x], dim=-1)
    right = torch.cat([-2.0 * y, ones_y, (y * y).sum(-1, keepdim=True)], dim=-1)
    return torch.bmm(left, right.transpose(1, 2)).clamp_min_(0.0)


def sinkhorn_scalings(
    cost: Tensor, reg: float, iterations: int, relaxation: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """(u, K, v) with n γ = diag(u) K diag(v), γ the entropic plan between uniform marginals, for
    B x n x m costs; ε = reg x each problem's mean cost. u: B x 1 x n, v: B x 1 x m.

    Scaling-form Sinkhorn (v = b / Kᵀu, u = a / Kv: two batched vector-matrix products an
    iteration, the second on a transposed view of the one kernel), with row sums 1 and column
    sums n / m (the plan scaled by n, so the scalings stay near 1), and K = exp(F ⊕ G − C / ε)
    kept relative to log-domain potentials F, G (in units of ε): a scaling that leaves
    [1 / `ABSORB_ABOVE`, `ABSORB_ABOVE`] after its update is absorbed at once (F += log u, or
    G += log v), so nothing under- or overflows: the entries of K that carry mass are then at
    least 1e-12 / m, far above float32's smallest normal number. An absorption scales K's rows
    (or columns) in place; K is recomputed from F and G (an exponential per entry, 20 times the
    cost) only once the absorbed factors since the last recomputation could lift an entry that
    underflowed by more than e^`REBUILD_AFTER`, so every entry above e^(REBUILD_AFTER − 87) ≈ 9e-17
    is what a recomputation gives, up to rounding: every entry that carries mass (>= 1e-15 for
    m = 1000), and fewer recomputations than at 40 (a tenth of the transfer's time on real tiles).
    F, G start as the double c-transform of zero, so K <= 1 with an entry of 1 in every row.

    `relaxation` ω replaces each update by its over-relaxed form v ← v^(1−ω) (b / Kᵀu)^ω (the
    log-potentials move ω times Sinkhorn's step; absorption is unchanged, since the absorbed part
    of a potential is not in v): on real tiles ω = 1.6 comes closer in 20 iterations to the
    converged plan than plain Sinkhorn in 50.
    """
    cost = cost if cost.dtype == torch.float64 else cost.float()
    batch, n, m = cost.shape
    tiny = torch.finfo(cost.dtype).tiny
    eps = reg * cost.mean(dim=(1, 2), keepdim=True).clamp_min(tiny)
    a = torch.ones((batch, 1, n), dtype=cost.dtype, device=cost.device)  # row vectors
    b = torch.full((batch, 1, m), n / m, dtype=cost.dtype, device=cost.device)
    scaled = cost.mul(eps.reciprocal().neg_())  # -C / ε
    potential_g = -scaled.amax(dim=1, keepdim=True)  # B x 1 x m
    shifted = scaled + potential_g
    potential_f = -shifted.amax(dim=2, keepdim=True)  # B x n x 1
    kernel = shifted.add_(potential_f).exp_()
    drift = 0.0  # bound on |log| of the factors absorbed into K since it was last recomputed

    def out_of_range(scaling: Tensor) -> bool:
        low, high = torch.aminmax(scaling)
        return float(high) > ABSORB_ABOVE or float(low) < 1 / ABSORB_ABOVE

    def absorb(scaling: Tensor, potential: Tensor) -> Tensor:
        """Move a B x n x 1 or B x 1 x m scaling into its potential and into K; the new potential."""
        nonlocal kernel, drift
        logs = scaling.log()
        drift += float(logs.abs().amax())
        if drift > REBUILD_AFTER:
            kernel, drift = torch.add(scaled, potential_f).add_(potential_g).add_(logs).exp_(), 0.0
        else:
            kernel.mul_(scaling)
        return potential + logs

    def relaxed(scaling: Tensor, update: Tensor) -> Tensor:
        return update if relaxation == 1.0 else scaling.pow(1.0 - relaxation).mul_(update.pow_(relaxation))

    u, v = torch.ones_like(a), torch.ones_like(b)
    for _ in range(iterations):
        v = relaxed(v, torch.div(b, (u @ kernel).clamp_min_(tiny)))
        if out_of_range(v):
            potential_g, v = absorb(v, potential_g), torch.ones_like(b)
        u = relaxed(u, torch.div(a, (v @ kernel.transpose(1, 2)).clamp_min_(tiny)))
        if out_of_range(u):
            potential_f, u = absorb(u.transpose(1, 2), potential_f), torch.ones_like(a)
    return u, kernel, v


def sinkhorn_plans(cost: Tensor, reg: float, iterations: int, relaxation: float = 1.0) -> Tensor:
    """The B entropic plans diag(u) K diag(v) / n of `sinkhorn_scalings`, materialised."""
    u, kernel, v = sinkhorn_scalings(cost, reg, iterations, relaxation)
    return u.transpose(1, 2) * kernel * v / cost.shape[1]


def sinkhorn_targets(
    source: Tensor, target: Tensor, reg: float, iterations: int, relaxation: float = 1.0
) -> Tensor:
    """n γ Y = diag(u) K (diag(v) Y), the barycentres of the source samples under the entropic
    plans between B x n x C `source` and B x m x C `target` samples, without forming γ.

    On a GPU every problem is solved at once; on a CPU a few at a time (`CPU_CACHE_BYTES` of
    kernels), the costs computed per chunk too, so a problem's arrays stay in cache from its cost
    to its barycentres instead of streaming the whole batch's from memory at every pass."""
    n, m = source.shape[1], target.shape[1]
    per_chunk = len(source)
    if source.device.type == "cpu":
        per_chunk = max(1, CPU_CACHE_BYTES // (n * m * source.element_size()))
    mapped = []
    for start in range(0, len(source), per_chunk):
        part = slice(start, start + per_chunk)
        cost = squared_distances(source[part], target[part])
        u, kernel, v = sinkhorn_scalings(cost, reg, iterations, relaxation)
        mapped.append(u.transpose(1, 2) * (kernel @ (v.transpose(1, 2) * target[part])))
    return torch.cat(mapped)


def emd_plans(cost: Tensor) -> Tensor:
    """POT's exact plans (network simplex), one problem at a time on the CPU."""
    import ot

    plans = []
    for problem in cost.detach().double().cpu().numpy():
        n, m = problem.shape
        plans.append(ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), problem))
    return torch.as_tensor(np.stack(plans), dtype=cost.dtype, device=cost.device)


def grouped_argmin(scores: Tensor, group: int) -> Tensor:
    """`scores.argmin(-1)` (the first index of each row's minimum), found a group at a time: the
    minimum of every `group` consecutive columns, then an argmin within the first group holding
    the row's minimum. torch's argmin over long CPU rows is about 10x slower than `amin`; on 1000
    columns, groups of 100 halve the cost. A last group shorter than `group` is read with its final
    column repeated, which never comes before that column's own position."""
    columns = scores.shape[-1]
    group = min(group, columns)
    full = columns // group * group
    minima = scores[..., :full].unflatten(-1, (full // group, group)).amin(-1)
    if full < columns:
        minima = torch.cat([minima, scores[..., full:].amin(-1, keepdim=True)], dim=-1)
    first = minima.argmin(-1, keepdim=True)
    within = (first * group + torch.arange(group, device=scores.device)).clamp_max_(columns - 1)
    return first.squeeze(-1) * group + scores.gather(-1, within).argmin(-1)


def map_pixels(images: Tensor, source: Tensor, mapped: Tensor) -> Tensor:
    """Move every pixel by the displacement of its nearest source sample (`mapped` − `source`).

    The pixel-to-sample scores are formed a block at a time: `ASSIGN_CHUNK` of them on a GPU, a
    cache-sized block of one image's pixels on a CPU (`CPU_ASSIGN_ENTRIES`), which the argmin then
    reads from the cache."""
    batch, channels, height, width = images.shape
    pixels = images.flatten(2).transpose(1, 2)  # B x HW x C
    displacement = mapped - source
    samples = source.shape[1]
    squares = (source**2).sum(-1)[:, None, :]  # B x 1 x n
    if images.device.type == "cpu":
        per_image, rows = 1, max(1, CPU_ASSIGN_ENTRIES // samples)
    else:
        per_image, rows = max(1, ASSIGN_CHUNK // max(1, height * width * samples)), height * width
    shift = torch.empty_like(pixels)
    for start in range(0, batch, per_image):
        part = slice(start, start + per_image)
        for row in range(0, height * width, rows):
            block = slice(row, row + rows)
            # argmin_i |x - s_i|^2 = argmin_i (|s_i|^2 - 2 x.s_i): |x|^2 never changes the winner
            scores = torch.baddbmm(
                squares[part], pixels[part, block], source[part].transpose(1, 2), alpha=-2.0
            )
            nearest = grouped_argmin(scores, ARGMIN_GROUP)[..., None].expand(-1, -1, channels)
            shift[part, block] = displacement[part].gather(1, nearest)
    return (pixels + shift).transpose(1, 2).reshape(batch, channels, height, width)


def scene_transfer(images: Tensor, styles: Tensor, settings: TransferSettings | None = None) -> Tensor:
    """Each image recoloured into its style image's distribution (same band count, any sizes)."""
    settings = settings or TransferSettings()
    if images.shape[:2] != styles.shape[:2]:
        raise DataError(
            f"scene transfer: {tuple(images.shape[:2])} images and {tuple(styles.shape[:2])} styles: give "
            "one style image per image, with the same bands"
        )
    if len(images) == 0:
        return images
    source = sample_pixels(images.float(), settings.num_samples, settings.fixed_subsample)
    target = sample_pixels(styles.float(), settings.num_samples, settings.fixed_subsample)
    return transfer_with_samples(images, source, target, settings)


def transfer_with_samples(
    images: Tensor, source: Tensor, target: Tensor, settings: TransferSettings | None = None
) -> Tensor:
    """Each image recoloured by the transport from its B x n x C pixel sample `source` to the
    B x n x C style sample `target` (`sample_pixels` of the image and of its style image)."""
    settings = settings or TransferSettings()
    if len(images) == 0:
        return images
    work = images.float()
    source, target = source.to(work.dtype), target.to(work.dtype)
    if settings.solver == "sinkhorn":
        mapped = sinkhorn_targets(source, target, settings.reg, settings.iterations, settings.relaxation)
    else:  # barycentres of the samples under the exact plans
        plans = emd_plans(squared_distances(source, target)).to(target.dtype)
        mapped = settings.num_samples * (plans @ target)
    return map_pixels(work, source, mapped.to(work.dtype)).to(images.dtype)
