"""Encoder export: the safetensors loads into a fresh timm model and gives the same features."""

from __future__ import annotations

import json
import pickle

import pytest
import timm
import torch
from safetensors.torch import load_file

from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.dense import DeepLabV3Plus
from rsssl.models.export import (
    check_band_count,
    load_decoder,
    load_encoder,
    match_encoder_bands,
    pixel_scale_warning,
    read_encoder_meta,
    save_encoder,
)

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


def test_a_training_checkpoint_is_named_without_unpickling_it(tmp_path):
    save_encoder(create_backbone("test_resnet", 5), tmp_path, META)
    marker = tmp_path / "unpickled"
    (tmp_path / "last.ckpt").write_bytes(pickle.dumps(Unpickled(str(marker))))  # loading it writes marker
    with pytest.raises(
        ConfigError, match=r"last.ckpt is a training checkpoint.*encoder=.*encoder.safetensors"
    ):
        load_encoder(tmp_path / "last.ckpt")
    assert not marker.exists()


class Unpickled:
    """Unpickling one opens (creates) the file at `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def test_band_count_check():
    check_band_count(META, 5)
    with pytest.raises(ConfigError, match="trained on 5 bands.*pretrain an encoder on the data's 4 bands"):
        check_band_count(META, 4)
    with pytest.raises(ConfigError, match=r"select the encoder's 5 bands.*data\.bands=\[a,b,c,d,e\]"):
        check_band_count(META, 6)


RGBN = ["red", "green", "blue", "nir"]
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def meta_of(bands: list[str], **extra) -> dict:
    return dict(
        META, in_chans=len(bands), bands=bands, mean=[748.0] * len(bands), std=[300.0] * len(bands), **extra
    )


def test_same_bands_in_the_same_order_pass_silently():
    match = match_encoder_bands(meta_of(RGBN), RGBN, "set x")
    assert match.order is None and match.note is None
    # canonical names: Sentinel-2 B04/B03/B02 are red/green/blue
    assert match_encoder_bands(meta_of(["B04", "B03", "B02"]), ["red", "green", "blue"], "x").order is None


def test_same_bands_in_another_order_are_reordered_and_said():
    match = match_encoder_bands(meta_of(RGBN), ["blue", "green", "red", "nir"], "set x")
    assert match.order == (2, 1, 0, 3)  # data position of red, green, blue, nir
    assert "set x" in match.note and "reordered" in match.note
    assert "blue, green, red, nir" in match.note and "red, green, blue, nir" in match.note
    assert match_encoder_bands(meta_of(["B02", "B04", "B08"]), ["nir", "blue", "red"], "x").order == (1, 2, 0)


def test_other_bands_fail_with_the_fix():
    with pytest.raises(
        ConfigError, match=r"set x has bands red, green, blue, swir16.*lacks nir.*data\.band_names"
    ):
        match_encoder_bands(meta_of(RGBN), ["red", "green", "blue", "swir16"], "set x")


def test_generic_names_warn_and_keep_the_order():
    for encoder, data in ((["b1", "b2", "b3", "b4"], RGBN), (RGBN, ["b1", "b2", "b3", "b4"])):
        match = match_encoder_bands(meta_of(encoder), data, "set x")
        assert match.order is None
        assert (
            match.note.startswith("warning")
            and "cannot be checked" in match.note
            and "b1, b2, b3, b4" in match.note
        )
    # named positions still have to agree when the rest is generic
    with pytest.raises(ConfigError, match="lacks nir"):
        match_encoder_bands(meta_of(["red", "green", "b3", "nir"]), ["red", "green", "b3", "swir16"], "x")
    with pytest.raises(ConfigError, match="named bands sit elsewhere.*b1..bN.*data.band_names"):
        match_encoder_bands(meta_of(["red", "green", "b3"]), ["green", "red", "b3"], "x")
    with pytest.raises(ConfigError) as error:  # unknown data bands: no claim about what they lack
        match_encoder_bands(meta_of(RGBN), ["b1", "b2", "b3"], "x")
    assert "lacks" not in str(error.value) and "pretrain an encoder on the data's 3 bands" in str(error.value)


def test_fewer_bands_than_the_encoder_never_advise_selecting_them():
    with pytest.raises(ConfigError) as error:
        match_encoder_bands(meta_of(S2), ["red", "green", "blue"], "set x")
    message = str(error.value)
    assert "select the same bands" not in message and "data.bands" not in message
    assert "trained on 13 bands" in message and "set x has 3" in message
    assert "lacks coastal, rededge071" in message  # the first missing ones, by canonical name
    assert "pretrain an encoder on the data's 3 bands" in message


def test_more_bands_than_the_encoder_give_the_selection():
    with pytest.raises(ConfigError, match=r"select the encoder's 3 bands.*data\.bands=\[red,green,blue\]"):
        match_encoder_bands(meta_of(["red", "green", "blue"]), S2, "set x")


def test_more_bands_than_the_encoder_advise_a_selection_only_when_it_can_work():
    rgb = meta_of(["red", "green", "blue"])
    with pytest.raises(ConfigError) as error:  # the data lacks red: no data.bands can select it
        match_encoder_bands(rgb, ["nir", "green", "blue", "swir16"], "set x")
    assert "lacks red" in str(error.value) and "data.bands" not in str(error.value)
    for encoder, data in ((rgb, ["b1", "b2", "b3", "b4"]), (meta_of(["b1", "b2", "b3"]), RGBN)):
        with pytest.raises(ConfigError) as error:  # generic names: which bands are the encoder's is unknown
            match_encoder_bands(encoder, data, "set x")
        message = str(error.value)
        assert f"data.bands=[{','.join(encoder['bands'])}]" not in message
        assert f"by the data's names ({', '.join(data)})" in message and "data.band_names" in message


def test_pixel_scale_mismatch_is_warned():
    meta = meta_of(["red", "green", "blue"], dtype="uint16")
    warning = pixel_scale_warning(meta, "uint8", [100.0, 90.0, 80.0], "set x")
    assert "pixel scale of set x: it has uint8 pixels" in warning and "pretrained on uint16" in warning
    assert "0.12 times" in warning and "red mean 100 here, 748 in pretraining" in warning  # median 90/748
    # no recorded dtype (older encoders): the means alone still tell
    no_dtype = pixel_scale_warning(meta_of(["red"]), "uint8", [7000.0], "set x")
    assert "uint8" not in no_dtype and "9.4 times" in no_dtype
    assert pixel_scale_warning(meta, "uint16", [700.0, 900.0, 2000.0], "set x") is None


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


def _perturbed_dense_net(in_chans: int = 5) -> DeepLabV3Plus:
    """A DeepLabv3+ whose weights and BN statistics are not the init (so a load is visible)."""
    torch.manual_seed(0)
    net = DeepLabV3Plus(create_backbone("test_resnet", in_chans=in_chans), aspp_channels=16, out_channels=8)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    return net


def test_decoder_is_exported_beside_a_plain_timm_encoder(tmp_path):
    net = _perturbed_dense_net()
    save_encoder(net.encoder, tmp_path, META, decoder=net)
    fresh = timm.create_model("test_resnet", in_chans=5, num_classes=0, pretrained=False)
    fresh.load_state_dict(load_file(str(tmp_path / "encoder.safetensors")), strict=True)
    meta = read_encoder_meta(tmp_path)
    assert meta["decoder"]["architecture"] == "deeplabv3plus"
    assert meta["decoder"]["config"]["aspp_channels"] == 16 and meta["decoder"]["config"]["out_channels"] == 8
    decoder = load_decoder(meta)
    expected = net.decoder_state_dict()
    assert set(decoder.state) == set(expected) and not any(k.startswith("encoder.") for k in decoder.state)
    for key, value in expected.items():
        torch.testing.assert_close(decoder.state[key], value, rtol=0, atol=0)
    assert load_decoder(read_encoder_meta(_export_without_decoder(tmp_path / "plain"))) is None


def _export_without_decoder(folder):
    save_encoder(create_backbone("test_resnet", in_chans=5), folder, META)
    return folder


def test_a_missing_or_foreign_decoder_file_is_refused(tmp_path):
    net = _perturbed_dense_net()
    save_encoder(net.encoder, tmp_path / "a", META, decoder=net)
    with torch.no_grad():  # another decoder on the same encoder
        next(iter(net.aspp.parameters())).add_(1.0)
    save_encoder(net.encoder, tmp_path / "b", META, decoder=net)
    (tmp_path / "a" / "decoder.safetensors").write_bytes(
        (tmp_path / "b" / "decoder.safetensors").read_bytes()
    )
    with pytest.raises(ConfigError, match="sha256 differs"):
        load_decoder(read_encoder_meta(tmp_path / "a"))
    (tmp_path / "a" / "decoder.safetensors").unlink()
    with pytest.raises(ConfigError, match="decoder.safetensors is missing"):
        load_decoder(read_encoder_meta(tmp_path / "a"))


@pytest.mark.parametrize("pool", ["token", "avg"])
def test_a_vit_export_keeps_its_pooling_and_any_input_size(pool, tmp_path):
    """Class token or mean patch token, as `encoder.json`'s timm_kwargs say; dynamic position
    embeddings let the loaded encoder take the local crops' size too."""
    kwargs = {"img_size": 32, "patch_size": 8, "dynamic_img_size": True, "global_pool": pool}
    torch.manual_seed(0)
    vit = create_backbone("vit_tiny_patch16_224", in_chans=5, **kwargs).eval()
    save_encoder(vit, tmp_path, {**META, "timm_name": "vit_tiny_patch16_224", "timm_kwargs": kwargs})
    loaded, meta = load_encoder(tmp_path)
    assert meta["timm_kwargs"]["global_pool"] == pool and loaded.global_pool == pool
    for side in (32, 16):
        x = torch.randn(2, 5, side, side)
        tokens = vit.forward_features(x)
        expected = (
            tokens[:, 0] if pool == "token" else vit.fc_norm(tokens[:, vit.num_prefix_tokens :].mean(1))
        )
        torch.testing.assert_close(loaded.eval()(x), expected)


def test_an_encoder_file_of_another_architecture_is_refused_by_name(tmp_path):
    """encoder.json says resnet18, the weights are test_resnet's: refused before any use, naming
    the backbone, the mismatch and the fix."""
    save_encoder(create_backbone("test_resnet", in_chans=5), tmp_path, META)
    meta_path = tmp_path / "encoder.json"
    meta_path.write_text(json.dumps(json.loads(meta_path.read_text()) | {"timm_name": "resnet18"}))
    with pytest.raises(ConfigError) as error:
        load_encoder(tmp_path / "encoder.safetensors")
    message = str(error.value)
    assert "does not fit backbone 'resnet18' with in_chans=5" in message
    assert "size mismatch" in message and "use weights of the same architecture and band count" in message
