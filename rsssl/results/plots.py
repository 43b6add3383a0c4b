"""Label-efficiency plots: the metric against the number of labels, one line per method.

Each line carries its 95 % interval as a shaded band and error bars (visible at a single
budget too); baselines are dashed. Per-class budgets and label fractions never share an x
axis, so each kind gets its own figure, even when it has only one budget.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global
backend switch), so this works headless and inside other programs.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from rsssl.results.store import BASELINES, parse_budget

if TYPE_CHECKING:
    from rsssl.results.aggregate import Aggregate

_X_LABELS = {"per_class": "labelled samples per class", "fraction": "labelled fraction of training set (%)"}


@dataclass(frozen=True)
class Plot:
    """A written figure and what it shows."""

    path: Path
    title: str


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _curves(aggs: Sequence[Aggregate]) -> dict[tuple, dict[tuple, list[tuple[float, Aggregate]]]]:
    """Group by figure (eval data, protocol, eval hash, metric, budget kind), then by line (entry)."""
    figures: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for a in aggs:
        kind, amount = parse_budget(a.budget)
        if kind != "none":
            figures[a.eval_data, a.protocol, a.eval_hash, a.metric, kind][a.entry].append((amount, a))
    return figures


def _draw(title: str, kind: str, metric: str, lines: dict[tuple, list[tuple[float, Aggregate]]]) -> Figure:
    fig = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = sorted({x for points in lines.values() for x, _ in points})

    def baseline(entry: tuple) -> bool:
        return lines[entry][0][1].method in BASELINES

    for entry in sorted(lines, key=lambda e: (baseline(e), e)):
        points = sorted(lines[entry], key=lambda p: p[0])
        x = [p[0] for p in points]
        y = [p[1].mean for p in points]
        err = [p[1].interval or 0.0 for p in points]
        style = "--" if baseline(entry) else "-"
        line = ax.errorbar(x, y, yerr=err, fmt=style, marker="o", capsize=3, label=" / ".join(entry)).lines[0]
        ax.fill_between(
            x,
            [v - e for v, e in zip(y, err, strict=True)],
            [v + e for v, e in zip(y, err, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.set_xlabel(_X_LABELS[kind])
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def label_efficiency_plots(aggs: Sequence[Aggregate], out_dir: Path) -> list[Plot]:
    """Write one PNG per (eval data, protocol, eval hash, metric, budget kind) that has any budget.

    The eval hash shows in the title and file name only where one protocol was measured under
    several settings. PNGs left in ``out_dir`` by an earlier run that this run does not draw are
    removed, so the folder never shows a figure the current results no longer support.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = _curves(aggs)
    settings = Counter((data, protocol, metric, kind) for data, protocol, _, metric, kind in curves)
    plots = []
    for (eval_data, protocol, eval_hash, metric, kind), lines in sorted(curves.items()):
        several = settings[eval_data, protocol, metric, kind] > 1
        name = f"{protocol} eval {eval_hash[:8] or 'unknown'}" if several else protocol
        title = f"{eval_data} · {name} · {metric}" + (" (label fractions)" if kind == "fraction" else "")
        path = out_dir / f"{_slug(f'{eval_data}_{name}_{metric}_{kind}')}.png"
        _draw(title, kind, metric, lines).savefig(path)
        plots.append(Plot(path, title))
    for stale in set(out_dir.glob("*.png")) - {p.path for p in plots}:
        stale.unlink()
    return plots
