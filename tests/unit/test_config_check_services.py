"""Tests for gssproxy's check_services rule (config/options.py)."""

from __future__ import annotations

import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import Mech, SelinuxContext, Service
from gssproxy_py.config.options import check_services
from gssproxy_py.errors import ConfigError

SOCK = "/var/run/gssproxy.sock"


def section(name: str, euid: int, *extra: str) -> str:
    return f"[service/{name}]\nmechs = krb5\neuid = {euid}\n" + "".join(e + "\n" for e in extra)


def clash(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "c.conf", default_socket=SOCK)
    return info.value


def ok(text: str) -> int:
    return len(load_config_text(text, "c.conf", default_socket=SOCK).services)


def test_same_euid_same_default_socket() -> None:
    exc = clash(section("a", 0) + "# pad\n" + section("b", 0))
    assert (exc.file, exc.line, exc.option) == ("c.conf", 5, None)
    assert str(exc) == (
        "c.conf:5: service 'b' clashes with service 'a' (c.conf:1): same socket, "
        "program and selinux_context, and both have euid 0"
    )


def test_earlier_allow_any_uid_shadows_later() -> None:
    exc = clash(section("any", 0, "allow_any_uid = yes") + section("user", 1000))
    assert exc.line == 5
    assert exc.message.endswith("and 'any' sets allow_any_uid")
    assert "service 'user' clashes with service 'any' (c.conf:1)" in exc.message


def test_later_allow_any_uid_is_fine() -> None:
    # gssproxy only looks at the earlier service's allow_any_uid.
    assert ok(section("user", 1000) + section("any", 0, "allow_any_uid = yes")) == 2


def test_different_euid_is_fine() -> None:
    assert ok(section("a", 0) + section("b", 1)) == 2


def test_explicit_default_socket_counts_as_default() -> None:
    exc = clash(section("a", 0) + section("b", 0, f"socket = {SOCK}"))
    assert "both have euid 0" in exc.message
    exc = clash(section("a", 0) + section("b", 0, "socket = /var/run//gssproxy.sock"))
    assert "both have euid 0" in exc.message


@pytest.mark.parametrize(
    ("a_extra", "b_extra"),
    [
        ((), ("socket = /run/other.sock",)),
        (("socket = /run/one.sock",), ("socket = /run/two.sock",)),
        ((), ("program = /usr/sbin/rpc.gssd",)),
        (("program = /usr/bin/a",), ("program = /usr/bin/b",)),
        ((), ("selinux_context = u:r:t",)),
        (("selinux_context = u:r:t",), ("selinux_context = u:r:t:s0",)),
        (("netns = red",), ("netns = blue",)),
    ],
)
def test_distinct_socket_program_selinux_or_netns(
    a_extra: tuple[str, ...], b_extra: tuple[str, ...]
) -> None:
    assert ok(section("a", 0, *a_extra) + section("b", 0, *b_extra)) == 2
    any_uid = ("allow_any_uid = yes", *a_extra)
    assert ok(section("a", 5, *any_uid) + section("b", 0, *b_extra)) == 2


@pytest.mark.parametrize(
    ("a_extra", "b_extra"),
    [
        (("socket = /run/x.sock",), ("socket = /run/x.sock",)),
        (("program = /usr/bin/a",), ("program = /usr/bin/a",)),
        (("selinux_context = u:r:t:s0",), ("selinux_context = u:r:t:s0",)),
        (("netns = red blue",), ("netns = blue",)),
        (("netns = red",), ()),
        (("netns = all",), ("netns = red",)),
    ],
)
def test_same_socket_program_selinux_and_overlapping_netns_clash(
    a_extra: tuple[str, ...], b_extra: tuple[str, ...]
) -> None:
    exc = clash(section("a", 0, *a_extra) + section("b", 0, *b_extra))
    assert "service 'b' clashes with service 'a'" in exc.message


def test_first_clash_in_order_is_reported() -> None:
    text = section("a", 0) + section("b", 1) + section("c", 1) + section("d", 0)
    exc = clash(text)
    assert exc.line == 7
    assert "service 'c' clashes with service 'b' (c.conf:4)" in exc.message


def test_check_services_directly() -> None:
    a = Service("a", 0, (Mech.KRB5,), file="x", line=1)
    b = Service("b", 0, (Mech.KRB5,), file="y", line=9, socket="/run/b.sock")
    check_services([a, b], SOCK)
    with pytest.raises(ConfigError) as info:
        check_services([a, b], "/run/b.sock")
    assert (info.value.file, info.value.line) == ("y", 9)
    c = Service(
        "c", 0, (Mech.KRB5,), selinux_context=SelinuxContext("u", "r", "t"), file="z", line=3
    )
    check_services([a, c], SOCK)
    check_services([], SOCK)
