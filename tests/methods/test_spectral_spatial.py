"""The combined spectral-spatial method: its loss is the weighted sum of its two tasks, the teacher
sees global crops only (no spectral or local ones), and it runs on 3, 13 and 120 bands."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsssl.methods.spectral_spatial import SpectralSpatial
from rsssl.models.backbones import ConfigError
from tests.cli.test_pretrain_errors import SYNTHETIC
from tests.cli.test_pretrain_errors import run_cli as run_pretrain
from tests.helpers.methods import SMALL_SPECTRAL

pytestmark = pytest.mark.usefixtures("single_thread")

SPECTRAL = {"subset_p": 1.0, "subset_fraction": [0.5, 0.5]}
BACKBONE = {
    "name": "rsssl_spectral_transformer",
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
    "pixel_patch": 4,
}


def combined(bands: int = 6, **settings) -> SpectralSpatial:
    torch.manual_seed(0)
    return SpectralSpatial(
        backbone=BACKBONE, in_chans=bands, bands=[f"b{i}" for i in range(bands)],
        out_dim=32, hidden_dim=16, bottleneck_dim=8, spectral=SPECTRAL,
        multicrop={"num_global": 2, "num_local": 2, "num_spectral": 2, "local_size": 16},
        reconstruction={"sites_per_image": 8}, **settings,
    ).train()  # fmt: skip


def test_the_loss_is_the_weighted_sum_of_both_tasks():
    method = combined(weight_distillation=0.3, weight_reconstruction=2.0)
    torch.manual_seed(1)
    out = method.pretext_step({"image": torch.randn(4, 6, 32, 32)})
    expected = 0.3 * out.logs["loss_distillation"] + 2.0 * out.logs["loss_reconstruction"]
    torch.testing.assert_close(out.loss.detach(), expected)
    assert out.logs["loss_reconstruction"] > 0 and out.logs["loss_distillation"] > 0


def test_the_teacher_sees_global_crops_and_the_student_spectral_views_too():
    method = combined()
    seen = {"teacher": [], "student": []}
    method.teacher_backbone.register_forward_pre_hook(
        lambda _, a: seen["teacher"].append(a[0].detach().clone())
    )
    method.backbone.register_forward_pre_hook(lambda _, a: seen["student"].append(a[0].detach().clone()))
    method.pretext_step({"image": torch.randn(4, 6, 32, 32) + 5})  # no band is zero before a spectral view
    (teacher,) = seen["teacher"]
    student_global, student_local = seen["student"][:2]
    assert teacher.shape == (8, 6, 32, 32) and student_global.shape == (16, 6, 32, 32)
    assert student_local.shape == (8, 6, 16, 16)
    zero_bands = (student_global.abs().amax(dim=(2, 3)) == 0).sum(dim=1)
    assert zero_bands[:8].tolist() == [0] * 8  # the teacher's global crops, unchanged spectrally
    assert zero_bands[8:].tolist() == [3] * 8  # spectral crops: half of the 6 bands kept


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="not both 0"):
        combined(weight_distillation=0.0, weight_reconstruction=0.0)
    with pytest.raises(ConfigError, match="needs backbone=spectral"):
        SpectralSpatial(
            backbone={"name": "test_resnet"}, in_chans=3, bands=["red", "green", "blue"], out_dim=8
        )


@pytest.mark.parametrize("bands", [3, 13, 120])
def test_entry_point_on_3_13_and_120_bands(bands, tmp_path, monkeypatch):
    small = ["method.out_dim=64", "method.multicrop.num_local=2", "method.reconstruction.sites_per_image=16"]
    run_pretrain(
        ["method=spectral_spatial", *SMALL_SPECTRAL, *small, *SYNTHETIC, f"data.num_bands={bands}"],
        tmp_path, monkeypatch,
    )  # fmt: skip
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/summary.json")]
    metrics = summary["metrics"]
    assert summary["steps"] == 4 and math.isfinite(metrics["train/loss_epoch"])
    assert metrics["train/loss_reconstruction_epoch"] > 0 and metrics["train/loss_distillation_epoch"] > 0
