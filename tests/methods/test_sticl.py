"""STICL: which keys are scene-transferred (or other-date tiles), and real entry-point runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsssl.data import draws
from rsssl.data.scene_transfer import TransferSettings, sample_pixels, transfer_with_samples
from rsssl.methods.sticl import STICL
from rsssl.models.backbones import ConfigError
from tests.cli.test_pretrain_errors import SYNTHETIC
from tests.cli.test_pretrain_errors import run_cli as run_pretrain
from tests.helpers.methods import tiny_method

pytestmark = pytest.mark.usefixtures("single_thread")

TRANSFER = {"num_samples": 32, "iterations": 20}


def sticl(**settings) -> STICL:
    return tiny_method(STICL, queue_size=16, proj_hidden_dim=8, proj_dim=4, transfer=TRANSFER, **settings)


def batch_of(n: int = 6) -> dict:
    torch.manual_seed(1)
    return {"image": torch.randn(n, 3, 16, 16), "other_time": torch.randn(n, 3, 16, 16) + 3}


def test_every_key_is_the_transfer_into_a_partners_scene_at_probability_one():
    method, batch = sticl(transfer_p=1.0), batch_of()
    torch.manual_seed(0)
    keys = method.key_source(batch)
    torch.manual_seed(0)  # replay the draws: chosen, the tiles' pixels, the styles' pixels, partners
    torch.rand(6)
    settings = TransferSettings(**TRANSFER)
    source = sample_pixels(batch["image"], settings.num_samples)
    styles = sample_pixels(batch["image"], settings.num_samples)
    partners = draws.partners(6)
    assert (partners != torch.arange(6)).all()
    expected = transfer_with_samples(batch["image"], source, styles[partners], settings)
    torch.testing.assert_close(keys, expected)


def test_unchosen_keys_are_the_tiles_themselves():
    method, batch = sticl(transfer_p=0.5), batch_of(64)
    torch.manual_seed(3)
    keys = method.key_source(batch)
    kept = (keys == batch["image"]).flatten(1).all(dim=1)
    assert 16 < int(kept.sum()) < 48  # about half
    assert not (keys[~kept] == batch["image"][~kept]).flatten(1).all(dim=1).any()
    assert sticl(transfer_p=0.0).key_source(batch) is batch["image"]


def test_other_time_as_the_style_or_as_the_positive():
    batch = batch_of()
    keys = sticl(transfer_p=1.0, positive="other_time").key_source(batch)
    assert torch.equal(keys, batch["other_time"])
    method = sticl(transfer_p=1.0, style="other_time")
    assert method.required_keys == ("other_time",) and sticl().required_keys == ()
    moved = method.key_source(batch)  # recoloured into the other date's distribution (mean 3)
    assert (moved.mean(dim=(1, 2, 3)) > 2.0).all() and not torch.equal(moved, batch["other_time"])


def test_bad_settings_name_the_choices():
    with pytest.raises(ConfigError, match=r"style is one of \['batch', 'other_time'\]"):
        sticl(style="season")
    with pytest.raises(ConfigError, match="transfer_p=1.5 must be a probability"):
        sticl(transfer_p=1.5)


DATA = {
    "synthetic_dates_transfer_into_other_date": [
        *SYNTHETIC,
        "data.source.num_dates=3",
        "method.style=other_time",
    ],
    "synthetic_dates_real_other_date": [*SYNTHETIC, "data.source.num_dates=3", "method.positive=other_time"],
    "rgbn_geotiff_folder_over_relaxed": [
        "data=geotiff",
        "data.root={d}/geotiff/rgbn",
        "data.band_preset=rgbn",
        "method.transfer.relaxation=1.5",
    ],
}


@pytest.mark.parametrize("case", DATA)
def test_sticl_pretrains_through_the_entry_point(case, data_dir, tmp_path, monkeypatch):
    overrides = [o.format(d=data_dir) for o in DATA[case]]
    run_pretrain(
        ["method=sticl", "method.transfer_p=0.5", "method.queue_size=64", *overrides], tmp_path, monkeypatch
    )
    (summary,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/summary.json")]
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_epoch"])
