"""Pretraining step throughput: rsssl against torchgeo's tasks, a MoCo v2 built from lightly's parts
and the model-only floor, all on one backbone, batch, tile, queue, head and device.

A step is what a training loop does per batch: the views, the forward passes, the loss, the
backward pass, the optimiser step and the momentum update. Every contender gets the same SGD
(lr 0.03 per 256 images, momentum 0.9, weight decay 1e-4) and the same float batch in [0, 1].
The floor is the network alone: query forward + backward, key forward, optimiser step, no views.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import OmegaConf
from torch import Tensor, nn

from rsssl.bench.timing import alternate, median_rate
from rsssl.cli import CONF_DIR
from rsssl.methods.base import SSLMethod, ema_update, freeze, scaled_lr
from rsssl.models.backbones import create_backbone
from rsssl.models.heads import mlp

Step = Callable[[], object]


@dataclass(frozen=True)
class StepSetup:
    """What every contender shares. `queue` is the MoCo negatives' count (4096: a queue that
    fits a small benchmark set); `bands` are the input channels."""

    backbone: str = "resnet18"
    bands: int = 3
    batch: int = 64
    tile: int = 64
    queue: int = 4096
    hidden: int = 2048
    proj: int = 128
    device: str = "cpu"
    precision: str = "32"  # "bf16": autocast to bfloat16 (a GPU's setting)
    channels_last: bool = False  # rsssl's and the floor's weights and batches (rsssl's default on a GPU)

    @property
    def lr(self) -> float:
        return scaled_lr(0.03, self.batch)

    def as_dict(self) -> dict:
        return asdict(self)


def images(setup: StepSetup, seed: int = 0) -> Tensor:
    """The batch every contender trains on: uniform [0, 1) floats, B x C x T x T, on the device."""
    generator = torch.Generator().manual_seed(seed)
    shape = (setup.batch, setup.bands, setup.tile, setup.tile)
    return torch.rand(shape, generator=generator).to(setup.device)


def sgd(module: nn.Module, setup: StepSetup) -> torch.optim.Optimizer:
    trained = [p for p in module.parameters() if p.requires_grad]
    return torch.optim.SGD(trained, lr=setup.lr, momentum=0.9, weight_decay=1e-4)


def autocast(setup: StepSetup) -> torch.autocast:
    device_type = torch.device(setup.device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=setup.precision == "bf16")


def training_step(module: nn.Module, loss_of_batch: Callable[[], Tensor], setup: StepSetup) -> Step:
    """One optimiser step of `module` on the loss `loss_of_batch` returns, under the setup's precision."""
    optimizer = sgd(module, setup)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(setup):
            loss = loss_of_batch()
        loss.backward()
        optimizer.step()

    return step


# ---- rsssl -----------------------------------------------------------------------------------
#: methods that run on one backbone only, with its `conf/backbone/` preset
NEEDED_BACKBONE = {"spectral_mae": "spectral", "spectral_spatial": "spectral"}


def method_from_yaml(name: str, setup: StepSetup, **overrides) -> SSLMethod:
    """The method `conf/method/<name>.yaml` defines (its defaults, merged with `overrides`), on
    the setup's backbone, or on the backbone the method needs (`conf/backbone/spectral.yaml`)."""
    conf = Path(CONF_DIR)
    settings = OmegaConf.to_container(method_config(conf / "method", name), resolve=True)
    settings.pop("name")
    settings.update(overrides)
    backbone = {"name": setup.backbone}
    if name in NEEDED_BACKBONE:
        preset = OmegaConf.load(conf / "backbone" / f"{NEEDED_BACKBONE[name]}.yaml")
        preset = OmegaConf.to_container(preset, resolve=True)
        backbone = {"name": preset["name"], **preset.get("kwargs", {})}
    cls = get_class(settings.pop("_target_"))
    bands = [f"b{i}" for i in range(setup.bands)]
    rgb = ["red", "green", "blue"]
    method = cls(
        backbone=backbone,
        in_chans=setup.bands,
        bands=rgb if setup.bands == 3 else bands,
        batch_size=setup.batch,
        **settings,
    )
    if hasattr(method, "configure_batch_norm"):
        method.configure_batch_norm(world_size=1)
    return method.to(setup.device).train()


