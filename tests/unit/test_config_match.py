"""Tests for matching a peer to a service (config/match.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.match import explain_no_match, match_or_explain, match_service
from gssproxy_py.config.model import Config, GlobalSettings, Mech, SelinuxContext, Service
from gssproxy_py.config.peer import Peer

DEFAULT = "/var/run/gssproxy.sock"
KRB5 = (Mech.KRB5,)


def svc(name: str, euid: int = 0, **kw: Any) -> Service:
    return Service(name, euid, KRB5, **kw)


def cfg(*services: Service) -> Config:
    return Config(GlobalSettings(), tuple(services))


def peer(uid: int = 0, program: str | None = "/usr/bin/app", **kw: Any) -> Peer:
    return Peer(pid=123, uid=uid, gid=uid, program=program, **kw)


def find(
    config: Config,
    p: Peer,
    sock: str = DEFAULT,
    *,
    selinux: bool = False,
    inodes: Mapping[str, int] | None = None,
) -> str | None:
    found = match_service(
        config, p, sock, default_socket=DEFAULT, selinux_enabled=selinux, netns_inodes=inodes
    )
    return None if found is None else found.name


def explain(
    config: Config,
    p: Peer,
    sock: str = DEFAULT,
    *,
    selinux: bool = False,
    inodes: Mapping[str, int] | None = None,
) -> str:
    return explain_no_match(
        config, p, sock, default_socket=DEFAULT, selinux_enabled=selinux, netns_inodes=inodes
    )


# --- uid ---------------------------------------------------------------------


def test_euid_must_equal_peer_uid() -> None:
    config = cfg(svc("root", 0), svc("user", 1000))
    assert find(config, peer(0)) == "root"
    assert find(config, peer(1000)) == "user"
    assert find(config, peer(1001)) is None


def test_allow_any_uid() -> None:
    config = cfg(svc("any", 0, allow_any_uid=True))
    assert find(config, peer(4242)) == "any"
    assert find(config, peer(0)) == "any"


def test_first_match_wins_in_config_order() -> None:
    config = cfg(svc("user", 1000), svc("any", 0, allow_any_uid=True), svc("late", 1000))
    assert find(config, peer(1000)) == "user"
    assert find(config, peer(7)) == "any"
    shadowing = cfg(svc("any", 0, allow_any_uid=True), svc("user", 1000))
    assert find(shadowing, peer(1000)) == "any"


# --- selinux -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "peer_ctx", "enabled", "matches"),
    [
        ("u:r:t", "u:r:t", True, True),
        ("u:r:t", "u:r:t:s0", True, True),
        ("u:r:t", "u:r:t:s0-s0:c0.c1023", True, True),
        ("u:r:t:s0", "u:r:t:s0", True, True),
        ("u:r:t:s0", "u:r:t:s1", True, False),
        ("u:r:t:s0", "u:r:t", True, False),
        ("u:r:t:s0-s0:c0.c1023", "u:r:t:s0-s0:c0.c1023", True, True),
        ("u:r:t:s0-s0:c0.c1023", "u:r:t:s0-s0:c0.c1022", True, False),
        ("u:r:t", "x:r:t", True, False),
        ("u:r:t", "u:x:t", True, False),
        ("u:r:t", "u:r:x", True, False),
        ("u:r:t", "garbage", True, False),
        ("u:r:t", None, True, False),
        ("u:r:t", None, False, True),
        ("u:r:t", "x:y:z", False, True),
    ],
)
def test_selinux_context(
    configured: str, peer_ctx: str | None, enabled: bool, matches: bool
) -> None:
    ctx = SelinuxContext.parse(configured)
    config = cfg(svc("s", 0, selinux_context=ctx))
    assert find(config, peer(0, selinux_context=peer_ctx), selinux=enabled) == (
        "s" if matches else None
    )


def test_service_without_selinux_context_ignores_peer_context() -> None:
    assert find(cfg(svc("s")), peer(0, selinux_context="a:b:c"), selinux=True) == "s"


# --- program --------------------------------------------------------------------


def test_program() -> None:
    config = cfg(svc("gssd", 0, program="/usr/sbin/rpc.gssd"), svc("rest", 0, socket="/run/r"))
    assert find(config, peer(0, "/usr/sbin/rpc.gssd")) == "gssd"
    assert find(config, peer(0, "/usr/sbin/rpc.gssd2")) is None
    assert find(config, peer(0, None)) is None
    assert find(cfg(svc("any-program", 0)), peer(0, None)) == "any-program"


# --- socket --------------------------------------------------------------------------


def test_socket_rules() -> None:
    config = cfg(svc("own", 0, socket="/run/own.sock"), svc("default", 0, program="/p"))
    assert find(config, peer(0, "/p"), "/run/own.sock") == "own"
    assert find(config, peer(0, "/p"), DEFAULT) == "default"
    assert find(config, peer(0, "/p"), "/run/other.sock") is None
    # Services without a socket only serve the default one.
    assert find(cfg(svc("d")), peer(0), "/run/own.sock") is None


def test_socket_paths_are_normalised() -> None:
    config = cfg(svc("own", 0, socket="/run/own.sock"))
    assert find(config, peer(0), "/run//own.sock") == "own"
    assert find(config, peer(0), "/run/x/../own.sock") == "own"
    assert find(cfg(svc("d")), peer(0), "/var/run/./gssproxy.sock") == "d"
    # No symlink resolution: /run and /var/run are different strings.
    assert find(cfg(svc("d")), peer(0), "/run/gssproxy.sock") is None


def test_service_socket_equal_to_default_serves_default() -> None:
    config = cfg(svc("explicit", 0, socket=DEFAULT))
    assert find(config, peer(0), DEFAULT) == "explicit"


# --- netns -------------------------------------------------------------------------------


def test_netns_rules() -> None:
    inodes = {"red": 11, "blue": 12}
    config = cfg(svc("colours", 0, netns=("red", "blue")))
    assert find(config, peer(0, netns_inode=11), inodes=inodes) == "colours"
    assert find(config, peer(0, netns_inode=12), inodes=inodes) == "colours"
    assert find(config, peer(0, netns_inode=13), inodes=inodes) is None
    assert find(config, peer(0, netns_inode=None), inodes=inodes) is None
    assert find(config, peer(0, netns_inode=11), inodes=None) is None
    ghost = cfg(svc("ghost", 0, netns=("ghost",)))
    assert find(ghost, peer(0, netns_inode=11), inodes=inodes) is None


def test_netns_all_and_unset_do_not_restrict() -> None:
    for service in (svc("all", 0, netns_all=True), svc("unset", 0)):
        assert find(cfg(service), peer(0, netns_inode=99), inodes={}) == service.name
        assert find(cfg(service), peer(0, netns_inode=None)) == service.name


def test_from_parsed_config() -> None:
    config = load_config_text(
        "[service/nfs-server]\nmechs = krb5\nsocket = /run/gssproxy.sock\neuid = 0\n"
        "program = /usr/sbin/rpc.gssd\n"
        "[service/nfs-client]\nmechs = krb5\nallow_any_uid = yes\neuid = 0\n"
    )
    assert find(config, peer(0, "/usr/sbin/rpc.gssd"), "/run/gssproxy.sock") == "nfs-server"
    assert find(config, peer(0, None), "/run/gssproxy.sock") is None
    assert find(config, peer(1000, None)) == "nfs-client"


# --- explain_no_match ---------------------------------------------------------------------


def test_explain_example_from_brief() -> None:
    config = cfg(svc("nfs", 0, socket="/run/x.sock"))
    assert explain(config, peer(1001, "/usr/bin/foo"), "/run/x.sock") == (
        "no service matched uid 1001, program /usr/bin/foo on /run/x.sock; "
        "nearest: service 'nfs' requires euid 0"
    )


def test_explain_picks_fewest_failures_and_lists_them() -> None:
    config = cfg(
        svc("far", 5, program="/a", socket="/run/far.sock"),
        svc("near", 5, program="/a"),
        svc("also-near", 6, program="/b"),
    )
    assert explain(config, peer(1, "/c")) == (
        "no service matched uid 1, program /c on /var/run/gssproxy.sock; "
        "nearest: service 'near' requires euid 5 and requires program /a"
    )


def test_explain_every_rule() -> None:
    config = cfg(
        svc(
            "strict",
            0,
            selinux_context=SelinuxContext("u", "r", "t", "s0"),
            program="/usr/sbin/rpc.gssd",
            socket="/run/s.sock",
            netns=("red", "blue"),
        )
    )
    p = peer(7, None, selinux_context="u:r:t:s1", netns_inode=3)
    assert explain(config, p, DEFAULT, selinux=True, inodes={"red": 1}) == (
        "no service matched uid 7, program (unknown), selinux context u:r:t:s1, "
        "netns inode 3 on /var/run/gssproxy.sock; nearest: service 'strict' "
        "requires euid 0 and requires selinux context u:r:t:s0 and requires program "
        "/usr/sbin/rpc.gssd and listens on /run/s.sock and requires network namespace "
        "red or blue"
    )


def test_explain_default_socket_and_no_services() -> None:
    assert explain(cfg(svc("d", 0)), peer(0), "/run/other.sock") == (
        "no service matched uid 0, program /usr/bin/app on /run/other.sock; "
        "nearest: service 'd' listens on /var/run/gssproxy.sock"
    )
    assert explain(cfg(), peer(0)) == (
        "no service matched uid 0, program /usr/bin/app on /var/run/gssproxy.sock; "
        "no services are configured"
    )


def test_explain_when_a_service_matches() -> None:
    assert explain(cfg(svc("ok", 0)), peer(0)) == (
        "service 'ok' matches uid 0, program /usr/bin/app on /var/run/gssproxy.sock"
    )


def test_match_or_explain_is_the_match_or_the_refusal_sentence() -> None:
    config = cfg(svc("root", 0), svc("p11", 1000, p11kit_socket="/run/p11.sock"))
    found, reason = match_or_explain(
        config, peer(0), DEFAULT, default_socket=DEFAULT, selinux_enabled=False
    )
    assert found is not None and found.name == "root" and reason is None
    found, reason = match_or_explain(
        config, peer(1001), DEFAULT, default_socket=DEFAULT, selinux_enabled=False
    )
    assert found is None and reason == explain(config, peer(1001))
    found, reason = match_or_explain(
        config,
        peer(1000),
        "/run/p11.sock",
        default_socket=DEFAULT,
        selinux_enabled=False,
        p11kit=True,
    )
    assert found is not None and found.name == "p11" and reason is None


# --- property: agrees with an independent statement of the rules ------------------------------

_CTX = [None, "u:r:t", "u:r:t:s0", "u:r:x", "v:r:t:s0"]
_PROGRAMS = [None, "/usr/bin/a", "/usr/bin/b"]
_SOCKETS = [None, "/run/a.sock", DEFAULT]
_NETNS = [(), ("ns1",), ("ns1", "ns2"), ("ghost",)]

_services = st.builds(
    lambda i, euid, any_uid, ctx, program, sock, netns, netns_all: Service(
        f"s{i}",
        euid,
        KRB5,
        allow_any_uid=any_uid,
        selinux_context=None if ctx is None else SelinuxContext.parse(ctx),
        program=program,
        socket=sock,
        netns=() if netns_all else netns,
        netns_all=netns_all,
    ),
    st.integers(0, 10**6),
    st.sampled_from([0, 1000, 1001]),
    st.booleans(),
    st.sampled_from(_CTX),
    st.sampled_from(_PROGRAMS),
    st.sampled_from(_SOCKETS),
    st.sampled_from(_NETNS),
    st.booleans(),
)
_peers = st.builds(
    lambda uid, program, ctx, inode: Peer(1, uid, uid, program, ctx, inode),
    st.sampled_from([0, 1000, 1001]),
    st.sampled_from(_PROGRAMS),
    st.sampled_from([None, "u:r:t", "u:r:t:s0", "u:r:t:s1", "v:r:t:s0", "junk"]),
    st.sampled_from([None, 1, 2, 3]),
)


def _oracle(
    s: Service,
    p: Peer,
    sock: str,
    selinux: bool,
    inodes: Mapping[str, int] | None,
) -> bool:
    uid_ok = s.allow_any_uid or s.euid == p.uid
    if selinux and s.selinux_context is not None:
        if p.selinux_context is None:
            return False
        fields = p.selinux_context.split(":", 3)
        if len(fields) < 3:
            return False
        want = s.selinux_context
        if fields[:3] != [want.user, want.role, want.type]:
            return False
        if want.range is not None and (len(fields) < 4 or fields[3] != want.range):
            return False
    program_ok = s.program is None or s.program == p.program
    socket_ok = sock.replace("//", "/") == (s.socket or DEFAULT)
    netns_ok = (
        not s.netns
        or s.netns_all
        or (
            p.netns_inode is not None
            and inodes is not None
            and p.netns_inode in {inodes[n] for n in s.netns if n in inodes}
        )
    )
    return uid_ok and program_ok and socket_ok and netns_ok


@settings(max_examples=400)
@given(
    st.lists(_services, max_size=6),
    _peers,
    st.sampled_from([DEFAULT, "/run/a.sock", "/run//a.sock", "/run/b.sock"]),
    st.booleans(),
    st.sampled_from([None, {}, {"ns1": 1, "ns2": 2}, {"ns1": 2}]),
)
def test_match_agrees_with_oracle(
    services: list[Service],
    p: Peer,
    sock: str,
    selinux: bool,
    inodes: Mapping[str, int] | None,
) -> None:
    config = cfg(*services)
    expected = next((s for s in services if _oracle(s, p, sock, selinux, inodes)), None)
    got = match_service(
        config, p, sock, default_socket=DEFAULT, selinux_enabled=selinux, netns_inodes=inodes
    )
    assert got is expected
    sentence = explain_no_match(
        config, p, sock, default_socket=DEFAULT, selinux_enabled=selinux, netns_inodes=inodes
    )
    if expected is None:
        assert sentence.startswith(f"no service matched uid {p.uid}, ")
        if services:
            assert "; nearest: service 's" in sentence
    else:
        assert sentence.startswith(f"service '{expected.name}' matches uid {p.uid}, ")
