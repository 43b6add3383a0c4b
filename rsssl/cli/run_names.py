"""The data part of a run name: runs on different folders, files or bands never share a name.

`conf/pretrain.yaml` names a run `${method.name}_${backbone.name}_${data_id:${data}}`, e.g.
`moco_resnet18_geotiff-landsat8-3fa2c1`: the data config's `name`, a readable slug of the folder
or file it reads (when it reads one) and a short hash of the settings that change which pixels
a tile holds. The hash covers the data's `source` node (what is read and how: paths, bands, band
preset, nodata, resampling, generator settings), plus `bands`, `tile_size` and `tile_units`;
paths count as the absolute path they name, however they are spelled. Batch size, workers,
caches and `min_valid` do not change a tile, so they do not change the name.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

PATH_KEYS = ("root", "path", "paths")
PIXEL_KEYS = ("bands", "tile_size", "tile_units")
SLUG_CHARS = 32


def _paths(data: dict) -> list[str]:
    """The folders or files the data reads: its source's root/path/paths, else its own."""
    for node in (data.get("source") or {}, data):
        for key in PATH_KEYS:
            value = node.get(key)
            if value:
                return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def _absolute(value):
    """A path setting as the absolute path it names (a list element-wise)."""
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return str(Path(str(value)).expanduser().resolve())


def _with_absolute_paths(node: dict, keys: Iterable[str]) -> dict:
    """The `keys` of `node` it has, its path settings made absolute."""
    return {k: _absolute(node[k]) if k in PATH_KEYS and node[k] else node[k] for k in keys if k in node}


def pixel_settings(data: dict) -> dict:
    """The settings of a resolved data config that change the pixels of a tile."""
    source = data.get("source") or {}
    return {
        "source": _with_absolute_paths(source, [k for k in source if not k.endswith("cache_dir")]),
        **_with_absolute_paths(data, (*PATH_KEYS, *PIXEL_KEYS)),
    }


def slug(paths: list[str]) -> str:
    """A short readable name for the folders/files: their names (files without suffix) joined by +."""
    names = []
    for given in paths:
        path = Path(_absolute(given))
        names.append(path.stem if path.is_file() else path.name)
    text = "+".join(re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-.") for name in names)
    return text[:SLUG_CHARS].rstrip("-.+")


def data_identity(data: DictConfig) -> str:
    """`<data.name>[-<slug>]-<hash>`; just `<data.name>` while a required setting is unset (`???`),
    so composing the run folder never fails before the run can say which setting is missing."""
    try:
        resolved = OmegaConf.to_container(data, resolve=True, throw_on_missing=True)
    except (MissingMandatoryValue, InterpolationToMissingValueError):
        return str(data.name)
    digest = hashlib.sha256(json.dumps(pixel_settings(resolved), sort_keys=True, default=str).encode())
    parts = [str(resolved["name"]), slug(_paths(resolved)), digest.hexdigest()[:6]]
    return "-".join(p for p in parts if p)


def register_resolvers() -> None:
    """Make `${data_id:${data}}` available to the configs (before Hydra composes them)."""
    OmegaConf.register_new_resolver("data_id", data_identity, replace=True)
