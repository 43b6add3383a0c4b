"""BENCHMARKS.md from the raw figures of one `rsssl-bench` run (also written as JSON)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from rsssl.bench import scale

PACKAGES = ("rsssl", "torch", "lightning", "timm", "kornia", "torchgeo", "lightly", "scikit-learn", "numpy")
GPU_HOUR_USD = 2.0  # an assumed cloud price of an A100-class GPU hour


def machine() -> dict:
    """The machine and the package versions the figures were measured with."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
            cwd=Path(__file__).parent,
        ).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "git_commit": commit or None,
        "versions": {name: _version(name) for name in PACKAGES},
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _target(name: str, value: float, goal: float) -> str:
    verdict = "met" if value >= goal else f"missed by {100 * (1 - value / goal):.1f} %"
    return f"- {name}: {value:.3f}× (target ≥ {goal:g}×): **{verdict}**"


def peer_section(title: str, rates: dict[str, float], ours: str, floor: str | None) -> list[str]:
    rows = []
    for name, rate in rates.items():
        row = [name, f"{rate:.1f}", f"{rates[ours] / rate:.2f}"]
        if floor:
            row.append(f"{rate / rates[floor]:.2f}")
        rows.append(row)
    header = ["contender", "images/s", f"{ours} ÷ it"] + (["÷ floor"] if floor else [])
    return [f"## {title}", "", *_table(header, rows), ""]


