"""`speed:` (channels-last layout, torch.compile): the same losses and weights, other kernels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rsssl.cli.callbacks import SpeedSettings, compiled_modules, resolve_channels_last
from rsssl.methods.moco import MoCo
from rsssl.methods.simclr import SimCLR
from rsssl.models.backbones import ConfigError
from tests.cli.test_pretrain_errors import SYNTHETIC, run_cli
from tests.helpers.methods import tiny_method


def _loss_and_grads(method, batch: dict, channels_last: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if channels_last:
        SpeedSettings(channels_last=True).setup(None, method, "fit")
        SpeedSettings(channels_last=True).on_train_batch_start(None, method, batch, 0)
    torch.manual_seed(5)  # the views draw from torch's generator
    loss = method.pretext_step(batch).loss
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in method.backbone.parameters()]


@pytest.mark.parametrize("cls", [MoCo, SimCLR])
def test_channels_last_computes_the_same_loss_and_gradients(cls) -> None:
    torch.manual_seed(0)
    reference = tiny_method(cls, batch_size=8)
    if cls is MoCo:
        reference.configure_batch_norm(world_size=1)  # split BatchNorm: its reshapes see the layout
    twin = tiny_method(cls, batch_size=8)
    twin.load_state_dict(reference.state_dict())
    if cls is MoCo:
        twin.configure_batch_norm(world_size=1)
    images = torch.randn(8, 3, 32, 32)
    loss, grads = _loss_and_grads(reference.train(), {"image": images.clone()}, channels_last=False)
    batch = {"image": images.clone()}
    twin_loss, twin_grads = _loss_and_grads(twin.train(), batch, channels_last=True)
    assert batch["image"].is_contiguous(memory_format=torch.channels_last)
    conv = next(m for m in twin.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(twin_loss, loss, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(twin_grads, grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_compile_is_in_place_on_the_backbone_and_the_ema_pairs(monkeypatch) -> None:
    moco = tiny_method(MoCo, batch_size=8)
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    keys_before = set(moco.state_dict())
    SpeedSettings(compile=True).setup(None, moco, "fit")
    expected = [moco.backbone, moco.key_backbone, moco.projector, moco.key_projector]
    assert [id(m) for m in compiled] == [id(m) for m in expected] == [id(m) for m in compiled_modules(moco)]
    assert set(moco.state_dict()) == keys_before  # checkpoints keep their keys
    simclr = tiny_method(SimCLR, batch_size=8)
    assert compiled_modules(simclr) == [simclr.backbone]


def test_channels_last_setting() -> None:
    assert resolve_channels_last("auto", "cpu") is False
    assert resolve_channels_last("auto", "gpu") is True
    assert resolve_channels_last(True, "cpu") is True and resolve_channels_last(False, "gpu") is False
    with pytest.raises(ConfigError, match="speed.channels_last must be true, false or auto, got 'yes'"):
        resolve_channels_last("yes", "cpu")


def test_channels_last_through_the_entry_point(tmp_path: Path, monkeypatch) -> None:
    run_cli(
        [*SYNTHETIC, "speed.channels_last=true", "trainer.max_steps=2", "data.batch_size=8"],
        tmp_path,
        monkeypatch,
    )
    (summary,) = (tmp_path / "runs").glob("*/*/summary.json")
    record = json.loads(summary.read_text())
    assert record["steps"] == 2 and torch.isfinite(torch.tensor(record["metrics"]["train/loss_epoch"]))
