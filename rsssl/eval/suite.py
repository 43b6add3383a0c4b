"""The common evaluation suite: every encoder judged by the same protocols, rows to the store.

For one exported encoder (and, beside it, the random-init and image-statistics baselines and the
supervised reference) and a list of labelled sets, it runs the configured protocols under every
label budget and seed, and appends one long-format row per metric. A unit of work (candidate,
set, protocol, budget, seed) is skipped when the store already holds every metric row of it from
the same encoder (weights), the same configuration (``config_hash``), the same set (content) and
the same protocol settings (the row's ``eval_hash``), so a re-run of a sweep resumes and a changed
setting is measured afresh.

The supervised reference is the encoder's architecture trained from its seeded random init on
each budget's labels only: the fine-tune protocols ("finetune", "segmentation_finetune") with the
encoder at the head's learning rate (nothing pretrained to preserve) and its own overrides
(``supervised`` beside the protocol's settings). Its rows share the fine-tune columns (the same
``eval_hash``); its recipe is hashed into their ``config_hash``.
"""

from __future__ import annotations

import copy
import functools
import inspect
import itertools
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rsssl.eval.budgets import format_budget, select_budget
from rsssl.eval.data import EvalDataset, conform_to_encoder
from rsssl.eval.features import (
    FEATURES_VERSION,
    cached_features,
    content_key,
    encoder_identity,
    extract_features,
    set_digests,
    state_dict_digest,
)
from rsssl.eval.finetune import METRICS as FINETUNE_METRICS
from rsssl.eval.finetune import run_finetune
from rsssl.eval.image_stats import image_statistics_features
from rsssl.eval.knn import knn_predict
from rsssl.eval.linear import LINEAR_SOLVERS, fit_linear_probe, split_train_val
from rsssl.eval.metrics import classification_metrics
from rsssl.eval.pixel import PIXEL_CLASSIFICATION_METRICS, PIXEL_PROTOCOLS, REGRESSION_METRICS, run_pixel
from rsssl.eval.segmentation import MODES, PRETRAINED_SUFFIX, run_segmentation, segmentation_protocol
from rsssl.models.export import PretrainedDecoder, backbone_like, file_sha256, load_decoder, load_encoder
from rsssl.results.store import ResultRow, append_rows, read_rows, relative_run_id

CLASSIFICATION_METRICS = ("oa", "aa", "kappa", "f1_macro")
SUPERVISED = "supervised"
# What the suite loops over itself: a unit's budget, mode and seed, and whether an exported decoder
# is judged too (its own protocols), never part of a unit's settings.
LOOP_SETTINGS = ("budgets", "modes", "fractions", "seeds", "pretrained_decoder")
# Settings of the decoder trained from scratch: a pretrained decoder brings its own architecture.
SCRATCH_DECODER_SETTINGS = ("decoder", "decoder_channels")
# Settings of a training recipe, not of a protocol: kept out of the eval hash. The fine-tune
# protocols use their defaults; the supervised reference's recipe hashes them (`Suite.config_hash`).
RECIPE_SETTINGS = ("encoder_lr_factor",)
# The supervised reference's recipe beyond the protocol's settings: the encoder learns at the head's lr.
SUPERVISED_RECIPE = {"encoder_lr_factor": 1.0}
# Metrics every segmentation unit writes, besides one "iou_<class>" per class (segmentation.py).
SEGMENTATION_METRICS = ("oa", "miou", "kappa")


