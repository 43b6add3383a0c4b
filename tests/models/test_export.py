"""Encoder export: the safetensors loads into a fresh timm model and gives the same features."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.export import check_band_count, load_encoder, save_encoder

META = {
    "timm_name": "test_resnet",
    "in_chans": 5,
    "bands": list("abcde"),
    "mean": [0.0] * 5,
    "std": [1.0] * 5,
    "method": "moco",
}


def test_export_loads_into_plain_timm(tmp_path):
    backbone = create_backbone("test_resnet", in_chans=5).eval()
    with torch.no_grad():
        for p in backbone.parameters():
            p.add_(0.01)  # not the init: prove the weights travel
    save_encoder(backbone, tmp_path, META)
    fresh = timm.create_model("test_resnet", in_chans=5, num_classes=0, pretrained=False).eval()
    missing, unexpected = fresh.load_state_dict(load_file(str(tmp_path / "encoder.safetensors")), strict=True)
    assert not missing and not unexpected
    x = torch.randn(2, 5, 32, 32)
    torch.testing.assert_close(fresh(x), backbone(x))
    loaded, meta = load_encoder(tmp_path / "encoder.safetensors")
    torch.testing.assert_close(loaded.eval()(x), backbone(x))
    assert meta["bands"] == list("abcde") and meta["num_features"] == backbone.num_features


def test_mismatched_json_is_caught(tmp_path):
    save_encoder(create_backbone("test_resnet", in_chans=5), tmp_path / "a", META)
    save_encoder(create_backbone("test_resnet", in_chans=5), tmp_path / "b", META)
    (tmp_path / "a" / "encoder.json").write_text((tmp_path / "b" / "encoder.json").read_text())
    with pytest.raises(ConfigError, match="different runs"):
        load_encoder(tmp_path / "a" / "encoder.safetensors")
    (tmp_path / "a" / "encoder.json").unlink()
    with pytest.raises(ConfigError, match="encoder.json is missing"):
        load_encoder(tmp_path / "a" / "encoder.safetensors")
    with pytest.raises(ConfigError, match="does not exist"):
        load_encoder(tmp_path / "nowhere" / "encoder.safetensors")


def test_band_count_check():
    check_band_count(META, 5)
    with pytest.raises(ConfigError, match="trained on 5 bands"):
        check_band_count(META, 4)


def test_local_weights_file_and_unknown_name(tmp_path):
    source = create_backbone("test_resnet", in_chans=3)
    save_encoder(source, tmp_path, dict(META, in_chans=3))
    again = create_backbone("test_resnet", in_chans=3, weights=str(tmp_path / "encoder.safetensors"))
    for a, b in zip(source.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="does not fit"):
        create_backbone("test_resnet", in_chans=4, weights=str(tmp_path / "encoder.safetensors"))
    with pytest.raises(ConfigError, match="Close timm names"):
        create_backbone("resnet19", in_chans=3)
    assert json.loads((tmp_path / "encoder.json").read_text())["sha256"]
