"""The common evaluation suite: every encoder judged by the same protocols, rows to the store.

For one exported encoder (and, beside it, the random-init and image-statistics baselines) and
a list of labelled sets, it runs the configured protocols under every label budget and seed,
and appends one long-format row per metric. A unit of work (candidate, set, protocol,
budget, seed) whose rows are already in the store is skipped, so a re-run of a sweep resumes.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from rsssl.eval.budgets import format_budget, select_budget
from rsssl.eval.data import EvalDataset
from rsssl.eval.features import cached_features, extract_features
from rsssl.eval.finetune import run_finetune
from rsssl.eval.image_stats import image_statistics_features
from rsssl.eval.knn import knn_predict
from rsssl.eval.linear import fit_linear_probe, split_train_val
from rsssl.eval.metrics import classification_metrics
from rsssl.eval.segmentation import run_segmentation
from rsssl.models.export import backbone_like, check_band_count, load_encoder
from rsssl.results.store import ResultRow, append_rows, read_rows

CLASSIFICATION_METRICS = ("oa", "aa", "kappa", "f1_macro")


@dataclass
class Candidate:
    """An encoder (or a baseline) under evaluation, with what identifies it in the results."""

    method: str
    run_id: str
    meta: dict
    factory: Callable[[], nn.Module] | None  # a fresh encoder; None for image statistics
    checkpoint_hash: str = ""
    config_hash: str = ""
    pretrain_data: str = ""

    @property
    def backbone(self) -> str:
        return self.meta["timm_name"] if self.factory is not None else "-"

    def features(self, dataset: EvalDataset, split: str, device: str, cache_dir: str | None) -> torch.Tensor:
        images = getattr(dataset, split).images
        if self.factory is None:
            compute = lambda: image_statistics_features(torch.from_numpy(images).to(device))  # noqa: E731
        else:
            compute = lambda: extract_features(self.factory(), self.meta, images, device)  # noqa: E731
        key = (self.run_id.replace("/", "_").replace(":", "_"), dataset.name, split)
        return cached_features(key, compute, cache_dir, device)


def encoder_candidate(weights_path: str | Path) -> Candidate:
    """The candidate for an exported encoder (encoder.safetensors + encoder.json)."""
    model, meta = load_encoder(weights_path)
    return Candidate(
        method=meta.get("method", "unknown"),
        run_id=str(meta.get("run_dir") or Path(meta["weights_path"]).parent),
        meta=meta,
        factory=lambda: copy.deepcopy(model),
        checkpoint_hash=meta.get("sha256", "")[:16],
        config_hash=meta.get("config_hash", ""),
        pretrain_data=meta.get("data", ""),
    )


def baseline_candidates(meta: dict, seed: int = 0) -> list[Candidate]:
    """Random-init encoder of the same architecture and bands, and image statistics."""

    arch = f"{meta['timm_name']}:{meta['in_chans']}:{meta.get('data', '')}"
    return [
        Candidate(
            "random_init",
            f"baseline:random_init:{arch}:seed{seed}",
            meta,
            functools.partial(backbone_like, meta, seed),
            pretrain_data=meta.get("data", ""),
        ),
        Candidate("image_stats", f"baseline:image_stats:{meta['in_chans']}", meta, None),
    ]


def _metric_rows(metrics: dict, names: Iterable[str]) -> list[tuple[str, float]]:
    return [(name, float(metrics[name])) for name in names]


def protocol_metrics(rows: list[dict]) -> list[tuple[str, float]]:
    """(metric, value) pairs of a trained protocol's rows, plus the labelled count it really used."""
    return [(r["metric"], float(r["value"])) for r in rows] + [("train_count", float(rows[0]["train_count"]))]


def knn_metrics(train_x, train_y, test_x, test_y, num_classes: int, k: int, temperature: float) -> dict:
    scores = knn_predict(train_x, train_y, test_x, num_classes, k=k, temperature=temperature)
    return classification_metrics(scores, test_y, num_classes)


