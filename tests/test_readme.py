"""The README's adding-a-method example is the shipped SimCLR, which the method tests train."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from rsssl.methods.base import SSLMethod, StepOutput

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"### {title}\n")
    return text[start : text.index("\n## ", start)]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_adding_a_method_example_is_the_shipped_simclr():
    section = _section("Adding a pretext task")
    (python,) = _blocks(section, "python")
    (yaml,) = _blocks(section, "yaml")
    assert python == (ROOT / "rsssl/methods/simclr.py").read_text()
    assert yaml == "# conf/method/simclr.yaml\n" + (ROOT / "conf/method/simclr.yaml").read_text()


def test_the_contract_names_every_base_argument_and_step_output_field():
    section = _section("Adding a pretext task")
    arguments = [p for p in inspect.signature(SSLMethod.__init__).parameters if p != "self"]
    assert f"SSLMethod.__init__({', '.join(arguments)})" in section
    assert all(f"`{field.name}`" in section for field in dataclasses.fields(StepOutput))