@dataclass
class Candidate:
    """An encoder (or a baseline) under evaluation, with what identifies it in the results.

    `weights_hash` is the sha256 of its weights ("" for image statistics, which have none):
    with the architecture and normalisation in `meta` it keys the feature cache and, as the
    rows' `checkpoint_hash`, tells whether a unit in the store came from these weights.
    `from_scratch` marks the supervised reference: trained (fine-tune protocols) only, with its
    own recipe. `decoder` is the pretrained decoder exported with the encoder (GLCNet's), if any.
    """

    method: str
    run_id: str
    meta: dict
    factory: Callable[[], nn.Module] | None  # a fresh encoder; None for image statistics
    weights_hash: str = ""
    config_hash: str = ""
    pretrain_data: str = ""
    pretrain_seed: int | None = None
    from_scratch: bool = False
    decoder: PretrainedDecoder | None = None

    @property
    def backbone(self) -> str:
        return self.meta["timm_name"] if self.factory is not None else "-"

    @property
    def checkpoint_hash(self) -> str:
        return self.weights_hash[:16]

    def features_key(self, images_digest: str, device: str) -> str:
        """The feature-cache key of these weights on images of this digest (see features.py)."""
        encoder = (
            {"image_stats": True} if self.factory is None else encoder_identity(self.meta, self.weights_hash)
        )
        return content_key(
            version=FEATURES_VERSION, encoder=encoder, images=images_digest, device=torch.device(device).type
        )

    def features(
        self,
        dataset: EvalDataset,
        split: str,
        device: str,
        cache_dir: str | None,
        digests: dict[str, str] | None = None,
    ) -> torch.Tensor:
        """Features of a split, cached by content; `digests` (`set_digests`) saves hashing again."""
        images = getattr(dataset, split).images
        digests = digests or set_digests(dataset)
        if self.factory is None:
            compute = lambda: image_statistics_features(torch.from_numpy(images).to(device))  # noqa: E731
        else:
            compute = lambda: extract_features(self.factory(), self.meta, images, device)  # noqa: E731
        return cached_features(self.features_key(digests[split], device), compute, cache_dir, device)


def encoder_run_id(meta: dict, runs_dir: str | Path = "runs") -> str:
    """A portable run id for an exported encoder: the one `encoder.json` records; for an older
    export, its folder relative to `runs_dir`; for a folder outside it, ``encoder:<sha256[:16]>``."""
    if meta.get("run_id"):
        return str(meta["run_id"])
    folder = meta.get("run_dir") or Path(meta["weights_path"]).parent
    try:
        return relative_run_id(folder, runs_dir)
    except ValueError:
        return f"encoder:{meta['sha256'][:16]}"


def encoder_candidate(weights_path: str | Path, runs_dir: str | Path = "runs") -> Candidate:
    """The candidate for an exported encoder (encoder.safetensors + encoder.json)."""
    model, meta = load_encoder(weights_path)
    meta.setdefault("sha256", file_sha256(meta["weights_path"]))
    return Candidate(
        method=meta.get("method", "unknown"),
        run_id=encoder_run_id(meta, runs_dir),
        meta=meta,
        factory=lambda: copy.deepcopy(model),
        weights_hash=meta["sha256"],
        config_hash=meta.get("config_hash", ""),
        pretrain_data=meta.get("data", ""),
        pretrain_seed=meta.get("seed"),
        decoder=load_decoder(meta),
    )


def baseline_candidates(meta: dict, seed: int = 0, supervised: bool = True) -> list[Candidate]:
    """Random-init encoder of the same architecture and bands (initialised with `seed`), image
    statistics and, with `supervised`, the supervised reference (the same initial weights)."""
    arch = f"{meta['timm_name']}:{meta['in_chans']}:{meta.get('data', '')}"
    factory = functools.partial(backbone_like, meta, seed)
    weights_hash = state_dict_digest(factory())

    def random_encoder(method: str, from_scratch: bool = False) -> Candidate:
        return Candidate(
            method,
            f"baseline:{method}:{arch}:seed{seed}",
            meta,
            factory,
            weights_hash=weights_hash,
            pretrain_data=meta.get("data", ""),
            pretrain_seed=seed,
            from_scratch=from_scratch,
        )

    image_stats = Candidate("image_stats", f"baseline:image_stats:{meta['in_chans']}", meta, None)
    reference = [random_encoder(SUPERVISED, from_scratch=True)] if supervised else []
    return [random_encoder("random_init"), image_stats, *reference]


def settings_with_defaults(protocol: Callable, settings: dict, skip: Iterable[str] = ()) -> dict:
    """`settings` completed with the keyword defaults of `protocol` (minus `skip` and `device`),
    so an omitted setting and its default give the same `eval_hash`, and a changed default another."""
    params = inspect.signature(protocol).parameters.values()
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    merged = {**defaults, **settings}
    return {k: v for k, v in merged.items() if k not in {*skip, "device"}}


