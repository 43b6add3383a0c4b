"""Tracked views: source coordinates of every view pixel, and patches matched across two views."""

from __future__ import annotations

import pytest
import torch

from rsssl.data.tracked_views import MAX_SIDE, make_tracked_pair, matched_patches, source_coordinates
from rsssl.data.views import ViewMaker, ViewParams, ViewRecipe, apply_geometry

FIXED = {"hflip_p": 0.0, "vflip_p": 0.0, "rot90": False}
RECIPES = {
    "crops": ViewRecipe(crop_size=12, crop_scale=(0.1, 1.0), **FIXED),
    "upsampling_crops": ViewRecipe(crop_size=40, crop_scale=(0.05, 0.3), **FIXED),
    "flips": ViewRecipe(hflip_p=0.5, vflip_p=0.5, rot90=False),
    "rotations": ViewRecipe(crop_size=24, hflip_p=0.0, vflip_p=0.0, rot90=True),
    "all": ViewRecipe(crop_size=16, crop_scale=(0.1, 1.0)),
}


def unique_tile(n: int, channels: int, height: int, width: int) -> torch.Tensor:
    """A float64 batch whose every value (image, band, row, col) is different."""
    return torch.arange(n * channels * height * width, dtype=torch.float64).view(n, channels, height, width)


