"""Interleaved timing: every contender runs once per round, so a burst of load hits all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def now(device: torch.device | str = "cpu") -> float:
    """Wall time once `device` has finished the work queued so far."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def alternate(
    contenders: dict[str, Callable[[], object]], rounds: int, warmup: int, device: torch.device | str = "cpu"
) -> dict[str, list[float]]:
    """Seconds of each contender's call in each of `rounds` rounds, after `warmup` untimed rounds."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for _ in range(warmup):
        for run in contenders.values():
            run()
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = now(device)
            run()
            seconds[name].append(now(device) - start)
    return seconds


def median_rate(seconds: list[float], items: int) -> float:
    """Items per second at the median time of one call."""
    return items / statistics.median(seconds)
