"""MoCo's queue: a query never meets a stale key of its own sample among its negatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsssl.losses import info_nce
from rsssl.methods.moco import MoCo


def test_own_stale_keys_are_masked_out_of_the_negatives():
    torch.manual_seed(0)
    moco = MoCo(
        backbone={"name": "test_resnet"},
        in_chans=3,
        bands=["red", "green", "blue"],
        queue_size=6,
        proj_hidden_dim=8,
        proj_dim=4,
        batch_size=4,
        shuffle_bn=False,
        temperature=0.2,
    ).eval()
    moco.pair = lambda batch: (batch["image"], batch["image"])  # no random views
    images = torch.randn(4, 3, 32, 32)
    batch = {"image": images, "index": torch.tensor([10, 11, 12, 13])}
    moco.queue_index.copy_(torch.tensor([11, 99, 10, 10, -1, 7]))  # stale keys of samples 11 and 10
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
