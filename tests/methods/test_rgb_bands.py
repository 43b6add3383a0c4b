"""`data.rgb_bands` reaches the view maker of every method (issue 8 #5)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rsssl.cli import CONF_DIR
from rsssl.cli.pretrain import build_datamodule, build_method
from tests.helpers.methods import with_small_backbone

METHODS = sorted(p.stem for p in (Path(CONF_DIR) / "method").glob("*.yaml"))
SMALL = ["backbone=tiny", "data=synthetic", "data.source.size=64", "data.source.num_scenes=1"]


def built_method(tmp_path: Path, method: str, overrides: list[str]):
    small = with_small_backbone(method, SMALL)
    with initialize_config_dir(config_dir=str(Path(CONF_DIR).resolve()), version_base="1.3"):
        cfg = compose(
            "pretrain", [*small, f"method={method}", f"data.stats_cache_dir={tmp_path}", *overrides]
        )
    return build_method(cfg, build_datamodule(cfg.data))


@pytest.mark.parametrize("method", METHODS)
def test_rgb_bands_setting_reaches_the_view_maker(method, tmp_path):
    # 5 synthetic bands are unnamed (b1..b5): only the setting makes bands 3, 2, 1 the RGB ones
    named = built_method(tmp_path, method, ["data.num_bands=5", "data.rgb_bands=[b3,b2,b1]"])
    assert named.view_maker.rgb.tolist() == [2, 1, 0]
    if method == "colorization":  # its target is the colour: unknown RGB bands are refused, naming the fix
        with pytest.raises(Exception, match=r"name them with data.rgb_bands=\[<red>,<green>,<blue>\]"):
            built_method(tmp_path, method, ["data.num_bands=5"])
        return
    unnamed = built_method(tmp_path, method, ["data.num_bands=5"])
    assert unnamed.view_maker.rgb.tolist() == []
