"""Memory of a process tree from /proc (Linux): what the memory benchmarks measure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from the parent ids in /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def proc_kib(pid: int, table: str, field: str) -> int:
    """A field of /proc/<pid>/<table> (status: VmHWM, VmRSS; smaps_rollup: Pss) in KiB, 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/{table}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory_mib(pid: int) -> dict[str, float]:
    """Of `pid` and its children (the trainer and its DataLoader workers), in MiB: the main
    process's peak resident memory (VmHWM), the largest worker peak, and the whole tree's
    resident memory now (VmRSS summed)."""
    pids = descendants(pid)
    workers = [proc_kib(p, "status", "VmHWM") for p in pids if p != pid]
    return {
        "main_peak": proc_kib(pid, "status", "VmHWM") / 1024,
        "worker_peak": max(workers, default=0) / 1024,
        "workers": len(workers),
        "tree_rss": sum(proc_kib(p, "status", "VmRSS") for p in pids) / 1024,
    }


class MemoryAt(L.Callback):
    """Writes `tree_memory_mib` of the training process to `path` (JSON, step -> figures) after
    each optimiser step in `steps`: a soak's memory at a few points of a long run."""

    def __init__(self, steps: list[int], path: str) -> None:
        self.steps, self.path, self.figures = set(steps), Path(path), {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step in self.steps:
            self.figures[trainer.global_step] = tree_memory_mib(os.getpid())
            self.path.write_text(json.dumps(self.figures, indent=2))