def write_report(figures: dict, out: Path) -> Path:
    """Write `BENCHMARKS.md` and `benchmarks.json` into `out`; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(figures, indent=1))
    path = out / "BENCHMARKS.md"
    path.write_text("\n".join(render(figures)) + "\n")
    return path


def header_section(figures: dict) -> list[str]:
    m, s = figures["machine"], figures["setup"]
    cores = f"{m['cpu_cores']} cores, {m['torch_threads']} torch threads"
    device = f"{m['gpu']} ({m['cpu']}, {cores})" if m["gpu"] else f"CPU only: {m['cpu']}, {cores}"
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    return [
        "# rsssl benchmarks",
        "",
        f"Written by `rsssl-bench` (`make bench`) on {figures['date']} in {figures['seconds'] / 60:.1f} "
        f"min, git {m['git_commit']}. Every comparison is a ratio measured in this one run, the "
        "contenders alternating step by step (median step), never timings compared across runs.",
        "",
        f"- Device: {device}.",
        f"- Versions: Python {m['python']}, {versions}.",
        f"- Step setup: {s['backbone']}, {s['bands']} bands, batch {s['batch']}, {s['tile']} px tiles, "
        f"queue {s['queue']}, head {s['hidden']}-{s['proj']}, SGD lr {s['lr']:.4g}, precision "
        f"{s['precision']}, channels-last {s.get('channels_last', False)}, device {s['device']}.",
        "- Sections: "
        + ", ".join(f"{name} {sec / 60:.1f} min" for name, sec in figures.get("section_seconds", {}).items())
        + ".",
        "",
    ]


def moco_targets(rates: dict[str, float]) -> list[str]:
    ours = rates["rsssl MoCo v2"]
    return [
        _target("rsssl MoCo v2 ÷ torchgeo MoCoTask", ours / rates["torchgeo MoCoTask v2"], 1.0),
        _target("rsssl MoCo v2 ÷ lightly-built MoCo v2", ours / rates["lightly-built MoCo v2"], 1.0),
        _target("rsssl MoCo v2 ÷ model-only floor", ours / rates["model-only floor"], 0.95),
    ]


def loop_section(loop: dict) -> list[str]:
    bare = loop["bare_step"]
    rows = [
        [
            f"rsssl-pretrain, {w} loader workers",
            f"{r:.1f}",
            f"{r / bare:.2f}",
            f"{100 * loop['loader_wait'][w]:.1f}",
        ]
        for w, r in loop["workers"].items()
    ]
    rows.append(["bare step (the same MoCo v2, no loader, no Lightning)", f"{bare:.1f}", "1.00", "–"])
    title = "## The whole pretraining loop against the bare step"
    header = ["run", "images/s", "÷ bare step", "loader wait % of the step time"]
    note = (
        "Loader wait: the time between a step's end and the next one's start (fetching the batch, "
        "moving it to the device) as a share of the step time (`train_loader_wait_fraction` in the "
        "run's `summary.json`); near 0 when the loader keeps ahead of the model."
    )
    return [title, "", *_table(header, rows), "", note, ""]


def methods_section(rates: dict[str, float]) -> list[str]:
    rows = [[name, f"{rate:.1f}", f"{rates['moco'] / rate:.2f}"] for name, rate in rates.items()]
    title = "## Every method's step, relative to MoCo v2 (each at its own defaults)"
    return [title, "", *_table(["method", "images/s", "step cost ÷ MoCo v2"], rows), ""]


def render(figures: dict) -> list[str]:
    lines, targets = header_section(figures), []
    if "moco" in figures:
        lines += peer_section(
            "MoCo v2 step against its peers", figures["moco"], "rsssl MoCo v2", "model-only floor"
        )
        lines += [
            "rsssl's MoCo v2 normalises its keys apart from their queries (shuffle-BN, as split "
            "BatchNorm on one device); neither peer does, so the `shuffle_bn=false` row does the "
            "work they do.",
            "",
        ]
        targets += moco_targets(figures["moco"])
    if "simclr" in figures:
        lines += peer_section("SimCLR step against torchgeo", figures["simclr"], "rsssl SimCLR", None)
    if "loop" in figures:
        lines += loop_section(figures["loop"])
        best = max(figures["loop"]["workers"].values()) / figures["loop"]["bare_step"]
        targets.append(_target("rsssl-pretrain loop ÷ bare step (best worker count)", best, 0.9))
    if "methods" in figures:
        lines += methods_section(figures["methods"])
    if "data" in figures:
        lines += data_section(figures["data"], figures.get("moco", {}).get("rsssl MoCo v2"))
        cold = figures["data"]["cold"]
        store, geotiff = cold["prepared store (memory map)"], cold["GeoTIFF (windowed reads)"]
        worst = min(store[w] / geotiff[w] for w in store)
        targets.append(
            _target("prepared store ÷ GeoTIFF windowed reads, cold cache (worst worker count)", worst, 5)
        )
    if "eval" in figures:
        lines += eval_section(figures["eval"])
        for probe in ("knn", "linear"):
            r = figures["eval"][probe]
            speedup = r["scikit-learn"]["seconds"] / r["rsssl"]["seconds"]
            targets.append(_target(f"{probe} probe: scikit-learn time ÷ rsssl time", speedup, 3.0))
    lines += gpu_section(figures)
    if "scale" in figures:
        lines += scale_section(figures["scale"])
    return lines + ["## Targets", "", *targets, ""]


def data_section(data: dict, step_rate: float | None) -> list[str]:
    lines = [
        "## Data layer: tiles/s of the training loader",
        "",
        f"One Landsat-8 scene ({data['scene']}), {data['tile']} px tiles, batches of {data['batch']}. The "
        "GeoTIFF is LZW-compressed and tiled. *Warm*: GDAL's default block cache, which holds this whole "
        "18 MB file after the first pass. *Cold*: a 1 MB cache (`GDAL_CACHEMAX=1`), what the reads of a "
        "folder far larger than the cache see.",
        "",
    ]
    for regime in ("warm", "cold"):
        rates = data[regime]
        workers = list(next(iter(rates.values())))
        rows = [[name, *(f"{rates[name][w]:.0f}" for w in workers)] for name in rates]
        table = _table(["source", *(f"{w} workers" for w in workers)], rows)
        lines += [f"**{regime.capitalize()} block cache**", "", *table, ""]
    if step_rate:
        slowest = min(min(v.values()) for v in data["cold"].values())
        verdict = "the model" if slowest > step_rate else "the loader, for the sources slower than the step,"
        lines += [
            f"The MoCo v2 step above takes {step_rate:.0f} images/s, so on this machine {verdict} is the "
            "bottleneck (on 2 cores the loader workers also take cores from the step).",
            "",
        ]
    return lines


def eval_section(ev: dict) -> list[str]:
    rows = []
    labels = {
        ("knn", "rsssl"): "kNN (k = 20, cosine)",
        ("linear", "rsssl"): "linear probe (8-point l2 grid + refit), batched grid (the default)",
        ("linear", "rsssl path"): "linear probe, warm-started path (`linear_solver=path`)",
    }
    for (probe, ours_name), label in labels.items():
        if ours_name not in ev[probe]:
            continue
        ours, theirs = ev[probe][ours_name], ev[probe]["scikit-learn"]
        accuracy = f"{100 * ours['accuracy']:.1f} / {100 * theirs['accuracy']:.1f}"
        speedup = theirs["seconds"] / ours["seconds"]
        rows.append([label, f"{ours['seconds']:.2f}", f"{theirs['seconds']:.2f}", f"{speedup:.1f}", accuracy])
    header = ["probe", "rsssl s", "scikit-learn s", "speed-up", "test accuracy % (rsssl / sklearn)"]
    return [
        "## Evaluation",
        "",
        f"Feature extraction: {ev['features_per_second']:.0f} images/s ({ev['backbone']}, {ev['tile']} px, "
        "uint8 in, standardised on the device).",
        "",
        f"Probes on the same {ev['problem']} features (Gaussian class blobs that overlap), all cores, "
        f"median of {ev['rounds']}:",
        "",
        *_table(header, rows),
        "",
    ]


def gpu_section(figures: dict) -> list[str]:
    if figures["machine"]["gpu"] is not None:
        return []
    return [
        "## GPU",
        "",
        "Not measured: no CUDA device on this machine. On one, `rsssl-bench` (device=auto) runs every "
        "section on it at bf16.",
        "",
    ]


def scale_section(sc: dict) -> list[str]:
    rows = [
        [
            str(r["gpus"]),
            f"{r['images_per_second']:.0f}",
            f"{r['total_hours']:.1f}",
            f"{r['gpu_hours']:.0f} (${r['gpu_hours'] * GPU_HOUR_USD:.0f})",
            str(r["loader_workers_per_gpu"]),
            f"{r['node_read_gb_per_second']:.1f}",
            f"{r['allreduce_ms_per_step']:.1f}",
            r["limit"],
        ]
        for r in sc["projections"]
    ]
    header = ["GPUs", "images/s", "hours", "GPU hours (cost)", "loader workers a GPU", "GB/s read a node",
              "all-reduce ms a step", "what limits it"]  # fmt: skip
    d, patch = scale.SSL4EO, scale.patch_bytes()
    per_gpu = f"{sc['per_gpu_images_per_second']:.0f} images/s"
    source = (
        "measured" if sc["measured_gpu"] else f"assumed: {scale.SUSTAINED_TFLOPS:g} TFLOP/s sustained at bf16"
    )
    return [
        "## Scale on paper: MoCo v2 ResNet-50 on SSL4EO-S12",
        "",
        f"About {d['patches']:,} patches of {d['bands']} bands at {d['size']} px (uint16, "
        f"{patch / 1e6:.2f} MB each, {d['patches'] * patch / 1e12:.1f} TB), {d['epochs']} epochs, "
        f"{scale.PER_GPU_BATCH} images a GPU, 224 px crops.",
        "",
        f"- Measured here: {sc['flops_per_image'] / 1e9:.1f} GFLOP per image per step (torch's FLOP counter "
        "on rsssl's MoCo v2 step: query forward + backward, key forward); "
        f"{sc['gradient_bytes'] / 1e6:.0f} MB of gradients to all-reduce; "
        f"{sc['store_tiles_per_worker']:.0f} patches/s that one loader process reads from a prepared store "
        "of 13-band 264 px tiles.",
        f"- Per GPU: {per_gpu} ({source}).",
        f"- Assumed: an all-reduce bus bandwidth of {scale.NVLINK_GBPS:g} GB/s within a node of "
        f"{scale.GPUS_PER_NODE} GPUs and {scale.NETWORK_GBPS:g} GB/s across nodes, all but the last of ~8 "
        f"gradient buckets hidden behind the backward pass; {scale.NODE_READ_GBPS:g} GB/s of local NVMe "
        f"reads a node (the store does not fit in RAM); ${GPU_HOUR_USD:g} a GPU hour.",
        "",
        *_table(header, rows),
        "",
    ]
