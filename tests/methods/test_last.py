"""LaST: the teacher sees global crops only, the centre and schedules move as specified, the
prototypes stay frozen in the first epoch, and a short run does not collapse."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsssl.methods.base import cosine_ramp, weight_decay_groups
from rsssl.methods.last import LaST, warmed_up
from tests.helpers.methods import tiny_method
from tests.methods.recorder import RECORDS
from tests.methods.test_methods_cli import TINY, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL_HEAD = {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8}
CROPS = {"num_global": 2, "num_local": 3, "local_size": 16}


def small_last(**settings) -> LaST:
    torch.manual_seed(0)
    return tiny_method(LaST, **SMALL_HEAD, multicrop=CROPS, **settings).train()


def test_the_teacher_never_receives_a_local_crop():
    method = small_last()
    seen = {"teacher": [], "student": []}
    method.teacher_backbone.register_forward_pre_hook(lambda _, args: seen["teacher"].append(args[0].shape))
    method.backbone.register_forward_pre_hook(lambda _, args: seen["student"].append(args[0].shape))
    method.pretext_step({"image": torch.randn(4, 3, 32, 32)})
    assert seen["teacher"] == [(8, 3, 32, 32)]  # 2 global crops x 4 images, one forward
    assert seen["student"] == [(8, 3, 32, 32), (12, 3, 16, 16)]  # one forward per crop size


def test_the_center_moves_by_its_momentum_towards_the_teacher_mean():
    method = small_last(center_momentum=0.8)
    method.center.fill_(0.5)
    outputs = []
    method.teacher_head.register_forward_hook(lambda _, __, out: outputs.append(out.detach().clone()))
    method.pretext_step({"image": torch.randn(4, 3, 32, 32)})
    (teacher,) = outputs
    torch.testing.assert_close(method.center, 0.8 * 0.5 + 0.2 * teacher.mean(dim=0))
    method.eval()  # no update outside training
    before = method.center.clone()
    method.pretext_step({"image": torch.randn(4, 3, 32, 32)})
    assert torch.equal(method.center, before)


def test_teacher_temperature_warms_up_linearly_then_stays():
    assert warmed_up(0.04, 0.07, 0.0, 0.3) == 0.04
    assert warmed_up(0.04, 0.07, 0.15, 0.3) == pytest.approx(0.055)
    assert warmed_up(0.04, 0.07, 0.9, 0.3) == 0.07
    assert warmed_up(0.04, 0.07, 0.0, 0.0) == 0.07


def test_norm_and_bias_weights_can_be_kept_out_of_weight_decay():
    layer = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    params = list(layer.parameters())
    (everything,) = weight_decay_groups(params, 0.1, 0.04, decay_all=True)
    assert everything["params"] == params and everything["weight_decay"] == 0.04
    decayed, kept = weight_decay_groups(params, 0.1, 0.04, decay_all=False)
    assert decayed["params"] == [layer[0].weight] and decayed["weight_decay"] == 0.04
    assert kept["params"] == [layer[0].bias, layer[1].weight, layer[1].bias] and kept["weight_decay"] == 0.0


def test_the_configured_gradient_clip_is_applied(monkeypatch):
    method = small_last(optimizer={"name": "adamw", "clip_grad": 3.0})
    calls = []
    monkeypatch.setattr(method, "clip_gradients", lambda opt, **kw: calls.append(kw))
    method.configure_gradient_clipping(object())
    assert calls == [{"gradient_clip_val": 3.0, "gradient_clip_algorithm": "norm"}]


LAST_CLI = ["method=last", "method.out_dim=32", "method.hidden_dim=16", "method.bottleneck_dim=8"]
LAST_CLI += ["method.multicrop.num_local=2", "method.multicrop.local_size=16"]


def test_entry_point_freezes_the_prototypes_for_the_first_epoch_and_schedules_weight_decay(
    tmp_path, monkeypatch
):
    RECORDS.clear()
    run_cli(
        [*LAST_CLI, *TINY, f"runs_dir={tmp_path}", f"data.stats_cache_dir={tmp_path}",
         "callbacks=[{_target_:tests.methods.recorder.Recorder}]"],
        monkeypatch,
    )  # fmt: skip
    (record,) = RECORDS
    assert record["epochs"] == [0, 0, 1, 1]  # two steps an epoch
    prototypes = "head.last_layer.parametrizations.weight.original1"
    steps = record["steps"]
    assert torch.equal(steps[0]["params"][prototypes], steps[2]["params"][prototypes])  # epoch 0: frozen
    assert not torch.equal(steps[2]["params"][prototypes], steps[3]["params"][prototypes])  # then learning
    assert not torch.equal(steps[0]["params"]["head.mlp.0.weight"], steps[1]["params"]["head.mlp.0.weight"])
    for k, (decayed, kept, _probe) in enumerate(record["weight_decays"]):  # cosine 0.04 -> 0.4 over 4 steps
        assert decayed == pytest.approx(cosine_ramp(0.04, 0.4, k / 4)) and kept == 0.0


@pytest.mark.parametrize("backbone", ["vit_tiny", "resnet18"])
def test_entry_point_runs_with_a_vit_and_a_resnet(backbone, tmp_path, monkeypatch):
    tiny = [a for a in TINY if not a.startswith("backbone=")] + [f"backbone={backbone}"]
    run_cli([*LAST_CLI, *tiny, f"runs_dir={tmp_path}", f"data.stats_cache_dir={tmp_path}"], monkeypatch)
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/*/summary.json")]
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_epoch"])


def test_a_short_run_does_not_collapse(tmp_path, monkeypatch):
    """Centring and sharpening together keep the teacher between one-hot and uniform."""
    k = 64
    run_cli(
        ["method=last", f"method.out_dim={k}", "method.hidden_dim=64", "method.bottleneck_dim=16",
         "method.multicrop.num_local=2", "method.multicrop.local_size=16", *TINY, "trainer.max_steps=30",
         f"runs_dir={tmp_path}", f"data.stats_cache_dir={tmp_path}"],
        monkeypatch,
    )  # fmt: skip
    (summary,) = [json.loads(p.read_text()) for p in tmp_path.glob("*/*/summary.json")]
    metrics = summary["metrics"]
    assert metrics["train/embedding_std_step"] > 0.3
    assert 0.5 < metrics["train/teacher_entropy_step"] < math.log(k) - 0.5, metrics[
        "train/teacher_entropy_step"
    ]
