"""``rsssl-leaderboard``: regenerate the leaderboard from the results store.

Usage: ``rsssl-leaderboard`` reads results/results.csv and writes experiments/leaderboard/;
``rsssl-leaderboard results=/runs/results.csv out=site eval_data=[eurosat,ucmerced] plots=false``
chooses the store, the output folder, the evaluation datasets and whether to draw plots.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from rsssl.cli import CONF_DIR
from rsssl.results.leaderboard import write_leaderboard
from rsssl.results.store import read_configs, read_rows

EMPTY_MESSAGE = (
    "no results in {path} yet: run rsssl-pretrain ... +eval=suite or rsssl-eval first "
    "(they append rows to this file), then run rsssl-leaderboard again"
)


def _wanted(eval_data: str | ListConfig | None) -> set[str] | None:
    if eval_data is None:
        return None
    return {str(e) for e in eval_data} if isinstance(eval_data, ListConfig) else {str(eval_data)}


@hydra.main(config_path=CONF_DIR, config_name="leaderboard", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Read the store, filter it, write the leaderboard files and say where they are."""
    results = Path(cfg.results)
    rows = read_rows(results)
    if not rows:
        print(EMPTY_MESSAGE.format(path=results))
        return
    wanted = _wanted(cfg.eval_data)
    if wanted is not None:
        available = sorted({r.eval_data for r in rows})
        rows = [r for r in rows if r.eval_data in wanted]
        if not rows:
            raise SystemExit(f"no rows for eval_data={sorted(wanted)} in {results}; it has: {available}")
    command = " ".join(["rsssl-leaderboard", *sys.argv[1:]])
    metrics = list(cfg.metrics) if cfg.metrics is not None else None
    written = write_leaderboard(
        rows,
        cfg.out,
        source=str(results),
        command=command,
        plots=cfg.plots,
        metrics=metrics,
        configs=read_configs(results),
        ranking_resamples=cfg.ranking_resamples,
        ranking_seed=cfg.ranking_seed,
    )
    print(f"leaderboard from {len(rows)} rows of {results} written to {Path(cfg.out)}/:")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
