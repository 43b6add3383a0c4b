"""GLCNet's parts: style features and pooled patches by hand, the ablations, FALSE on both terms."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rsssl.losses import nt_xent
from rsssl.methods.glcnet import GLCNet, pooled_patches, style_features
from rsssl.models.backbones import ConfigError
from rsssl.models.export import load_decoder, read_encoder_meta
from tests.cli.test_pretrain_errors import SYNTHETIC
from tests.cli.test_pretrain_errors import run_cli as run_pretrain
from tests.helpers.methods import tiny_method
from tests.methods.test_methods_cli import TINY, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")


def test_style_features_are_channel_mean_then_population_variance():
    context = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]], [[2.0, 2.0], [2.0, 6.0]]]])  # 1 x 2 x 2 x 2
    # channel 0: mean 4, variance (9 + 1 + 1 + 9) / 4 = 5; channel 1: mean 3, variance (1+1+1+9) / 4 = 3
    assert style_features(context).tolist() == [[4.0, 3.0, 5.0, 3.0]]
    assert style_features(context, with_variance=False).tolist() == [[4.0, 3.0]]


def test_pooled_patches_average_exactly_the_box_pixels():
    decoder = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0]], [[1.0, 2.0, 3.0, 4.0]]])  # x1, y1, x2, y2 per image
    pooled = pooled_patches(decoder, boxes, 2)
    first = decoder[0, 0, 0:2, 0:2].mean()  # rows 0-1, cols 0-1
    second = decoder[1, 0, 2:4, 1:3].mean()  # rows 2-3, cols 1-2
    torch.testing.assert_close(pooled, torch.stack([first, second]).view(2, 1))


def _batch(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return {"image": torch.randn(6, 3, 32, 32)}


def _step(method: GLCNet, seed: int = 0):
    torch.manual_seed(seed)
    return method.pretext_step(_batch(seed))


def test_both_terms_are_weighted_and_logged():
    method = tiny_method(GLCNet, patch_size=8, weight_global=0.25)
    out = _step(method)
    logs = out.logs
    expected = 0.25 * logs["loss_global"] + 0.75 * logs["loss_local"]
    torch.testing.assert_close(out.loss.detach(), expected)
    assert logs["matched_patches"] >= 2 and out.features.shape == (6, method.num_features)


def test_ablations_leave_out_their_term():
    no_local = _step(tiny_method(GLCNet, patch_size=8, use_local=False))
    assert "loss_local" not in no_local.logs
    torch.testing.assert_close(no_local.loss.detach(), no_local.logs["loss_global"])
    no_global = _step(tiny_method(GLCNet, patch_size=8, use_global=False))
    assert "loss_global" not in no_global.logs
    torch.testing.assert_close(no_global.loss.detach(), no_global.logs["loss_local"])
    no_style = tiny_method(GLCNet, patch_size=8, style=False)
    assert no_style.global_head[0].in_features == 256  # the mean only
    assert tiny_method(GLCNet, patch_size=8).global_head[0].in_features == 512
    with pytest.raises(ConfigError, match="both false"):
        tiny_method(GLCNet, use_global=False, use_local=False)


def test_false_negatives_change_the_loss_only_when_a_pair_passes_the_gate():
    plain = tiny_method(GLCNet, patch_size=8)
    gated_out = tiny_method(GLCNet, patch_size=8, false_negatives={"threshold": 1.01})
    open_gate = tiny_method(GLCNet, patch_size=8, false_negatives={"threshold": -1.0})
    for other in (gated_out, open_gate):
        other.load_state_dict(plain.state_dict())
    base, same, calibrated = (_step(m).logs["loss_global"] for m in (plain, gated_out, open_gate))
    torch.testing.assert_close(same, base)
    assert not torch.allclose(calibrated, base)


def test_the_plain_terms_are_nt_xent_without_the_positive():
    method = tiny_method(GLCNet, patch_size=8)
    z1, z2 = torch.randn(5, 8), torch.randn(5, 8)
    torch.testing.assert_close(
        method.contrast(z1, z2), nt_xent(z1, z2, 0.5, include_positive_in_denominator=False)
    )


def test_a_patch_larger_than_the_views_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="method.patch_size=48 is larger than the 32 px views"):
        _step(tiny_method(GLCNet, patch_size=48))


def test_the_entry_point_exports_the_trained_decoder_beside_the_encoder(tmp_path, monkeypatch):
    run_cli(
        ["method=glcnet", *TINY, f"runs_dir={tmp_path}", f"data.stats_cache_dir={tmp_path / 'cache'}"],
        monkeypatch,
    )
    (run_dir,) = [p.parent for p in tmp_path.glob("*/*/summary.json")]
    trained = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    meta = read_encoder_meta(run_dir)
    decoder = load_decoder(meta)
    assert decoder.state and meta["decoder"]["config"]["out_channels"] == 64
    for key, value in decoder.state.items():  # the final weights and BN statistics, by value
        torch.testing.assert_close(value, trained[f"net.{key}"], rtol=0, atol=0, msg=key)


REAL_DATA = {  # issue 10: real RGB PlanetScope and tree crowns, a 4-band RGBN GeoTIFF, 13-band synthetic
    "planetscope": lambda d: [
        "data=npz",
        f"data.path={d}/planetscope_sfbay_scenes_dev.npz",
        "data.band_names=[red,green,blue]",
    ],
    "treecrowns": lambda d: ["data=npz_segmentation", f"data.path={d}/deepforest_treecrowns_dev.npz"],
    "rgbn_geotiff": lambda d: ["data=geotiff", f"data.root={d}/geotiff/rgbn", "data.band_preset=rgbn"],
    "synthetic_13_bands": lambda d: [*SYNTHETIC, "data.num_bands=13"],
}


@pytest.mark.parametrize(
    ("data", "method"), [(d, "glcnet") for d in REAL_DATA] + [("rgbn_geotiff", "false_glcnet")]
)
def test_glcnet_pretrains_on_real_and_multiband_data(data, method, data_dir, tmp_path, monkeypatch):
    run_pretrain([f"method={method}", *REAL_DATA[data](data_dir)], tmp_path, monkeypatch)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_epoch"])
    meta = read_encoder_meta(run_dir)
    assert meta["in_chans"] == {"rgbn_geotiff": 4, "synthetic_13_bands": 13}.get(data, 3)
    assert load_decoder(meta).state  # the DeepLabv3+ decoder beside the encoder, whatever the bands
