"""The schema of `encoder.json`: every field an exported encoder's metadata may hold, checked
before anything is built from it, with one clear line per bad field.

Required: `timm_name`, `in_chans`, `bands`, `mean`, `std` (what building and normalising need).
Every other known field is checked when present; unknown fields are kept (a newer rsssl may add
some). A file that is not JSON, or not a JSON object, is refused as such.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rsssl.models.backbones import ConfigError

SHA256 = re.compile(r"[0-9a-f]{64}")


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "a non-empty string"


def _count(minimum: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            return None
        return f"an integer >= {minimum}"

    return check


def _texts(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) and v for v in value)
    return None if ok else "a list of non-empty strings"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value  # not NaN


def _numbers(value: Any) -> str | None:
    return None if isinstance(value, list) and all(_number(v) for v in value) else "a list of numbers"


def _positive_numbers(value: Any) -> str | None:
    ok = isinstance(value, list) and all(_number(v) and v > 0 for v in value)
    return None if ok else "a list of positive numbers"


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else "a JSON object"


def _sha256(value: Any) -> str | None:
    return None if isinstance(value, str) and SHA256.fullmatch(value) else "64 lower-case hex digits"


def _decoder(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "a JSON object (architecture, file, config, sha256)"
    wrong = [k for k, check in DECODER_FIELDS.items() if k not in value or check(value[k]) is not None]
    return f"an object with a valid {', '.join(wrong)}" if wrong else None


#: field -> check (None when the value is fine, else what it must be)
REQUIRED: dict[str, Callable[[Any], str | None]] = {
    "timm_name": _text,
    "in_chans": _count(1),
    "bands": _texts,
    "mean": _numbers,
    "std": _positive_numbers,
}
OPTIONAL: dict[str, Callable[[Any], str | None]] = {
    "timm_kwargs": _mapping,
    "method": _text,
    "config_hash": _text,
    "config": _mapping,
    "seed": _count(0),
    "run_dir": _text,
    "run_id": _text,
    "data": _text,
    "tile_size": _count(1),
    "dtype": _text,
    "num_features": _count(0),
    "sha256": _sha256,
    "decoder": _decoder,
}
DECODER_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "architecture": _text,
    "file": _text,
    "config": _mapping,
    "sha256": _sha256,
}
PER_BAND = ("bands", "mean", "std")


def schema_errors(meta: Any) -> list[str]:
    """One line per field of `meta` that breaks the schema (empty: it is valid)."""
    if not isinstance(meta, dict):
        return [f"the file holds a JSON {type(meta).__name__}, not an object of fields"]
    errors = [f"{name} is missing" for name in REQUIRED if name not in meta]
    for name, check in {**REQUIRED, **OPTIONAL}.items():
        if name in meta and (wanted := check(meta[name])) is not None:
            errors.append(f"{name} must be {wanted}, got {json.dumps(meta[name])[:80]}")
    in_chans = meta.get("in_chans")
    if REQUIRED["in_chans"](in_chans) is None:
        for name in PER_BAND:
            value = meta.get(name)
            if isinstance(value, list) and len(value) != in_chans:
                errors.append(f"{name} has {len(value)} entries for in_chans={in_chans}: one per band")
    return errors


def parse_encoder_meta(path: Path) -> dict:
    """`encoder.json` read and validated; a ConfigError names every bad field and the fix."""
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
            "copy encoder.json again from the run folder, or re-export the encoder with rsssl"
        ) from error
    errors = schema_errors(meta)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(
            f"{path} does not describe an encoder rsssl can load:\n{lines}\n"
            "copy encoder.json again from the run folder, or re-export the encoder with rsssl"
        )
    return meta
