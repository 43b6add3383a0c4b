"""Shuffle-BN: a key's BatchNorm statistics come from its own key group, never its query's group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rsssl.methods.distributed import balanced_order
from rsssl.methods.moco import MoCo
from rsssl.models.backbones import ConfigError
from rsssl.models.split_bn import SplitBatchNorm
from tests.helpers.methods import tiny_method

BATCH, GROUPS = 16, 4


def _moco(**kwargs) -> MoCo:
    torch.manual_seed(0)
    return tiny_method(
        MoCo,
        queue_size=32,
        proj_hidden_dim=16,
        proj_dim=8,
        batch_size=BATCH,
        bn_groups=GROUPS,
        **kwargs,
    ).train()


def _keys(moco: MoCo, images: torch.Tensor, seed: int = 5) -> torch.Tensor:
    torch.manual_seed(seed)
    return moco.encode_keys(images)


def _key_group(sample: int, seed: int = 5) -> set[int]:
    """The samples normalised together with `sample`'s key (replays the shuffle's permutation)."""
    torch.manual_seed(seed)
    order = balanced_order(BATCH, GROUPS, strided=True)
    position = int(torch.argsort(order)[sample])
    return set(order[position % GROUPS :: GROUPS].tolist())


def test_every_key_group_draws_evenly_from_every_query_group():
    for seed in range(5):
        torch.manual_seed(seed)
        order = balanced_order(BATCH, GROUPS, strided=True)
        assert sorted(order.tolist()) == list(range(BATCH))
        for group in range(GROUPS):
            # query groups are strided too: sample i is in query group i % GROUPS
            assert sorted(int(i) % GROUPS for i in order[group::GROUPS]) == list(range(GROUPS))


def test_key_depends_on_its_bn_group_and_not_on_its_query_group():
    moco = _moco()
    moco.configure_batch_norm(world_size=1)
    images = torch.randn(BATCH, 3, 32, 32)
    keys = _keys(moco, images)
    anchor = 0
    group = _key_group(anchor)
    query_group = {i for i in range(BATCH) if i % GROUPS == anchor % GROUPS}
    assert group & query_group == {anchor}
    for other in sorted(query_group - {anchor}):  # the query partner's group: no effect on the key
        changed = images.clone()
        changed[other] += 5.0
        torch.testing.assert_close(_keys(moco, changed)[anchor], keys[anchor], rtol=0, atol=1e-6)
    for other in sorted(group - {anchor}):  # its own BN group's samples: the key moves
        changed = images.clone()
        changed[other] += 5.0
        assert (_keys(moco, changed)[anchor] - keys[anchor]).abs().max() > 1e-3


def test_query_depends_only_on_its_query_group():
    moco = _moco()
    moco.configure_batch_norm(world_size=1)
    images = torch.randn(BATCH, 3, 32, 32)
    query = moco.backbone(images)
    outside, inside = images.clone(), images.clone()
    outside[1] += 5.0  # group 1
    inside[4] += 5.0  # group 0, like sample 0
    torch.testing.assert_close(moco.backbone(outside)[0], query[0], rtol=0, atol=1e-6)
    assert (moco.backbone(inside)[0] - query[0]).abs().max() > 1e-3


def test_under_ddp_key_encoder_keeps_per_process_bn_and_query_gets_syncbn():
    """What Lightning's `sync_batchnorm: true` does to the module, after MoCo's own setup."""
    moco = _moco()
    moco.configure_batch_norm(world_size=2)
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(moco)
    key_norms = [m for m in synced.key_backbone.modules() if isinstance(m, SplitBatchNorm | nn.SyncBatchNorm)]
    assert key_norms and all(isinstance(m, SplitBatchNorm) and m.groups == 1 for m in key_norms)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.modules())


def test_group_count_must_divide_the_batch():
    moco = _moco()
    moco.bn_groups = 3
    with pytest.raises(
        ConfigError, match="bn_groups=3 must divide data.batch_size=16 into groups of at least 2"
    ):
        moco.configure_batch_norm(world_size=1)


def test_groups_of_one_sample_are_refused_before_training():
    """A group of one sample has no batch statistics at 1x1 feature maps: say so, with the fix."""
    moco = _moco()
    moco.batch_size = 4
    with pytest.raises(ConfigError, match=r"bn_groups=4 .* data.batch_size=4 .* method.bn_groups=2"):
        moco.configure_batch_norm(world_size=1)


def test_shuffle_off_leaves_plain_batchnorm():
    moco = _moco(shuffle_bn=False)
    moco.configure_batch_norm(world_size=1)
    assert not any(isinstance(m, SplitBatchNorm) for m in moco.modules())
