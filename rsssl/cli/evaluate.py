"""`rsssl-eval`: judge an exported encoder (and the baselines) with the common protocols.

    rsssl-eval encoder=runs/.../encoder.safetensors eval=classification data=synthetic
    rsssl-eval encoder=... eval=segmentation data=npz_segmentation \
        data.path=$RSSSL_DATA_DIR/deepforest_treecrowns_dev.npz

Rows go to the results store (`results=results/results.csv`); `rsssl-leaderboard` renders them.
Run ids are stored relative to the runs folder (`runs_dir`, default `runs`); the encoder's
pretraining config goes to the store's configs sidecar (`results.configs.json`).
"""

from __future__ import annotations

import logging
import sys

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rsssl.cli import CONF_DIR
from rsssl.cli.checks import check_config, plan_tasks, refuse_bad_command_line, selected_option
from rsssl.data.scene import DataError
from rsssl.eval.data import EvalDataset
from rsssl.eval.suite import Suite, baseline_candidates, encoder_candidate
from rsssl.models.backbones import ConfigError
from rsssl.results.store import ResultsNotWritten, record_config

log = logging.getLogger(__name__)


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def build_eval_sets(data_cfg: DictConfig, eval_cfg: DictConfig) -> list[EvalDataset]:
    """The labelled sets the eval config asks for that the data config has (`plan_tasks` says
    which it skips), plus `extra_sets`; a builder may return several sets (one per split)."""
    own = data_cfg.get("eval_sets") or {}
    extra = eval_cfg.get("extra_sets") or {}
    data = selected_option("data", data_cfg.name)
    tasks, warning = plan_tasks(eval_cfg.tasks, own, data, bool(extra))
    if warning:
        log.warning(warning)
    built = [instantiate(own[task]) for task in tasks] + [instantiate(node) for node in extra.values()]
    return [s for one in built for s in (one if isinstance(one, list | tuple) else [one])]


def make_suite(cfg: DictConfig) -> Suite:
    settings = OmegaConf.to_container(cfg.eval, resolve=True)
    return Suite(
        results=cfg.results,
        classification=settings.get("classification", {}),
        segmentation=settings.get("segmentation", {}),
        pixel=settings.get("pixel", {}),
        allow_other_units=bool(settings.get("allow_other_units", False)),
        device=resolve_device(cfg.device),
        cache_dir=cfg.get("features_cache_dir"),
        log=log.info,  # into the run's log file too when rsssl-pretrain evaluates
    )


def evaluate_encoder(cfg: DictConfig, weights_path: str, include_encoder: bool = True) -> dict[str, float]:
    """Evaluate one encoder and, if asked, the baselines (`eval.baselines`; the supervised
    reference among them unless `eval.supervised=false`); returns seconds per candidate.

    `include_encoder=False` evaluates only the baselines beside it (for the random-init method,
    whose offline numbers are the random-init baseline's).
    """
    candidate = encoder_candidate(weights_path, cfg.get("runs_dir") or "runs")
    if include_encoder and candidate.meta.get("config") is not None:
        record_config(cfg.results, candidate.config_hash, candidate.meta["config"])
    candidates = [candidate] if include_encoder else []
    if cfg.eval.baselines:
        candidates += baseline_candidates(candidate.meta, supervised=cfg.eval.get("supervised", True))
    datasets = build_eval_sets(cfg.data, cfg.eval)
    seconds = make_suite(cfg).evaluate(candidates, datasets)
    for run_id, spent in seconds.items():
        print(f"suite time {spent:6.1f} s  {run_id}")
    print(f"results: {cfg.results}")
    return seconds


@refuse_bad_command_line("rsssl-eval", "evaluate")
@hydra.main(config_path=CONF_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        check_config(cfg)
        evaluate_encoder(cfg, cfg.encoder)
    except (DataError, ConfigError, ResultsNotWritten) as error:
        print(f"rsssl-eval: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
