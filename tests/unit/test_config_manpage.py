"""gssproxy-py.conf(5) lists every option of the table, as `make docs` writes it."""

from __future__ import annotations

from pathlib import Path

from gssproxy_py.config import manpage
from gssproxy_py.config.options import OPTIONS, REMOVED_OPTIONS

PAGE = Path(__file__).resolve().parents[2] / "man" / "gssproxy-py.conf.5"


def test_the_page_is_what_the_table_renders() -> None:
    text = PAGE.read_text()
    assert manpage.splice(text) == text, "man/gssproxy-py.conf.5 is stale: run make docs"


def test_every_option_has_an_entry() -> None:
    block = manpage.render()
    for option in OPTIONS:
        assert f'.B "{option.name}"' in block
    for name in REMOVED_OPTIONS:
        assert f".B {name}" in block


def test_roff_control_characters_are_escaped() -> None:
    assert manpage._text(".hidden") == "\\&.hidden"
    assert manpage._text("a\\b") == "a\\eb"