def gather(source: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """source[b, :, coords[b, 0, r, c], coords[b, 1, r, c]] as a B×C×h×w tensor."""
    batch_index = torch.arange(source.shape[0])[:, None, None]
    return source[batch_index, :, coords[:, 0], coords[:, 1]].permute(0, 3, 1, 2)


def identity_params(batch: int, box: tuple[float, float, float, float], size: tuple[int, int]) -> ViewParams:
    off, k = torch.zeros(batch, dtype=torch.bool), torch.zeros(batch, dtype=torch.long)
    return ViewParams(torch.tensor([box]).expand(batch, 4), off, off, k, size)


def random_coords(batch: int, tile: int, seed: int, size_a: int = 16, size_b: int = 16):
    """Source coordinates of two random views (crop + flips + rot90) of `batch` tile×tile tiles."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    params_a = ViewMaker(ViewRecipe(crop_size=size_a, crop_scale=(0.3, 1.0)), ("b",)).sample_geometry(
        batch, tile, tile, device
    )
    params_b = ViewMaker(ViewRecipe(crop_size=size_b, crop_scale=(0.3, 1.0)), ("b",)).sample_geometry(
        batch, tile, tile, device
    )
    return source_coordinates(params_a, tile, tile), source_coordinates(params_b, tile, tile)


def centres(boxes: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of the centre pixel of B×n×4 boxes."""
    return boxes[..., 1].long() + patch_size // 2, boxes[..., 0].long() + patch_size // 2


def centre_sources(coords: torch.Tensor, boxes: torch.Tensor, patch_size: int) -> torch.Tensor:
    """B×n×2 source (row, col) under each box's centre pixel."""
    rows, cols = centres(boxes, patch_size)
    batch_index = torch.arange(coords.shape[0])[:, None]
    return coords[batch_index, :, rows, cols]


@pytest.mark.parametrize("tile", [(24, 24), (20, 28)])
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_coordinates_point_at_the_source_pixel_of_every_view_pixel(name, tile):
    height, width = tile
    recipe = RECIPES[name]
    torch.manual_seed(0)
    maker = ViewMaker(recipe, ("b1", "b2", "b3"))
    source = unique_tile(16, 3, height, width)
    for _ in range(2):  # view A and view B: independent geometry
        params = maker.sample_geometry(16, height, width, torch.device("cpu"))
        if params.size[0] != params.size[1] and bool(params.k.any()):
            pytest.skip("rot90 needs square views")
        coords = source_coordinates(params, height, width)
        assert coords.dtype == torch.long and coords.shape == (16, 2, *params.size)
        assert coords[:, 0].min() >= 0 and coords[:, 0].max() < height
        assert coords[:, 1].min() >= 0 and coords[:, 1].max() < width
        assert torch.equal(apply_geometry(source, params, mode="nearest"), gather(source, coords))
        # the recipe really exercises what it names
        if recipe.hflip_p > 0:
            assert params.hflip.any() and not params.hflip.all() and params.vflip.any()
        if recipe.rot90:
            assert set(params.k.tolist()) == {0, 1, 2, 3}
        if recipe.crop_scale is not None:
            full = torch.tensor([0.0, 0.0, width, height])
            assert not (params.boxes == full).all(dim=1).any()


def test_coordinates_by_hand():
    tile = 3
    ramp = [[0, 1, 2], [0, 1, 2], [0, 1, 2]]
    flat = [[0, 0, 0], [1, 1, 1], [2, 2, 2]]
    off, on = torch.tensor([False]), torch.tensor([True])
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0]])
    cases = [
        ((off, off, 1), ramp, [[2, 2, 2], [1, 1, 1], [0, 0, 0]]),  # rot90 CCW: out[i][j] = in[j][2 - i]
        ((on, off, 0), flat, [[2, 1, 0]] * 3),  # h-flip: out[i][j] = in[i][2 - j]
        ((off, on, 0), [[2, 2, 2], [1, 1, 1], [0, 0, 0]], ramp),  # v-flip
        ((on, off, 1), ramp, flat),  # h-flip, then rot90: the transpose, out[i][j] = in[j][i]
    ]
    for (hflip, vflip, k), rows, cols in cases:
        params = ViewParams(box, hflip, vflip, torch.tensor([k]), (tile, tile))
        coords = source_coordinates(params, tile, tile)
        assert coords[0, 0].tolist() == rows and coords[0, 1].tolist() == cols
    # crop (x1, y1, x2, y2) = (1, 0, 3, 2) of a 3×3 tile, up-sampled ×2 to 4×4
    params = ViewParams(torch.tensor([[1.0, 0.0, 3.0, 2.0]]), off, off, torch.tensor([0]), (4, 4))
    coords = source_coordinates(params, tile, tile)
    assert coords[0, 0].tolist() == [[0] * 4, [0] * 4, [1] * 4, [1] * 4]
    assert coords[0, 1].tolist() == [[1, 1, 2, 2]] * 4
    # down-sampled ×2: the nearest pixel to each output centre (on a pixel edge: the lower-right one)
    params = ViewParams(torch.tensor([[0.0, 0.0, 4.0, 4.0]]), off, off, torch.tensor([0]), (2, 2))
    coords = source_coordinates(params, 4, 4)
    assert coords[0, 0].tolist() == [[1, 1], [3, 3]] and coords[0, 1].tolist() == [[1, 3], [1, 3]]


@pytest.mark.parametrize("name", ["upsampling_crops", "all"])
def test_bilinear_views_are_centred_on_the_tracked_pixel(name):
    # a view of a (row, col) ramp shows, at each pixel, the source position its centre samples:
    # within half a pixel of the tracked (nearest) source pixel
    height, width = 24, 24
    rows = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1).expand(8, 1, height, width)
    cols = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width).expand(8, 1, height, width)
    ramp = torch.cat([rows, cols], dim=1).contiguous()
    torch.manual_seed(1)
    pair = make_tracked_pair(ViewMaker(RECIPES[name], ("row", "col")), ramp)
    for view, coords, params in [
        (pair.view_a, pair.coords_a, pair.params_a),
        (pair.view_b, pair.coords_b, pair.params_b),
    ]:
        assert torch.equal(coords, source_coordinates(params, height, width))
        assert (view - coords.float()).abs().max() <= 0.5 + 1e-4
    assert not torch.equal(pair.coords_a, pair.coords_b)


