"""Scale on paper: the time of MoCo v2 ResNet-50 pretraining on SSL4EO-S12 (about 1M patches of
13 bands at 264 px, 100 epochs) on 1, 8 and 64 GPUs, projected from figures measured here.

Measured: the training FLOPs of one step per image (torch's FLOP counter on the real MoCo v2 step
at 224 px crops: query forward + backward, key forward), the bytes a patch holds, and the prepared
store's tiles/s per loader worker. Assumed (stated in the report): the GPU's sustained bf16 rate,
replaced by the measured ResNet-50 rate when a GPU is lent, the interconnect bandwidths, and
DDP's gradient all-reduce overlapping the backward pass except for its last bucket.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch.utils.flop_counter import FlopCounterMode

from rsssl.bench.steps import StepSetup, method_batch, method_from_yaml

SSL4EO = {"patches": 1_000_000, "bands": 13, "size": 264, "crop": 224, "epochs": 100, "bytes_per_value": 2}
#: assumptions, each named in the report
SUSTAINED_TFLOPS = 60.0  # an A100-class GPU at bf16 on ResNet-50 training (~20 % of its peak)
NVLINK_GBPS = 150.0  # effective all-reduce bus bandwidth within an 8-GPU node
NETWORK_GBPS = 20.0  # effective across nodes (200 Gb/s InfiniBand per GPU)
NODE_READ_GBPS = 10.0  # what a node's local NVMe array reads (the store is far larger than RAM)
GPUS_PER_NODE = 8
PER_GPU_BATCH = 256


@dataclass
class Projection:
    gpus: int
    images_per_second: float
    epoch_hours: float
    total_hours: float
    gpu_hours: float
    loader_workers_per_gpu: int
    node_read_gb_per_second: float
    allreduce_ms_per_step: float
    limit: str


def moco_resnet50_step(bands: int = 13, crop: int = 224, batch: int = 4) -> tuple[float, int]:
    """(training FLOPs per image, bytes of the gradients DDP all-reduces) of rsssl's MoCo v2 step
    on ResNet-50 (the views excluded)."""
    setup = StepSetup(backbone="resnet50", bands=bands, batch=batch, tile=crop, queue=4096)
    method = method_from_yaml("moco", setup, queue_size=4096, bn_groups=2)
    batch_ = method_batch(method, setup)
    with FlopCounterMode(display=False) as counter:
        method.pretext_step(batch_).loss.backward()
    gradient_bytes = sum(p.numel() * 4 for p in method.parameters() if p.requires_grad)
    return counter.get_total_flops() / batch, gradient_bytes


def project(
    flops_per_image: float,
    gradient_bytes: int,
    store_tiles_per_worker: float,
    gpu_images_per_second: float | None = None,
    gpus: tuple[int, ...] = (1, 8, 64),
) -> list[Projection]:
    """The projected runs; `gpu_images_per_second` (measured) overrides the FLOP-rate estimate."""
    per_gpu = gpu_images_per_second or SUSTAINED_TFLOPS * 1e12 / flops_per_image
    rows = []
    for count in gpus:
        bandwidth = NVLINK_GBPS if count <= 8 else NETWORK_GBPS
        ring = 0.0 if count == 1 else 2 * (count - 1) / count * gradient_bytes / (bandwidth * 1e9)
        compute = PER_GPU_BATCH / per_gpu
        exposed = ring / 8  # the last of ~8 buckets is not hidden behind the backward pass
        step = compute + exposed
        compute_rate = count * PER_GPU_BATCH / step
        nodes = -(-count // GPUS_PER_NODE)
        read_rate = nodes * NODE_READ_GBPS * 1e9 / patch_bytes()  # images/s the nodes' disks deliver
        rate = min(compute_rate, read_rate)
        epoch_hours = SSL4EO["patches"] / rate / 3600
        workers = int(-(-per_gpu // store_tiles_per_worker))
        node_read = rate / nodes * patch_bytes() / 1e9
        limit = "the network (GPU compute)"
        if exposed > 0.1 * compute:
            limit = "gradient all-reduce across nodes"
        if workers > 12:
            limit = f"data loading ({workers} loader workers per GPU needed)"
        if read_rate < compute_rate:
            limit = (
                f"storage reads: the GPUs could take {compute_rate / nodes * patch_bytes() / 1e9:.0f} GB/s a "
                f"node, its disks give {NODE_READ_GBPS:.0f} (hold the store in RAM, shard it, or store "
                "224 px crops)"
            )
        rows.append(
            Projection(
                count,
                rate,
                epoch_hours,
                epoch_hours * SSL4EO["epochs"],
                epoch_hours * SSL4EO["epochs"] * count,
                workers,
                node_read,
                ring * 1e3,
                limit,
            )
        )
    return rows


def patch_bytes() -> int:
    """Bytes of one SSL4EO-S12 patch in the store (uint16, every band, the whole patch)."""
    return SSL4EO["bands"] * SSL4EO["size"] ** 2 * SSL4EO["bytes_per_value"]


def as_dicts(rows: list[Projection]) -> list[dict]:
    return [asdict(r) for r in rows]
