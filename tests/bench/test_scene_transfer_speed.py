"""Scene transfer's cost (STICL): batched Sinkhorn against the official per-image POT EMD, and as a
fraction of a MoCo v2 step, in one run (`make slow`; on the GPU too under `make test-gpu`).

The issue's targets: at least 20x faster than per-sample POT EMD on the CPU, under 10 % of a MoCo
v2 step on the GPU. One batch: 64 real PlanetScope tiles of 64 x 64 px (3 bands, standardised as
the method sees them) recoloured into 64 others, 1000 sampled pixels each, with STICL's own
transfer settings (`conf/method/sticl.yaml`: over-relaxed, ω 1.6, 20 iterations) and with plain
Sinkhorn at 50 iterations (the former default, no closer to the exact transfer); each one's
distance to the official pixels is printed. The three are timed in turns, fastest of 3 each. On
the project's 2-core CPU (2026-12-03, three runs) STICL's settings measured 22.9x, 18.6x and
22.5x, plain Sinkhorn 18.0x, 17.2x and 19.3x (POT's own time varied from 14 to 18 s a batch); the
kernels' construction (a cost, two c-transforms and an exponential per entry) and the iterations'
vector-matrix products over them are most of what is left. The assertions guard those levels less
the run-to-run noise (16x and 12x).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import ot
import pytest
import torch

from rsssl.bench.steps import StepSetup, method_from_yaml, rates, rsssl_step
from rsssl.data.scene_transfer import TransferSettings, scene_transfer
from tests.helpers.tiles import standardised_tiles

BATCH, TILE, SAMPLES = 64, 64, 1000
GUARD, PLAIN_GUARD = 16, 12  # see the module docstring


def planetscope_tiles(data_dir: Path, count: int) -> torch.Tensor:
    """`count` random 64 px tiles of the PlanetScope scene, each band standardised over the scene."""
    pixels = np.load(data_dir / "planetscope_sfbay_scenes_dev.npz")["scene_1"]  # H x W x 3 uint8
    return standardised_tiles(pixels.transpose(2, 0, 1), count, TILE)


def official_transfer(images: torch.Tensor, styles: torch.Tensor) -> np.ndarray:
    """The official ST_transf, one image at a time: EMDTransport on 1000 pixels, all pixels mapped."""
    out = []
    for image, style in zip(images.numpy(), styles.numpy(), strict=True):
        pixels, style_pixels = image.reshape(3, -1).T, style.reshape(3, -1).T
        rng = np.random.RandomState(42)
        xs = pixels[rng.randint(0, len(pixels), SAMPLES)]
        xt = style_pixels[rng.randint(0, len(style_pixels), SAMPLES)]
        out.append(ot.da.EMDTransport().fit(Xs=xs, Xt=xt).transform(Xs=pixels))
    return np.stack(out)


def best_of(fn, repeats: int = 3) -> float:
    return interleaved_best({"fn": fn}, repeats)["fn"]


def interleaved_best(runs: dict[str, Callable[[], object]], rounds: int = 3) -> dict[str, float]:
    """Each run's fastest of `rounds` timings, the runs taking turns in every round, so a slow
    stretch of the machine weighs on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def transfer_run(tiles: torch.Tensor, device: str, settings: TransferSettings) -> Callable[[], None]:
    """One batch's transfer on `device`, warmed up."""
    images, styles = tiles[:BATCH].to(device), tiles[BATCH:].to(device)

    def run() -> None:
        scene_transfer(images, styles, settings)
        if device == "cuda":
            torch.cuda.synchronize()

    run()
    return run


def transfer_seconds(tiles: torch.Tensor, device: str, settings: TransferSettings) -> float:
    return best_of(transfer_run(tiles, device, settings))


def sticl_settings() -> TransferSettings:
    settings = method_from_yaml("sticl", StepSetup(batch=BATCH, tile=TILE)).transfer
    assert settings.num_samples == SAMPLES
    return settings


def moco_step_seconds(device: str) -> float:
    """Median seconds of MoCo v2's whole training step (its defaults) on a batch of BATCH tiles."""
    setup = StepSetup(batch=BATCH, tile=TILE, device=device)
    step = rsssl_step(method_from_yaml("moco", setup), setup)
    return BATCH / rates({"moco": step}, setup, rounds=3, warmup=1)["moco"]


@pytest.mark.slow
def test_sinkhorn_transfer_is_faster_than_per_image_emd_on_the_cpu(data_dir):
    torch.manual_seed(0)
    tiles = planetscope_tiles(data_dir, 2 * BATCH)
    sticl = sticl_settings()
    plain = replace(sticl, iterations=50, relaxation=1.0)
    official = official_transfer(tiles[:8], tiles[BATCH : BATCH + 8])
    seconds = interleaved_best(
        {
            "official": lambda: official_transfer(tiles[:8], tiles[BATCH : BATCH + 8]),
            "ours": transfer_run(tiles, "cpu", sticl),
            "plain": transfer_run(tiles, "cpu", plain),
        }
    )
    official_seconds, ours, slower = seconds["official"] * BATCH / 8, seconds["ours"], seconds["plain"]
    moco = moco_step_seconds("cpu")

    def distance(settings: TransferSettings) -> float:  # mean |Δ| to the official pixels, in std units
        moved = scene_transfer(tiles[:8], tiles[BATCH : BATCH + 8], settings).flatten(2).transpose(1, 2)
        return float((moved.double() - torch.from_numpy(official)).abs().mean())

    print(
        f"scene transfer of {BATCH} PlanetScope tiles ({SAMPLES} samples each), CPU: per-image POT EMD "
        f"{official_seconds:.2f} s; Sinkhorn at STICL's settings (ω {sticl.relaxation}, {sticl.iterations} "
        f"iterations) {ours:.3f} s ({official_seconds / ours:.1f}x), mean |Δ| to EMD's pixels "
        f"{distance(sticl):.3f}; plain ({plain.iterations} iterations) {slower:.3f} s "
        f"({official_seconds / slower:.1f}x), |Δ| {distance(plain):.3f}. MoCo v2 step {moco:.3f} s: a "
        f"whole batch's transfer is {ours / moco:.0%} of it (STICL transfers 10 % of the keys)"
    )
    assert official_seconds > GUARD * ours and official_seconds > PLAIN_GUARD * slower


@pytest.mark.gpu
def test_sinkhorn_transfer_is_under_a_tenth_of_a_moco_step_on_the_gpu(data_dir):
    ours = transfer_seconds(planetscope_tiles(data_dir, 2 * BATCH), "cuda", sticl_settings())
    moco = moco_step_seconds("cuda")
    print(
        f"scene transfer of {BATCH} tiles, GPU: {ours * 1e3:.1f} ms; "
        f"MoCo v2 step {moco * 1e3:.1f} ms ({ours / moco:.1%})"
    )
    assert ours < 0.1 * moco
