"""MoCo's queue: a query never meets a stale key of its own sample among its negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsssl.losses import info_nce
from rsssl.methods.moco import EMPTY_SLOT, MoCo
from tests.helpers.methods import tiny_method


def _tiny_moco(queue_size: int) -> MoCo:
    """A deterministic tiny MoCo (eval-mode BatchNorm, no random views) that remembers the queue
    each step's loss saw (`queue_before`)."""
    torch.manual_seed(0)
    moco = tiny_method(
        MoCo,
        queue_size=queue_size,
        proj_hidden_dim=8,
        proj_dim=4,
        batch_size=4,
        shuffle_bn=False,
        temperature=0.2,
    ).eval()
    moco.pair = lambda batch: (batch["image"], batch["image"])
    enqueue = moco.enqueue

    def remembering_enqueue(keys, index):
        moco.queue_before = moco.queue.clone()
        enqueue(keys, index)

    moco.enqueue = remembering_enqueue
    return moco


def test_own_stale_keys_are_masked_out_of_the_negatives():
    moco = _tiny_moco(queue_size=6)
    images = torch.randn(4, 3, 32, 32)
    batch = {"image": images, "index": torch.tensor([10, 11, 12, 13])}
    moco.queue_index.copy_(torch.tensor([11, 99, 10, 10, -1, 7]))  # stale keys of 11 and 10; -1: no index
    queue = moco.queue.clone()
    with torch.no_grad():
        query = moco.projector(moco.backbone(images))
        keys = F.normalize(moco.key_projector(moco.key_backbone(images)), dim=1)
        loss = moco.pretext_step(batch).loss
    own = torch.zeros(4, 6, dtype=torch.bool)
    own[1, 0] = own[0, 2] = own[0, 3] = True  # sample 10 (row 0) twice, sample 11 (row 1) once
    torch.testing.assert_close(loss, info_nce(query, keys, queue, 0.2, exclude=own))
    assert abs(float(loss) - float(info_nce(query, keys, queue, 0.2))) > 1e-4  # the mask mattered
    assert moco.queue_index.tolist() == [10, 11, 12, 13, -1, 7]  # enqueued after the loss, from the pointer


def test_slots_never_written_are_not_negatives():
    """A queue larger than what was enqueued so far holds only real keys as negatives: its
    initial random vectors would otherwise flood the softmax on small data sets."""
    moco = _tiny_moco(queue_size=8)
    images = torch.randn(4, 3, 32, 32)
    first = {"image": images, "index": torch.tensor([0, 1, 2, 3])}
    with torch.no_grad():
        query = moco.projector(moco.backbone(images))
        keys = F.normalize(moco.key_projector(moco.key_backbone(images)), dim=1)
        assert float(moco.pretext_step(first).loss) == 0.0  # the positive is the only candidate
        second = {"image": images, "index": torch.tensor([4, 5, 6, 7])}
        loss = moco.pretext_step(second).loss
    empty = torch.zeros(4, 8, dtype=torch.bool)
    empty[:, 4:] = True  # slots 0-3 hold the first batch's keys, 4-7 were never written
    torch.testing.assert_close(loss, info_nce(query, keys, moco.queue_before, 0.2, exclude=empty))


def test_keys_without_a_sample_index_are_negatives_of_every_query():
    moco = _tiny_moco(queue_size=8)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        moco.pretext_step({"image": images})
    assert moco.queue_index.tolist() == [-1] * 4 + [EMPTY_SLOT] * 4
