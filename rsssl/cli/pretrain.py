"""`rsssl-pretrain`: pretrain one method on one data source, export its encoder.

    rsssl-pretrain method=moco backbone=resnet18 data=synthetic trainer.max_epochs=5
    rsssl-pretrain -m method=moco,simclr data=synthetic

Each run folder holds the composed config, `last.ckpt` / `best.ckpt`, `metrics.csv`,
`encoder.safetensors` + `encoder.json`, `summary.json` and `pretrain.log` (what the run said).
`resume=true` continues, from its `last.ckpt`, the newest earlier run of the same name with the
same pretraining config and seed (only the training length may differ), writing into a new
folder, so nothing already written is ever overwritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pickle
import shutil
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from rsssl.cli import CONF_DIR
from rsssl.cli.callbacks import SpeedSettings, ThroughputMonitor, ValidateAtMaxSteps, resolve_channels_last
from rsssl.cli.checkpoints import (
    AtomicCheckpointIO,
    CheckpointStamp,
    LastCheckpoint,
    StepSeeds,
    check_checkpoint_format,
    this_rsssl,
    written_by,
)
from rsssl.cli.checks import check_config, refuse_bad_command_line
from rsssl.cli.evaluate import evaluate_encoder
from rsssl.cli.hydra_callbacks import regenerate_leaderboard
from rsssl.cli.logs import harmless_lightning_warnings_silenced, route_lightning_logging
from rsssl.cli.run_names import register_resolvers
from rsssl.cli.stages import StageOutcome, run_stages, start_from
from rsssl.data.balance import PseudoLabelBalancer, SamplingSettings
from rsssl.data.datamodule import RSDataModule, format_data_summary
from rsssl.data.scene import DataError
from rsssl.eval.suite import git_commit
from rsssl.methods.base import SSLMethod, TrainingDiverged
from rsssl.models.backbones import ConfigError
from rsssl.models.export import WEIGHTS_NAME, save_encoder
from rsssl.models.sync_bn import CPUSyncBatchNormPlugin
from rsssl.results.store import ResultRow, ResultsNotWritten, append_rows, record_config, relative_run_id

register_resolvers()  # conf/pretrain.yaml's run_name uses ${data_id:${data}}
log = logging.getLogger(__name__)

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
    "stages": None,  # a learning path's list; each stage's own `stage` record says where it stands
    "resume": None,
    "checkpoint_every_n_steps": None,
    "runs_dir": None,
    "run_name": None,
    "results": None,
    "leaderboard_dir": None,
    "device": None,
    "speed": None,  # memory layout and compilation: how the steps run, not what they compute
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


# Settings added after results were published, at the value that does what the code did before
# they existed: a config holding one at that value hashes as a config without it, so earlier runs
# and today's of one configuration stay one leaderboard row. Dotted paths into the config.
NEUTRAL_SETTINGS: dict[str, object] = {
    "method.transfer.relaxation": 1.0,  # STICL's Sinkhorn, not over-relaxed
    "data.unreadable": "fail",  # a folder with no unreadable file trains on every scene either way
    "data.source.unreadable": "fail",
}


# The sampling settings each strategy reads; the others do nothing under it. Random sampling reads
# none, and was the only kind before `sampling:` existed: its runs hash as configs without the key.
SAMPLING_KEYS = {"random": (), "geographic": ("cell_size",), "balanced": ("clusters", "refresh_epochs")}


def effective_sampling(sampling: dict | None) -> dict | None:
    """The sampling settings that change what is pretrained: the strategy and the keys it reads;
    None for random sampling."""
    strategy = (sampling or {}).get("strategy", "random")
    if strategy == "random":
        return None
    kept = SAMPLING_KEYS.get(strategy, ())
    return {"strategy": strategy, **{k: sampling[k] for k in kept if k in sampling}}


def pretraining_config(cfg: DictConfig) -> dict:
    """The resolved config that defines what is pretrained (``NOT_IN_CONFIG_HASH`` removed, the
    sampling settings the chosen strategy does not read, `effective_sampling`, and the
    ``NEUTRAL_SETTINGS`` at their neutral value).

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
    sampling = effective_sampling(content.pop("sampling", None))
    if sampling is not None:
        content["sampling"] = sampling
    for path, neutral in NEUTRAL_SETTINGS.items():
        *sections, name = path.split(".")
        section = content
        for key in sections:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and name in section and section[name] == neutral:
            del section[name]
    return json.loads(json.dumps(content, sort_keys=True, default=str))


