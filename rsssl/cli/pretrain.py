"""`rsssl-pretrain`: pretrain one method on one data source, export its encoder.

    rsssl-pretrain method=moco backbone=resnet18 data=synthetic trainer.max_epochs=5
    rsssl-pretrain -m method=moco,simclr data=synthetic

Each run folder holds the composed config, `last.ckpt` / `best.ckpt`, `metrics.csv`,
`encoder.safetensors` + `encoder.json` and `summary.json`. `resume=true` continues the newest
earlier run of the same name from its `last.ckpt`, writing into a new folder, so nothing
already written is ever overwritten.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rsssl.cli import CONF_DIR
from rsssl.cli.callbacks import ThroughputMonitor
from rsssl.cli.evaluate import evaluate_encoder
from rsssl.cli.hydra_callbacks import regenerate_leaderboard
from rsssl.data.datamodule import RSDataModule
from rsssl.data.scene import DataError
from rsssl.eval.suite import git_commit
from rsssl.methods.base import SSLMethod
from rsssl.models.backbones import ConfigError
from rsssl.models.export import save_encoder
from rsssl.results.store import ResultRow, append_rows, record_config, relative_run_id

DATAMODULE_KEYS = (
    "name",
    "tile_size",
    "stride",
    "min_valid",
    "bands",
    "batch_size",
    "num_workers",
    "stats_tiles",
    "stats_cache_dir",
    "tile_units",
    "neighbor_radius",
    "neighbor_units",
)


# What does not change what is pretrained: the seed (pretraining seeds of one configuration share a
# hash), where the run is written, how it is logged, how it is evaluated afterwards, and how the
# hardware runs it. A key listed under a section is dropped from that section only.
NOT_IN_CONFIG_HASH: dict[str, tuple[str, ...] | None] = {
    "seed": None,
    "resume": None,
    "runs_dir": None,
    "run_name": None,
    "results": None,
    "leaderboard_dir": None,
    "device": None,
    "features_cache_dir": None,
    "logger": None,
    "eval": None,
    "data": ("num_workers", "stats_cache_dir", "eval_sets"),
    "trainer": (
        "accelerator",
        "enable_progress_bar",
        "enable_model_summary",
        "log_every_n_steps",
        "benchmark",
        "num_sanity_val_steps",
        "default_root_dir",
    ),
}


def pretraining_config(cfg: DictConfig) -> dict:
    """The resolved config that defines what is pretrained (``NOT_IN_CONFIG_HASH`` removed).

    `config_hash` hashes it and `encoder.json` and the results' configs sidecar record it, so
    the leaderboard can show which keys differ between configurations of one method.
    """
    content = OmegaConf.to_container(cfg, resolve=True)
    for key, inner in NOT_IN_CONFIG_HASH.items():
        if inner is None:
            content.pop(key, None)
        elif isinstance(content.get(key), dict):
            for name in inner:
                content[key].pop(name, None)
    return json.loads(json.dumps(content, sort_keys=True, default=str))


def config_hash(cfg: DictConfig) -> str:
    """Short hash of the pretraining configuration without its seed (`pretraining_config`)."""
    return hashlib.sha256(json.dumps(pretraining_config(cfg), sort_keys=True).encode()).hexdigest()[:12]


def build_datamodule(data_cfg: DictConfig) -> RSDataModule:
    """The datamodule from a `conf/data/*.yaml`: its source plus the shared tiling settings."""
    source = instantiate(data_cfg.source)
    settings = {k: data_cfg[k] for k in DATAMODULE_KEYS if k in data_cfg}
    if settings.get("bands") is not None:
        settings["bands"] = list(settings["bands"])
    return RSDataModule(source=source, **settings)


def backbone_kwargs(backbone_cfg: DictConfig) -> dict:
    """Extra timm keyword arguments of the backbone preset (e.g. a ViT's img_size)."""
    kwargs = backbone_cfg.get("kwargs")
    return OmegaConf.to_container(kwargs, resolve=True) if kwargs else {}


def check_in_chans(backbone_cfg: DictConfig, datamodule: RSDataModule) -> int:
    """The backbone takes the data's band count; a different explicit value is an error."""
    wanted = backbone_cfg.get("in_chans")
    bands = datamodule.num_bands
    if wanted is not None and int(wanted) != bands:
        raise ConfigError(
            f"backbone.in_chans={wanted} but the data has {bands} bands ({', '.join(datamodule.bands)}): "
            f"leave backbone.in_chans unset (null) to follow the data, or select {wanted} bands by name "
            "with data.bands=[...]"
        )
    return bands


def build_method(cfg: DictConfig, datamodule: RSDataModule) -> SSLMethod:
    """Instantiate `cfg.method._target_` with the backbone and what the data tells."""
    in_chans = check_in_chans(cfg.backbone, datamodule)
    backbone = {"name": cfg.backbone.name, "weights": cfg.backbone.get("weights")}
    backbone.update(backbone_kwargs(cfg.backbone))
    method_cfg = OmegaConf.to_container(cfg.method, resolve=True)
    method_cfg.pop("name")
    method = instantiate(
        method_cfg,
        backbone=backbone,
        in_chans=in_chans,
        bands=list(datamodule.bands),
        rgb_bands=list(cfg.data.rgb_bands) if cfg.data.get("rgb_bands") else None,
        num_classes=datamodule.num_classes,
        batch_size=datamodule.batch_size,
        _convert_="all",
    )
    datamodule.require(method.required_keys)
    return method


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """`resume=true`: newest earlier `last.ckpt` of this run name; `resume=<path>`: that file."""
    if cfg.resume in (False, None):
        return None
    if cfg.resume is not True:
        path = Path(str(cfg.resume)).expanduser()
        if not path.is_file():
            raise ConfigError(f"resume={path}: no such checkpoint file")
        return path
    candidates = sorted(
        (p for p in run_dir.parent.glob("*/last.ckpt") if p.parent != run_dir),
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise ConfigError(
            f"resume=true but no earlier run of {cfg.run_name!r} has a last.ckpt under {run_dir.parent}: "
            "run once without resume, or give the file with resume=/path/to/last.ckpt"
        )
    return candidates[-1]


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    """CSV always (the source of truth); wandb (offline by default) or TensorBoard on request."""
    loggers = [L.pytorch.loggers.CSVLogger(save_dir=str(run_dir), name="", version="")]
    kind = cfg.logger.kind
    if kind == "wandb":
        loggers.append(
            L.pytorch.loggers.WandbLogger(
                save_dir=str(run_dir), project=cfg.logger.project, mode=cfg.logger.mode, name=cfg.run_name
            )
        )
    elif kind == "tensorboard":
        loggers.append(
            L.pytorch.loggers.TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="")
        )
    elif kind != "csv":
        raise ConfigError(f"unknown logger {kind!r}: choose csv, wandb or tensorboard")
    return loggers


def build_trainer(cfg: DictConfig, run_dir: Path, has_validation: bool) -> L.Trainer:
    monitor, mode = ("val/probe_acc", "max") if has_validation else ("train/loss_epoch", "min")
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(run_dir), filename="best", monitor=monitor, mode=mode, save_last=True, save_top_k=1
    )
    callbacks = [checkpoints, ThroughputMonitor()]
    callbacks += [instantiate(c) for c in cfg.get("callbacks") or []]
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    return L.Trainer(
        default_root_dir=str(run_dir), logger=build_loggers(cfg, run_dir), callbacks=callbacks, **trainer_cfg
    )


