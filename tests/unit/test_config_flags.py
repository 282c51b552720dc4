"""Tests for filter_flags / enforce_flags parsing (config/flags.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.config.flags import (
    DEFAULT_ENFORCE_FLAGS,
    DEFAULT_FILTER_FLAGS,
    GssFlag,
    format_flags,
    parse_flags,
)
from gssproxy_py.errors import ConfigError


def test_flag_values_are_the_gss_bits() -> None:
    assert {f.name: int(f) for f in GssFlag} == {
        "DELEGATE": 1,
        "MUTUAL_AUTH": 2,
        "REPLAY_DETECT": 4,
        "SEQUENCE": 8,
        "CONFIDENTIALITY": 16,
        "INTEGRITY": 32,
        "ANONYMOUS": 64,
    }
    assert DEFAULT_FILTER_FLAGS == 1
    assert DEFAULT_ENFORCE_FLAGS == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DELEGATE", 1),
        ("MUTUAL_AUTH", 2),
        ("REPLAY_DETECT", 4),
        ("SEQUENCE", 8),
        ("CONFIDENTIALITY", 16),
        ("INTEGRITY", 32),
        ("INTEGRITIY", 32),
        ("ANONYMOUS", 64),
        ("delegate", 1),
        ("Integritiy", 32),
        ("5", 5),
        ("256", 256),
        ("0x100", 256),
        ("0X1f", 31),
        ("4294967295", 0xFFFFFFFF),
        ("0xffffffff", 0xFFFFFFFF),
    ],
)
def test_each_name_adds_and_removes(name: str, value: int) -> None:
    assert parse_flags(f"+{name}", 0) == value
    assert parse_flags(f"-{name}", 0xFFFFFFFF) == 0xFFFFFFFF & ~value


def test_minus_delegate_from_default_is_zero() -> None:
    assert parse_flags("-DELEGATE", DEFAULT_FILTER_FLAGS) == 0


def test_lists_apply_left_to_right_with_commas_and_whitespace() -> None:
    assert parse_flags("+MUTUAL_AUTH, +SEQUENCE", 0) == 10
    assert parse_flags("+MUTUAL_AUTH,+SEQUENCE\t+CONFIDENTIALITY", 1) == 27
    assert parse_flags(" +DELEGATE -DELEGATE ", 0) == 0
    assert parse_flags("-DELEGATE +DELEGATE", 0) == 1
    assert parse_flags("+0x6 -REPLAY_DETECT", 0) == 2
    assert parse_flags(",,+ANONYMOUS,,", 0) == 64


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("DELEGATE", "must start with '+' or '-'"),
        ("+DELEGATE MUTUAL_AUTH", "'MUTUAL_AUTH' must start with '+' or '-'"),
        ("+FOO", "unknown flag '+FOO'"),
        ("+INTEGRITYY", "unknown flag"),
        ("+", "has no name"),
        ("-", "has no name"),
        ("+0", "must be non-zero"),
        ("+010", "leading 0"),
        ("+0x0", "between 1 and 0xffffffff"),
        ("+0x100000000", "between 1 and 0xffffffff"),
        ("+4294967296", "between 1 and 0xffffffff"),
        ("+-1", "unknown flag"),
        ("+1.5", "unknown flag"),
        ("", "empty flag list"),
        (" , ", "empty flag list"),
    ],
)
def test_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_flags(text, 1)
    assert fragment in info.value.message


def test_format_flags() -> None:
    assert format_flags(0) == "0"
    assert format_flags(1) == "DELEGATE"
    assert format_flags(1 | 32 | 0x100) == "DELEGATE|INTEGRITY|0x100"


_items = st.lists(
    st.tuples(st.sampled_from("+-"), st.sampled_from([*GssFlag.__members__, "INTEGRITIY"])),
    min_size=1,
    max_size=10,
)


@given(_items, st.integers(min_value=0, max_value=127), st.sampled_from([",", " ", ", ", "\t"]))
def test_matches_a_simple_fold(items: list[tuple[str, str]], initial: int, sep: str) -> None:
    text = sep.join(sign + name for sign, name in items)
    expected = initial
    for sign, name in items:
        bit = 32 if name == "INTEGRITIY" else GssFlag[name].value
        expected = expected | bit if sign == "+" else expected & ~bit
    assert parse_flags(text, initial) == expected