def config_hash(cfg: DictConfig) -> str:
    """Short hash of the pretraining configuration without its seed (`pretraining_config`)."""
    return hashlib.sha256(json.dumps(pretraining_config(cfg), sort_keys=True).encode()).hexdigest()[:12]


def sampling_settings(cfg: DictConfig) -> SamplingSettings:
    """The run's `sampling:` settings (which tiles an epoch draws, `rsssl.data.balance`)."""
    return SamplingSettings(**OmegaConf.to_container(cfg.get("sampling") or {}, resolve=True))


def build_datamodule(
    data_cfg: DictConfig, sampling: SamplingSettings | None = None, seed: int | None = None
) -> RSDataModule:
    """The datamodule from a `conf/data/*.yaml`: its source plus the shared tiling settings;
    `seed` orders the training epochs."""
    source = instantiate(data_cfg.source)
    settings = {k: data_cfg[k] for k in DATAMODULE_KEYS if k in data_cfg}
    if settings.get("bands") is not None:
        settings["bands"] = list(settings["bands"])
    return RSDataModule(source=source, sampling=sampling, seed=seed, **settings)


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


# The training length: resume=true may continue a finished run for longer.
NOT_IN_RESUME_MATCH = ("max_epochs", "max_steps")


def resume_match(cfg: DictConfig) -> dict:
    """What an earlier run must share with this one for `resume=true` to continue it: the
    pretraining config (`pretraining_config`, so where runs go and how they are logged do not
    count) but for the training length, plus the seed (each seed is its own run)."""
    config = pretraining_config(cfg)
    for key in NOT_IN_RESUME_MATCH:
        config.get("trainer", {}).pop(key, None)
    return {**config, "seed": cfg.get("seed")}


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys: {"method": {"lr": 1}} -> {"method.lr": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(theirs: dict, ours: dict, shown: int = 4) -> str:
    """`key theirs (here ours)` for the first `shown` settings that differ, in key order."""
    a, b = flatten(theirs), flatten(ours)
    unset = object()
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k, unset) != b.get(k, unset))

    def show(flat: dict, key: str) -> str:
        return json.dumps(flat[key]) if key in flat else "unset"

    parts = [f"{k} {show(a, k)} (here {show(b, k)})" for k in keys[:shown]]
    return ", ".join(parts + ([f"{len(keys) - shown} more"] if len(keys) > shown else []))


def _skip_reason(run_folder: Path, ours: dict) -> str | None:
    """Why the run in `run_folder` cannot be continued by this config; None when it can."""
    config_file = run_folder / "config.yaml"
    if not config_file.is_file():
        return "no config.yaml"
    theirs = resume_match(OmegaConf.load(config_file))
    return None if theirs == ours else config_differences(theirs, ours)


def same_run(run_folder: Path, cfg: DictConfig) -> bool:
    """Whether the run in `run_folder` is this config's run: same pretraining config (training
    length included) and seed."""
    config_file = run_folder / "config.yaml"
    if not config_file.is_file():
        return False
    theirs = OmegaConf.load(config_file)
    return config_hash(theirs) == config_hash(cfg) and theirs.get("seed") == cfg.get("seed")


