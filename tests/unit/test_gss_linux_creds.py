"""Tests for the linux_creds_v1 option value and local user resolution (gss/linux_creds.py)."""

from __future__ import annotations

import grp
import os
import pwd
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.errors import LocalError, PeerError
from gssproxy_py.gss import linux_creds
from gssproxy_py.gss.linux_creds import (
    NGROUPS_MAX,
    UNMAPPED,
    LinuxCreds,
    LinuxCredsDecodeError,
    LinuxCredsEncodeError,
    LocalCredsError,
    decode_linux_creds,
    encode_linux_creds,
    resolve_local_creds,
)

u32s = st.integers(0, 0xFFFFFFFF)
gids = st.integers(0, 0xFFFFFFFE)


def native(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, sys.byteorder) for v in values)


@pytest.mark.skipif(sys.byteorder != "little", reason="literal bytes are little-endian")
def test_encode_matches_kernel_sample_le() -> None:
    # uid 1000, gid 1000, one group 10, as in an accept reply the kernel takes.
    assert encode_linux_creds(1000, 1000, [10]) == bytes.fromhex(
        "e8030000 e8030000 01000000 0a000000"
    )


def test_encode_native_layout() -> None:
    assert encode_linux_creds(1, 2, (30, 4)) == native(1, 2, 2, 30, 4)
    assert encode_linux_creds(5, 6, ()) == native(5, 6, 0)


def test_unmapped() -> None:
    assert UNMAPPED == (0xFFFFFFFF, 0xFFFFFFFF, ())
    assert encode_linux_creds(*UNMAPPED) == b"\xff" * 8 + b"\0" * 4
    assert decode_linux_creds(encode_linux_creds(*UNMAPPED)) == UNMAPPED


@given(uid=u32s, gid=u32s, groups=st.lists(gids, max_size=40))
def test_round_trip(uid: int, gid: int, groups: list[int]) -> None:
    data = encode_linux_creds(uid, gid, groups)
    assert len(data) == (3 + len(groups)) * 4
    assert decode_linux_creds(data) == LinuxCreds(uid, gid, tuple(groups))


def test_max_groups_round_trip() -> None:
    groups = list(range(NGROUPS_MAX))
    data = encode_linux_creds(0, 0, groups)
    assert len(data) == (3 + NGROUPS_MAX) * 4
    assert decode_linux_creds(data).groups == tuple(groups)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((-1, 0, ()), "uid"),
        ((2**32, 0, ()), "uid"),
        ((0, -1, ()), "gid"),
        ((0, 2**32, ()), "gid"),
        ((0, 0, (0xFFFFFFFF,)), "not a valid gid"),
        ((0, 0, (-5,)), "not a valid gid"),
        ((0, 0, range(NGROUPS_MAX + 1)), "NGROUPS_MAX"),
    ],
)
def test_encode_refusals(args: tuple[int, int, tuple[int, ...]], match: str) -> None:
    with pytest.raises(LinuxCredsEncodeError, match=match):
        encode_linux_creds(*args)
    assert issubclass(LinuxCredsEncodeError, LocalError)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "need >= 12"),
        (native(1, 2)[:11], "need >= 12"),
        (native(1, 2, 1), "need 16"),
        (native(1, 2, 0, 7), "need 12"),
        (native(1, 2, 1, 7) + b"\0", "need 16"),
        (native(1, 2, 2, 7) + b"\0\0\0", "need 20"),
        (native(1, 2, NGROUPS_MAX + 1), "NGROUPS_MAX"),
        (native(1, 2, 0xFFFFFFFF), "NGROUPS_MAX"),
        (native(1, 2, 2, 7, 0xFFFFFFFF), "invalid gid"),
    ],
)
def test_decode_refusals(data: bytes, match: str) -> None:
    with pytest.raises(LinuxCredsDecodeError, match=match):
        decode_linux_creds(data)
    assert issubclass(LinuxCredsDecodeError, PeerError)


@given(data=st.binary(max_size=64))
def test_decode_arbitrary_is_strict(data: bytes) -> None:
    try:
        creds = decode_linux_creds(data)
    except LinuxCredsDecodeError:
        return
    assert len(data) == (3 + len(creds.groups)) * 4
    assert encode_linux_creds(*creds) == data


def test_decoder_ignores_length_prefix_it_does_not_have() -> None:
    # The value excludes the XDR opaque length; a caller that leaves it on gets refused.
    value = encode_linux_creds(1000, 1000, [10])
    with pytest.raises(LinuxCredsDecodeError):
        decode_linux_creds(struct.pack(">I", len(value)) + value)


# --- resolve_local_creds ---------------------------------------------------------


def _expected_groups(name: str, gid: int) -> tuple[int, ...]:
    members = {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    return tuple(sorted(members | {gid}))


def test_resolve_root() -> None:
    creds = resolve_local_creds("root")
    assert creds == LinuxCreds(0, 0, _expected_groups("root", 0))
    assert resolve_local_creds(b"root") == creds


def test_resolve_every_local_user_matches_nss() -> None:
    for pw in pwd.getpwall()[:50]:
        creds = resolve_local_creds(pw.pw_name)
        assert creds.uid == pw.pw_uid
        assert creds.gid == pw.pw_gid
        assert creds.groups == _expected_groups(pw.pw_name, pw.pw_gid)
        assert list(creds.groups) == sorted(set(creds.groups))
        decode_linux_creds(encode_linux_creds(*creds))


@pytest.mark.parametrize(
    "name", ["no-such-user-gpy-test", b"no-such-user-gpy-test", "", b"", "ro\0ot", b"r\xffoot"]
)
def test_resolve_unknown_is_unmapped(name: str | bytes) -> None:
    assert resolve_local_creds(name) == UNMAPPED


def test_resolve_sorts_and_dedups(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pwd.getpwnam("root")
    fake = pwd.struct_passwd(("alice", "x", 1500, 1500, "", "/", "/bin/sh"))
    monkeypatch.setattr(pwd, "getpwnam", lambda n: fake if n == "alice" else real)
    monkeypatch.setattr(os, "getgrouplist", lambda n, g: [300, g, 20, 300, 4])
    assert resolve_local_creds("alice") == (1500, 1500, (4, 20, 300, 1500))


def test_resolve_nss_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, gid: int) -> list[int]:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "getgrouplist", broken)
    with pytest.raises(LocalCredsError, match="getgrouplist"):
        resolve_local_creds("root")


def test_resolve_too_many_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getgrouplist", lambda n, g: list(range(NGROUPS_MAX + 1)))
    with pytest.raises(LocalCredsError, match="NGROUPS_MAX"):
        resolve_local_creds("root")


def test_namedtuple_fields() -> None:
    c = LinuxCreds(1, 2, (3,))
    assert (c.uid, c.gid, c.groups) == (1, 2, (3,))
    assert linux_creds.UNMAPPED is UNMAPPED
