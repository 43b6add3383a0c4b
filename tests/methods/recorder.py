"""A callback the method tests add through the real CLI (`callbacks=[...]`) to watch training."""

from __future__ import annotations

import lightning as L
import torch

RECORDS: list[dict] = []


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


class Recorder(L.Callback):
    """Snapshots parameters, momentum targets, queue contents, learning rate and losses around every batch."""

    def __init__(self) -> None:
        self.record: dict = {"losses": [], "steps": [], "enqueued": [], "queues": []}
        RECORDS.append(self.record)

    def on_train_start(self, trainer, pl_module) -> None:
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
        self.record["initial_lr"] = groups[0]["initial_lr"] if groups else None
        self.record["estimated_steps"] = trainer.estimated_stepping_batches
        if hasattr(pl_module, "queue"):
            self.record["initial_queue"] = pl_module.queue.detach().clone()
            enqueue = pl_module.enqueue

            def recording_enqueue(keys, index):
                self.record["enqueued"].append((keys.detach().clone(), index.detach().clone()))
                enqueue(keys, index)

            pl_module.enqueue = recording_enqueue

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = {
            "params": _snapshot(pl_module),
            "targets": [_snapshot(t) for _, t in pl_module.momentum_pairs],
            "onlines": [_snapshot(o) for o, _ in pl_module.momentum_pairs],
            "momentum": pl_module.current_momentum,
            "global_step": trainer.global_step,
            "batch_size": batch["image"].shape[0],
            "index": batch["index"].clone() if "index" in batch else None,
        }
        if hasattr(pl_module, "queue_ptr"):
            step["queue_ptr"] = int(pl_module.queue_ptr)
            step["queue_size"] = int(pl_module.queue.shape[0])
        self.record["steps"].append(step)
        self.record["trains_backbone"] = pl_module.trains_backbone
        self.record["backbone_names"] = [f"backbone.{n}" for n, _ in pl_module.backbone.named_parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        groups = trainer.optimizers[0].param_groups if trainer.optimizers else []
        self.record.setdefault("weight_decays", []).append([g["weight_decay"] for g in groups])
        self.record.setdefault("epochs", []).append(trainer.current_epoch)
        loss = trainer.callback_metrics.get("train/loss_step")
        self.record["losses"].append(float(loss) if loss is not None else float("nan"))
        if hasattr(pl_module, "queue"):
            self.record["queues"].append((pl_module.queue.detach().clone(), pl_module.queue_index.clone()))

    def on_train_end(self, trainer, pl_module) -> None:  # after the module's own last batch-end hook (EMA)
        self.record["final_targets"] = [_snapshot(t) for _, t in pl_module.momentum_pairs]
        self.record["final_onlines"] = [_snapshot(o) for o, _ in pl_module.momentum_pairs]
        self.record["final_momentum"] = pl_module.current_momentum