def method_config(folder: Path, name: str):
    """`folder/<name>.yaml` with the files its `defaults:` list names merged under it."""
    config = OmegaConf.load(folder / f"{name}.yaml")
    parents = [p for p in config.pop("defaults", []) if p != "_self_"]
    merged = OmegaConf.merge(*(method_config(folder, parent) for parent in parents), config)
    return merged


def method_batch(method: SSLMethod, setup: StepSetup) -> dict:
    """A batch with every key the method requires: the neighbour or other-date tile is a second draw."""
    batch = {"image": images(setup), "index": torch.arange(setup.batch, device=setup.device)}
    for key in method.required_keys:
        batch[key] = images(setup, seed=1)
    return batch


def in_layout(module: nn.Module, tensors: dict, setup: StepSetup) -> None:
    """`module` and the 4-d tensors of `tensors` (in place) in channels-last layout when asked."""
    if not setup.channels_last:
        return
    module.to(memory_format=torch.channels_last)
    for key, value in tensors.items():
        if value.ndim == 4:
            tensors[key] = value.contiguous(memory_format=torch.channels_last)


def rsssl_step(method: SSLMethod, setup: StepSetup) -> Step:
    """The step Lightning runs for an rsssl method: pretext loss, backward, SGD, then the EMA."""
    batch = method_batch(method, setup)
    in_layout(method, batch, setup)
    optimise = training_step(method, lambda: method.pretext_step(batch).loss, setup)

    def step() -> None:
        optimise()
        for online, target in method.momentum_pairs:
            ema_update(online, target, method.current_momentum)

    return step


# ---- peers -----------------------------------------------------------------------------------
def torchgeo_moco(setup: StepSetup) -> Step:
    from torchgeo.trainers import MoCoTask

    task = MoCoTask(
        model=setup.backbone,
        in_channels=setup.bands,
        version=2,
        layers=2,
        hidden_dim=setup.hidden,
        output_dim=setup.proj,
        lr=setup.lr,
        weight_decay=1e-4,
        temperature=0.2,
        memory_bank_size=setup.queue,
        moco_momentum=0.999,
        size=setup.tile,
    )
    return torchgeo_step(task, setup)


def torchgeo_simclr(setup: StepSetup) -> Step:
    from torchgeo.trainers import SimCLRTask

    task = SimCLRTask(
        model=setup.backbone,
        in_channels=setup.bands,
        version=1,
        layers=2,
        hidden_dim=setup.hidden,
        output_dim=setup.proj,
        lr=setup.lr,
        temperature=0.5,
        memory_bank_size=0,
        size=setup.tile,
    )
    return torchgeo_step(task, setup)


def torchgeo_step(task: nn.Module, setup: StepSetup) -> Step:
    """A torchgeo task's own `training_step` (its kornia views and momentum update included);
    its `self.log` calls have no trainer to log to and only warn, so the warning is silenced."""
    task = task.to(setup.device).train()
    batch = {"image": images(setup)}

    def loss() -> Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return task.training_step(batch, 0)

    return training_step(task, loss, setup)


class LightlyMoCoV2(nn.Module):
    """MoCo v2 as a lightly user writes it: lightly's projection head, NT-Xent loss with a memory
    bank and momentum utilities on a timm backbone, with torchgeo's kornia MoCo v2 views (lightly's
    own transforms are per-image PIL transforms for the data loader, not a batched step)."""

    def __init__(self, setup: StepSetup) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from torchgeo.trainers.moco import moco_augmentations

        self.backbone = create_backbone(setup.backbone, in_chans=setup.bands)
        self.head = MoCoProjectionHead(self.backbone.num_features, setup.hidden, setup.proj)
        self.key_backbone = freeze(copy.deepcopy(self.backbone))
        self.key_head = freeze(copy.deepcopy(self.head))
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(setup.queue, setup.proj))
        self.augment_query, self.augment_key = moco_augmentations(2, setup.tile, torch.ones(setup.bands))

    def loss(self, x: Tensor) -> Tensor:
        from lightly.models.utils import update_momentum

        with torch.no_grad():
            query_view, key_view = self.augment_query(x), self.augment_key(x)
            update_momentum(self.backbone, self.key_backbone, 0.999)
            update_momentum(self.head, self.key_head, 0.999)
            key = self.key_head(self.key_backbone(key_view))
        return self.criterion(self.head(self.backbone(query_view)), key)


