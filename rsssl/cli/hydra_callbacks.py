"""Hydra callbacks of rsssl-pretrain: a multirun ends with the leaderboard regenerated."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rsssl.results.leaderboard import write_leaderboard
from rsssl.results.store import read_rows


def regenerate_leaderboard(results: str | Path, out: str | Path, command: str) -> list[Path]:
    """Render the leaderboard from the store; nothing when the store is empty."""
    rows = read_rows(Path(results))
    if not rows:
        return []
    written = write_leaderboard(rows, out, source=str(results), command=command)
    print(f"leaderboard from {len(rows)} rows written to {out}/")
    return written


class LeaderboardAfterSweep(Callback):
    """After the last job of a sweep that evaluated its encoders, rebuild the leaderboard."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.get("eval") is not None:
            regenerate_leaderboard(config.results, config.leaderboard_dir, "rsssl-pretrain -m ... +eval=...")
