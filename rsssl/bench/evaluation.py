"""Evaluation throughput: feature extraction, and the kNN and linear probes against scikit-learn
on the same features (time and test accuracy), each pair interleaved."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from rsssl.bench.timing import alternate, median_rate
from rsssl.eval.features import extract_features
from rsssl.eval.knn import knn_predict
from rsssl.eval.linear import DEFAULT_L2_GRID, fit_linear_probe, sklearn_c, split_train_val
from rsssl.models.backbones import create_backbone


def feature_problem(
    n_train: int = 10_000,
    n_test: int = 2_000,
    dim: int = 512,
    classes: int = 10,
    seed: int = 0,
    centre_scale: float = 0.12,
) -> tuple[torch.Tensor, ...]:
    """Gaussian class blobs in `dim` dimensions, unit noise around centres of std `centre_scale`,
    that overlap (neither probe is near 100 %): (train_x, train_y, test_x, test_y)."""
    generator = torch.Generator().manual_seed(seed)
    centres = centre_scale * torch.randn(classes, dim, generator=generator)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, classes, (n,), generator=generator)
        return centres[labels] + torch.randn(n, dim, generator=generator) + 0.5, labels

    return (*draw(n_train), *draw(n_test))


def feature_extraction_rate(
    backbone: str = "resnet18", bands: int = 3, tile: int = 64, count: int = 1024, device: str = "cpu"
) -> float:
    """Images/s of `extract_features` (uint8 tiles standardised on the device, batches of 256)."""
    encoder = create_backbone(backbone, in_chans=bands)
    meta = {"mean": [127.0] * bands, "std": [50.0] * bands}
    tiles = np.random.default_rng(0).integers(0, 256, (count, bands, tile, tile), dtype=np.uint8)
    seconds = alternate({"extract": lambda: extract_features(encoder, meta, tiles, device)}, 3, 1, device)
    return median_rate(seconds["extract"], count)


def timed_answers(
    runs: dict[str, Callable[[], None]], answers: dict[str, np.ndarray], test_y: torch.Tensor, rounds: int
) -> dict:
    """Median seconds of each run (interleaved) and the test accuracy of the answers it left."""
    seconds = alternate(runs, rounds, 0)
    truth = test_y.numpy()
    return {
        name: {"seconds": float(np.median(seconds[name])), "accuracy": float((answers[name] == truth).mean())}
        for name in runs
    }


def knn_against_sklearn(problem: tuple[torch.Tensor, ...], rounds: int = 3) -> dict:
    """Seconds and test accuracy of the 20-NN cosine vote, rsssl's and scikit-learn's (brute force)."""
    train_x, train_y, test_x, test_y = problem
    classes = int(train_y.max()) + 1
    xtr, ytr, xte = train_x.numpy(), train_y.numpy(), test_x.numpy()
    answers: dict[str, np.ndarray] = {}

    def ours() -> None:
        answers["rsssl"] = (
            knn_predict(train_x, train_y, test_x, classes, k=20, weighting="uniform").argmax(1).numpy()
        )

    def theirs() -> None:
        model = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute")
        answers["scikit-learn"] = model.fit(xtr, ytr).predict(xte)

    return timed_answers({"rsssl": ours, "scikit-learn": theirs}, answers, test_y, rounds)


def sklearn_probe(train_x: np.ndarray, train_y: np.ndarray, val_x, val_y, grid) -> LogisticRegression:
    """The protocol of `fit_linear_probe` in scikit-learn: the same standardisation, the same l2
    grid walked strong to weak with warm starts, the best validation accuracy refitted on train+val."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-12
    model = LogisticRegression(max_iter=200, warm_start=True)
    scores = []
    for l2 in sorted(grid, reverse=True):
        model.set_params(C=sklearn_c(l2, len(train_x)))
        model.fit((train_x - mean) / std, train_y)
        scores.append((model.score((val_x - mean) / std, val_y), l2))
    best = max(scores, key=lambda s: s[0])[1]
    all_x, all_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
    mean, std = all_x.mean(0), all_x.std(0) + 1e-12
    final = LogisticRegression(C=sklearn_c(best, len(all_x)), max_iter=200).fit((all_x - mean) / std, all_y)
    final.standardisation = (mean, std)
    return final


def linear_against_sklearn(problem: tuple[torch.Tensor, ...], rounds: int = 3) -> dict:
    """Seconds and test accuracy of the whole linear-probe protocol (l2 chosen on a 20 %
    validation split over the default grid, then refitted): rsssl's with the batched grid (the
    default, "rsssl") and with the warm-started path ("rsssl path"), and scikit-learn's."""
    train_x, train_y, test_x, test_y = problem
    classes = int(train_y.max()) + 1
    fit_idx, val_idx = split_train_val(train_y, 0.2, seed=0)
    split = train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx]
    numpy_split = [t.numpy() for t in split]
    answers: dict[str, np.ndarray] = {}

    def ours(solver: str, name: str) -> Callable[[], None]:
        def run() -> None:
            probe = fit_linear_probe(*split, classes, DEFAULT_L2_GRID, solver=solver)
            answers[name] = probe.predict(test_x).numpy()

        return run

    def theirs() -> None:
        model = sklearn_probe(*numpy_split, DEFAULT_L2_GRID)
        mean, std = model.standardisation
        answers["scikit-learn"] = model.predict((test_x.numpy() - mean) / std)

    runs = {
        "rsssl": ours("batched", "rsssl"),
        "rsssl path": ours("path", "rsssl path"),
        "scikit-learn": theirs,
    }
    return timed_answers(runs, answers, test_y, rounds)