def check_patches(coords_a, coords_b, boxes_a, boxes_b, valid, patch_size, num_patches):
    """Every property a batch of matched patches must have."""
    batch = coords_a.shape[0]
    assert boxes_a.shape == boxes_b.shape == (batch, num_patches, 4) and valid.shape == (batch, num_patches)
    assert boxes_a.dtype == boxes_b.dtype == torch.float32 and valid.dtype == torch.bool
    for coords, boxes in [(coords_a, boxes_a), (coords_b, boxes_b)]:
        height, width = coords.shape[-2:]
        x1, y1, x2, y2 = boxes.unbind(-1)
        assert torch.equal(boxes, boxes.round())
        assert (x2 - x1 == patch_size).all() and (y2 - y1 == patch_size).all()
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
        # the box centre is at least P/2 from every border of the view
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert (cx >= patch_size / 2).all() and (width - cx >= patch_size / 2).all()
        assert (cy >= patch_size / 2).all() and (height - cy >= patch_size / 2).all()
    source_a = centre_sources(coords_a, boxes_a, patch_size)
    source_b = centre_sources(coords_b, boxes_b, patch_size)
    assert (source_a == source_b).all(-1)[valid].all()
    # invalid entries only at the end, and holding the top-left box
    assert torch.equal(valid, valid.cummin(dim=1).values)
    top_left = torch.tensor([0.0, 0.0, patch_size, patch_size])
    assert (boxes_a[~valid] == top_left).all() and (boxes_b[~valid] == top_left).all()
    # later centres (view A) never fall inside an earlier box of the same image
    rows, cols = centres(boxes_a, patch_size)
    for j in range(num_patches):
        for k in range(j + 1, num_patches):
            inside = (
                (cols[:, k] >= boxes_a[:, j, 0])
                & (cols[:, k] < boxes_a[:, j, 2])
                & (rows[:, k] >= boxes_a[:, j, 1])
                & (rows[:, k] < boxes_a[:, j, 3])
            )
            assert not (inside & valid[:, k]).any()


@pytest.mark.parametrize("patch_size", [1, 4, 5])
def test_matched_patches_large_batch(patch_size):
    coords_a, coords_b = random_coords(64, 48, seed=3, size_a=32, size_b=24)
    generator = torch.Generator().manual_seed(0)
    boxes_a, boxes_b, valid = matched_patches(coords_a, coords_b, patch_size, 4, generator=generator)
    check_patches(coords_a, coords_b, boxes_a, boxes_b, valid, patch_size, 4)
    assert valid.float().mean() > 0.9


def reference_patches(coords_a, coords_b, patch_size, num_patches, scores):
    """matched_patches, the slow way: plain Python per image and per pixel, on the given scores."""
    half = patch_size // 2
    height_a, width_a = coords_a.shape[-2:]
    height_b, width_b = coords_b.shape[-2:]

    def interior(r, c, height, width):
        return half <= r <= height - patch_size + half and half <= c <= width - patch_size + half

    boxes_a, boxes_b, valid = [], [], []
    for image in range(coords_a.shape[0]):
        a, b = coords_a[image].tolist(), coords_b[image].tolist()
        seen_in_b = {}
        for r in range(height_b):
            for c in range(width_b):
                if interior(r, c, height_b, width_b):
                    seen_in_b.setdefault((b[0][r][c], b[1][r][c]), []).append((r, c))
        candidates = {}
        for r in range(height_a):
            for c in range(width_a):
                where = seen_in_b.get((a[0][r][c], a[1][r][c]))
                if interior(r, c, height_a, width_a) and where:
                    candidates[(r, c)] = where[len(where) // 2]
        row_a, row_b, row_valid = [], [], []
        for _ in range(num_patches):
            best, best_score = None, None
            for r, c in candidates:  # raster order: the first of equal scores wins
                score = scores[image, r * width_a + c]
                if best is None or score > best_score:
                    best, best_score = (r, c), score
            if best is None:
                row_a.append([0, 0, patch_size, patch_size])
                row_b.append([0, 0, patch_size, patch_size])
                row_valid.append(False)
                continue
            (ra, ca), (rb, cb) = best, candidates[best]
            top, left = ra - half, ca - half
            row_a.append([left, top, left + patch_size, top + patch_size])
            row_b.append([cb - half, rb - half, cb - half + patch_size, rb - half + patch_size])
            row_valid.append(True)
            candidates = {
                (r, c): v
                for (r, c), v in candidates.items()
                if not (top <= r < top + patch_size and left <= c < left + patch_size)
            }
        boxes_a.append(row_a)
        boxes_b.append(row_b)
        valid.append(row_valid)
    as_tensor = torch.tensor
    return as_tensor(boxes_a, dtype=torch.float32), as_tensor(boxes_b, dtype=torch.float32), as_tensor(valid)


@pytest.mark.parametrize("patch_size", [3, 4])
def test_matched_patches_match_a_per_image_reference(patch_size):
    # view B up-sampled (20 px for ≥30% of a 24 px tile), so view B repeats source pixels
    coords_a, coords_b = random_coords(6, 24, seed=5, size_a=12, size_b=20)
    scores = torch.rand((6, 12 * 12), generator=torch.Generator().manual_seed(7))  # the documented draw
    expected = reference_patches(coords_a, coords_b, patch_size, 5, scores)
    got = matched_patches(coords_a, coords_b, patch_size, 5, generator=torch.Generator().manual_seed(7))
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)
    assert got[2].any() and got[2][:, 0].all()