def earlier_run(cfg: DictConfig, run_dir: Path) -> tuple[str, Path] | None:
    """`resume=auto`: ("finished", folder) for the newest earlier run of this config and seed that
    exported its encoder, else ("stopped", its last.ckpt) for the newest one that has a checkpoint
    (killed or failed part-way), else None (train from the start)."""
    folders = sorted(
        (p for p in run_dir.parent.iterdir() if p.is_dir() and p != run_dir and same_run(p, cfg)),
        key=lambda p: p.name,
        reverse=True,
    )
    for folder in folders:
        if all((folder / name).is_file() for name in ("summary.json", "encoder.json", WEIGHTS_NAME)):
            return "finished", folder
    for folder in folders:
        if (folder / "last.ckpt").is_file():
            return "stopped", folder / "last.ckpt"
    return None


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """`resume=true`: the newest earlier `last.ckpt` of this run name whose run has this
    `resume_match` (the others are listed in the error when none has); `resume=<path>`: that file;
    `resume=auto`: a stopped earlier run's (`earlier_run`)."""
    if cfg.resume in (False, None):
        return None
    if cfg.resume == "auto":
        found = earlier_run(cfg, run_dir)
        return found[1] if found is not None and found[0] == "stopped" else None
    if cfg.resume is not True:
        path = Path(str(cfg.resume)).expanduser()
        if not path.is_file():
            raise ConfigError(f"resume={path}: no such checkpoint file")
        return path
    candidates = sorted(
        (p for p in run_dir.parent.glob("*/last.ckpt") if p.parent != run_dir),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not candidates:
        raise ConfigError(
            f"resume=true but no earlier run of {cfg.run_name!r} has a last.ckpt under {run_dir.parent}: "
            "run once without resume, or give the file with resume=/path/to/last.ckpt"
        )
    ours, skipped = resume_match(cfg), []
    for checkpoint in candidates:
        reason = _skip_reason(checkpoint.parent, ours)
        if reason is None:
            return checkpoint
        skipped.append(f"  {checkpoint.parent.name}: {reason}")
    raise ConfigError(
        f"resume=true but no earlier run of {cfg.run_name!r} with this config and seed has a last.ckpt "
        f"under {run_dir.parent}; skipped:\n" + "\n".join(skipped) + "\n"
        "run without resume to start fresh, change the settings back, or give a checkpoint "
        "explicitly with resume=/path/to/last.ckpt"
    )


def shape_mismatches(expected: dict[str, tuple], found: dict[str, tuple]) -> list[str]:
    """Where a checkpoint's state (`found` shapes) does not fit a model's (`expected`)."""
    differ = [
        f"{k} {list(found[k])} in the checkpoint, {list(expected[k])} here"
        for k in sorted(expected.keys() & found.keys())
        if found[k] != expected[k]
    ]
    missing = [f"{k} missing from the checkpoint" for k in sorted(expected.keys() - found.keys())]
    return differ + missing + [f"{k} only in the checkpoint" for k in sorted(found.keys() - expected.keys())]


def _shapes(state: dict) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def check_checkpoint_fits(method: SSLMethod, path: Path, shown: int = 6) -> None:
    """ConfigError naming the entries of `path`'s state that do not fit `method`, before Lightning
    would fail on them with a traceback (a run of another config: bands, queue size, classes)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:  # weights_only met something else than tensors and plain values
        raise ConfigError(
            f"resume={path}: not a plain checkpoint: it holds Python objects, and only tensors and plain "
            f"values load (weights_only; nothing in it was run): give a run's last.ckpt ({error})"
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise ConfigError(
            f"resume={path}: not a readable Lightning checkpoint ({error}): give a run's last.ckpt"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ConfigError(
            f"resume={path}: not a Lightning checkpoint (no state_dict): give a run's last.ckpt"
        )
    check_checkpoint_format(checkpoint, path)
    mismatches = shape_mismatches(_shapes(method.state_dict()), _shapes(checkpoint["state_dict"]))
    if mismatches:
        more = [f"{len(mismatches) - shown} more"] if len(mismatches) > shown else []
        found = "; ".join(mismatches[:shown] + more)
        if written_by(checkpoint) != written_by({"rsssl": CheckpointStamp.stamp()}):
            raise ConfigError(
                f"resume={path}: the checkpoint does not fit the model of this config ({found}); it was "
                f"written by {written_by(checkpoint)} and this is {this_rsssl()}, whose model may differ: "
                "resume it with the rsssl that wrote it (its commit: git checkout <commit>), or start "
                "fresh with resume=false"
            )
        raise ConfigError(
            f"resume={path}: the checkpoint does not fit the model of this config ({found}); it is from a "
            "run of other settings (data bands, method, backbone): resume a run of this config with "
            "resume=/path/to/last.ckpt, or start fresh with resume=false"
        )


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


def validates(cfg: DictConfig, datamodule: RSDataModule) -> bool:
    """Whether the online probe is validated: labelled validation tiles, and validation not off."""
    return datamodule.has_labelled_validation and cfg.trainer.get("limit_val_batches", 1.0) != 0


def best_checkpoint_rule(validated: bool) -> tuple[str, str, str]:
    """(monitor, mode, why) of `best.ckpt`: the online probe's validation accuracy where it is
    validated, else the epoch-mean training loss (val/probe_acc never exists there)."""
    if validated:
        return "val/probe_acc", "max", "online-probe accuracy on the labelled validation set"
    why = "the epoch-mean training loss: no labelled validation set to validate the online probe on"
    return "train/loss_epoch", "min", why


def build_trainer(cfg: DictConfig, run_dir: Path, validated: bool, extra: list | None = None) -> L.Trainer:
    """The Trainer of a run: `best.ckpt` by `best_checkpoint_rule`, `last.ckpt`, step seeds,
    throughput, checkpoints written atomically (`rsssl.cli.checkpoints`).

    `last.ckpt` has its own callback (no monitor: the newest state every `checkpoint_every_n_steps`
    steps, at every epoch end and at the end, the one file overwritten): Lightning 2.6's
    `save_last` writes only beside a new best checkpoint, so a run whose probe stopped improving
    would resume from its best epoch instead of its last. `best` comes first: it is
    `trainer.checkpoint_callback`."""
    monitor, mode, _ = best_checkpoint_rule(validated)
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=str(run_dir), filename="best", monitor=monitor, mode=mode, save_top_k=1
    )
    last = LastCheckpoint(run_dir, cfg.get("checkpoint_every_n_steps"))
    callbacks = [best, last, CheckpointStamp(), StepSeeds(int(cfg.seed)), ThroughputMonitor()]
    speed = cfg.get("speed") or {}
    channels_last = resolve_channels_last(speed.get("channels_last", False), cfg.trainer.get("accelerator"))
    if channels_last or speed.get("compile", False):
        callbacks.append(SpeedSettings(channels_last, bool(speed.get("compile", False))))
    callbacks += [ValidateAtMaxSteps()] if validated else []
    sampling = sampling_settings(cfg)
    if sampling.strategy == "balanced":
        callbacks.append(PseudoLabelBalancer(sampling, seed=int(cfg.seed)))
    callbacks += [instantiate(c) for c in cfg.get("callbacks") or []] + list(extra or [])
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if not validated:  # no validation loop at all, rather than one over an empty loader
        trainer_cfg["limit_val_batches"] = 0
    plugins = [AtomicCheckpointIO()]
    if trainer_cfg.get("sync_batchnorm") and trainer_cfg.get("accelerator") == "cpu":
        trainer_cfg["sync_batchnorm"] = False  # torch's SyncBatchNorm refuses CPU tensors
        plugins.append(CPUSyncBatchNormPlugin())
    return L.Trainer(
        default_root_dir=str(run_dir),
        logger=build_loggers(cfg, run_dir),
        callbacks=callbacks,
        plugins=plugins,
        use_distributed_sampler=False,  # the training sampler splits the epoch itself (EpochSampler)
        **trainer_cfg,
    )


def write_summary(run_dir: Path, trainer: L.Trainer, cfg: DictConfig, resumed_from: Path | None) -> dict:
    """`summary.json`: what ran, how fast (one figure, `ThroughputMonitor`), on how many CPU
    threads, what best.ckpt holds, and the final metrics (the per-step `train/images_per_second`
    curve stays in metrics.csv)."""
    metrics = {
        k: float(v)
        for k, v in trainer.callback_metrics.items()
        if v.numel() == 1 and k != "train/images_per_second"
    }
    throughput = next(c for c in trainer.callbacks if isinstance(c, ThroughputMonitor))
    best = trainer.checkpoint_callback
    summary = {
        "run_name": cfg.run_name,
        "method": cfg.method.name,
        "backbone": cfg.backbone.name,
        "data": cfg.data.name,
        "config_hash": config_hash(cfg),
        "steps": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_images_per_second_after_warmup": throughput.images_per_second,
        "train_loader_wait_fraction": throughput.loader_wait_fraction,
        "torch_threads": torch.get_num_threads(),  # the CPU rounds its reductions per thread count
        "best_checkpoint": {
            "file": Path(best.best_model_path).name if best.best_model_path else None,
            "monitor": best.monitor,
            "mode": best.mode,
            "value": float(best.best_model_score) if best.best_model_score is not None else None,
        },
        "resumed_from": str(resumed_from) if resumed_from else None,
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


def reuse_finished_run(cfg: DictConfig, folder: Path) -> dict:
    """`resume=auto` with this config and seed already trained: no training; its encoder is
    evaluated (the results store skips what it already holds); returns its summary."""
    log.info(f"resume=auto: {folder} already trained this config and seed; evaluating its encoder")
    summary = json.loads((folder / "summary.json").read_text())
    if cfg.get("eval") is not None:
        meta = json.loads((folder / "encoder.json").read_text())
        record_online_probe(cfg, summary, meta)
        trains_backbone = get_class(cfg.method._target_).trains_backbone
        evaluate_encoder(cfg, str(folder / WEIGHTS_NAME), include_encoder=trains_backbone)
    return summary


def fold_into_rank_zero_folder(trainer: L.Trainer, run_dir: Path) -> None:
    """Under torchrun or SLURM each process composes its own Hydra run folder (its own timestamp);
    rank 0's is the run's. Another process's log moves into it as `pretrain.rank<k>.log` and the
    rest of its folder (Hydra's copy of the config, `config.yaml`) goes, so a run is one folder."""
    main_dir = Path(trainer.strategy.broadcast(str(run_dir)))
    if trainer.is_global_zero or main_dir.resolve() == run_dir.resolve():
        return
    log = run_dir / "pretrain.log"
    if log.exists():
        log.replace(main_dir / f"pretrain.rank{trainer.global_rank}.log")
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    (run_dir / "config.yaml").unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # anything else in it stays
        run_dir.rmdir()


def run(
    cfg: DictConfig,
    run_dir: Path | None = None,
    previous: StageOutcome | None = None,
    whole: bool = False,
    callbacks: list | None = None,
) -> dict:
    """Pretrain as configured; returns the run summary. A stage of a learning path (`rsssl.cli.stages`)
    runs in its own `run_dir`, starting from the `previous` stage (its `whole` model, or its encoder)."""
    run_dir = run_dir or Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:  # before training: a run folder outside runs_dir fails fast
        run_id = relative_run_id(run_dir, cfg.runs_dir)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    route_lightning_logging()
    if cfg.resume == "auto" and (found := earlier_run(cfg, run_dir)) is not None and found[0] == "finished":
        return reuse_finished_run(cfg, found[1])
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    resume_from = find_resume_checkpoint(cfg, run_dir)
    datamodule = build_datamodule(cfg.data, sampling_settings(cfg), seed=int(cfg.seed))
    datamodule.prepare()
    for line in format_data_summary(datamodule.summary()):
        log.info(line)
    method = build_method(cfg, datamodule)
    if previous is not None:
        start_from(method, previous, whole)
        log.info(f"starting from stage {previous.name!r} ({'the whole model' if whole else 'its encoder'})")
    if resume_from:
        check_checkpoint_fits(method, resume_from)
        log.info(f"resuming from {resume_from}")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    validated = validates(cfg, datamodule)
    monitor, mode, why = best_checkpoint_rule(validated)
    log.info(f"best.ckpt: by the {'highest' if mode == 'max' else 'lowest'} {monitor} ({why})")
    trainer = build_trainer(cfg, run_dir, validated, callbacks or [])
    with harmless_lightning_warnings_silenced(run_dir):
        trainer.fit(
            method,
            datamodule=datamodule,
            ckpt_path=str(resume_from) if resume_from else None,
            weights_only=True,
        )
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
    if trainer.world_size > 1:
        fold_into_rank_zero_folder(trainer, run_dir)
    if not trainer.is_global_zero:
        return {}
    weights = save_encoder(method.backbone, run_dir, meta, decoder=method.exported_decoder())
    summary = write_summary(run_dir, trainer, cfg, resume_from)
    log.info(f"run folder: {run_dir}")
    if cfg.get("eval") is not None:
        record_online_probe(cfg, summary, meta)
        evaluate_encoder(cfg, str(weights), include_encoder=method.trains_backbone)
        if HydraConfig.get().mode.name != "MULTIRUN" and cfg.get("stage") is None:  # a sweep or a
            regenerate_leaderboard(
                cfg.results, cfg.leaderboard_dir, "rsssl-pretrain ... +eval=..."
            )  # path: at its end
    return summary


@refuse_bad_command_line("rsssl-pretrain", "pretrain")
@hydra.main(config_path=CONF_DIR, config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        check_config(cfg)
        if cfg.get("stages"):
            run_stages(cfg, run)
            if cfg.get("eval") is not None and HydraConfig.get().mode.name != "MULTIRUN":
                regenerate_leaderboard(cfg.results, cfg.leaderboard_dir, "rsssl-pretrain ... stages")
        else:
            run(cfg)
    except (DataError, ConfigError, TrainingDiverged, ResultsNotWritten) as error:
        print(f"rsssl-pretrain: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
