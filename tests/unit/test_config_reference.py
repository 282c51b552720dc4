"""The option table (config/options.OPTIONS) against the model, the parser and docs/CONFIG.md.

Each row must fill model fields that exist, every model field must be filled by
a row, each row's example must load, each shown default must parse back to the
model's default, and docs/CONFIG.md must hold exactly what the table renders.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import GlobalSettings, Service
from gssproxy_py.config.options import OPTIONS, Option, Section, Source
from gssproxy_py.config.reference import BEGIN, END, render, splice

CONFIG_MD = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
BASE = "[service/s]\nmechs = krb5\neuid = 0\n"
# Model fields no option fills: where the section is, its name, where options were set.
NOT_OPTIONS = {"name", "file", "line", "origins"}


def load_with(option: Option, value: str) -> Any:
    """The model fields `option` fills after loading `option = value`."""
    line = f"{option.name} = {value}\n"
    if option.section is Section.GLOBAL:
        config = load_config_text("[gssproxy]\n" + line + BASE, "t.conf")
        model: Any = config.globals
    else:
        # A required option replaces its line in the base section.
        body = {
            "euid": "[service/s]\nmechs = krb5\n",
            "mechs": "[service/s]\neuid = 0\n",
        }.get(option.name, BASE)
        config = load_config_text(body + line, "t.conf")
        model = config.services[0]
    found = tuple(getattr(model, t) for t in option.targets)
    return found[0] if len(found) == 1 else found


def test_docs_config_md_is_the_rendered_table() -> None:
    text = CONFIG_MD.read_text()
    assert BEGIN in text and END in text
    assert splice(text) == text, (
        "docs/CONFIG.md differs from the option table; "
        "run python -m gssproxy_py.config.reference --write docs/CONFIG.md"
    )


def test_every_option_is_in_the_reference() -> None:
    block = render()
    for option in OPTIONS:
        assert f"### `{option.name}`" in block
        assert f"{option.name} = {option.example}" in block


def test_names_are_unique_and_the_sections_disjoint() -> None:
    names = [(o.section, o.name) for o in OPTIONS]
    assert len(names) == len(set(names))
    glob = {o.name for o in OPTIONS if o.section is Section.GLOBAL}
    svc = {o.name for o in OPTIONS if o.section is Section.SERVICE}
    assert not glob & svc


@pytest.mark.parametrize(
    ("section", "model"), [(Section.GLOBAL, GlobalSettings), (Section.SERVICE, Service)]
)
def test_rows_fill_exactly_the_model_fields(section: Section, model: type[Any]) -> None:
    filled = {t for o in OPTIONS if o.section is section for t in o.targets}
    fields = {f.name for f in dataclasses.fields(model)} - NOT_OPTIONS
    assert filled == fields


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_example_loads(option: Option) -> None:
    load_with(option, option.example)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_shown_default_parses_back_to_the_model_default(option: Option) -> None:
    text = option.default_text()
    if text.startswith("("):
        # No value to write: required, unset (None) or empty.
        assert option.required or option.multi or option.default() in (None, 0, ((), False))
        return
    assert load_with(option, text) == option.default()


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_c_differences_for_check_config(option: Option) -> None:
    notes = option.c_differences()
    if option.source is Source.GSSPROXY_PY:
        assert notes == ("does not know this option and ignores it",)
    elif option.kind.name == "boolean":
        assert any("as false" in n for n in notes)
    if option.source is Source.GSSPROXY and not option.multi:
        assert any("first value" in n for n in notes)
