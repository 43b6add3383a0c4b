"""DeepLabV3Plus: shapes on CNNs and ViTs, encoder keys of a plain backbone, decoder export, frozen mode."""

from __future__ import annotations

import pytest
import torch

from rsssl.models.backbones import create_backbone
from rsssl.models.dense import DeepLabV3Plus, DenseOutput

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"aspp_channels": 16, "low_level_channels": 8, "decoder_channels": 16, "out_channels": 8}


def backbone(name: str, in_chans: int):
    """A plain `create_backbone` (ViTs at 32 px)."""
    return create_backbone(name, in_chans, **({"img_size": 32} if "vit" in name else {}))


def make_net(name="test_resnet", in_chans=4, seed=0, **kwargs) -> DeepLabV3Plus:
    torch.manual_seed(seed)
    return DeepLabV3Plus(backbone(name, in_chans), **kwargs)


@pytest.mark.parametrize(
    ("name", "in_chans", "size"),
    [
        ("test_resnet", 3, (64, 32)),
        ("test_resnet", 13, (64, 64)),
        ("resnet18", 4, (64, 96)),
        ("test_vit", 4, (32, 32)),
    ],
)
def test_shapes(name, in_chans, size):
    net = make_net(name, in_chans, num_classes=5).eval()
    stride = int(net.encoder.feature_info[-1]["reduction"])
    assert net.output_stride == stride == (16 if "vit" in name else 32)
    assert net.atrous_rates == ((6, 12, 18) if stride == 16 else (3, 6, 9))
    h, w = size
    with torch.no_grad():
        out = net(torch.randn(2, in_chans, h, w))
    assert isinstance(out, DenseOutput)
    assert out.context.shape == (2, 256, h // stride, w // stride)
    assert out.decoder.shape == (2, 64, h, w)
    assert out.logits.shape == (2, 5, h, w)
    assert out.deepest.shape == (2, int(net.encoder.feature_info[-1]["num_chs"]), h // stride, w // stride)
    assert make_net(name, in_chans, **SMALL).eval()(torch.randn(2, in_chans, h, w)).logits is None


def test_low_level_is_stride_4():
    net = make_net("resnet18")
    assert net.low_level_stride == 4 and net.low_level[0].in_channels == 64
    assert net.aspp.branches[0][0].in_channels == 512


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "test_vit"])
def test_encoder_keeps_plain_backbone_keys(name):
    net = make_net(name, 4, **SMALL).eval()
    plain = backbone(name, 4).eval()
    assert set(net.encoder.state_dict()) == set(plain.state_dict())
    encoder_keys = {k.removeprefix("encoder.") for k in net.state_dict() if k.startswith("encoder.")}
    assert encoder_keys == set(plain.state_dict())
    x = torch.randn(2, 4, 32, 32)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.01)  # not the init: prove the weights travel
    net.encoder.load_state_dict(plain.state_dict(), strict=True)  # exported -> inside the net
    torch.testing.assert_close(net.encoder(x), plain(x))
    back = backbone(name, 4).eval()
    back.load_state_dict(net.encoder.state_dict(), strict=True)  # inside the net -> plain
    torch.testing.assert_close(back(x), plain(x))


def test_decoder_round_trip():
    source = make_net(seed=0, num_classes=3, **SMALL)
    source.train()(torch.randn(4, 4, 32, 32))  # move the decoder's BN statistics away from the init
    state = source.decoder_state_dict()
    assert state and not any(k.startswith("encoder.") for k in state)
    assert set(state) == {k for k in source.state_dict() if not k.startswith("encoder.")}
    assert "aspp.project.1.running_mean" in state and "classifier.weight" in state

    target = make_net(seed=1, num_classes=3, **SMALL)
    target.encoder.load_state_dict(source.encoder.state_dict())
    x = torch.randn(2, 4, 32, 32)
    source.eval(), target.eval()
    with torch.no_grad():
        assert not torch.allclose(target(x).decoder, source(x).decoder)  # different decoder init
        target.load_decoder_state_dict(state)
        a, b = source(x), target(x)
    for name in DenseOutput._fields:
        torch.testing.assert_close(getattr(b, name), getattr(a, name))


def test_decoder_mismatch_names_the_key():
    state = make_net(**SMALL).decoder_state_dict()
    other = make_net(**{**SMALL, "out_channels": 4})
    before = other.head.weight.clone()
    with pytest.raises(ValueError, match=r"head\.weight"):
        other.load_decoder_state_dict(state)
    torch.testing.assert_close(other.head.weight, before)  # nothing loaded
    net = make_net(**SMALL)
    with pytest.raises(ValueError, match=r"missing keys \['aspp\.pool\.0\.weight'\]"):
        net.load_decoder_state_dict({k: v for k, v in state.items() if k != "aspp.pool.0.weight"})
    with pytest.raises(ValueError, match=r"unexpected keys \['extra\.weight'\]"):
        net.load_decoder_state_dict({**state, "extra.weight": torch.zeros(1)})
    net.load_decoder_state_dict({k: v for k, v in state.items() if k != "head.bias"}, strict=False)
    torch.testing.assert_close(net.head.weight, state["head.weight"])


def _loss(out: DenseOutput) -> torch.Tensor:
    return out.decoder.square().mean() + out.context.square().mean()


def test_frozen_encoder_does_not_move():
    net = make_net(frozen=True, **SMALL).train()
    assert not net.encoder.training and net.aspp.training
    encoder_buffers = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    decoder_mean = net.aspp.project[1].running_mean.clone()
    _loss(net(torch.randn(4, 4, 32, 32))).backward()
    assert all(p.grad is None for p in net.encoder_parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder_parameters())
    for k, v in net.encoder.state_dict().items():
        torch.testing.assert_close(v, encoder_buffers[k], msg=f"encoder {k} moved")
    assert not torch.equal(net.aspp.project[1].running_mean, decoder_mean)  # the decoder does train


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_gradients_reach_encoder_and_decoder(name):
    net = make_net(name, **SMALL).train()
    assert len(net.encoder_parameters()) + len(net.decoder_parameters()) == len(list(net.parameters()))
    _loss(net(torch.randn(2, 4, 32, 32))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder_parameters())
    stem = next(iter(net.encoder.parameters()))  # the first conv / patch embedding
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    if name == "test_resnet":  # every stage feeds the decoder
        assert all(p.grad is not None for p in net.encoder_parameters())
