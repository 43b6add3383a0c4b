"""rsssl-prepare: decode a data source once into a memory-mapped tile store (`rsssl.data.store`).

rsssl-prepare data=geotiff data.root=/data/s2_tifs out=stores/s2
rsssl-pretrain data=store data.root=stores/s2 method=moco
"""

from __future__ import annotations

import sys
import time

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from rsssl.cli import CONF_DIR
from rsssl.cli.checks import refuse_bad_command_line
from rsssl.data.scene import DataError
from rsssl.data.store import prepare_store
from rsssl.models.backbones import ConfigError


@refuse_bad_command_line("rsssl-prepare", "prepare")
@hydra.main(config_path=CONF_DIR, config_name="prepare", version_base="1.3")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    try:
        if cfg.data.name == "store":
            raise ConfigError("data=store is a prepared store already: prepare from the data it came from")
        manifest = prepare_store(instantiate(cfg.data.source), cfg.out, overwrite=bool(cfg.overwrite))
    except (DataError, ConfigError) as error:
        print(f"rsssl-prepare: error: {error}", file=sys.stderr)
        sys.exit(2)
    scenes = manifest["scenes"]
    pixels = sum(s["shape"][0] * s["shape"][2] * s["shape"][3] for s in scenes)
    print(
        f"rsssl-prepare: {len(scenes)} scenes ({pixels / 1e6:.1f} Mpx of {len(scenes[0]['bands'])} bands) "
        f"in {cfg.out}, {time.perf_counter() - start:.1f} s; train with data=store data.root={cfg.out}"
    )


if __name__ == "__main__":
    main()
