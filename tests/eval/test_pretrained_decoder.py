"""The segmentation protocol judges an encoder exported with its pretrained decoder (GLCNet's
DeepLabv3+) also with that decoder, loaded by value; every other encoder, and the baselines
that share its metadata, get the decoder trained from scratch only (issue 10 #2)."""

from __future__ import annotations

import pytest
import torch

import rsssl.eval.segmentation as segmentation
from rsssl.eval.segmentation import segmentation_net
from rsssl.eval.suite import Suite, baseline_candidates, encoder_candidate
from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.dense import DeepLabV3Plus
from rsssl.models.export import save_encoder
from rsssl.results.store import read_rows
from tests.eval.test_segmentation import META, block_set

pytestmark = pytest.mark.usefixtures("single_thread")

SETTINGS = {"modes": ["frozen"], "fractions": [1.0], "seeds": [0], "steps": 2, "batch_size": 4}


def exported_dense_net(folder) -> DeepLabV3Plus:
    """Export a DeepLabv3+ whose weights and BN statistics all differ from any init."""
    torch.manual_seed(3)
    net = DeepLabV3Plus(create_backbone("test_resnet", 2), aspp_channels=16, out_channels=8)
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    save_encoder(net.encoder, folder, {**META, "method": "glcnet"}, decoder=net)
    return net


@pytest.fixture
def trained_nets(monkeypatch) -> list[torch.nn.Module]:
    """The networks the protocol trains, as they are before their first step."""
    seen, train = [], segmentation.train_segmentation

    def recording(net, *args, **kwargs):
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return train(net, *args, **kwargs)

    monkeypatch.setattr(segmentation, "train_segmentation", recording)
    return seen


def test_the_exported_decoder_is_loaded_by_value_under_its_own_protocol(tmp_path, trained_nets):
    net = exported_dense_net(tmp_path / "run")
    candidate = encoder_candidate(tmp_path / "run" / "encoder.safetensors", tmp_path)
    Suite(tmp_path / "results.csv", segmentation=SETTINGS, log=lambda _: None).evaluate(
        [candidate], [block_set(16, 8)]
    )
    protocols = {r.protocol for r in read_rows(tmp_path / "results.csv")}
    assert protocols == {"segmentation_frozen", "segmentation_frozen_pretrained_decoder"}
    scratch, pretrained = trained_nets
    assert not any(k.startswith("aspp.") for k in scratch)  # the FPN, from its seeded init
    for key, value in net.state_dict().items():  # encoder and decoder, weights and BN statistics
        torch.testing.assert_close(pretrained[key], value, rtol=0, atol=0, msg=key)
    assert pretrained["classifier.weight"].shape == (2, 8, 1, 1)  # a new classifier for the set's classes


def test_baselines_sharing_the_encoders_meta_get_no_pretrained_decoder(tmp_path):
    exported_dense_net(tmp_path / "run")
    candidate = encoder_candidate(tmp_path / "run", tmp_path)
    assert candidate.decoder is not None
    assert all(b.decoder is None for b in baseline_candidates(candidate.meta))
    random_init = baseline_candidates(candidate.meta)[0]
    Suite(tmp_path / "results.csv", segmentation=SETTINGS, log=lambda _: None).evaluate(
        [random_init], [block_set(16, 8)]
    )
    assert {r.protocol for r in read_rows(tmp_path / "results.csv")} == {"segmentation_frozen"}


def test_the_pretrained_decoder_protocols_can_be_turned_off(tmp_path, trained_nets):
    exported_dense_net(tmp_path / "run")
    candidate = encoder_candidate(tmp_path / "run", tmp_path)
    Suite(
        tmp_path / "results.csv", segmentation={**SETTINGS, "pretrained_decoder": False}, log=lambda _: None
    ).evaluate([candidate], [block_set(16, 8)])
    assert {r.protocol for r in read_rows(tmp_path / "results.csv")} == {"segmentation_frozen"}
    assert len(trained_nets) == 1


def test_the_scratch_decoder_is_a_setting_and_the_pretrained_one_ignores_it(tmp_path, trained_nets):
    dataset = block_set(16, 8)
    fpn, deeplab = (
        Suite(tmp_path / "a.csv"),
        Suite(tmp_path / "b.csv", segmentation={"decoder": "deeplabv3plus"}),
    )
    assert fpn.eval_hash(dataset, "segmentation_frozen") != deeplab.eval_hash(dataset, "segmentation_frozen")
    pretrained = "segmentation_frozen_pretrained_decoder"
    assert fpn.eval_hash(dataset, pretrained) == deeplab.eval_hash(dataset, pretrained)
    assert "decoder" not in fpn.protocol_settings(pretrained)
    deeplab.segmentation.update(SETTINGS)
    deeplab.evaluate([baseline_candidates(META)[0]], [dataset])
    (scratch,) = trained_nets
    assert any(k.startswith("aspp.") for k in scratch)  # a DeepLabv3+ trained from scratch
    assert {r.protocol for r in read_rows(tmp_path / "b.csv")} == {"segmentation_frozen"}


def test_an_unknown_decoder_is_refused_with_the_choices():
    with pytest.raises(
        ConfigError, match=r"decoder 'unet' is unknown; use one of \['fpn', 'deeplabv3plus'\]"
    ):
        segmentation_net(create_backbone("test_resnet", 2), 2, decoder="unet")
    with pytest.raises(ConfigError, match="'unet' is unknown"):
        segmentation.run_segmentation(
            lambda: create_backbone("test_resnet", 2), META, block_set(4, 4), decoder="unet"
        )
