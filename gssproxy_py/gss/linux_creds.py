"""The ``linux_creds_v1`` option value: a local user's uid, gid and groups for knfsd.

The kernel requires this option in every GSS_S_COMPLETE accept reply (its
``gssx_dec_accept_sec_context`` looks for the name ``linux_creds_v1\0`` among
the result options). Its value is host-endian u32s ``uid, gid, N,
gid[N]``. The XDR layer wraps it in the option's big-endian opaque length;
this module handles only the contents. A principal that maps to no local
user is sent as `UNMAPPED` (uid = gid = 0xffffffff, no groups), which the
kernel squashes to nobody.

`resolve_local_creds` consults NSS (``getpwnam``/``getgrouplist``), which may
block on LDAP/SSSD: call it from an executor, never on the event loop.
"""

from __future__ import annotations

import os
import pwd
import struct
from collections.abc import Iterable
from typing import NamedTuple

from gssproxy_py.errors import LocalError, PeerError

__all__ = [
    "NGROUPS_MAX",
    "UNMAPPED",
    "LinuxCreds",
    "LinuxCredsDecodeError",
    "LinuxCredsEncodeError",
    "LocalCredsError",
    "decode_linux_creds",
    "encode_linux_creds",
    "resolve_local_creds",
]

# Linux's NGROUPS_MAX; the kernel rejects a longer list.
NGROUPS_MAX = 65536
_NO_ID = 0xFFFFFFFF
_U32 = struct.Struct("=I")


class LinuxCreds(NamedTuple):
    """uid, gid and supplementary groups; equal to the plain tuple with the same values."""

    uid: int
    gid: int
    groups: tuple[int, ...]


UNMAPPED = LinuxCreds(_NO_ID, _NO_ID, ())


class LinuxCredsEncodeError(LocalError):
    """Values that the kernel would refuse (our bug or an odd NSS answer)."""


class LinuxCredsDecodeError(PeerError):
    """A linux_creds_v1 value the kernel would refuse."""


class LocalCredsError(LocalError):
    """NSS failed while resolving a user that exists."""


def encode_linux_creds(uid: int, gid: int, groups: Iterable[int]) -> bytes:
    """Host-endian ``uid, gid, N, gid[N]``; groups keep the order given.

    uid and gid may be 0xffffffff (unmapped). A group may not be, since the
    kernel rejects an invalid kgid in the list.
    """
    group_list = tuple(groups)
    for what, value in (("uid", uid), ("gid", gid)):
        if not 0 <= value <= _NO_ID:
            raise LinuxCredsEncodeError(f"{what} {value} is not a u32")
    if len(group_list) > NGROUPS_MAX:
        raise LinuxCredsEncodeError(f"{len(group_list)} groups exceed NGROUPS_MAX {NGROUPS_MAX}")
    for g in group_list:
        if not 0 <= g < _NO_ID:
            raise LinuxCredsEncodeError(f"group {g} is not a valid gid")
    return struct.pack(f"={3 + len(group_list)}I", uid, gid, len(group_list), *group_list)


def decode_linux_creds(data: bytes) -> LinuxCreds:
    """Parse a value as the kernel does: exactly ``(3 + N) * 4`` bytes, N <= 65536."""
    if len(data) < 12:
        raise LinuxCredsDecodeError(f"linux_creds_v1 value of {len(data)} bytes, need >= 12")
    (count,) = _U32.unpack_from(data, 8)
    if count > NGROUPS_MAX:
        raise LinuxCredsDecodeError(f"{count} groups exceed NGROUPS_MAX {NGROUPS_MAX}")
    expected = (3 + count) * 4
    if len(data) != expected:
        raise LinuxCredsDecodeError(
            f"linux_creds_v1 value of {len(data)} bytes, {count} groups need {expected}"
        )
    uid, gid, _, *groups = struct.unpack(f"={3 + count}I", data)
    if _NO_ID in groups:
        raise LinuxCredsDecodeError("group list contains the invalid gid 0xffffffff")
    return LinuxCreds(uid, gid, tuple(groups))


def resolve_local_creds(username: str | bytes) -> LinuxCreds:
    """The user's uid, primary gid and sorted, de-duplicated group list.

    The groups come from getgrouplist and include the primary gid. An
    unknown user, or a name no user could have (empty, or with a NUL), gives
    `UNMAPPED`. gss_localname returns bytes, and they are decoded the way
    the OS decodes file names.
    """
    name = os.fsdecode(username) if isinstance(username, bytes) else username
    if not name or "\0" in name:
        return UNMAPPED
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return UNMAPPED
    try:
        groups = os.getgrouplist(name, pw.pw_gid)
    except OSError as exc:
        raise LocalCredsError(f"getgrouplist({name!r}) failed: {exc}") from exc
    unique = sorted(set(groups))
    if len(unique) > NGROUPS_MAX:
        # Truncating could drop a group that an ACL denies; refuse instead.
        raise LocalCredsError(f"user {name!r} is in {len(unique)} groups, over NGROUPS_MAX")
    return LinuxCreds(pw.pw_uid, pw.pw_gid, tuple(unique))
