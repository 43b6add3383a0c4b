"""encoder.json is validated against its schema before anything is built from it: one line per
bad field, naming the field and what it must be."""

from __future__ import annotations

import json

import pytest

from rsssl.models.backbones import ConfigError, create_backbone
from rsssl.models.encoder_schema import schema_errors
from rsssl.models.export import load_encoder, save_encoder
from tests.helpers.encoders import TINY_META


def exported(tmp_path):
    save_encoder(create_backbone("test_resnet", in_chans=3), tmp_path, {**TINY_META, "method": "moco"})
    return tmp_path / "encoder.json"


def test_an_exported_encoder_meets_the_schema(tmp_path):
    meta = json.loads(exported(tmp_path).read_text())
    assert schema_errors(meta) == []
    load_encoder(tmp_path)


def test_every_bad_field_is_named_with_what_it_must_be(tmp_path):
    path = exported(tmp_path)
    meta = json.loads(path.read_text())
    del meta["timm_name"]
    meta |= {"in_chans": "3", "std": [500.0, 0.0, 500.0], "sha256": "abc", "seed": -1}
    meta["decoder"] = {"architecture": "deeplabv3plus", "config": {}, "sha256": "0" * 64}
    path.write_text(json.dumps(meta))
    with pytest.raises(ConfigError) as error:
        load_encoder(tmp_path)
    lines = [line.strip() for line in str(error.value).splitlines()]
    assert lines[1:7] == [
        "- timm_name is missing",
        '- in_chans must be an integer >= 1, got "3"',
        "- std must be a list of positive numbers, got [500.0, 0.0, 500.0]",
        "- seed must be an integer >= 0, got -1",
        '- sha256 must be 64 lower-case hex digits, got "abc"',
        "- decoder must be an object with a valid file, got " + json.dumps(meta["decoder"])[:80],
    ]
    assert lines[0].endswith("encoder.json does not describe an encoder rsssl can load:")
    assert "re-export the encoder with rsssl" in lines[-1]


def test_per_band_lists_must_have_one_entry_per_band():
    meta = {**TINY_META, "bands": ["red", "green"], "mean": [1.0, 2.0, 3.0, 4.0]}
    assert schema_errors(meta) == [
        "bands has 2 entries for in_chans=3: one per band",
        "mean has 4 entries for in_chans=3: one per band",
    ]


def test_a_file_that_is_not_a_json_object_is_refused_as_such(tmp_path):
    path = exported(tmp_path)
    path.write_text('{"timm_name": "test_resnet",\n "in_chans": 3,,}')  # the second comma: column 16
    with pytest.raises(ConfigError, match=r"encoder\.json is not valid JSON \(.* at line 2, column 16\)"):
        load_encoder(tmp_path)
    assert schema_errors(["timm_name"]) == ["the file holds a JSON list, not an object of fields"]