def lightly_moco(setup: StepSetup) -> Step:
    model = LightlyMoCoV2(setup).to(setup.device).train()
    x = images(setup)
    return training_step(model, lambda: model.loss(x), setup)


class ModelFloor(nn.Module):
    """The network work of a MoCo v2 step and nothing else: query backbone + head forward and
    backward, key backbone + head forward, on the batch as it is (no views, no queue)."""

    def __init__(self, setup: StepSetup) -> None:
        super().__init__()
        self.backbone = create_backbone(setup.backbone, in_chans=setup.bands)
        self.head = mlp(self.backbone.num_features, setup.hidden, setup.proj, 2)
        self.key_backbone = freeze(copy.deepcopy(self.backbone))
        self.key_head = freeze(copy.deepcopy(self.head))

    def loss(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            key = self.key_head(self.key_backbone(x))
        return -(self.head(self.backbone(x)) * key).sum(dim=1).mean()


def model_floor(setup: StepSetup) -> Step:
    model = ModelFloor(setup).to(setup.device).train()
    batch = {"image": images(setup)}
    in_layout(model, batch, setup)
    return training_step(model, lambda: model.loss(batch["image"]), setup)


# ---- the measurements ------------------------------------------------------------------------
def rates(contenders: dict[str, Step], setup: StepSetup, rounds: int, warmup: int) -> dict[str, float]:
    """Images per second of each contender at its median step, the steps interleaved."""
    seconds = alternate(contenders, rounds, warmup, setup.device)
    return {name: median_rate(s, setup.batch) for name, s in seconds.items()}


def moco_peers(setup: StepSetup, rounds: int = 20, warmup: int = 3) -> dict[str, float]:
    """Images/s of rsssl's MoCo v2 (also without its shuffle-BN, which neither peer does),
    torchgeo's MoCoTask, the lightly-built MoCo v2 and the floor."""
    torch.manual_seed(0)
    moco = method_from_yaml("moco", setup, queue_size=setup.queue)
    plain = method_from_yaml("moco", setup, queue_size=setup.queue, shuffle_bn=False)
    contenders = {
        "rsssl MoCo v2": rsssl_step(moco, setup),
        "rsssl MoCo v2, shuffle_bn=false": rsssl_step(plain, setup),
        "torchgeo MoCoTask v2": torchgeo_moco(setup),
        "lightly-built MoCo v2": lightly_moco(setup),
        "model-only floor": model_floor(setup),
    }
    return rates(contenders, setup, rounds, warmup)


def simclr_peers(setup: StepSetup, rounds: int = 20, warmup: int = 3) -> dict[str, float]:
    """Images/s of rsssl's SimCLR against torchgeo's SimCLRTask (v1 head, no memory bank)."""
    torch.manual_seed(0)
    contenders = {
        "rsssl SimCLR": rsssl_step(method_from_yaml("simclr", setup), setup),
        "torchgeo SimCLRTask v1": torchgeo_simclr(setup),
    }
    return rates(contenders, setup, rounds, warmup)


#: every method the table times (random_init has no pretext step)
TABLE_METHODS = (
    "moco",
    "simclr",
    "saumoco",
    "sticl",
    "false_simclr",
    "glcnet",
    "false_glcnet",
    "last",
    "rotation",
    "jigsaw",
    "inpainting",
    "colorization",
    "spectral_mae",
    "spectral_spatial",
)


def method_table(
    setup: StepSetup, methods: tuple[str, ...] = TABLE_METHODS, rounds: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Images/s of each method at its own defaults (its YAML), the methods interleaved."""
    torch.manual_seed(0)
    contenders = {name: rsssl_step(method_from_yaml(name, setup), setup) for name in methods}
    return rates(contenders, setup, rounds, warmup)
