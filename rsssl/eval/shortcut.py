"""Does an encoder learn the land cover, or the look of the acquisition it came from?

Spatial positives (SauMoCo) share their scene's illumination, haze and season; without colour
augmentation the contrastive task can be solved by recognising the acquisition. This probe cuts
grid tiles from multi-date labelled scenes and reports kNN accuracy (k=20, cosine, exp weights)
for the land cover on a half/half split of the same scenes, for the land cover of scenes it has
not seen (first half of the scenes -> second half), and for the acquisition id (scene x date).

    python -m rsssl.eval.shortcut moco=runs/.../encoder.safetensors saumoco=runs/.../encoder.safetensors
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from rsssl.data.scene import ArrayScene, DataError
from rsssl.data.synthetic import make_synthetic_scenes
from rsssl.eval.features import extract_features
from rsssl.eval.knn import knn_predict
from rsssl.models.export import backbone_like, load_encoder


def acquisition_tiles(
    scenes: Sequence[ArrayScene], tile_size: int
) -> tuple[np.ndarray, Tensor, Tensor, Tensor]:
    """Every grid tile of every date: images N x C x T x T, majority class, scene number, acquisition id."""
    images, classes, scene_ids, acquisitions = [], [], [], []
    for number, scene in enumerate(scenes):
        if scene.mask is None:
            raise DataError(f"scene {scene.name!r} has no class mask: the probe needs labelled scenes")
        for date in range(len(scene.dates)):
            for row in range(0, scene.height - tile_size + 1, tile_size):
                for col in range(0, scene.width - tile_size + 1, tile_size):
                    images.append(scene.images[date, :, row : row + tile_size, col : col + tile_size])
                    mask = scene.mask[row : row + tile_size, col : col + tile_size]
                    classes.append(int(np.bincount(mask.ravel()).argmax()))
                    scene_ids.append(number)
                    acquisitions.append(number * len(scene.dates) + date)
    return np.stack(images), torch.tensor(classes), torch.tensor(scene_ids), torch.tensor(acquisitions)


def knn_accuracy(features: Tensor, labels: Tensor, train: Tensor, test: Tensor) -> float:
    votes = knn_predict(features[train], labels[train], features[test], int(labels.max()) + 1)
    return float((votes.argmax(1) == labels[test]).float().mean())


def shortcut_probe(
    features: Tensor, classes: Tensor, scene_ids: Tensor, acquisitions: Tensor, seed: int = 0
) -> dict[str, float]:
    """kNN accuracies of `features`: land cover on the same scenes, on other scenes, acquisition id."""
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))
    half = len(order) // 2
    seen = scene_ids < (int(scene_ids.max()) + 1) // 2
    return {
        "cover_same_scenes": knn_accuracy(features, classes, order[:half], order[half:]),
        "cover_other_scenes": knn_accuracy(features, classes, torch.where(seen)[0], torch.where(~seen)[0]),
        "acquisition": knn_accuracy(features, acquisitions, order[:half], order[half:]),
    }


def probe_table(encoders: dict[str, str], make_scenes: Callable[[int], list[ArrayScene]]) -> str:
    """A markdown table of the probe for each exported encoder, plus a random-init encoder of the
    first one's architecture; `make_scenes(num_bands)` gives the labelled multi-date scenes."""
    lines = [
        "| encoder | land cover, same scenes | land cover, other scenes | acquisition |",
        "|---|---:|---:|---:|",
    ]
    for number, (name, path) in enumerate(encoders.items()):
        encoder, meta = load_encoder(path)
        images, *labels = acquisition_tiles(make_scenes(int(meta["in_chans"])), int(meta["tile_size"]))
        features = {name: extract_features(encoder, meta, images)}
        if number == 0:
            features["random_init"] = extract_features(backbone_like(meta, seed=0), meta, images)
        for label, x in features.items():
            result = shortcut_probe(x, *labels)
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in result.values()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """`NAME=ENCODER.safetensors ...` -> the table, on unseen synthetic scenes with the encoders'
    band count (seed 123, 4 scenes x 3 dates, 512 px)."""
    pairs = [arg.split("=", 1) for arg in (sys.argv[1:] if argv is None else argv)]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit("usage: python -m rsssl.eval.shortcut NAME=ENCODER.safetensors [NAME=...]")
    print(probe_table(dict(pairs), lambda bands: make_synthetic_scenes(4, 512, bands, num_dates=3, seed=123)))


if __name__ == "__main__":
    main()
