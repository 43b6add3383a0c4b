"""Per-sample draws: the same for a sample of the global batch on one process and on two (gloo),
and torch's global RNG outside a seeded step."""

from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsssl.data import draws
from rsssl.data.views import ViewMaker, moco_v2
from rsssl.methods.distributed import gather_no_grad

WORLD, LOCAL = 2, 4
RECIPE = replace(moco_v2(), crop_size=8, grayscale_p=0.5, solarize_p=0.5)  # every op drawn


def drawn(batch: int, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every kind of draw, in a fixed order, for `batch` local samples; views of `images`."""
    draws.reseed(1234)
    out = {
        "rand": draws.rand(batch, 3),
        "randint": draws.randint(0, 100, batch, 2, 2),
        "uniform": draws.uniform(batch, bounds=(-2.0, 5.0)),
        "chance": draws.chance(batch, 0.5),
        "view": ViewMaker(RECIPE, ["red", "green", "blue"])(images),
    }
    draws.reseed(None)
    return out


def _worker(rank: int, init_file: str, out_dir: str, images: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(rank)  # the per-process RNG differs; the per-sample stream does not
    out = drawn(LOCAL, images[rank::WORLD])
    draws.reseed(99)
    positions = draws.global_positions(LOCAL)
    partners = draws.partners(LOCAL)
    everyone = gather_no_grad(positions)
    out |= {
        "positions": positions,
        "partners": partners,
        "found": everyone[draws.gathered_rows(partners, LOCAL)],
    }
    draws.reseed(None)
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_draw_what_one_process_draws_for_their_samples(tmp_path):
    images = torch.randn(WORLD * LOCAL, 3, 16, 16)
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path), images), nprocs=WORLD, join=True)
    one = drawn(WORLD * LOCAL, images)
    for rank in range(WORLD):
        theirs = torch.load(tmp_path / f"rank{rank}.pt")
        for name, expected in one.items():  # process r holds global samples r, r + W, ...
            torch.testing.assert_close(theirs[name], expected[rank::WORLD], msg=name)
        assert theirs["positions"].tolist() == list(range(rank, WORLD * LOCAL, WORLD))
        assert (theirs["partners"] != theirs["positions"]).all()
        assert ((theirs["partners"] >= 0) & (theirs["partners"] < WORLD * LOCAL)).all()
        assert torch.equal(theirs["found"], theirs["partners"])  # gathered_rows finds each partner
    assert not one["chance"].all() and one["chance"].any()


def test_outside_a_seeded_step_draws_follow_torchs_rng():
    torch.manual_seed(5)
    first = draws.rand(6)
    torch.manual_seed(5)
    assert torch.equal(draws.rand(6), first)
    assert torch.equal(first, (torch.manual_seed(5), torch.rand(6))[1])
    draws.reseed(7)
    seeded = draws.rand(6)
    draws.reseed(7)
    assert torch.equal(draws.rand(6), seeded) and not torch.equal(seeded, first)
    draws.reseed(None)
