"""Multi-stage pretraining: a learning path (TOV: general pictures first, then remote sensing).

A config with `stages:` (a list of `{name, overrides}`) runs its stages one after the other in one
job. Stage k is the run's config with stage k's overrides applied last (so a stage may switch
`data=`, `method=`, `sampling.*`, `trainer.max_epochs`...), written to `<run>/stage<k>-<name>/`,
exported and evaluated like any run, and it starts from stage k−1:

- the same method and backbone: the whole model (encoder, heads, momentum targets, queues; the
  online probe is left fresh, its classes may differ) and the optimiser's per-parameter state
  (momenta, Adam moments) continue; the learning-rate schedule is the stage's own;
- another method: the encoder's weights alone.

What a stage pretrains is the path so far: its config records the stage and the config hashes of
the stages before it (`stage.after`), so the seeds of one path share a hash per stage, and another
path gives other rows. Every stage is evaluated on the last stage's evaluation sets (the path's
target domain), so the leaderboard shows, row by row, what each stage added.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from safetensors.torch import load_file

from rsssl.methods.base import SSLMethod
from rsssl.models.backbones import ConfigError
from rsssl.models.export import WEIGHTS_NAME, read_encoder_meta


@dataclass(frozen=True)
class StageOutcome:
    """What the next stage starts from."""

    name: str
    run_dir: Path
    method: str
    backbone: str
    config_hash: str


def shared_overrides(task_overrides: list[str]) -> list[str]:
    """The command line's overrides every stage gets: all but those of `stages` itself."""
    return [o for o in task_overrides if o.lstrip("+~").split("=")[0].split(".")[0] != "stages"]


def stage_configs(cfg: DictConfig, task_overrides: list[str]) -> list[DictConfig]:
    """One composed config per stage (the stage's overrides last), each naming its place in the path."""
    stages = list(cfg.stages)
    names = [str(s.get("name") or f"stage{k}") for k, s in enumerate(stages, 1)]
    if len(set(names)) != len(names):
        raise ConfigError(f"stages: names {names} repeat; give every stage its own name")
    shared = shared_overrides(task_overrides)
    configs = []
    for index, (name, stage) in enumerate(zip(names, stages, strict=True), 1):
        try:
            own = [str(o) for o in stage.get("overrides") or []]
        except OmegaConfBaseException as error:  # e.g. an unset `photos: ???` its overrides name
            raise ConfigError(f"stage {name!r}: its overrides cannot be read: {error}") from error
        if any(o.lstrip("+~").startswith("stages") for o in own):
            raise ConfigError(f"stage {name!r}: a stage cannot set stages itself")
        try:
            stage_cfg = compose(config_name="pretrain", overrides=[*shared, *own])
        except (HydraException, OmegaConfBaseException) as error:
            raise ConfigError(f"stage {name!r}: its overrides {own} do not compose: {error}") from error
        with open_dict(stage_cfg):
            stage_cfg.stages = []
            stage_cfg.stage = {"path": ">".join(names), "index": index, "name": name, "after": []}
        configs.append(stage_cfg)
    target = configs[-1].data.get("eval_sets")
    if target:  # every stage is judged on the last stage's sets, resolved in that stage's data config
        resolved = OmegaConf.to_container(target, resolve=True)
        for stage_cfg in configs[:-1]:
            with open_dict(stage_cfg):
                stage_cfg.data.eval_sets = resolved
    return configs


def continues(previous: StageOutcome | None, cfg: DictConfig) -> bool:
    """Whether a stage continues the previous stage's whole model (same method and backbone)."""
    if previous is None:
        return False
    return (previous.method, previous.backbone) == (cfg.method.name, cfg.backbone.name)