def eval_hash(set_digest: str, protocol: str, settings: dict) -> str:
    """Short hash of what a unit measured: the set's content, the protocol and its settings."""
    return content_key(set=set_digest, protocol=protocol, settings=settings)[:12]


def expected_metrics(protocol: str, dataset: EvalDataset) -> frozenset[str]:
    """The metric rows a finished unit of `protocol` on `dataset` has."""
    if protocol.startswith("segmentation_"):
        names = (*SEGMENTATION_METRICS, *(f"iou_{c}" for c in dataset.class_names))
    elif protocol in PIXEL_PROTOCOLS:
        names = PIXEL_CLASSIFICATION_METRICS if protocol == "pixel_linear" else REGRESSION_METRICS
    else:
        names = FINETUNE_METRICS if protocol == "finetune" else CLASSIFICATION_METRICS
    return frozenset((*names, "train_count"))


def headline_metric(protocol: str) -> str:
    """The one metric a finished unit of `protocol` is announced with: mIoU, R² or overall accuracy."""
    if protocol.endswith("_ridge"):
        return "r2"
    return "miou" if protocol.startswith("segmentation_") else "oa"


def _metric_rows(metrics: dict, names: Iterable[str]) -> list[tuple[str, float]]:
    return [(name, float(metrics[name])) for name in names]


def protocol_metrics(rows: list[dict]) -> list[tuple[str, float]]:
    """(metric, value) pairs of a trained protocol's rows, plus the labelled count it really used."""
    return [(r["metric"], float(r["value"])) for r in rows] + [("train_count", float(rows[0]["train_count"]))]


def knn_metrics(train_x, train_y, test_x, test_y, num_classes: int, k: int, temperature: float) -> dict:
    scores = knn_predict(train_x, train_y, test_x, num_classes, k=k, temperature=temperature)
    return classification_metrics(scores, test_y, num_classes)


def linear_metrics(
    train_x, train_y, test_x, test_y, num_classes: int, val_fraction: float, seed: int, solver: str = "path"
) -> dict:
    """Linear probe with its regularisation chosen on a split of the labelled subset itself, the grid
    fitted by `solver` (`fit_linear_probe`)."""
    fit_idx, val_idx = split_train_val(train_y, val_fraction, seed)
    fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
    if len(val_idx) == 0:  # one sample per class: nothing to validate on, use the strongest fit of the grid
        val_idx = fit_idx
    probe = fit_linear_probe(
        train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx], num_classes, solver=solver
    )
    return classification_metrics(probe.predict_scores(test_x), test_y, num_classes)


