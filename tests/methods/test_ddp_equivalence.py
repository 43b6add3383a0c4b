"""DDP equivalence, for every method: two CPU processes (gloo, launched as torchrun launches them,
through the real `rsssl-pretrain` entry point) with 4 tiles each take the same steps as one
process with all 8: the same losses and, after the run, the same weights, buffers (queues, EMA
targets, centres) and optimiser state, within float tolerance.

What makes it hold: every per-sample draw comes from `rsssl.data.draws` (the same for a sample
of the global batch on any number of processes), BatchNorm is synchronised
(`trainer.sync_batchnorm=true`; `CPUSyncBatchNorm` on CPUs), negatives, centres and STICL's
styles come from the global batch, and queues are written in global-batch order.

Where it cannot hold, by design: MoCo's shuffle-BN normalises keys per process under DDP and in
`bn_groups` split groups on one process (runs here with `method.shuffle_bn=false`; the keys'
BatchNorm layout is tested in test_shuffle_bn.py); `random_init` does not train. The weighted
sampling strategies (balanced, geographic) run on SimCLR.
"""

from __future__ import annotations

import csv
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.pretrain import main
from tests.cli.test_pretrain_errors import SYNTHETIC
from tests.helpers.methods import with_small_backbone
from tests.methods.test_methods_cli import METHODS

WORLD, LOCAL, STEPS = 2, 4, 3
# Adam divides each gradient entry by its own scale plus `eps`: with torch's eps (1e-8), an entry
# whose gradient is at float32 rounding level (one all-reduce and one batch sum add in different
# orders) moves by up to a whole step's learning rate, either way, and BatchNorm statistics
# downstream of many such entries drift past any tolerance the weights keep (seen on CI:
# colorization's decoder). The runs here use eps=1e-6, far above rounding level, so such entries
# barely move; what is compared is then the method's gradients and buffers under DDP. Weights and
# optimiser state are compared to STATE_ATOL (measured: the worst entry is at 5 % of it), the
# losses more tightly.
ADAM_EPS = 1e-6
STATE_ATOL = 1e-4
COMMON = [
    "backbone=tiny",
    "trainer=debug",
    f"trainer.max_steps={STEPS}",
    "trainer.limit_val_batches=0",
    "+trainer.deterministic=true",
    "+trainer.sync_batchnorm=true",
    "data.num_workers=0",
    *SYNTHETIC,
]
MOCO_FAMILY = {"moco", "saumoco", "sticl"}
# the sampling strategies that weight an epoch's draws, on one method: the weights (k-means on
# each process's features of every tile, or ground cells) must be the same on every process
SAMPLING_CASES = {
    "simclr_balanced": ["sampling.strategy=balanced", "sampling.clusters=3"],
    "simclr_geographic": ["sampling.strategy=geographic", "sampling.cell_size=500"],
}
CASES = [m for m in METHODS if m != "random_init"] + list(SAMPLING_CASES)


def optimizer_name(method: str) -> str:
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        return compose("pretrain", [f"method={method}"]).method.optimizer.name


def overrides(case: str) -> list[str]:
    """The settings of a case: a method (its name), or a method under a sampling strategy."""
    method = case.split("_")[0] if case in SAMPLING_CASES else case
    extra = ["method.shuffle_bn=false"] if method in MOCO_FAMILY else []
    extra += SAMPLING_CASES.get(case, [])
    if optimizer_name(method) != "sgd":
        extra.append(f"+method.optimizer.eps={ADAM_EPS}")
    return with_small_backbone(method, [f"method={method}", *COMMON, *extra])


def pretrain(argv: list[str]) -> None:
    sys.argv = ["rsssl-pretrain", *argv]
    main()


def _worker(rank: int, port: int, runs: str, methods: list[str]) -> None:
    """One process of a torchrun-style launch: Lightning sees LOCAL_RANK and joins, not spawns."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        RANK=str(rank),
    )
    torch.set_num_threads(1)
    for method in methods:
        pretrain(
            [
                *overrides(method),
                "trainer.devices=2",
                "+trainer.strategy=ddp",
                f"data.batch_size={LOCAL}",
                f"runs_dir={runs}",
                f"data.stats_cache_dir={runs}/c{rank}",
                f"run_name={method}",
            ]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory, request) -> Path:
    """The two-process runs of every method selected (`-k`), in one launch: the processes start once."""
    here = Path(__file__)
    selected = [i for i in request.session.items if Path(i.path) == here and hasattr(i, "callspec")]
    methods = [item.callspec.params["method"] for item in selected] or ["simclr"]
    runs = tmp_path_factory.mktemp("ddp") / "runs"
    mp.spawn(_worker, args=(free_port(), str(runs), methods), nprocs=WORLD, join=True)
    return runs


def run_folder(runs: Path, name: str) -> Path:
    """The run's folder: the one with a last.ckpt (a process other than rank 0 writes none)."""
    (folder,) = [p.parent for p in runs.glob(f"{name}/*/last.ckpt")]
    return folder


def losses(folder: Path) -> list[float]:
    with open(next(folder.rglob("metrics.csv"))) as f:
        return [float(r["train/loss_step"]) for r in csv.DictReader(f) if r.get("train/loss_step")]


def load(folder: Path) -> dict:
    return torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("method", CASES)
def test_two_processes_take_the_steps_of_one_with_the_whole_batch(method, two_process_runs, tmp_path):
    torch.manual_seed(0)
    pretrain(
        [
            *overrides(method),
            f"data.batch_size={WORLD * LOCAL}",
            f"runs_dir={tmp_path / 'runs'}",
            f"data.stats_cache_dir={tmp_path / 'c'}",
            f"run_name={method}",
        ]
    )
    one, two = run_folder(tmp_path / "runs", method), run_folder(two_process_runs, method)
    assert len(losses(one)) == STEPS
    torch.testing.assert_close(losses(two), losses(one), rtol=1e-4, atol=1e-5)
    whole, split = load(one), load(two)
    assert split["global_step"] == whole["global_step"] == STEPS
    assert split["state_dict"].keys() == whole["state_dict"].keys()
    for name, tensor in whole["state_dict"].items():
        torch.testing.assert_close(
            split["state_dict"][name],
            tensor,
            rtol=1e-4,
            atol=STATE_ATOL,
            msg=lambda m, name=name: f"{name}: {m}",
        )
    for ours, theirs in zip(split["optimizer_states"], whole["optimizer_states"], strict=True):
        for key, state in theirs["state"].items():
            for field, value in state.items():
                torch.testing.assert_close(ours["state"][key][field], value, rtol=1e-4, atol=STATE_ATOL)
        assert ours["param_groups"] == theirs["param_groups"]  # the LR follows the global batch


def test_a_two_process_run_is_one_folder(two_process_runs):
    """Each process composes its own Hydra folder; the run keeps rank 0's, with rank 1's log in it."""
    methods = {p.parent.parent.name for p in two_process_runs.glob("*/*/last.ckpt")}
    assert methods
    for method in methods:
        (folder,) = list((two_process_runs / method).iterdir())
        assert (folder / "pretrain.rank1.log").is_file()
        assert (folder / "config.yaml").is_file() and (folder / "encoder.safetensors").is_file()
