"""The published experiments sweep what their README says: every method, 3 pretraining seeds."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.checks import sweep_jobs
from rsssl.cli.pretrain import main
from rsssl.cli.run_names import register_resolvers


def _jobs(experiment: str, *overrides: str) -> list[list[str]]:
    register_resolvers()
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose("pretrain", [f"+experiment={experiment}", *overrides], return_hydra_config=True)
    return sweep_jobs(cfg, list(overrides))


def _cfg(experiment: str, *overrides: str):
    """The composed config of `+experiment=<experiment>` with `overrides`."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        return compose("pretrain", [f"+experiment={experiment}", *overrides])


def test_synthetic_benchmark_runs_every_method_with_three_pretraining_seeds():
    jobs = {tuple(sorted(job)) for job in _jobs("synthetic_benchmark")}
    methods = ("moco", "saumoco", "simclr", "sticl", "last", "random_init")
    assert jobs == {tuple(sorted((f"method={m}", f"seed={s}"))) for m in methods for s in range(3)}


def test_a_command_line_can_narrow_the_benchmark_sweep():
    jobs = {tuple(sorted(job)) for job in _jobs("synthetic_benchmark", "method=moco", "seed=0")}
    assert jobs == {("method=moco", "seed=0")}


def test_segmentation_benchmark_compares_glcnet_and_false_with_image_level_contrast():
    jobs = {tuple(sorted(job)) for job in _jobs("segmentation_benchmark")}
    methods = ("simclr", "glcnet", "false_simclr", "false_glcnet", "moco", "random_init")
    assert jobs == {tuple(sorted((f"method={m}", f"seed={s}"))) for m in methods for s in range(3)}
    cfg = _cfg("segmentation_benchmark", "method=false_glcnet")
    seg = cfg.eval.segmentation
    assert list(seg.fractions) == [0.01, 0.1, 1.0] and list(seg.modes) == ["frozen", "finetune"]
    assert seg.pretrained_decoder and seg.decoder == "fpn" and cfg.eval.tasks == ["segmentation"]
    assert not cfg.eval.extra_sets and cfg.data.num_bands == 3  # no set in other pixel units (uint8 RGB)
    assert (
        cfg.method._target_ == "rsssl.methods.glcnet.GLCNet" and cfg.method.false_negatives.threshold == 0.9
    )


def test_synthetic_benchmark_probes_at_the_label_budgets_the_method_issues_compare():
    cfg = _cfg("synthetic_benchmark", "method=last")
    budgets = list(cfg.eval.classification.budgets)
    assert [b for b in budgets if isinstance(b, int)] == [5, 20, 50, 100]  # labels per class
    assert list(cfg.data.eval_splits) == ["standard", "region", "date"]


def test_tao2020_compares_five_pretext_signals_at_5_and_20_labels_per_class():
    jobs = {tuple(sorted(job)) for job in _jobs("tao2020")}
    methods = ("simclr", "inpainting", "jigsaw", "colorization", "rotation")
    assert jobs == {tuple(sorted((f"method={m}", f"seed={s}"))) for m in methods for s in range(3)}
    cfg = _cfg("tao2020", "method=jigsaw")
    cls = cfg.eval.classification
    assert cfg.eval.tasks == ["classification"] and list(cls.protocols) == ["linear", "finetune"]
    assert list(cls.budgets) == [5, 20] and list(cls.finetune.budgets) == [5, 20]
    assert list(cls.supervised.budgets) == [5, 20] and cfg.eval.baselines and cfg.eval.supervised


