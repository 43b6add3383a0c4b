"""The pretraining config hash: the seeds of one configuration share it, anything that changes
what is pretrained changes it, where and how a run is written does not."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.pretrain import config_hash, pretraining_config


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="pretrain", overrides=list(overrides))


@pytest.fixture(scope="module")
def base_hash() -> str:
    return config_hash(_cfg())


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "runs_dir=/elsewhere",
        "results=x.csv",
        "device=cpu",
        "resume=true",
        "data.num_workers=7",
        "trainer.enable_progress_bar=false",
        "+eval=demo",
        "sampling.clusters=16",  # a setting of another sampling strategy than the one that runs
        "sampling.cell_size=500",
        "speed.channels_last=true",  # how the steps run, not what they compute
        "speed.compile=true",
    ],
)
def test_seed_and_run_location_do_not_change_the_hash(override: str, base_hash: str) -> None:
    assert config_hash(_cfg(override)) == base_hash


@pytest.mark.parametrize(
    "override",
    [
        "method.temperature=0.1",
        "data.tile_size=64",
        "trainer.max_epochs=7",
        "method=simclr",
        "sampling.strategy=geographic",
        "sampling.strategy=balanced",
    ],
)
def test_what_is_pretrained_changes_the_hash(override: str, base_hash: str) -> None:
    assert config_hash(_cfg(override)) != base_hash


def test_the_recorded_config_is_what_is_hashed() -> None:
    config = pretraining_config(_cfg("method.temperature=0.1"))
    assert config["method"]["temperature"] == 0.1 and config["trainer"]["max_epochs"] == 5
    for absent in ("seed", "runs_dir", "run_name", "results", "eval", "device", "logger"):
        assert absent not in config
    assert "num_workers" not in config["data"] and "eval_sets" not in config["data"]


def test_runs_made_before_a_setting_existed_keep_their_hash() -> None:
    """Random sampling, the only kind before `sampling:` existed, hashes as a config without the key,
    so a benchmark's earlier runs and today's of one configuration stay one leaderboard row."""
    config = pretraining_config(_cfg())
    assert "sampling" not in config
    geographic = pretraining_config(_cfg("sampling.strategy=geographic", "sampling.cell_size=500"))
    assert geographic["sampling"] == {"strategy": "geographic", "cell_size": 500}
    balanced = pretraining_config(_cfg("sampling.strategy=balanced"))
    assert balanced["sampling"] == {"strategy": "balanced", "clusters": 8, "refresh_epochs": 1}
    assert config_hash(_cfg("sampling.strategy=balanced", "sampling.cell_size=9")) == config_hash(
        _cfg("sampling.strategy=balanced")
    )


def test_a_setting_added_later_at_its_neutral_value_keeps_the_hash() -> None:
    """STICL's `transfer.relaxation` came after the first STICL runs: at 1 (plain Sinkhorn, what
    ran then) the config hashes as one without the key; at 1.5, or at the default 1.6, it is
    another config."""
    plain = _cfg("method=sticl", "method.transfer.relaxation=1.0")
    assert "relaxation" not in pretraining_config(plain)["method"]["transfer"]
    without = _cfg("method=sticl", "~method.transfer.relaxation")
    assert "relaxation" not in without.method.transfer
    assert config_hash(plain) == config_hash(without)
    relaxed = _cfg("method=sticl", "method.transfer.relaxation=1.5")
    assert pretraining_config(relaxed)["method"]["transfer"]["relaxation"] == 1.5
    assert config_hash(relaxed) != config_hash(plain)
    default = _cfg("method=sticl")
    assert pretraining_config(default)["method"]["transfer"]["relaxation"] == 1.6
    assert config_hash(default) not in {config_hash(plain), config_hash(relaxed)}