def test_identical_views_match_the_same_pixel():
    params = identity_params(3, (0.0, 0.0, 8.0, 8.0), (8, 8))
    coords = source_coordinates(params, 8, 8)
    generator = torch.Generator().manual_seed(0)
    boxes_a, boxes_b, valid = matched_patches(coords, coords, 1, 64, generator=generator)
    assert valid.all() and torch.equal(boxes_a, boxes_b)
    # 1×1 boxes each remove only themselves: the 64 picks are the 64 pixels
    for image in range(3):
        assert len({tuple(box) for box in boxes_a[image].tolist()}) == 64


def test_upsampled_view_matches_the_middle_of_its_repeated_pixels():
    coords_a = source_coordinates(identity_params(2, (0.0, 0.0, 4.0, 4.0), (4, 4)), 4, 4)
    coords_b = source_coordinates(identity_params(2, (0.0, 0.0, 4.0, 4.0), (8, 8)), 4, 4)  # 2×2 per pixel
    boxes_a, boxes_b, valid = matched_patches(coords_a, coords_b, 1, 16)
    assert valid.all()
    x1, y1 = boxes_a[..., 0], boxes_a[..., 1]
    for image in range(2):
        assert len({(int(r), int(c)) for r, c in zip(y1[image], x1[image])}) == 16
    # source (r, c) covers view-B pixels (2r..2r+1, 2c..2c+1); the middle of 4 in raster order
    assert torch.equal(boxes_b[..., 1], 2 * y1 + 1) and torch.equal(boxes_b[..., 0], 2 * x1)


def test_few_common_locations_leave_patches_invalid():
    coords = source_coordinates(identity_params(2, (0.0, 0.0, 8.0, 8.0), (8, 8)), 8, 8)
    # P = 8: one possible centre (4, 4), box (0, 0, 8, 8)
    boxes_a, boxes_b, valid = matched_patches(coords, coords, 8, 3)
    assert valid.tolist() == [[True, False, False]] * 2
    assert (boxes_a == torch.tensor([0.0, 0.0, 8.0, 8.0])).all() and torch.equal(boxes_a, boxes_b)
    # P = 7: four possible centres, any box covers all of them
    _, _, valid = matched_patches(coords, coords, 7, 3)
    assert valid.tolist() == [[True, False, False]] * 2


