"""Hydra entry points. Configs live in the repository's top-level `conf/` folder."""

from pathlib import Path

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