def write_summary(run_dir: Path, trainer: L.Trainer, method: SSLMethod, cfg: DictConfig) -> dict:
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    monitor = next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))
    summary = {
        "run_name": cfg.run_name,
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "data": cfg.data.name,
        "config_hash": config_hash(cfg),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "images_per_second": monitor.images_per_second,
        "metrics": metrics,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def record_online_probe(cfg: DictConfig, summary: dict, meta: dict) -> None:
    """The online probe's validation accuracy, as its own protocol (never mixed with offline ones)."""
    accuracy = summary["metrics"].get("val/probe_acc")
    if accuracy is None:
        return
    row = ResultRow(
        run_id=meta["run_id"],
        method=cfg.method.name,
        backbone=cfg.backbone.name,
        pretrain_data=cfg.data.name,
        eval_data=cfg.data.name,
        protocol="online_linear",
        budget="100%",
        seed=int(cfg.seed),
        metric="oa",
        value=float(accuracy),
        config_hash=meta["config_hash"],
        git_commit=git_commit(),
        pretrain_seed=int(cfg.seed),
    )
    record_config(cfg.results, meta["config_hash"], meta["config"])
    append_rows(Path(cfg.results), [row], skip_existing=True)


def run(cfg: DictConfig) -> dict:
    """Pretrain as configured; returns the run summary."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:  # before training: a run folder outside runs_dir fails fast
        run_id = relative_run_id(run_dir, cfg.runs_dir)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    resume_from = find_resume_checkpoint(cfg, run_dir)
    datamodule = build_datamodule(cfg.data)
    datamodule.prepare()
    method = build_method(cfg, datamodule)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    trainer = build_trainer(cfg, run_dir, has_validation=datamodule.val_index is not None)
    trainer.fit(method, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    meta = {
        "timm_name": cfg.backbone.name,
        "timm_kwargs": backbone_kwargs(cfg.backbone),
        "in_chans": datamodule.num_bands,
        "method": cfg.method.name,
        "config_hash": config_hash(cfg),
        "config": pretraining_config(cfg),
        "seed": int(cfg.seed),
        "run_dir": str(run_dir),
        "run_id": run_id,
        **datamodule.info(),
    }
    if not trainer.is_global_zero:
        return {}
    weights = save_encoder(method.backbone, run_dir, meta)
    summary = write_summary(run_dir, trainer, method, cfg)
    print(f"run folder: {run_dir}")
    if cfg.get("eval") is not None:
        record_online_probe(cfg, summary, meta)
        evaluate_encoder(cfg, str(weights), include_encoder=method.trains_backbone)
        if HydraConfig.get().mode.name != "MULTIRUN":  # a sweep renders it once, at its end
            regenerate_leaderboard(cfg.results, cfg.leaderboard_dir, "rsssl-pretrain ... +eval=...")
    return summary


@hydra.main(config_path=CONF_DIR, config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (DataError, ConfigError) as error:
        print(f"rsssl-pretrain: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
