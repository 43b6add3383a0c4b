"""`make demo`: pretrain MoCo v2 and SimCLR briefly on the synthetic scenes, beside the
random-init baseline, and print each method's online-probe accuracy against the baseline's.

Everything goes through the real `rsssl-pretrain` entry point (one Hydra multirun).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("moco", "simclr", "random_init")


def pretrain_command(runs_dir: Path, epochs: int, extra: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rsssl.cli.pretrain",
        "-m",
        f"method={','.join(METHODS)}",
        "backbone=resnet18",
        "data=synthetic",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
        f"runs_dir={runs_dir}",
        *extra,
    ]


def latest_summaries(runs_dir: Path, since: float) -> dict[str, dict]:
    """The summary.json of each method written after `since`, newest per method."""
    found: dict[str, dict] = {}
    for path in sorted(runs_dir.glob("*/*/summary.json"), key=lambda p: p.stat().st_mtime):
        if path.stat().st_mtime >= since:
            summary = json.loads(path.read_text())
            found[summary["method"]] = summary
    return found


def format_table(summaries: dict[str, dict]) -> str:
    baseline = summaries.get("random_init", {}).get("metrics", {}).get("val/probe_acc")
    lines = [
        "| method | online probe acc (val) | random-init probe acc (val) | gain | train images/s |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        if method not in summaries:
            lines.append(f"| {method} | (run failed) | | | |")
            continue
        summary = summaries[method]
        acc = summary["metrics"].get("val/probe_acc")
        gain = f"{100 * (acc - baseline):+.1f} pts" if acc is not None and baseline is not None else ""
        rate = summary.get("images_per_second")
        lines.append(
            f"| {method} | {_pct(acc)} | {_pct(baseline)} | {gain} | {rate:.0f} |"
            if rate
            else f"| {method} | {_pct(acc)} | {_pct(baseline)} | {gain} | |"
        )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f} %" if value is not None else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs/demo", type=Path)
    parser.add_argument("--epochs", default=12, type=int)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    start = time.time()
    command = pretrain_command(args.runs_dir, args.epochs, args.overrides)
    print("running:", " ".join(command[2:]), flush=True)
    result = subprocess.run(command)
    summaries = latest_summaries(args.runs_dir, start)
    print()
    print(
        f"rsssl demo: synthetic scenes, ResNet-18, {args.epochs} epochs on CPU ({time.time() - start:.0f} s)"
    )
    print(format_table(summaries))
    return result.returncode or (0 if len(summaries) == len(METHODS) else 1)


if __name__ == "__main__":
    sys.exit(main())
