"""Tests for the gssproxy.conf INI reader and its merge rules (config/ini.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.config.ini import IniEntry, IniSection, merge_files, parse_ini
from gssproxy_py.errors import ConfigError


def entries(section: IniSection) -> list[tuple[str, str, int]]:
    return [(e.key, e.value, e.line) for e in section.entries]


def test_basic_sections_entries_and_locations() -> None:
    text = "[gssproxy]\ndebug = yes\n\n[service/nfs]\neuid = 0\nmechs = krb5\n"
    sections = parse_ini(text, "a.conf")
    assert [s.name for s in sections] == ["gssproxy", "service/nfs"]
    assert (sections[0].file, sections[0].line) == ("a.conf", 1)
    assert (sections[1].file, sections[1].line) == ("a.conf", 4)
    assert entries(sections[0]) == [("debug", "yes", 2)]
    assert entries(sections[1]) == [("euid", "0", 5), ("mechs", "krb5", 6)]
    assert sections[1].entries[0] == IniEntry("euid", "0", "a.conf", 5)
    assert sections[1].entries[0].where == "a.conf:5"
    assert sections[0].is_global and sections[0].service_name is None
    assert not sections[1].is_global and sections[1].service_name == "nfs"


def test_comments_whitespace_and_hash_inside_value() -> None:
    text = (
        "# leading comment\n"
        "; semicolon comment\n"
        "   # indented comment\n"
        "\t;indented semicolon\n"
        "  [ service/x ]  \n"
        "   worker threads   =   7   \n"
        "cred_store = keytab:/etc/a#b.keytab  # not a comment\n"
        "program = /usr/bin/x ; still value\n"
        "empty =\n"
        "eq = a=b=c\n"
    )
    (section,) = parse_ini(text, "f")
    assert section.name == "service/x"
    assert section.line == 5
    assert entries(section) == [
        ("worker threads", "7", 6),
        ("cred_store", "keytab:/etc/a#b.keytab  # not a comment", 7),
        ("program", "/usr/bin/x ; still value", 8),
        ("empty", "", 9),
        ("eq", "a=b=c", 10),
    ]


def test_crlf_and_bom() -> None:
    text = "\ufeff[gssproxy]\r\ndebug = 1\r\n"
    (section,) = parse_ini(text, "f")
    assert entries(section) == [("debug", "1", 2)]


def test_form_feed_is_not_a_line_break() -> None:
    (section,) = parse_ini("[gssproxy]\nkey = a\x0cb\n", "f")
    assert entries(section) == [("key", "a\x0cb", 2)]


def test_repeated_section_merges_into_first_within_a_file() -> None:
    text = (
        "[service/a]\n"  # 1
        "cred_store = keytab:/k\n"  # 2
        "[service/b]\n"  # 3
        "euid = 1\n"  # 4
        "[service/a]\n"  # 5
        "cred_store = ccache:/c\n"  # 6
        "euid = 0\n"  # 7
    )
    sections = parse_ini(text, "f")
    assert [s.name for s in sections] == ["service/a", "service/b"]
    a = sections[0]
    assert a.line == 1
    assert entries(a) == [
        ("cred_store", "keytab:/k", 2),
        ("cred_store", "ccache:/c", 6),
        ("euid", "0", 7),
    ]
    assert [e.value for e in a.get("cred_store")] == ["keytab:/k", "ccache:/c"]
    assert a.get("missing") == ()
    assert a.option_names() == ("cred_store", "euid")


def test_empty_file_and_comment_only_file() -> None:
    assert parse_ini("", "f") == ()
    assert parse_ini("# nothing\n\n; here\n", "f") == ()


def test_empty_section_is_kept() -> None:
    (section,) = parse_ini("[service/x]\n", "f")
    assert section == IniSection("service/x", "f", 1, ())


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("[gssproxy]\n[other]\n", 2, "unknown section [other]"),
        ("[Gssproxy]\n", 1, "unknown section [Gssproxy]"),
        ("[services/x]\n", 1, "unknown section [services/x]"),
        ("\n[service/]\n", 2, "empty service name"),
        ("[service/   ]\n", 1, "empty service name"),
        ("[gssproxy\n", 1, "missing ']'"),
        ("[gssproxy]\njust words\n", 2, "expected 'key = value'"),
        ("[gssproxy]\n\n\n= value\n", 4, "missing option name"),
        ("[gssproxy]\nkey = a\0b\n", 2, "NUL byte"),
    ],
)
def test_syntax_errors_name_file_and_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_ini(text, "bad.conf")
    assert info.value.file == "bad.conf"
    assert info.value.line == line
    assert fragment in info.value.message
    assert str(info.value).startswith(f"bad.conf:{line}: ")


def test_option_outside_section_names_option() -> None:
    with pytest.raises(ConfigError) as info:
        parse_ini("# c\neuid = 0\n[service/x]\n", "bad.conf")
    assert str(info.value) == "bad.conf:2: option 'euid': option outside any section"


def test_merge_files_first_wins_with_warning() -> None:
    first = parse_ini("[gssproxy]\ndebug = 1\n[service/a]\neuid = 0\n", "main.conf")
    second = parse_ini("\n[service/b]\neuid = 2\n[service/a]\neuid = 1\n", "10-x.conf")
    third = parse_ini("[gssproxy]\ndebug = 0\n", "20-y.conf")
    sections, warnings = merge_files([first, second, third])
    assert [(s.name, s.file) for s in sections] == [
        ("gssproxy", "main.conf"),
        ("service/a", "main.conf"),
        ("service/b", "10-x.conf"),
    ]
    assert entries(sections[1]) == [("euid", "0", 4)]
    assert warnings == (
        "10-x.conf:4: section [service/a] is already defined at main.conf:3; "
        "ignoring this definition (the first file wins)",
        "20-y.conf:1: section [gssproxy] is already defined at main.conf:1; "
        "ignoring this definition (the first file wins)",
    )


def test_merge_files_nothing() -> None:
    assert merge_files([]) == ((), ())


_key = st.from_regex(r"[a-z][a-z_ ]{0,10}[a-z]", fullmatch=True)
_value = st.from_regex(r"[!-~]([ -~]{0,20}[!-~])?", fullmatch=True)
_name = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)


@given(
    st.lists(
        st.tuples(_name, st.lists(st.tuples(_key, _value), max_size=5)),
        max_size=6,
    )
)
def test_roundtrip_render_then_parse(spec: list[tuple[str, list[tuple[str, str]]]]) -> None:
    lines: list[str] = []
    expected: dict[str, list[tuple[str, str, int]]] = {}
    for name, items in spec:
        lines.append(f"[service/{name}]")
        bucket = expected.setdefault(f"service/{name}", [])
        for key, value in items:
            lines.append(f"  {key} = {value}")
            bucket.append((key, value, len(lines)))
        lines.append("# comment")
    sections = parse_ini("\n".join(lines) + "\n", "gen")
    assert [s.name for s in sections] == list(expected)
    for section in sections:
        assert entries(section) == expected[section.name]
