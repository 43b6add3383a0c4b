"""A callback the method tests add through the real CLI (`callbacks=[...]`) to watch training."""

from __future__ import annotations

import lightning as L
import torch

RECORDS: list[dict] = []


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class Recorder(L.Callback):
    """Snapshots parameters, momentum targets, queue pointer and losses before every step."""

    def __init__(self) -> None:
        self.record: dict = {"losses": [], "steps": []}
        RECORDS.append(self.record)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = {
            "params": _snapshot(pl_module),
            "targets": [_snapshot(t) for _, t in pl_module.momentum_pairs],
            "onlines": [_snapshot(o) for o, _ in pl_module.momentum_pairs],
            "momentum": pl_module.current_momentum,
            "batch_size": batch["image"].shape[0],
        }
        if hasattr(pl_module, "queue_ptr"):
            step["queue_ptr"] = int(pl_module.queue_ptr)
            step["queue_size"] = int(pl_module.queue.shape[0])
        self.record["steps"].append(step)
        self.record["trains_backbone"] = pl_module.trains_backbone
        self.record["backbone_names"] = [f"backbone.{n}" for n, _ in pl_module.backbone.named_parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss_step")
        self.record["losses"].append(float(loss) if loss is not None else float("nan"))