def test_tao2020_ends_in_its_leaderboard(tmp_path, monkeypatch):
    """The experiment's multirun, narrowed to two signals on a tiny backbone, writes one row per
    signal and baseline with the linear and fine-tuned columns at both budgets."""
    quick = [
        "backbone=tiny",
        "trainer=debug",
        "data.num_workers=0",
        "data.batch_size=16",
        "data.source.size=256",
        "data.source.num_scenes=4",
        "data.source.val_scenes=1",
        "eval.classification.seeds=[0]",
        "eval.classification.finetune.steps=2",
        "eval.classification.finetune.batch_size=8",
    ]
    paths = [
        f"results={tmp_path}/results.csv",
        f"leaderboard_dir={tmp_path}/board",
        f"runs_dir={tmp_path}/runs",
    ]
    argv = [
        "rsssl-pretrain",
        "-m",
        "+experiment=tao2020",
        "method=rotation,inpainting",
        "seed=0",
        *quick,
        *paths,
    ]
    monkeypatch.setattr(sys, "argv", [*argv, f"data.stats_cache_dir={tmp_path}/cache"])
    main()
    with open(tmp_path / "board" / "leaderboard.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cells = {(r["method"], r["protocol"], r["budget"]) for r in rows if r["metric"] == "oa"}
    for method in ("rotation", "inpainting", "random_init", "image_stats"):
        for protocol, budget in itertools.product(("linear", "finetune"), ("5/class", "20/class")):
            if (method, protocol) != ("image_stats", "finetune"):  # statistics have nothing to fine-tune
                assert (method, protocol, budget) in cells, (method, protocol, budget)
    assert {("supervised", "finetune", b) for b in ("5/class", "20/class")} <= cells
    assert (tmp_path / "board" / "LEADERBOARD.md").exists()


def test_the_tov_path_runs_both_stages_and_ends_in_its_leaderboard(tmp_path, monkeypatch):
    """`+experiment=tov` on a folder of ordinary pictures: the general stage, then the remote-sensing
    stage from its whole model, each evaluated on the 8-bit synthetic RGB scenes."""
    from rsssl.data.sample_pictures import copy_sample_pictures

    copy_sample_pictures(tmp_path / "pictures")
    quick = ["backbone=tiny", "trainer=debug", "data.num_workers=0", "data.batch_size=8",
             "eval.classification.protocols=[knn]", "eval.classification.budgets=[5]",
             "eval.classification.seeds=[0]", "eval.supervised=false"]  # fmt: skip
    paths = [
        f"results={tmp_path}/results.csv",
        f"leaderboard_dir={tmp_path}/board",
        f"runs_dir={tmp_path}/runs",
    ]
    argv = ["rsssl-pretrain", "+experiment=tov", f"photos={tmp_path / 'pictures'}", *quick, *paths]
    monkeypatch.setattr(sys, "argv", [*argv, f"data.stats_cache_dir={tmp_path}/cache"])
    main()
    with open(tmp_path / "board" / "leaderboard.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["protocol"] == "knn" and r["metric"] == "oa"]
    trained = {(r["method"], r["pretrain_data"]) for r in rows if r["method"] == "moco"}
    assert trained == {("moco", "photos"), ("moco", "synthetic")}  # one row per stage
    assert {r["eval_data"] for r in rows} == {"synthetic"} and any(r["method"] == "random_init" for r in rows)


def test_the_spectral_benchmark_judges_tiles_and_pixels_on_13_bands():
    jobs = {tuple(sorted(job)) for job in _jobs("spectral_benchmark")}
    assert jobs == {
        tuple(sorted((f"method={m}", f"seed={s}"))) for m in ("moco", "simclr", "last") for s in range(3)
    }
    cfg = _cfg("spectral_benchmark", "method=spectral_mae", "backbone=spectral")
    assert cfg.data.num_bands == 13 and cfg.eval.tasks == ["classification", "segmentation"]
    assert list(cfg.eval.pixel.protocols) == ["pixel_linear", "pixel_ridge", "tile_ridge"]
    assert list(cfg.eval.segmentation.modes) == [] and list(cfg.eval.classification.budgets) == [
        5,
        20,
        50,
        100,
        1.0,
    ]


def test_the_tree_crown_benchmark_pretrains_in_domain_without_its_test_split():
    jobs = {tuple(sorted(job)) for job in _jobs("treecrown_segmentation")}
    methods = ("simclr", "glcnet", "false_simclr", "false_glcnet", "moco", "random_init")
    assert jobs == {tuple(sorted((f"method={m}", f"seed={s}"))) for m in methods for s in range(3)}
    cfg = _cfg("treecrown_segmentation", "method=glcnet")
    assert cfg.data.leave_out_test and cfg.data.path.endswith("deepforest_treecrowns_dev.npz")
    assert cfg.eval.segmentation.pretrained_decoder and list(cfg.eval.segmentation.fractions) == [
        0.01,
        0.1,
        1.0,
    ]


def test_every_experiment_with_a_supervised_reference_trains_it():
    """The suite trains the supervised reference under the finetune protocol only: an experiment
    that asks for it must list that protocol (with no encoder budgets where none is fine-tuned)."""
    experiments = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
    for experiment in experiments:
        cfg = _cfg(experiment, "photos=/tmp") if experiment == "tov" else _cfg(experiment)
        if "classification" in cfg.eval.tasks and cfg.eval.baselines and cfg.eval.supervised:
            assert "finetune" in cfg.eval.classification.protocols, experiment
