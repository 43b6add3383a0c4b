"""Config checks of the CLIs: refuse, before anything runs, what would fail late or do nothing.

- a key under `data`, `method` or `eval` that nothing reads (a typo: Hydra rejects `data.tilesize=64`
  with advice to add it as `+data.tilesize=64`, which then composes and is ignored), named with the
  closest valid keys. Valid: what the group option's own YAML sets, plus what the code reads beyond
  it (a `_target_`'s keyword arguments, `READ_BY_CODE`);
- eval tasks the data config has no labelled set for (which data configs have one is read from
  `conf/data/*.yaml`);
- rsssl-eval without `encoder=`.

`refuse_bad_command_line` wraps a Hydra entry point and checks the command line's composed config
before Hydra runs it, so a refused command writes nothing; `check_config` checks a job's config (the
jobs of a sweep differ from its primary config).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException, HydraException
from hydra.types import RunMode
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rsssl.cli import CONF_DIR
from rsssl.data.views import ViewRecipe
from rsssl.eval.finetune import run_finetune
from rsssl.eval.pixel import run_pixel
from rsssl.eval.segmentation import run_segmentation
from rsssl.models.backbones import ConfigError
from rsssl.models.export import WEIGHTS_NAME

CHECKED_GROUPS = ("data", "method", "eval")
TASKS = ("classification", "segmentation")
INSTANTIATE_KEYS = frozenset({"_target_", "_recursive_", "_convert_", "_partial_", "_args_"})
#: what `build_method` (rsssl/cli/pretrain.py) passes a method itself, from the backbone and data
SET_BY_PRETRAIN = frozenset({"backbone", "in_chans", "bands", "rgb_bands", "num_classes", "batch_size"})


def _keywords_with_defaults(function: Callable) -> frozenset[str]:
    return frozenset(
        p.name for p in inspect.signature(function).parameters.values() if p.default is not p.empty
    )


#: keys the code reads beyond what any YAML sets, by config path
READ_BY_CODE: dict[str, frozenset[str]] = {
    "method.views": frozenset({"preset", *(f.name for f in fields(ViewRecipe))}),  # views.preset()
    # SSLMethod.configure_optimizers and its EMA schedule
    "method.optimizer": frozenset(
        {"name", "lr", "weight_decay", "momentum", "warmup", "nesterov", "betas", "eps"}
        | {"weight_decay_end", "decay_norm_and_bias", "clip_grad"}
    ),
    "method.ema": frozenset({"base", "final"}),
    "data.eval_sets": frozenset(TASKS),
    # Suite passes the device itself; `budgets` and `seeds` are its own options (fine-tune at fewer
    # budgets / label seeds); the encoder's lr factor is the supervised reference's setting (0.1 here)
    "eval.classification.finetune": _keywords_with_defaults(run_finetune) - {"device", "encoder_lr_factor"},
    "eval.classification.supervised": _keywords_with_defaults(run_finetune) - {"device"},
    "eval.segmentation": _keywords_with_defaults(run_segmentation) - {"device", "encoder_lr_factor"},
    "eval.pixel": _keywords_with_defaults(run_pixel) - {"device"},
    "eval.segmentation.supervised": _keywords_with_defaults(run_segmentation)
    - {"device", "modes", "fractions", "seeds", "pretrained_decoder"},
}
#: nodes whose keys are names the user chooses (each extra set is its own `_target_` node)
FREE_FORM = frozenset({"eval.extra_sets"})


# ---- what the YAMLs and the code read ---------------------------------------------------------
@functools.cache
def options(group: str) -> tuple[str, ...]:
    """The options of a config group: the YAML files of `conf/<group>/`."""
    return tuple(sorted(p.stem for p in Path(CONF_DIR, group).glob("*.yaml")))


@functools.cache
def _option_yaml(group: str, option: str) -> dict | None:
    """An option's YAML, interpolations unresolved, over the options of its own group it builds on
    (its defaults list, e.g. false_glcnet on glcnet); None when it is not in `conf/`."""
    path = Path(CONF_DIR, group, f"{option}.yaml")
    if not path.is_file():
        return None
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    for parent in content.pop("defaults", None) or []:
        if isinstance(parent, str) and parent != "_self_" and not parent.startswith("/"):
            content = _union(_option_yaml(group, parent) or {}, content)
    return content


def _union(first: dict, second: dict) -> dict:
    """Both dicts' keys, nested dicts united too."""
    merged = dict(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _union(merged[key], value)
        elif not isinstance(merged.get(key), dict):
            merged[key] = value
    return merged


def own_settings(group: str, option: str) -> dict | None:
    """What the group's YAML sets: the option's own for data and method; for eval, what any eval
    option sets, since one consumer (the suite) reads them all whichever option is chosen. None for
    an option outside `conf/` (nothing to compare with)."""
    if _option_yaml(group, option) is None:
        return None
    if group == "eval":
        return functools.reduce(_union, filter(None, (_option_yaml("eval", o) for o in options("eval"))), {})
    return _option_yaml(group, option)


@functools.cache
def accepted_keywords(target: str) -> frozenset[str] | None:
    """The keyword arguments `instantiate` may pass `target` (a class's through its `**kwargs`
    chain of parent `__init__`s); None when it takes any, or cannot be found (instantiate says so)."""
    try:
        obj = get_object(target)
    except (ImportError, AttributeError, ValueError):
        return None
    chain = (
        [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__]
        if isinstance(obj, type)
        else [obj]
    )
    names: set[str] = set()
    for function in chain:
        params = inspect.signature(function).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return frozenset(names)
    return None


def allowed_keys(path: str, node: dict, own: dict | None) -> frozenset[str] | None:
    """The keys something reads at `path` of the config (`node` as composed, `own` as its YAML
    sets it); None when any key is fine or nothing tells (a node the user added whole)."""
    target = node.get("_target_")
    if path in FREE_FORM or (own is None and path not in READ_BY_CODE and not isinstance(target, str)):
        return None
    names = set(own or ()) | READ_BY_CODE.get(path, frozenset())
    if isinstance(target, str):
        accepted = accepted_keywords(target)
        if accepted is None:
            return None
        names |= accepted | INSTANTIATE_KEYS
    if path == "method":
        names -= SET_BY_PRETRAIN
    return frozenset(names)


def unknown_keys(path: str, node: dict, own: dict | None) -> list[tuple[str, frozenset[str]]]:
    """(dotted key, the valid keys beside it) for every key under `path` nothing reads."""
    allowed = allowed_keys(path, node, own)
    if allowed is None:
        return []
    found = []
    for key, value in node.items():
        if key not in allowed:
            found.append((f"{path}.{key}", allowed))
        elif isinstance(value, dict):
            inner = own.get(key) if isinstance(own, dict) else None
            found += unknown_keys(f"{path}.{key}", value, inner if isinstance(inner, dict) else None)
    return found


# ---- messages ---------------------------------------------------------------------------------
def unknown_key_message(key: str, allowed: Iterable[str], label: str, value: str | None = None) -> str:
    """The refusal of a key nothing reads: the closest valid keys (with the corrected override
    when the value is known), else all of them."""
    parent, _, name = key.rpartition(".")
    where = "" if parent in CHECKED_GROUPS else f" under {parent}"
    valid = sorted(set(allowed) - INSTANTIATE_KEYS)
    close = difflib.get_close_matches(name, valid, n=3)
    if not close:
        return (
            f"unknown key {key}: {label} has no setting {name!r}{where}; its settings are {', '.join(valid)}"
        )
    fix = f"did you mean {parent}.{close[0]}?" + (
        f" ({parent}.{close[0]}={value})" if value is not None else ""
    )
    others = f" Other close names: {', '.join(f'{parent}.{c}' for c in close[1:])}." if close[1:] else ""
    return f"unknown key {key}: {label} has no setting {name!r}{where}; {fix}{others}"


def unselected_group_message(key: str, group: str) -> str:
    """The refusal of a setting of a group no option of which is chosen (no +eval; method on rsssl-eval)."""
    if group == "eval":
        return (
            f"{key}: no eval config is selected: add +eval={'|'.join(options('eval'))} first (it says "
            "which tasks to run, and how)"
        )
    return f"{key}: this command reads no {group} settings; drop it"


def missing_encoder_message(runs_dir: str | Path = "runs") -> str:
    """What `encoder=` takes, with a command to copy: the newest export under `runs_dir` if any."""
    found = sorted(Path(runs_dir).glob(f"**/{WEIGHTS_NAME}"), key=lambda p: p.stat().st_mtime)
    example = found[-1] if found else Path(runs_dir, "<run_name>", "<time>", WEIGHTS_NAME)
    return (
        "encoder= is missing: give the path of an exported encoder, the encoder.safetensors that "
        "rsssl-pretrain writes into its run folder (encoder.json beside it), e.g.\n"
        f"    rsssl-eval encoder={example} eval=classification data=synthetic"
    )


# ---- eval tasks -------------------------------------------------------------------------------
def data_configs_with(task: str) -> list[str]:
    """The data configs (`conf/data/*.yaml`) with a labelled set for `task` in their `eval_sets`."""
    return [o for o in options("data") if task in ((_option_yaml("data", o) or {}).get("eval_sets") or {})]


def eval_switch(config_name: str) -> str:
    """How the eval group is chosen: rsssl-pretrain has none by default, so it is added."""
    return "+eval" if config_name == "pretrain" else "eval"


def _check_task_names(asked: Iterable[str]) -> None:
    for task in asked:
        if task not in TASKS:
            close = difflib.get_close_matches(task, TASKS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"unknown task {task!r} in eval.tasks: {hint}The tasks are {', '.join(TASKS)}")


def _lacks(tasks: Iterable[str], data: str) -> str:
    return "; ".join(
        f"data={data} has no {t} evaluation set (data configs with one: {', '.join(data_configs_with(t))})"
        for t in tasks
    )


def plan_tasks(
    asked: Iterable[str], own: Iterable[str], data: str, has_extra_sets: bool, switch: str = "eval"
) -> tuple[list[str], str | None]:
    """The asked tasks the data has a set for, and a warning naming those it skips; ConfigError when
    a task is unknown or nothing is left to evaluate.

    The suite asks for every task: it runs what the data has (so a sweep over data configs keeps
    going) and says what it skips. Tasks the data lacks are refused only when nothing would run."""
    asked, own = list(asked), set(own)
    _check_task_names(asked)
    kept = [t for t in asked if t in own]
    skipped = [t for t in asked if t not in own]
    if not skipped:
        return kept, None
    if not kept and not has_extra_sets and not own:
        where = "; ".join(f"{t}: {', '.join(data_configs_with(t))}" for t in asked)
        raise ConfigError(
            f"data={data} has no labelled evaluation set (it is for pretraining only): evaluate on a data "
            f"config that has one ({where})"
        )
    if not kept and not has_extra_sets:
        instead = " or ".join(f"{switch}={t}" for t in TASKS if t in own)
        raise ConfigError(
            f"{_lacks(skipped, data)}: evaluate on one of those, or evaluate what this data has with "
            f"{instead}"
        )
    running = ", ".join(kept) if kept else "eval.extra_sets only"
    only = f"; eval.tasks=[{','.join(kept)}] runs just that without this warning" if kept else ""
    return kept, f"warning: {_lacks(skipped, data)}: skipping {', '.join(skipped)}, running {running}{only}"


def selected_option(group: str, fallback: str) -> str:
    """The option Hydra composed for `group` (a data config's file name, which for torchgeo is not
    its `name`), or `fallback` outside a Hydra run."""
    if not HydraConfig.initialized():
        return fallback
    return HydraConfig.get().runtime.choices.get(group) or fallback


# ---- whole configs ----------------------------------------------------------------------------
def override_values(lines: Iterable[str]) -> dict[str, str]:
    """Each command-line key override's value as typed, by key (`+data.x=1` -> {"data.x": "1"})."""
    parsed = OverridesParser.create().parse_overrides(list(lines))
    return {o.key_or_group: o.input_line.split("=", 1)[1] for o in parsed if "=" in o.input_line}


def config_problems(cfg: DictConfig, hydra: DictConfig) -> list[str]:
    """Every refusal for a composed config; `hydra` is its Hydra node (choices, overrides, name)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    choices = hydra.runtime.choices
    values = override_values(hydra.overrides.task)
    problems = []
    if "encoder" in plain and plain["encoder"] in ("???", None, ""):
        problems.append(missing_encoder_message(plain.get("runs_dir") or "runs"))
    for group in CHECKED_GROUPS:
        if group not in plain or plain[group] is None:
            continue
        if not choices.get(group):
            given = next((k for k in values if k.startswith(f"{group}.")), f"{group}.*")
            problems.append(unselected_group_message(given, group))
            continue
        own = own_settings(group, choices[group])
        if own is not None:
            label = f"{group}={choices[group]}"
            found = unknown_keys(group, plain[group], own)
            problems += [unknown_key_message(key, ok, label, values.get(key)) for key, ok in found]
    if choices.get("eval") and isinstance(plain.get("eval"), dict) and "data" in plain:
        try:
            plan_tasks(
                plain["eval"].get("tasks") or [],
                plain["data"].get("eval_sets") or {},
                choices.get("data"),
                bool(plain["eval"].get("extra_sets")),
                eval_switch(hydra.job.config_name),
            )
        except ConfigError as error:
            problems.append(str(error))
    return problems


def check_config(cfg: DictConfig) -> None:
    """ConfigError naming every problem of a job's config (`config_problems`)."""
    problems = config_problems(cfg, HydraConfig.get())
    if problems:
        raise ConfigError("\n".join(problems))


# ---- the command line, before Hydra runs it ---------------------------------------------------
def _plain_key_override(line: str) -> Override | None:
    """The parsed `group.key=value` override (no +, ++ or ~) of a checked group, else None."""
    try:
        override = OverridesParser.create().parse_override(line)
    except HydraException:
        return None
    key = override.key_or_group
    if override.type is not OverrideType.CHANGE or "." not in key or key.split(".")[0] not in CHECKED_GROUPS:
        return None
    return override


def _unsettable(error: ConfigCompositionException, lines: list[str]) -> str | None:
    """The command-line override of a checked group that Hydra could not set ("Could not override
    'data.x'": the key is not in the config), or None for any other composition error."""
    match = re.match(r"Could not override '([^']+)'\.\nTo append", str(error))
    for line in lines if match else []:
        override = _plain_key_override(line)
        if override is not None and override.key_or_group == match[1]:
            return line
    return None


def _compose(config_name: str, overrides: list[str], mode: RunMode) -> DictConfig | None:
    """The config Hydra would compose, less the checked-group overrides it cannot set (the caller
    checks those against it); None when composing fails otherwise, for Hydra to report as it does."""
    remaining = list(overrides)
    while True:
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                return GlobalHydra.instance().hydra.compose_config(config_name, remaining, run_mode=mode)
        except ConfigCompositionException as error:
            line = _unsettable(error, remaining)
            if line is None:
                return None
            remaining.remove(line)
        except (HydraException, OmegaConfBaseException):
            return None


def _present(plain: dict, key: str) -> bool:
    """Whether the dotted `key` is in the plain config."""
    node = plain
    for name in key.split("."):
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
    return True


def key_problem(key: str, plain: dict, choices: DictConfig, value: str) -> str | None:
    """The refusal of a `group.key=value` override whose key the composed config lacks: unknown
    (closest valid keys), or read by the code but not set by the YAML (then add it with `+`)."""
    group, *names = key.split(".")
    if group not in plain or not choices.get(group):
        return unselected_group_message(key, group)
    path, node, own = group, plain[group], own_settings(group, choices[group])
    for name in names:
        allowed = allowed_keys(path, node if isinstance(node, dict) else {}, own)
        if allowed is None:
            return None
        if name not in allowed:
            return unknown_key_message(f"{path}.{name}", allowed, f"{group}={choices[group]}", value)
        node = node.get(name) if isinstance(node, dict) else None
        inner = own.get(name) if isinstance(own, dict) else None
        own = inner if isinstance(inner, dict) else None
        path = f"{path}.{name}"
    return (
        f"{key} is a valid setting that {group}={choices[group]} does not set yet: add it with +{key}={value}"
    )


def _problems_of(
    config_name: str, overrides: list[str], mode: RunMode
) -> tuple[list[str], DictConfig | None]:
    """The refusals for one composition of the command line, and the config composed."""
    cfg = _compose(config_name, overrides, mode)
    if cfg is None:
        return [], None
    plain = OmegaConf.to_container(cfg, resolve=False)
    problems = []
    for line in overrides:
        override = _plain_key_override(line)
        if override is not None and not _present(plain, override.key_or_group):
            value = line.split("=", 1)[1]
            problems.append(key_problem(override.key_or_group, plain, cfg.hydra.runtime.choices, value))
    return [p for p in problems if p] + config_problems(cfg, cfg.hydra), cfg


def sweep_jobs(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """The override lists of a multirun's jobs, as Hydra's basic sweeper makes them (its
    `hydra.sweeper.params` first, then the command line); none for another sweeper."""
    if cfg.hydra.runtime.choices.get("hydra/sweeper") != "basic":
        return []
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *overrides])
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def literal_choice_problems(overrides: list[str]) -> list[str]:
    """`method=false` and the like: Hydra reads true/false/null as a value, never as an option
    name, and fails with a traceback; say so with the options instead."""
    problems = []
    for line in overrides:
        key, _, value = line.partition("=")
        group = key.lstrip("+~")
        if group in CHECKED_GROUPS and value.lower() in ("true", "false", "null"):
            hint = (
                " (the FALSE loss: method=false_simclr or false_glcnet, or method.false_negatives on a "
                "contrastive method)"
            )
            problems.append(
                f"{key}={value}: Hydra reads {value!r} as a constant, not a {group} option; the {group} "
                f"options are {', '.join(options(group))}" + (hint if value.lower() == "false" else "")
            )
    return problems