def linear_metrics(
    train_x, train_y, test_x, test_y, num_classes: int, val_fraction: float, seed: int
) -> dict:
    """Linear probe with its regularisation chosen on a split of the labelled subset itself."""
    fit_idx, val_idx = split_train_val(train_y, val_fraction, seed)
    fit_idx, val_idx = fit_idx.to(train_x.device), val_idx.to(train_x.device)
    if len(val_idx) == 0:  # one sample per class: nothing to validate on, use the strongest fit of the grid
        val_idx = fit_idx
    probe = fit_linear_probe(
        train_x[fit_idx], train_y[fit_idx], train_x[val_idx], train_y[val_idx], num_classes
    )
    return classification_metrics(probe.predict_scores(test_x), test_y, num_classes)


@dataclass
class Suite:
    """Runs protocols for candidates on evaluation sets and appends the rows to `results`."""

    results: Path
    classification: dict = field(default_factory=dict)
    segmentation: dict = field(default_factory=dict)
    device: str = "cpu"
    cache_dir: str | None = None
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.results = Path(self.results)
        self._done = {(r.run_id, r.eval_data, r.protocol, r.budget, r.seed) for r in read_rows(self.results)}

    def done(self, candidate: Candidate, dataset: EvalDataset, protocol: str, budget: str, seed: int) -> bool:
        return (candidate.run_id, dataset.name, protocol, budget, seed) in self._done

    def write(
        self,
        candidate: Candidate,
        dataset: EvalDataset,
        protocol: str,
        budget: str,
        seed: int,
        metrics: list[tuple[str, float]],
    ) -> None:
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
                config_hash=candidate.config_hash,
                git_commit=git_commit(),
            )
            for name, value in metrics
        ]
        append_rows(self.results, rows, skip_existing=True)
        self._done.add((candidate.run_id, dataset.name, protocol, budget, seed))

    # ---- classification -------------------------------------------------------------------
    def run_classification(self, candidate: Candidate, dataset: EvalDataset) -> None:
        cfg = self.classification
        protocols = list(cfg.get("protocols", ("knn", "linear")))
        budgets = [
            b if isinstance(b, float) else int(b)
            for b in cfg.get("budgets", (5, 20, 50, 100, 0.01, 0.1, 1.0))
        ]
        seeds = [int(s) for s in cfg.get("seeds", (0, 1, 2))]
        frozen = [p for p in protocols if p in ("knn", "linear")]
        if frozen:
            train_x = candidate.features(dataset, "train", self.device, self.cache_dir)
            test_x = candidate.features(dataset, "test", self.device, self.cache_dir)
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
                    if protocol == "knn":
                        metrics = knn_metrics(
                            train_x[idx],
                            train_y[idx],
                            test_x,
                            test_y,
                            dataset.num_classes,
                            int(cfg.get("knn_k", 20)),
                            float(cfg.get("knn_temperature", 0.07)),
                        )
                    else:
                        metrics = linear_metrics(
                            train_x[idx],
                            train_y[idx],
                            test_x,
                            test_y,
                            dataset.num_classes,
                            float(cfg.get("val_fraction", 0.2)),
                            seed,
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
        settings = dict(self.classification.get("finetune", {}))
        only = settings.pop("budgets", None)  # fine-tuning is costly: optionally fewer budgets
        label = format_budget(budget)
        if (only is not None and budget not in only) or self.done(
            candidate, dataset, "finetune", label, seed
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
        cfg = dict(self.segmentation)
        modes = list(cfg.pop("modes", ("frozen", "finetune")))
        fractions = [float(f) for f in cfg.pop("fractions", (0.01, 0.1, 1.0))]
        seeds = [int(s) for s in cfg.pop("seeds", (0, 1, 2))]
        for mode in modes:
            protocol = f"segmentation_{mode}"
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
                        **cfg,
                    )
                    self.write(candidate, dataset, protocol, label, seed, protocol_metrics(rows))

    # ---- everything -----------------------------------------------------------------------
    def evaluate(self, candidates: list[Candidate], datasets: list[EvalDataset]) -> dict[str, float]:
        """Run every candidate on every set; returns seconds spent per candidate."""
        seconds: dict[str, float] = {}
        for dataset in datasets:
            dataset.check()
            for candidate in candidates:
                check_band_count(candidate.meta, len(dataset.bands))
        for candidate in candidates:
            start = time.perf_counter()
            for dataset in datasets:
                self.log(f"evaluating {candidate.method} on {dataset.name} ({dataset.task})")
                if dataset.task == "classification":
                    self.run_classification(candidate, dataset)
                else:
                    self.run_segmentation(candidate, dataset)
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