@dataclass
class Suite:
    """Runs protocols for candidates on evaluation sets and appends the rows to `results`."""

    results: Path
    classification: dict = field(default_factory=dict)
    segmentation: dict = field(default_factory=dict)
    pixel: dict = field(default_factory=dict)
    allow_other_units: bool = False  # measure sets whose pixels are in other units than the encoder's
    device: str = "cpu"
    cache_dir: str | None = None
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        solver = self.classification.get("linear_solver", "path")
        if solver not in LINEAR_SOLVERS:  # refused before any unit runs, not at the first linear one
            raise ValueError(
                f"unknown linear-probe solver {solver!r}: use one of {', '.join(LINEAR_SOLVERS)}"
            )
        self.results = Path(self.results)
        self._present: dict[tuple, set[str]] = defaultdict(set)  # unit -> metrics in the store
        for r in read_rows(self.results):
            self._present[
                (
                    r.run_id,
                    r.checkpoint_hash,
                    r.eval_data,
                    r.eval_hash,
                    r.protocol,
                    r.budget,
                    r.seed,
                    r.config_hash,
                )
            ].add(r.metric)
        self._digests: dict[int, tuple[EvalDataset, dict[str, str]]] = {}

    def digests(self, dataset: EvalDataset) -> dict[str, str]:
        """`set_digests` of a set, computed once per set object."""
        if id(dataset) not in self._digests:
            self._digests[id(dataset)] = (dataset, set_digests(dataset))
        return self._digests[id(dataset)][1]

    def protocol_settings(self, protocol: str) -> dict:
        """Every setting that changes what `protocol` measures (hashed into the rows' eval_hash)."""
        cfg = self.classification
        if protocol == "knn":
            return {"k": int(cfg.get("knn_k", 20)), "temperature": float(cfg.get("knn_temperature", 0.07))}
        if protocol == "linear":
            solver = str(cfg.get("linear_solver", "path"))  # absent: the one solver before the setting
            return {
                "val_fraction": float(cfg.get("val_fraction", 0.2)),
                **({"solver": solver} if solver != "path" else {}),
            }
        skip = (*LOOP_SETTINGS, *RECIPE_SETTINGS, SUPERVISED)
        if protocol == "finetune":
            return settings_with_defaults(run_finetune, cfg.get("finetune", {}), skip=skip)
        if protocol in PIXEL_PROTOCOLS:  # the ridge's folds came later and are no probe setting
            ridge_only = ("ridge_folds",) if protocol == "pixel_linear" else ()
            return settings_with_defaults(run_pixel, self.pixel, skip=(*skip, "protocols", *ridge_only))
        if protocol.startswith("segmentation_"):
            if protocol.endswith(PRETRAINED_SUFFIX):
                skip = (*skip, *SCRATCH_DECODER_SETTINGS)
            return settings_with_defaults(run_segmentation, self.segmentation, skip=skip)
        raise ValueError(f"unknown protocol {protocol!r}")

    def recipe(self, candidate: Candidate, protocol: str) -> dict:
        """What `candidate` is trained with under a trained protocol (fine-tuning, segmentation):
        the protocol's settings; for the supervised reference, with `SUPERVISED_RECIPE` and then its
        own `supervised` settings over them."""
        if protocol == "finetune":  # its `budgets` and `seeds` stay: fine-tune only at those
            task, settings = self.classification, dict(self.classification.get("finetune", {}))
        else:
            task = self.segmentation
            settings = {k: v for k, v in task.items() if k not in (*LOOP_SETTINGS, SUPERVISED)}
        if not candidate.from_scratch:
            return settings
        return {**settings, **SUPERVISED_RECIPE, **task.get(SUPERVISED, {})}

    def config_hash(self, candidate: Candidate, protocol: str) -> str:
        """The rows' `config_hash`: the candidate's; for the supervised reference, a hash of its
        recipe under `protocol`, defaults included (an omitted setting and its default hash alike)."""
        if not candidate.from_scratch:
            return candidate.config_hash
        run = run_finetune if protocol == "finetune" else run_segmentation
        recipe = settings_with_defaults(run, self.recipe(candidate, protocol), skip=LOOP_SETTINGS)
        return content_key(protocol=protocol, recipe=recipe)[:16]

    def eval_hash(self, dataset: EvalDataset, protocol: str) -> str:
        return eval_hash(self.digests(dataset)["set"], protocol, self.protocol_settings(protocol))

    def _unit(
        self, candidate: Candidate, dataset: EvalDataset, protocol: str, budget: str, seed: int
    ) -> tuple:
        return (
            candidate.run_id,
            candidate.checkpoint_hash,
            dataset.name,
            self.eval_hash(dataset, protocol),
            protocol,
            budget,
            seed,
            self.config_hash(candidate, protocol),
        )

    def done(self, candidate: Candidate, dataset: EvalDataset, protocol: str, budget: str, seed: int) -> bool:
        """Whether the store holds every metric row of this unit, measured as configured now."""
        present = self._present.get(self._unit(candidate, dataset, protocol, budget, seed), set())
        return expected_metrics(protocol, dataset) <= present

    def write(
        self,
        candidate: Candidate,
        dataset: EvalDataset,
        protocol: str,
        budget: str,
        seed: int,
        metrics: list[tuple[str, float]],
    ) -> None:
        unit = self._unit(candidate, dataset, protocol, budget, seed)
        rows = [
            ResultRow(
                run_id=candidate.run_id,
                method=candidate.method,
                backbone=candidate.backbone,
                pretrain_data=candidate.pretrain_data,
                eval_data=dataset.name,
                protocol=protocol,
                budget=budget,
                seed=seed,
                metric=name,
                value=value,
                checkpoint_hash=candidate.checkpoint_hash,
                config_hash=unit[7],
                git_commit=git_commit(),
                pretrain_seed=candidate.pretrain_seed,
                eval_hash=unit[3],
            )
            for name, value in metrics
        ]
        append_rows(self.results, rows, skip_existing=True)
        self._present[unit].update(name for name, _ in metrics)
        headline = headline_metric(protocol)
        value = dict(metrics)[headline]
        self.log(
            f"{candidate.method} on {dataset.name}: {protocol} {budget} seed {seed}: {headline} {value:.4f}"
        )

    # ---- classification -------------------------------------------------------------------
    def run_classification(self, candidate: Candidate, dataset: EvalDataset) -> None:
        cfg = self.classification
        protocols = list(cfg.get("protocols", ("knn", "linear")))
        budgets = [
            b if isinstance(b, float) else int(b)
            for b in cfg.get("budgets", (5, 20, 50, 100, 0.01, 0.1, 1.0))
        ]
        seeds = [int(s) for s in cfg.get("seeds", (0, 1, 2))]
        if candidate.from_scratch and "finetune" not in protocols:
            self.log(
                f"{candidate.method} on {dataset.name}: not trained, as eval.classification.protocols has "
                "no finetune; add it (with eval.classification.finetune.budgets=[] to fine-tune no "
                "encoder) for the reference"
            )
            return
        # the supervised reference is only trained: its frozen features are random_init's
        frozen = [] if candidate.from_scratch else [p for p in protocols if p in ("knn", "linear")]
        if frozen:
            digests = self.digests(dataset)
            train_x = candidate.features(dataset, "train", self.device, self.cache_dir, digests)
            test_x = candidate.features(dataset, "test", self.device, self.cache_dir, digests)
            train_y = torch.as_tensor(dataset.train.targets, device=self.device).long()
            test_y = torch.as_tensor(dataset.test.targets, device=self.device).long()
        for budget in budgets:
            for seed in seeds:
                label = format_budget(budget)
                selection = None
                for protocol in frozen:
                    if self.done(candidate, dataset, protocol, label, seed):
                        continue
                    selection = selection or self._select(dataset, budget, seed)
                    idx = selection.indices.to(self.device)
                    settings = self.protocol_settings(protocol)
                    if protocol == "knn":
                        metrics = knn_metrics(
                            train_x[idx], train_y[idx], test_x, test_y, dataset.num_classes, **settings
                        )
                    else:
                        metrics = linear_metrics(
                            train_x[idx],
                            train_y[idx],
                            test_x,
                            test_y,
                            dataset.num_classes,
                            **settings,
                            seed=seed,
                        )
                    rows = _metric_rows(metrics, CLASSIFICATION_METRICS) + [("train_count", float(len(idx)))]
                    self.write(candidate, dataset, protocol, label, seed, rows)
                if "finetune" in protocols and candidate.factory is not None:
                    self._finetune(candidate, dataset, budget, seed)

    def _select(self, dataset: EvalDataset, budget, seed: int):
        selection = select_budget(dataset.train.targets, budget, seed, num_classes=dataset.num_classes)
        for warning in selection.warnings:
            self.log(f"{dataset.name} {format_budget(budget)} seed {seed}: {warning}")
        return selection

    def _finetune(self, candidate: Candidate, dataset: EvalDataset, budget, seed: int) -> None:
        settings = self.recipe(candidate, "finetune")
        # fine-tuning is costly: optionally at fewer budgets and label seeds than the frozen protocols
        only_budgets, only_seeds = settings.pop("budgets", None), settings.pop("seeds", None)
        label = format_budget(budget)
        if (
            (only_budgets is not None and budget not in only_budgets)
            or (only_seeds is not None and seed not in only_seeds)
            or self.done(candidate, dataset, "finetune", label, seed)
        ):
            return
        rows = run_finetune(
            candidate.factory,
            candidate.meta,
            dataset,
            budgets=(budget,),
            seeds=(seed,),
            device=self.device,
            **settings,
        )
        self.write(candidate, dataset, "finetune", label, seed, protocol_metrics(rows))

    # ---- segmentation ---------------------------------------------------------------------
    def run_segmentation(self, candidate: Candidate, dataset: EvalDataset) -> None:
        if candidate.factory is None:
            return  # image statistics are a scene-level baseline; see the leaderboard note
        cfg = self.segmentation
        modes = [m for m in cfg.get("modes", MODES) if m == "finetune" or not candidate.from_scratch]
        fractions = [float(f) for f in cfg.get("fractions", (0.01, 0.1, 1.0))]
        seeds = [int(s) for s in cfg.get("seeds", (0, 1, 2))]
        with_decoder = [False]
        if cfg.get("pretrained_decoder", True) and candidate.decoder is not None:
            with_decoder.append(True)
        for mode, pretrained in itertools.product(modes, with_decoder):
            protocol = segmentation_protocol(mode, pretrained)
            settings = self.recipe(candidate, protocol)
            if pretrained:
                settings = {k: v for k, v in settings.items() if k not in SCRATCH_DECODER_SETTINGS}
                settings["pretrained_decoder"] = candidate.decoder
            for fraction in fractions:
                for seed in seeds:
                    label = format_budget(fraction)
                    if self.done(candidate, dataset, protocol, label, seed):
                        continue
                    rows = run_segmentation(
                        candidate.factory,
                        candidate.meta,
                        dataset,
                        fractions=(fraction,),
                        seeds=(seed,),
                        modes=(mode,),
                        device=self.device,
                        **settings,
                    )
                    self.write(candidate, dataset, protocol, label, seed, protocol_metrics(rows))

    # ---- pixel-level protocols (on the segmentation sets) -----------------------------------
    def run_pixel(self, candidate: Candidate, dataset: EvalDataset) -> None:
        """`eval.pixel.protocols` on a segmentation set, for a frozen encoder (random init included;
        image statistics have no pixels, the supervised reference is a trained protocol)."""
        cfg = self.pixel
        protocols = list(cfg.get("protocols", ()))
        if not protocols or candidate.factory is None or candidate.from_scratch:
            return
        fractions = [float(f) for f in cfg.get("fractions", (0.01, 0.1, 1.0))]
        seeds = [int(s) for s in cfg.get("seeds", (0, 1, 2))]
        units = [
            (p, f, s) for p in protocols for f in fractions for s in seeds
            if not self.done(candidate, dataset, p, format_budget(f), s)
        ]  # fmt: skip
        if not units:
            return
        settings = self.protocol_settings(protocols[0])
        rows = run_pixel(
            candidate.factory, candidate.meta, dataset,
            protocols=sorted({u[0] for u in units}), fractions=sorted({u[1] for u in units}),
            seeds=sorted({u[2] for u in units}), device=self.device, **settings,
        )  # fmt: skip
        for protocol, fraction, seed in units:
            label = format_budget(fraction)
            mine = [r for r in rows if (r["protocol"], r["budget"], r["seed"]) == (protocol, label, seed)]
            self.write(candidate, dataset, protocol, label, seed, protocol_metrics(mine))

    # ---- everything -----------------------------------------------------------------------
    def evaluate(self, candidates: list[Candidate], datasets: list[EvalDataset]) -> dict[str, float]:
        """Run every candidate on every set; returns seconds spent per candidate."""
        seconds: dict[str, float] = {}
        seen_as: dict[tuple[int, int], EvalDataset] = {}  # (encoder meta, set) -> the set in its band order
        for dataset in datasets:
            dataset.check()
            for candidate in candidates:
                key = (id(candidate.meta), id(dataset))
                if key not in seen_as:  # baselines share their encoder's meta: checked and said once
                    seen_as[key] = conform_to_encoder(
                        dataset, candidate.meta, self.log, self.allow_other_units
                    )
        for candidate in candidates:
            start = time.perf_counter()
            for given in datasets:
                dataset = seen_as[id(candidate.meta), id(given)]
                self.log(f"evaluating {candidate.method} on {dataset.name} ({dataset.task})")
                if dataset.task == "classification":
                    self.run_classification(candidate, dataset)
                else:
                    self.run_segmentation(candidate, dataset)
                    self.run_pixel(candidate, dataset)
            seconds[candidate.run_id] = time.perf_counter() - start
        return seconds


@functools.cache
def git_commit() -> str:
    """The current commit of the rsssl checkout, or "" outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
