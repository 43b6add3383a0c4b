"""Synthetic problems and sources shared by test modules."""

from __future__ import annotations

import time

import torch

from rsssl.bench.evaluation import feature_problem
from rsssl.data.sources import Source

NUM_CLASSES, DIM = 10, 128


def overlapping_blobs(n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """10 Gaussian blobs in 128-d with overlapping classes (kNN ~75 %, linear ~85 % accuracy)."""
    return feature_problem(n_train, n_test, DIM, NUM_CLASSES, seed, centre_scale=0.25)


class ListSource(Source):
    """Scenes given in memory."""

    def __init__(self, scenes):
        self.scenes = scenes

    def load(self):
        return self.scenes

    def describe(self):
        return {"test": [s.name for s in self.scenes]}


def best_times(ours, theirs, repeats: int = 5) -> tuple[float, float]:
    """Best-of-`repeats` seconds of each, the runs interleaved so a burst of load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, record in zip((ours, theirs), times, strict=True):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])