def start_from(method: SSLMethod, previous: StageOutcome, whole: bool) -> None:
    """Load the previous stage into `method`: its whole model but the online probe (`whole`), or
    its exported encoder; a model the previous stage's does not fit is a ConfigError."""
    if whole:
        checkpoint = torch.load(previous.run_dir / "last.ckpt", map_location="cpu", weights_only=True)
        state = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("probe.")}
        missing, unexpected = method.load_state_dict(state, strict=False)
        problems = [k for k in missing if not k.startswith("probe.")] + list(unexpected)
        if problems:
            raise ConfigError(f"stage {previous.name!r} does not fit the next stage's model: {problems[:6]}")
        return
    meta = read_encoder_meta(previous.run_dir / WEIGHTS_NAME)
    theirs, ours = int(meta["in_chans"]), int(method.hparams.in_chans)
    if theirs != ours:
        raise ConfigError(
            f"stage {previous.name!r} pretrained an encoder on {theirs} bands, the next stage's data has "
            f"{ours}: select the same bands in every stage (data.bands=[...])"
        )
    method.backbone.load_state_dict(load_file(str(previous.run_dir / WEIGHTS_NAME)), strict=True)


def carried_state(saved: dict, current: dict) -> dict | None:
    """`saved`'s per-parameter state re-indexed for the optimiser whose `state_dict()` is `current`,
    the online probe's group left out (its classes may differ); None when the other groups'
    parameters do not line up (count, or the shape of any state tensor)."""
    state: dict = {}
    mine = [g["params"] for g in current["param_groups"] if not g.get("probe")]
    theirs = [g["params"] for g in saved["param_groups"] if not g.get("probe")]
    if [len(g) for g in mine] != [len(g) for g in theirs]:
        return None
    shapes = current.get("shapes", {})
    for ours_group, their_group in zip(mine, theirs, strict=True):
        for ours, their in zip(ours_group, their_group, strict=True):
            if their not in saved["state"]:
                continue
            entry = saved["state"][their]
            if any(
                torch.is_tensor(v) and v.dim() and tuple(v.shape) != shapes.get(ours) for v in entry.values()
            ):
                return None
            state[ours] = entry
    return state


class OptimizerStateCarry(Callback):
    """Puts the previous stage's per-parameter optimiser state (momenta, moments) into this stage's
    optimiser when its parameters line up (`carried_state`); the stage's own learning rates and
    schedule stay."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    def on_train_start(self, trainer, pl_module) -> None:
        saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)["optimizer_states"][0]
        optimizer = trainer.optimizers[0]
        current = optimizer.state_dict()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        state = carried_state(saved, {**current, "shapes": {i: tuple(p.shape) for i, p in enumerate(params)}})
        if state is None:
            rank_zero_info(
                "stages: the optimiser starts afresh (its parameters differ from the last stage's)"
            )
            return
        optimizer.load_state_dict({**current, "state": state})
        rank_zero_info(f"stages: optimiser state of {len(state)} parameters carried over")


def run_stages(cfg: DictConfig, run) -> list[dict]:
    """Run every stage of `cfg.stages` in order, each with `run(stage_cfg, run_dir=..., previous=...,
    whole=..., callbacks=...)` (`rsssl.cli.pretrain.run`)."""
    from rsssl.cli.pretrain import config_hash

    if cfg.get("resume") not in (False, None):
        raise ConfigError(
            "resume= does not apply to a learning path (stages:): a path runs all its stages in one job; "
            "run it again without resume, or resume one stage's run on its own with resume=/path/to/last.ckpt"
        )
    base_dir = Path(HydraConfig.get().runtime.output_dir)
    configs = stage_configs(cfg, list(HydraConfig.get().overrides.task))
    previous: StageOutcome | None = None
    after: list[str] = []
    summaries = []
    for stage_cfg in configs:
        with open_dict(stage_cfg):
            stage_cfg.stage.after = list(after)
        name = stage_cfg.stage.name
        rank_zero_info(f"stage {stage_cfg.stage.index}/{len(configs)}: {name}")
        whole = continues(previous, stage_cfg)
        carry = [OptimizerStateCarry(previous.run_dir / "last.ckpt")] if whole else []
        run_dir = base_dir / f"stage{stage_cfg.stage.index}-{name}"
        summary = run(stage_cfg, run_dir=run_dir, previous=previous, whole=whole, callbacks=carry)
        summaries.append(summary)
        after.append(config_hash(stage_cfg))
        previous = StageOutcome(name, run_dir, stage_cfg.method.name, stage_cfg.backbone.name, after[-1])
    folders = [f"stage{c.stage.index}-{c.stage.name}" for c in configs]
    record = {"path": configs[0].stage.path, "stages": folders, "config_hashes": after}
    OmegaConf.save(OmegaConf.create(record), base_dir / "stages.yaml")
    return summaries
