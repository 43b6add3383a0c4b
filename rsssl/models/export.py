"""Encoder export: `encoder.safetensors` (timm state dict) + `encoder.json` (how to use it).

Everything downstream (evaluation, fine-tuning, other libraries) loads only these two files.
Loading never unpickles. The JSON records the weights' sha256 so a mismatched pair is caught.
A method that pretrains a dense network (GLCNet) also writes `decoder.safetensors` beside them:
everything of its DeepLabv3+ but the encoder, described under `decoder` in `encoder.json`
(architecture, constructor settings, sha256); the encoder file stays a plain timm state dict.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from rsssl.data.bands import canonical_band_name
from rsssl.models.backbones import ConfigError, create_backbone, load_state_dict_file, load_weights
from rsssl.models.dense import DECODER_ARCHITECTURE, DeepLabV3Plus
from rsssl.models.encoder_schema import parse_encoder_meta

WEIGHTS_NAME = "encoder.safetensors"
META_NAME = "encoder.json"
DECODER_NAME = "decoder.safetensors"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_encoder(
    backbone: nn.Module, folder: str | Path, meta: dict, decoder: DeepLabV3Plus | None = None
) -> Path:
    """Write the files atomically into `folder` (`encoder.json` last); returns the weights path.

    `meta` must hold at least `timm_name`, `in_chans`, `bands`, `mean`, `std`, `method`. With
    `decoder` (a DeepLabV3Plus on `backbone`), its non-encoder weights go to `decoder.safetensors`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights, tmp_weights = folder / WEIGHTS_NAME, folder / (WEIGHTS_NAME + ".tmp")
    save_file(_cpu_copy(backbone.state_dict()), str(tmp_weights))
    record = dict(
        meta, num_features=int(getattr(backbone, "num_features", 0)), sha256=file_sha256(tmp_weights)
    )
    if decoder is not None:
        tmp_decoder = folder / (DECODER_NAME + ".tmp")
        save_file(_cpu_copy(decoder.decoder_state_dict()), str(tmp_decoder))
        record["decoder"] = {
            "architecture": DECODER_ARCHITECTURE,
            "file": DECODER_NAME,
            "config": dict(decoder.config),
            "sha256": file_sha256(tmp_decoder),
        }
        os.replace(tmp_decoder, folder / DECODER_NAME)
    tmp_meta = folder / (META_NAME + ".tmp")
    tmp_meta.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp_weights, weights)
    os.replace(tmp_meta, folder / META_NAME)
    return weights


class PretrainedDecoder(NamedTuple):
    """An exported decoder: DeepLabV3Plus constructor settings and its non-encoder state dict."""

    config: dict
    state: dict[str, torch.Tensor]
    sha256: str


def load_decoder(meta: dict) -> PretrainedDecoder | None:
    """The decoder an encoder was exported with (`read_encoder_meta`'s meta), None without one.

    The file is checked against the sha256 in `encoder.json`, as the encoder's is."""
    record = meta.get("decoder")
    if not record:
        return None
    path = Path(meta["weights_path"]).with_name(record["file"])
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: {META_NAME} says the encoder was exported with a decoder; copy "
            f"{record['file']} from the run folder beside {WEIGHTS_NAME}"
        )
    if record.get("sha256") and record["sha256"] != file_sha256(path):
        raise ConfigError(
            f"{path} is not the decoder {META_NAME} describes (sha256 differs): copy the files of one run"
        )
    if record.get("architecture") != DECODER_ARCHITECTURE:
        raise ConfigError(
            f"{path}: decoder architecture {record.get('architecture')!r} is unknown; this rsssl reads "
            f"{DECODER_ARCHITECTURE!r}"
        )
    return PretrainedDecoder(dict(record["config"]), load_state_dict_file(path), record.get("sha256", ""))


def read_encoder_meta(weights_path: str | Path) -> dict:
    """The `encoder.json` beside a weights file, checked against the weights it describes."""
    weights_path = Path(weights_path).expanduser()
    if weights_path.is_dir():
        weights_path = weights_path / WEIGHTS_NAME
    if not weights_path.is_file():
        raise ConfigError(
            f"encoder file {weights_path} does not exist: give the encoder.safetensors of a pretraining run"
        )
    if is_torch_checkpoint(weights_path):
        raise ConfigError(checkpoint_advice(weights_path))
    meta_path = weights_path.with_name(META_NAME)
    if not meta_path.is_file():
        raise ConfigError(f"{meta_path} is missing: an exported encoder is two files, keep them together")
    meta = parse_encoder_meta(meta_path)
    if meta.get("sha256") and meta["sha256"] != file_sha256(weights_path):
        raise ConfigError(
            f"{meta_path} does not describe {weights_path} (sha256 differs): the two files come from "
            "different runs; copy both files from the same run folder"
        )
    meta["weights_path"] = str(weights_path)
    return meta


