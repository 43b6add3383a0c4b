"""rsssl-bench: measure rsssl against its peers and the hardware in one run; write the report.

rsssl-bench                                  # experiments/benchmarks/BENCHMARKS.md (+ .json)
rsssl-bench sections=[moco,eval] out=/tmp/b
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rsssl.bench import data_rate, evaluation, loop, scale, steps
from rsssl.bench.report import machine, write_report
from rsssl.bench.timing import alternate, median_rate
from rsssl.cli import CONF_DIR
from rsssl.models.backbones import ConfigError


def step_setup(cfg: DictConfig) -> steps.StepSetup:
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is visible: use device=cpu (or auto)")
    gpu = device.startswith("cuda")
    return steps.StepSetup(
        **OmegaConf.to_container(cfg.setup),
        device=device,
        precision="bf16" if gpu else "32",
        channels_last=gpu,
    )


def loop_figures(cfg: DictConfig, setup: steps.StepSetup) -> dict:
    """`rsssl-pretrain` runs (separate processes) between blocks of bare steps (`rounds`, then
    half as many after each run), so the bare step's median spans the runs' whole time rather
    than one moment before them."""
    step = steps.rsssl_step(steps.method_from_yaml("moco", setup, queue_size=setup.queue), setup)
    bare: list[float] = []
    workers, waiting = {}, {}
    bare += alternate({"bare": step}, cfg.rounds, cfg.warmup, setup.device)["bare"]
    for count in cfg.loop_workers:
        workers[str(count)], waiting[str(count)] = loop.pretrain_loop_rate(setup, cfg.loop_steps, int(count))
        bare += alternate({"bare": step}, max(1, cfg.rounds // 2), 1, setup.device)["bare"]
    return {"bare_step": median_rate(bare, setup.batch), "workers": workers, "loader_wait": waiting}


def data_figures(cfg: DictConfig, setup: steps.StepSetup) -> dict:
    settings = {"workers": list(cfg.data_workers), "batches": int(cfg.data_batches)}
    data_dir = Path(cfg.data_dir)
    return {
        "scene": data_rate.GEOTIFF,
        "tile": 64,
        "batch": 64,
        "warm": data_rate.data_rates_with_cache(data_dir, None, **settings),
        "cold": data_rate.data_rates_with_cache(data_dir, 1, **settings),
    }


def eval_figures(cfg: DictConfig, setup: steps.StepSetup) -> dict:
    size = cfg.eval_problem
    problem = evaluation.feature_problem(size.train, size.test, size.dim, size.classes)
    rate = evaluation.feature_extraction_rate(setup.backbone, setup.bands, setup.tile, device=setup.device)
    return {
        "backbone": setup.backbone,
        "tile": setup.tile,
        "features_per_second": rate,
        "problem": f"{size.train:,} train + {size.test:,} test x {size.dim}, {size.classes} classes",
        "rounds": int(cfg.eval_rounds),
        "knn": evaluation.knn_against_sklearn(problem, cfg.eval_rounds),
        "linear": evaluation.linear_against_sklearn(problem, cfg.eval_rounds),
    }


def scale_figures(cfg: DictConfig, setup: steps.StepSetup) -> dict:
    flops, gradient_bytes = scale.moco_resnet50_step()
    per_worker = data_rate.ssl4eo_store_rate()
    rows = scale.project(flops, gradient_bytes, per_worker)
    return {
        "flops_per_image": flops,
        "gradient_bytes": gradient_bytes,
        "store_tiles_per_worker": per_worker,
        "per_gpu_images_per_second": rows[0].images_per_second,
        "measured_gpu": False,
        "projections": scale.as_dicts(rows),
    }


SECTIONS: dict[str, Callable[[DictConfig, steps.StepSetup], dict]] = {
    "moco": lambda cfg, setup: steps.moco_peers(setup, cfg.rounds, cfg.warmup),
    "simclr": lambda cfg, setup: steps.simclr_peers(setup, cfg.rounds, cfg.warmup),
    "loop": loop_figures,
    "methods": lambda cfg, setup: steps.method_table(
        setup, tuple(cfg.methods) if cfg.methods else steps.TABLE_METHODS, cfg.method_rounds
    ),
    "data": data_figures,
    "eval": eval_figures,
    "scale": scale_figures,
}


def measure(cfg: DictConfig, setup: steps.StepSetup) -> dict:
    """The raw figures of every section asked for (in `SECTIONS` order), with each one's seconds."""
    unknown = set(cfg.sections) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown sections {sorted(unknown)}: choose among {', '.join(SECTIONS)}")
    if setup.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    figures: dict = {"section_seconds": {}}
    for name, section in SECTIONS.items():
        if name in cfg.sections:
            start = time.perf_counter()
            figures[name] = section(cfg, setup)
            figures["section_seconds"][name] = time.perf_counter() - start
            print(f"rsssl-bench: {name} measured in {figures['section_seconds'][name]:.0f} s", flush=True)
    return figures


@hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    torch.set_float32_matmul_precision("high")  # what rsssl-pretrain runs with, for every contender
    try:
        setup = step_setup(cfg)
        figures = measure(cfg, setup)
    except ConfigError as error:
        print(f"rsssl-bench: error: {error}", file=sys.stderr)
        sys.exit(2)
    figures.update(
        machine=machine(),
        setup=setup.as_dict() | {"lr": setup.lr},
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=time.perf_counter() - start,
    )
    path = write_report(figures, Path(cfg.out))
    print(f"rsssl-bench: {path} written in {figures['seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
