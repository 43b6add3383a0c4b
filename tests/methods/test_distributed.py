"""Queues and gathers under DDP, with two CPU processes on the gloo backend."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsssl.methods.distributed import batch_shuffle, batch_unshuffle, gather_no_grad, gather_with_grad
from rsssl.methods.moco import EMPTY_SLOT
from tests.helpers.methods import tiny_method

WORLD = 2
BATCH = 4


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(100 + rank)
    local = torch.arange(BATCH, dtype=torch.float32).unsqueeze(1) + 10 * rank  # rank r: 10r .. 10r+3

    gathered = gather_no_grad(local)

    x = local.clone().requires_grad_(True)
    everything = gather_with_grad(x)
    (everything * torch.arange(1, WORLD * BATCH + 1).unsqueeze(1)).sum().backward()

    torch.manual_seed(7)  # the permutation is broadcast from rank 0 anyway
    shuffled, undo = batch_shuffle(local)
    restored = batch_unshuffle(shuffled, undo)

    from rsssl.methods.moco import MoCo

    torch.manual_seed(0)
    moco = tiny_method(
        MoCo,
        queue_size=16,
        proj_hidden_dim=8,
        proj_dim=4,
    )
    keys = torch.nn.functional.normalize(torch.randn(BATCH, 4), dim=1)
    index = torch.arange(BATCH) + 100 * rank
    moco.enqueue(keys, index)
    torch.save(
        {
            "gathered": gathered,
            "grad": x.grad,
            "shuffled": shuffled,
            "restored": restored,
            "local": local,
            "queue": moco.queue,
            "queue_index": moco.queue_index,
            "ptr": moco.queue_ptr,
            "keys": keys,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    dist.destroy_process_group()


def test_gathers_shuffle_and_queue_across_two_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    expected = torch.cat([o["local"] for o in out])
    for rank, o in enumerate(out):
        assert torch.equal(o["gathered"], expected)
        # d/dx_r of sum(all * weights) summed over both ranks' losses = 2 * the rank's weights
        weights = torch.arange(1, WORLD * BATCH + 1, dtype=torch.float32)[rank * BATCH : (rank + 1) * BATCH]
        torch.testing.assert_close(o["grad"].squeeze(1), WORLD * weights)
        assert torch.equal(o["restored"], o["local"])
    shuffled = torch.cat([o["shuffled"] for o in out])
    assert sorted(shuffled.squeeze(1).tolist()) == sorted(expected.squeeze(1).tolist())
    assert not torch.equal(shuffled, expected)  # samples really moved across the processes
    for o in out:  # each process's key batch (its BatchNorm group) holds half of each process's samples
        origin = (o["shuffled"].squeeze(1) // 10).long()
        assert sorted(origin.tolist()) == [0, 0, 1, 1]
    all_keys = torch.cat([o["keys"] for o in out])
    in_batch_order = all_keys.view(WORLD, BATCH, -1).transpose(0, 1).flatten(0, 1)  # k·W + r
    for o in out:  # every process enqueued the keys of both in global-batch order; the pointer moved by both
        assert int(o["ptr"]) == WORLD * BATCH
        torch.testing.assert_close(o["queue"][: WORLD * BATCH], in_batch_order)
        assert o["queue_index"][: WORLD * BATCH].tolist() == [
            k + 100 * r for k in range(BATCH) for r in range(WORLD)
        ]
        assert (o["queue_index"][WORLD * BATCH :] == EMPTY_SLOT).all()


def _simclr(seed: int = 0):
    """A tiny SimCLR in eval mode (BatchNorm per sample, from running statistics)."""
    from rsssl.methods.simclr import SimCLR

    torch.manual_seed(seed)
    return tiny_method(
        SimCLR,
        proj_hidden_dim=8,
        proj_dim=4,
        temperature=0.5,
    ).eval()


def _simclr_loss_and_grads(simclr, images: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """Loss and parameter gradients of one SimCLR step; the views are the images and their mirror."""
    calls = iter((False, True))
    simclr.views = lambda x: x.flip(-1) if next(calls) else x  # noqa: E731
    loss = simclr.pretext_step({"image": images}).loss
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in simclr.parameters() if p.grad is not None]


def _simclr_worker(rank: int, init_file: str, out_dir: str, images: torch.Tensor) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    loss, grads = _simclr_loss_and_grads(_simclr(), images[rank * BATCH : (rank + 1) * BATCH])
    for grad in grads:  # what DDP does to the gradients: the mean over processes
        dist.all_reduce(grad)
        grad /= WORLD
    torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"simclr{rank}.pt"))
    dist.destroy_process_group()


def test_simclr_negatives_come_from_the_global_batch(tmp_path):
    """Two processes with half the batch each give the loss and gradients of one process with all of it."""
    torch.manual_seed(3)
    images = torch.randn(WORLD * BATCH, 3, 32, 32)
    mp.spawn(_simclr_worker, args=(str(tmp_path / "init"), str(tmp_path), images), nprocs=WORLD, join=True)
    loss, grads = _simclr_loss_and_grads(_simclr(), images)
    local_only, _ = _simclr_loss_and_grads(_simclr(), images[:BATCH])
    for rank in range(WORLD):
        out = torch.load(tmp_path / f"simclr{rank}.pt")
        assert out["loss"] == pytest.approx(loss, rel=1e-5)
        assert len(out["grads"]) == len(grads)
        for theirs, ours in zip(out["grads"], grads, strict=True):
            torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-6)
    assert abs(local_only - loss) > 1e-3  # the global batch really changed the negatives