def is_torch_checkpoint(path: Path) -> bool:
    """Whether `path` is what torch.save / Lightning write (a `.ckpt`, or a zip archive), not an
    exported encoder: told by its suffix and first bytes, so an untrusted pickle is never loaded."""
    with open(path, "rb") as handle:
        return path.suffix == ".ckpt" or handle.read(4) == b"PK\x03\x04"


def checkpoint_advice(path: Path) -> str:
    """What to pass instead of a training checkpoint: its run's export, or how to get one."""
    problem = f"{path} is a training checkpoint (Lightning / torch.save), not an exported encoder"
    exported = path.with_name(WEIGHTS_NAME)
    if exported.is_file() and exported.with_name(META_NAME).is_file():
        return f"{problem}: evaluate the encoder its run exported, encoder={exported}"
    return (
        f"{problem}, and its folder has no {WEIGHTS_NAME} (rsssl-pretrain exports it when training ends): "
        f"finish the run with `{resume_command(path)}` (it writes a new run folder; this one stays as it "
        f"is), then pass that folder's {WEIGHTS_NAME}"
    )


def resume_command(checkpoint: Path) -> str:
    """The rsssl-pretrain command that continues a run from `checkpoint`, with the run's own
    overrides (Hydra's `.hydra/overrides.yaml` beside it) when they are there."""
    recorded = checkpoint.parent / ".hydra" / "overrides.yaml"
    resume = shlex.quote(f"resume={checkpoint}")
    if not recorded.is_file():
        return f"rsssl-pretrain <the run's overrides> {resume}"
    kept = [str(o) for o in OmegaConf.load(recorded) if not str(o).startswith("resume=")]
    return f"{shlex.join(['rsssl-pretrain', *kept])} {resume}"


