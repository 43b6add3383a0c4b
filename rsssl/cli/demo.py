"""`make demo`: sweep -> evaluation suite -> leaderboard, on the built-in data, on a CPU.

One Hydra multirun of the real `rsssl-pretrain` pretrains MoCo v2 and SimCLR briefly on 3-band
synthetic scenes, beside the random-init baseline (same views, same online probe). Each run
evaluates its encoder with the trimmed suite (`eval=demo`: synthetic classification and
segmentation), and the sweep ends with the
leaderboard. The demo prints the online-probe table and the leaderboard's offline tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("moco", "simclr", "random_init")


def pretrain_command(out: Path, epochs: int, extra: list[str]) -> list[str]:
    """The sweep of `conf/experiment/demo.yaml`, writing everything under `out`."""
    return [
        sys.executable,
        "-m",
        "rsssl.cli.pretrain",
        "-m",
        "+experiment=demo",
        f"method={','.join(METHODS)}",
        f"trainer.max_epochs={epochs}",
        f"runs_dir={out / 'runs'}",
        f"results={out / 'results.csv'}",
        f"leaderboard_dir={out / 'leaderboard'}",
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


def online_table(summaries: dict[str, dict]) -> str:
    """Each method's online-probe accuracy beside the same probe on the random-init encoder."""
    baseline = summaries.get("random_init", {}).get("metrics", {}).get("val/probe_acc")
    lines = [
        "| method | online probe acc (val) | random-init probe acc (val) | gain | train images/s |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        summary = summaries.get(method)
        if summary is None:
            lines.append(f"| {method} | (run failed) | {_pct(baseline)} | | |")
            continue
        acc = summary["metrics"].get("val/probe_acc")
        gain = f"{100 * (acc - baseline):+.1f} pts" if acc is not None and baseline is not None else ""
        rate = summary.get("train_images_per_second_after_warmup")
        speed = f"{rate:.0f}" if rate else ""
        lines.append(f"| {method} | {_pct(acc)} | {_pct(baseline)} | {gain} | {speed} |")
    return "\n".join(lines)


def offline_tables(leaderboard: Path) -> str:
    """The offline sections of the generated LEADERBOARD.md."""
    if not leaderboard.is_file():
        return "(no leaderboard was written)"
    text = leaderboard.read_text()
    start = text.find("## ")
    end = text.find("## Label efficiency")
    return text[start : end if end > 0 else None].strip()


def _pct(value: float | None) -> str:
    return f"{100 * value:.1f} %" if value is not None else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", type=Path, help="folder for runs, results, leaderboard")
    parser.add_argument("--epochs", default=3, type=int)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args(argv)
    start = time.time()
    command = pretrain_command(args.out, args.epochs, args.overrides)
    print("running:", " ".join(command[2:]), flush=True)
    result = subprocess.run(command)
    summaries = latest_summaries(args.out / "runs", start)
    print()
    spent = time.time() - start
    print(f"rsssl demo: 3-band synthetic scenes, ResNet-18, {args.epochs} epochs on CPU, {spent:.0f} s")
    print()
    print("Online linear probe during pretraining (validation scenes):")
    print(online_table(summaries))
    print()
    print(offline_tables(args.out / "leaderboard" / "LEADERBOARD.md"))
    print()
    print(f"leaderboard: {args.out / 'leaderboard'}/LEADERBOARD.md and leaderboard.html")
    return result.returncode or (0 if len(summaries) == len(METHODS) else 1)


if __name__ == "__main__":
    sys.exit(main())
