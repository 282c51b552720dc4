"""Tests for %U / %u / %% expansion in cred_store values (config/expand.py)."""

from __future__ import annotations

import os
import pwd
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.config.expand import (
    UnknownUserError,
    check_template,
    expand_cred_store,
    expand_cred_store_value,
)
from gssproxy_py.errors import ConfigError, LocalError


def _unknown_uid() -> int:
    for uid in range(3_999_999_999, 3_999_999_899, -1):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    pytest.skip("no unused uid found")


def test_uid_number() -> None:
    assert expand_cred_store_value("FILE:/var/lib/gssproxy/clients/krb5cc_%U", 1234) == (
        "FILE:/var/lib/gssproxy/clients/krb5cc_1234"
    )
    assert expand_cred_store_value("%U%U", 0) == "00"


def test_user_name_from_pwd() -> None:
    me = pwd.getpwuid(os.getuid())
    assert expand_cred_store_value("/home/%u/%U.keytab", me.pw_uid) == (
        f"/home/{me.pw_name}/{me.pw_uid}.keytab"
    )
    root = pwd.getpwuid(0).pw_name
    assert expand_cred_store_value("%u:%u", 0) == f"{root}:{root}"


def test_percent_escape() -> None:
    assert expand_cred_store_value("100%%", 5) == "100%"
    assert expand_cred_store_value("%%U", 5) == "%U"
    assert expand_cred_store_value("%%%U", 5) == "%5"
    assert expand_cred_store_value("no escapes", 5) == "no escapes"
    assert expand_cred_store_value("", 5) == ""


@pytest.mark.parametrize("value", ["%x", "a%Ub%d", "%", "abc%", "%%%", "%G", "%\n"])
def test_unknown_escape_is_an_error(value: str) -> None:
    with pytest.raises(ConfigError):
        expand_cred_store_value(value, 1)
    with pytest.raises(ConfigError):
        check_template(value)


def test_unknown_escape_messages() -> None:
    with pytest.raises(ConfigError, match=r"unknown escape '%x'"):
        check_template("a%xb")
    with pytest.raises(ConfigError, match=r"'%' at the end"):
        check_template("a%")


def test_unknown_uid_for_percent_u() -> None:
    uid = _unknown_uid()
    with pytest.raises(UnknownUserError) as info:
        expand_cred_store_value("/k/%u", uid)
    assert info.value.uid == uid
    assert isinstance(info.value, LocalError)
    assert str(uid) in str(info.value)
    # %U needs no lookup, so an unknown uid is fine there.
    assert expand_cred_store_value("/k/%U", uid) == f"/k/{uid}"


def test_no_lookup_without_percent_u(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(uid: int) -> pwd.struct_passwd:
        raise AssertionError("pwd lookup not expected")

    monkeypatch.setattr(pwd, "getpwuid", boom)
    assert expand_cred_store_value("%U-%%", 7) == "7-%"


def test_lookup_once_per_value(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fake(uid: int) -> pwd.struct_passwd:
        calls.append(uid)
        return pwd.struct_passwd(("alice", "x", uid, uid, "", "/", "/bin/sh"))

    monkeypatch.setattr(pwd, "getpwuid", fake)
    assert expand_cred_store_value("%u/%u/%U", 42) == "alice/alice/42"
    assert calls == [42]


def test_expand_pairs_keeps_keys_and_order() -> None:
    pairs = (("keytab", "/k/%U"), ("ccache", "FILE:/c/%U"), ("keytab", "%%"))
    assert expand_cred_store(pairs, 9) == (
        ("keytab", "/k/9"),
        ("ccache", "FILE:/c/9"),
        ("keytab", "%"),
    )


@given(st.text(alphabet=st.characters(blacklist_characters="%")), st.integers(0, 2**32 - 2))
def test_text_without_percent_is_unchanged(value: str, uid: int) -> None:
    assert expand_cred_store_value(value, uid) == value


@given(
    st.lists(st.sampled_from(["a", "/", ":", "%U", "%%", "x y"]), max_size=12),
    st.integers(0, 2**32 - 2),
)
def test_matches_regex_oracle(parts: list[str], uid: int) -> None:
    value = "".join(parts)
    oracle = re.sub(r"%(.)", lambda m: str(uid) if m.group(1) == "U" else "%", value)
    assert expand_cred_store_value(value, uid) == oracle