def backbone_like(meta: dict, seed: int | None = None) -> nn.Module:
    """A freshly initialised backbone of an exported encoder's architecture and band count
    (the random-init baseline); `seed` makes its initialisation reproducible."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_backbone(meta["timm_name"], in_chans=int(meta["in_chans"]), **meta.get("timm_kwargs", {}))


def load_encoder(weights_path: str | Path) -> tuple[nn.Module, dict]:
    """A timm backbone with the exported weights, and its metadata."""
    meta = read_encoder_meta(weights_path)
    model = backbone_like(meta)
    state = load_state_dict_file(meta["weights_path"])
    load_weights(model, state, meta["weights_path"], meta["timm_name"], int(meta["in_chans"]))
    return model, meta


_GENERIC = re.compile(r"b\d+", re.IGNORECASE)
#: data whose band means differ from the pretraining means by more than this factor is in other units
SCALE_FACTOR = 4.0


def _is_generic(name: str) -> bool:
    """A name that says nothing about the band: `b1`..`bN` of unnamed files, or a sensor's bare
    number (Landsat `B4`) that no preset resolved."""
    return _GENERIC.fullmatch(name) is not None


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names)


def check_band_count(meta: dict, data_bands: int | Sequence[str], where: str = "the data") -> None:
    """The data must have as many bands as the encoder; the error gives a fix that can work."""
    encoder, expected = list(meta["bands"]), int(meta["in_chans"])
    count = data_bands if isinstance(data_bands, int) else len(data_bands)
    if count == expected:
        return
    have = "" if isinstance(data_bands, int) else f" ({_listed(data_bands)})"
    problem = (
        f"the encoder was trained on {expected} bands ({_listed(encoder)}) but {where} has {count}{have}"
    )
    named = [] if isinstance(data_bands, int) else [canonical_band_name(b) for b in data_bands]
    missing = [b for b in map(canonical_band_name, encoder) if not _is_generic(b) and b not in named]
    checkable = named and not any(map(_is_generic, named))
    if count > expected:
        raise ConfigError(f"{problem}: {_selection_fix(encoder, data_bands, missing, bool(checkable))}")
    lacks = f"; it lacks {_listed(missing)}" if checkable and missing else ""
    raise ConfigError(
        f"{problem}{lacks}: an encoder cannot run on fewer bands than it was trained on. Evaluate it on "
        f"data that has its bands, or pretrain an encoder on the data's {count} bands"
    )


def _selection_fix(
    encoder: list[str], data_bands: int | Sequence[str], missing: list[str], checkable: bool
) -> str:
    """The fix for data with more bands than the encoder: a `data.bands` selection of the encoder's
    bands only where the data's names hold them all (`missing`: the named encoder bands they lack;
    `checkable`: no data name is generic, so what is missing is known to be absent)."""
    count = data_bands if isinstance(data_bands, int) else len(data_bands)
    other = f"or use an encoder trained on these {count} bands"
    if isinstance(data_bands, int) or not (missing or any(map(_is_generic, encoder))):
        selection = f"data.bands=[{','.join(encoder)}]"
        return f"select the encoder's {len(encoder)} bands, in its order, with {selection} ({other})"
    if missing and checkable:
        return f"it lacks {_listed(missing)}: evaluate on data that has the encoder's bands, {other}"
    return (
        f"generic names (b1..bN) cannot tell which of them are the encoder's ({_listed(encoder)}): select "
        f"{len(encoder)} of them, in the encoder's order, by the data's names ({_listed(data_bands)}) with "
        "data.bands=[...], or name the data's bands (data.band_names / data.band_preset) to have them "
        f"matched ({other})"
    )


@dataclass(frozen=True)
class BandMatch:
    """How evaluation data meets an encoder: `order` holds the data positions of the encoder's
    bands (None: use the data as it is); `note` is what the user must be told, if anything."""

    order: tuple[int, ...] | None
    note: str | None


def match_encoder_bands(meta: dict, data_bands: Sequence[str], where: str = "the data") -> BandMatch:
    """Compare the data's band names with the encoder's (`encoder.json`), by canonical name.

    The same names in the same order pass; the same names in another order are reordered to the
    encoder's (and said); a count mismatch or other names fail with the fix; generic names
    (b1..bN) cannot be checked, so they only warn, and the order is kept.
    """
    encoder = [canonical_band_name(b) for b in meta["bands"]]
    data = [canonical_band_name(b) for b in data_bands]
    if data == encoder:
        return BandMatch(None, None)
    generic = any(map(_is_generic, encoder + data))
    if not generic and sorted(data) == sorted(encoder):
        order = tuple(data.index(b) for b in encoder)
        before, after = _listed(data_bands), _listed(meta["bands"])
        return BandMatch(order, f"{where}: bands reordered from ({before}) to the encoder's order ({after})")
    check_band_count(meta, data_bands, where)
    clash = [
        (e, d)
        for e, d in zip(encoder, data, strict=True)
        if e != d and not (_is_generic(e) or _is_generic(d))
    ]
    if generic and not clash:
        return BandMatch(
            None,
            f"warning: {where}: its bands ({_listed(data_bands)}) cannot be checked against the encoder's "
            f"({_listed(meta['bands'])}) because generic names (b1..bN) say nothing about the band; they are "
            "used in this order. Name the bands (data.band_names / data.band_preset) to have them checked",
        )
    missing = [b for b in encoder if not _is_generic(b) and b not in data]
    problem = (
        f"{where} lacks {_listed(missing)}"
        if missing
        else "its named bands sit elsewhere and its generic names (b1..bN) keep it from being reordered"
    )
    raise ConfigError(
        f"{where} has bands {_listed(data_bands)} but the encoder was trained on {_listed(meta['bands'])}: "
        f"{problem}. Evaluate on data from the encoder's sensor or, if these are the same bands under other "
        "names, name them with data.band_names / data.band_preset"
    )


def pixel_scale_warning(
    meta: dict, dtype: str | np.dtype, band_means: Sequence[float], where: str
) -> str | None:
    """A warning when the data's pixels are not in the units the encoder was pretrained on.

    Compares the pixel type with `encoder.json`'s `dtype` (when recorded) and the data's per-band
    means (in the encoder's band order) with its pretraining means: a median ratio beyond
    `SCALE_FACTOR` either way means other units (uint8 vs reflectance x 10000, ...)."""
    problems = []
    if meta.get("dtype") and np.dtype(meta["dtype"]) != np.dtype(dtype):
        problems.append(f"it has {np.dtype(dtype)} pixels, the encoder was pretrained on {meta['dtype']}")
    ratios = [m / e for m, e in zip(band_means, meta["mean"], strict=True) if e > 0]
    ratio = float(np.median(ratios)) if ratios else 1.0
    if not 1 / SCALE_FACTOR <= ratio <= SCALE_FACTOR:
        problems.append(
            f"its band means are {ratio:.2g} times the encoder's pretraining means "
            f"({meta['bands'][0]} mean {band_means[0]:.4g} here, {meta['mean'][0]:.4g} in pretraining)"
        )
    if not problems:
        return None
    return (
        f"warning: pixel scale of {where}: {'; '.join(problems)}. The encoder normalises with its "
        "pretraining statistics, so its features on pixels in other units mean little: evaluate on data in "
        "the same units (product level, bit depth, scaling), or rescale the data first"
    )


def normalisation_tensors(
    meta: dict, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(meta["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return mean, std