def test_views_without_common_interior_location_are_invalid():
    height, width = 8, 16
    left = source_coordinates(identity_params(4, (0.0, 0.0, 8.0, 8.0), (8, 8)), height, width)
    right = source_coordinates(identity_params(4, (8.0, 0.0, 16.0, 8.0), (8, 8)), height, width)
    boxes_a, boxes_b, valid = matched_patches(left, right, 1, 2)
    assert not valid.any()
    check_patches(left, right, boxes_a, boxes_b, valid, 1, 2)
    # sharing one column (source col 7): on view A's right border and view B's left border
    touching = source_coordinates(identity_params(4, (7.0, 0.0, 15.0, 8.0), (8, 8)), height, width)
    _, _, valid = matched_patches(left, touching, 3, 1)
    assert not valid.any()
    boxes_a, boxes_b, valid = matched_patches(left, touching, 1, 9)
    assert valid.tolist() == [[True] * 8 + [False]] * 4
    assert (boxes_a[valid][:, 0] == 7).all() and (boxes_b[valid][:, 0] == 0).all()


def test_pixels_without_source_are_never_matched():
    coords = source_coordinates(identity_params(2, (0.0, 0.0, 8.0, 8.0), (8, 8)), 8, 8)
    padded = coords.clone()
    padded[:, :, :4] = -1  # top half of both views: no source (padding), never matched to each other
    boxes_a, _, valid = matched_patches(padded, padded, 1, 64)
    assert valid.sum(dim=1).tolist() == [32, 32]
    assert (boxes_a[valid][:, 1] >= 4).all()


def test_same_seed_same_patches_other_seed_other_patches():
    coords_a, coords_b = random_coords(8, 32, seed=11)

    def draw(seed):
        return matched_patches(coords_a, coords_b, 3, 4, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(0), draw(0), draw(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])
    torch.manual_seed(4)
    global_rng = matched_patches(coords_a, coords_b, 3, 4)
    torch.manual_seed(4)
    again = matched_patches(coords_a, coords_b, 3, 4)
    assert all(torch.equal(x, y) for x, y in zip(global_rng, again, strict=True))


def test_an_image_patches_do_not_depend_on_the_rest_of_the_batch():
    coords_a, coords_b = random_coords(64, 32, seed=13)
    other_a, other_b = random_coords(64, 32, seed=14)
    mixed_a, mixed_b = other_a.clone(), other_b.clone()
    mixed_a[0], mixed_b[0] = coords_a[0], coords_b[0]

    def draw(a, b):
        return matched_patches(a, b, 3, 4, generator=torch.Generator().manual_seed(2))

    full, mixed, alone = draw(coords_a, coords_b), draw(mixed_a, mixed_b), draw(coords_a[:1], coords_b[:1])
    for x, y, z in zip(full, mixed, alone, strict=True):
        assert torch.equal(x[0], y[0]) and torch.equal(x[:1], z)
    assert not torch.equal(full[0][1:], mixed[0][1:])


def test_errors_are_explicit():
    coords_a = source_coordinates(identity_params(2, (0.0, 0.0, 8.0, 8.0), (8, 8)), 8, 8)
    coords_b = source_coordinates(identity_params(2, (0.0, 0.0, 8.0, 8.0), (6, 6)), 8, 8)
    with pytest.raises(ValueError, match=r"patch_size must be between 1 and the smallest view side \(6"):
        matched_patches(coords_a, coords_b, 7, 1)
    with pytest.raises(ValueError, match="patch_size"):
        matched_patches(coords_a, coords_b, 0, 1)
    with pytest.raises(ValueError, match="num_patches must be at least 1"):
        matched_patches(coords_a, coords_b, 3, 0)
    with pytest.raises(ValueError, match="2 images but coords_b has 1"):
        matched_patches(coords_a, coords_b[:1], 3, 1)
    with pytest.raises(ValueError, match="B×2×h×w"):
        matched_patches(coords_a[:, :1], coords_b, 3, 1)
    huge = identity_params(1, (0.0, 0.0, 8.0, 1.0), (1, 8))
    with pytest.raises(ValueError, match="too large for exact pixel tracking"):
        source_coordinates(huge, 1, MAX_SIDE + 1)
    with pytest.raises(ValueError, match="leaves the 4×4 source tile"):
        source_coordinates(identity_params(1, (0.0, 0.0, 8.0, 8.0), (8, 8)), 4, 4)
