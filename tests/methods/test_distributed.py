"""Queues and gathers under DDP, with two CPU processes on the gloo backend."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rsssl.methods.distributed import batch_shuffle, batch_unshuffle, gather_no_grad, gather_with_grad

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
    moco = MoCo(
        backbone={"name": "test_resnet"},
        in_chans=3,
        bands=["red", "green", "blue"],
        queue_size=16,
        proj_hidden_dim=8,
        proj_dim=4,
    )
    keys = torch.nn.functional.normalize(torch.randn(BATCH, 4), dim=1)
    moco.enqueue(keys)
    torch.save(
        {
            "gathered": gathered,
            "grad": x.grad,
            "shuffled": shuffled,
            "restored": restored,
            "local": local,
            "queue": moco.queue,
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
    all_keys = torch.cat([o["keys"] for o in out])
    for o in out:  # every process enqueued the keys of both, in rank order, and the pointer moved by both
        assert int(o["ptr"]) == WORLD * BATCH
        torch.testing.assert_close(o["queue"][: WORLD * BATCH], all_keys)
