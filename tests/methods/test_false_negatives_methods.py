"""FALSE as a setting of the contrastive methods: `method.false_negatives` changes their loss
through the one wrapper, and only when a false negative passes the gate."""

from __future__ import annotations

import pytest
import torch

from rsssl.losses import info_nce, nt_xent
from rsssl.losses.false_negatives import FalseNegativeSettings, info_nce_with, nt_xent_with
from rsssl.methods.glcnet import GLCNet
from rsssl.methods.moco import MoCo
from rsssl.methods.saumoco import SauMoCo
from rsssl.methods.simclr import SimCLR
from tests.helpers.methods import tiny_method

pytestmark = pytest.mark.usefixtures("single_thread")
OPEN = {"threshold": -1.0}  # every anchor passes the gate
SHUT = {"threshold": 1.01}  # no cosine reaches it


@pytest.mark.parametrize("cls", [SimCLR, MoCo, SauMoCo, GLCNet])
def test_every_contrastive_method_takes_the_setting(cls):
    assert tiny_method(cls).false_negatives is None
    settings = tiny_method(cls, false_negatives={"threshold": 0.8, "scope": "anchor"}).false_negatives
    assert settings == FalseNegativeSettings(threshold=0.8, scope="anchor")
    with pytest.raises(ValueError, match=r"unknown setting \['gate'\]"):
        tiny_method(cls, false_negatives={"gate": 0.8})


def _simclr_loss(settings: dict | None) -> torch.Tensor:
    torch.manual_seed(0)
    method = tiny_method(SimCLR, false_negatives=settings)
    torch.manual_seed(1)
    return method.pretext_step({"image": torch.randn(8, 3, 32, 32)}).loss


def test_simclr_loss_is_false_with_the_setting_and_plain_without_a_pass():
    plain = _simclr_loss(None)
    torch.testing.assert_close(_simclr_loss(SHUT), plain)
    assert _simclr_loss(OPEN) < plain  # calibration moves negative mass into the positive


def test_the_wrappers_are_the_plain_losses_without_settings():
    torch.manual_seed(0)
    z1, z2, queue = (
        torch.randn(6, 8),
        torch.randn(6, 8),
        torch.nn.functional.normalize(torch.randn(10, 8), dim=1),
    )
    torch.testing.assert_close(nt_xent_with(z1, z2, 0.5), nt_xent(z1, z2, 0.5))
    torch.testing.assert_close(info_nce_with(z1, z2, queue, 0.2), info_nce(z1, z2, queue, 0.2))
    open_gate = FalseNegativeSettings(**OPEN)
    assert info_nce_with(z1, z2, queue, 0.2, false_negatives=open_gate) < info_nce(z1, z2, queue, 0.2)
    shut = FalseNegativeSettings(**SHUT)
    torch.testing.assert_close(
        info_nce_with(z1, z2, queue, 0.2, false_negatives=shut), info_nce(z1, z2, queue, 0.2)
    )
