"""Cost of one pretraining step of each method relative to SimCLR and MoCo v2, in one run (`make bench`).

Every method is built from its own `conf/method/<name>.yaml` on a ResNet-18 over 3 bands and
timed on the same batch (64 tiles of 64 x 64 px, forward + backward of `pretext_step`), the
methods interleaved so a burst of load hits all alike. The ratio is what the README and the
benchmark notes quote; the assertions only bound it loosely (a timing is not a unit test). STICL's
step is a best of 3, so it is the step whose Bernoulli(0.1) draw transferred the fewest keys.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from rsssl.methods.base import SSLMethod

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"
BATCH, TILE, REPEATS = 64, 64, 3


def method_from_yaml(name: str) -> SSLMethod:
    settings = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"), resolve=True)
    settings.pop("name")
    cls = get_class(settings.pop("_target_"))
    return cls(backbone={"name": "resnet18"}, in_chans=3, bands=["red", "green", "blue"], **settings)


def step_seconds(methods: dict[str, SSLMethod], batch: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Best-of-`repeats` seconds of one forward + backward step of each method, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for method in methods.values():  # warm-up
        method.pretext_step(batch).loss.backward()
    for _ in range(repeats):
        for name, method in methods.items():
            method.zero_grad(set_to_none=True)
            start = time.perf_counter()
            method.pretext_step(batch).loss.backward()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def test_step_cost_relative_to_simclr_and_moco():
    torch.manual_seed(0)
    names = ["simclr", "false_simclr", "moco", "sticl", "glcnet", "last", "rotation", "jigsaw", "inpainting",
             "colorization"]  # fmt: skip
    methods = {name: method_from_yaml(name).train() for name in names}
    batch = {"image": torch.randn(BATCH, 3, TILE, TILE)}
    seconds = step_seconds(methods, batch)
    for name in names:
        simclr, moco = seconds[name] / seconds["simclr"], seconds[name] / seconds["moco"]
        print(
            f"{name}: {seconds[name]:.3f} s a step of {BATCH} x {TILE} px, "
            f"{simclr:.2f} x SimCLR, {moco:.2f} x MoCo v2"
        )
    assert seconds["false_simclr"] < 1.5 * seconds["simclr"]  # FALSE adds a top-k over the logits only
    assert seconds["glcnet"] > seconds["simclr"]  # a whole DeepLabv3+ on both views
    assert seconds["last"] > seconds["moco"]  # ten crops, and K = 65536 prototypes
    assert seconds["sticl"] < 1.5 * seconds["moco"]  # the transfer of ~10 % of the keys must not dominate
    assert seconds["rotation"] > seconds["simclr"]  # every tile at four turns: 4 forwards to SimCLR's 2