def command_line_problems(config_name: str, argv: list[str]) -> list[str]:
    """The refusals for a command line, from the configs Hydra would compose for it: the primary
    one and, for a sweep, each job's (so no job trains before a later one is refused)."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.shell_completion or args.config_path or args.config_dir:
        return []
    if GlobalHydra.instance().is_initialized():  # called from within a Hydra app: its own config
        return []
    name = args.config_name or config_name
    literal = literal_choice_problems(args.overrides)
    if literal:
        return literal
    problems, cfg = _problems_of(name, args.overrides, RunMode.MULTIRUN if args.multirun else RunMode.RUN)
    if args.multirun and cfg is not None and not problems:
        for job in sweep_jobs(cfg, args.overrides):
            problems += [p for p in _problems_of(name, job, RunMode.RUN)[0] if p not in problems]
    return problems


def refuse_bad_command_line(
    prog: str, config_name: str
) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Decorate a `hydra.main` entry point: refuse (exit status 2, before Hydra writes anything)
    a command line whose config `command_line_problems` finds fault with."""

    def decorate(hydra_main: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(hydra_main)
        def main() -> None:
            problems = command_line_problems(config_name, sys.argv[1:])
            if problems:
                for problem in problems:
                    print(f"{prog}: error: {problem}", file=sys.stderr)
                sys.exit(2)
            hydra_main()

        return main

    return decorate
