"""The published experiments sweep what their README says: every method, 3 pretraining seeds."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.checks import sweep_jobs
from rsssl.cli.run_names import register_resolvers


def _jobs(experiment: str, *overrides: str) -> list[list[str]]:
    register_resolvers()
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("pretrain", [f"+experiment={experiment}", *overrides], return_hydra_config=True)
    return sweep_jobs(cfg, list(overrides))


def test_synthetic_benchmark_runs_every_method_with_three_pretraining_seeds():
    jobs = {tuple(sorted(job)) for job in _jobs("synthetic_benchmark")}
    methods = ("moco", "saumoco", "simclr", "random_init")
    assert jobs == {tuple(sorted((f"method={m}", f"seed={s}"))) for m in methods for s in range(3)}


def test_a_command_line_can_narrow_the_benchmark_sweep():
    jobs = {tuple(sorted(job)) for job in _jobs("synthetic_benchmark", "method=moco", "seed=0")}
    assert jobs == {("method=moco", "seed=0")}
