"""What is wrong with a keytab, in an administrator's words.

Used twice: at start-up and on every reload, for each keytab a service
names (`check_services`), and when a call that needed a keytab failed
(`diagnose`, from `gss/status`). MIT's own messages say little: a missing,
an unreadable and a corrupt keytab all read "Keytab FILE is nonexistent or
empty"; a key of another principal or an old kvno only name the ticket. So
the file is looked at directly, as the daemon's euid.

`read_entries` is a strict reader of the MIT keytab format (versions 1 and
2: `0x05 0x0N`, then length-prefixed entries, negative lengths marking
holes). It keeps the principal, kvno and enctype of each entry and never
the key bytes. Malformed input raises `KeytabFormatError` and nothing else.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gssproxy_py.config.model import Config, Service
from gssproxy_py.errors import LocalError

__all__ = [
    "KeytabEntry",
    "KeytabFormatError",
    "check_services",
    "diagnose",
    "parse_entries",
    "read_entries",
]

#: Largest keytab read (a real one holds a few hundred entries of ~100 bytes).
MAX_KEYTAB_SIZE = 1 << 20
_MAX_COMPONENTS = 64
_FILE_PREFIX = "FILE:"


class KeytabFormatError(LocalError):
    """The bytes are not an MIT keytab."""


@dataclass(frozen=True, slots=True)
class KeytabEntry:
    """One key's identity (never the key itself)."""

    principal: str
    kvno: int
    enctype: int


class _Reader:
    def __init__(self, data: bytes, big_endian: bool) -> None:
        self.data = data
        self.pos = 0
        self.order = ">" if big_endian else "="

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise KeytabFormatError(f"truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack(self.order + "H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack(self.order + "I", self.take(4))[0]
        return value

    def i32(self) -> int:
        value: int = struct.unpack(self.order + "i", self.take(4))[0]
        return value

    def counted(self) -> bytes:
        return self.take(self.u16())


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _entry(body: bytes, version: int) -> KeytabEntry:
    r = _Reader(body, big_endian=version == 2)
    count = r.u16()
    if version == 1:
        count -= 1  # version 1 counts the realm as a component
    if not 0 < count <= _MAX_COMPONENTS:
        raise KeytabFormatError(f"entry with {count} name components")
    realm = _text(r.counted())
    components = [_text(r.counted()) for _ in range(count)]
    if version == 2:
        r.u32()  # name type
    r.u32()  # timestamp
    kvno = r.u8()
    enctype = r.u16()
    r.counted()  # the key: skipped, never kept
    if len(body) - r.pos >= 4:
        # A 32-bit kvno after the key supersedes the 8-bit one when non-zero.
        wide = r.u32()
        kvno = wide or kvno
    return KeytabEntry(f"{'/'.join(components)}@{realm}", kvno, enctype)


def parse_entries(data: bytes) -> list[KeytabEntry]:
    """The entries of a keytab image. Raises `KeytabFormatError`."""
    if len(data) < 2 or data[0] != 5 or data[1] not in (1, 2):
        raise KeytabFormatError("does not start like a keytab (0x05 0x01 or 0x05 0x02)")
    version = data[1]
    r = _Reader(data, big_endian=version == 2)
    r.pos = 2
    entries = []
    while len(data) - r.pos >= 4:
        size = r.i32()
        if size == 0:
            break  # MIT stops at a zero length (space reserved at the end)
        if size < 0:
            r.take(-size)  # a hole left by a removed entry
            continue
        entries.append(_entry(r.take(size), version))
    return entries


def read_entries(path: str) -> list[KeytabEntry]:
    """Read and parse the keytab at `path` as our euid.

    Raises `OSError` for the file system and `KeytabFormatError` for the contents.
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KeytabFormatError("is not a regular file")
        data = os.read(fd, MAX_KEYTAB_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEYTAB_SIZE:
        raise KeytabFormatError(f"is larger than {MAX_KEYTAB_SIZE} bytes")
    return parse_entries(data)


def keytab_path(value: str) -> str | None:
    """The file of a `keytab:`/`client_keytab:` value, or None for other types."""
    if value.startswith(_FILE_PREFIX):
        return value[len(_FILE_PREFIX) :]
    if value.startswith("/"):
        return value
    return None


#: How keys are exported without changing them (plain `ktadd` makes new ones).
_EXPORT = "kadmin.local ktadd -norandkey, or ipa-getkeytab -r"


def _export(path: str, principal: str) -> str:
    return f"kadmin.local -q 'ktadd -norandkey -k {path} {principal}'"


def _held(entries: Sequence[KeytabEntry]) -> str:
    names = sorted({f"{e.principal} (kvno {e.kvno})" for e in entries})
    shown = ", ".join(names[:4])
    return shown + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _same_principal(a: str, b: str) -> bool:
    # A principal without a realm matches any realm (krb5_principal may omit it).
    if "@" in a and "@" in b:
        return a == b
    return a.split("@")[0] == b.split("@")[0]


def diagnose(
    path: str,
    *,
    principal: str | None = None,
    kvno: int | None = None,
    kind: str = "keytab",
) -> str | None:
    """What is wrong with keytab `path` for `principal` (and ticket `kvno`),
    with the fix; None when nothing is (as far as the file shows)."""
    try:
        entries = read_entries(path)
    except (OSError, KeytabFormatError) as exc:
        return _unreadable(path, kind, exc)
    if not entries:
        return f"the {kind} {path} holds no keys: export the service's keys into it ({_EXPORT})"
    if principal is None:
        return None
    return _key_problem(path, kind, entries, principal, kvno)


def _unreadable(path: str, kind: str, exc: OSError | KeytabFormatError) -> str:
    """Why the keytab could not be read, with the fix."""
    if isinstance(exc, FileNotFoundError):
        return (
            f"the {kind} {path} does not exist: export the keys into it ({_EXPORT}) "
            "or fix cred_store"
        )
    if isinstance(exc, PermissionError):
        euid = os.geteuid()
        try:
            st = os.stat(path)
            owner = f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
        except OSError:
            owner = "a directory above it is closed"
        return (
            f"the {kind} {path} is not readable by the daemon's uid {euid} ({owner}): "
            f"chown it to uid {euid} (run_as_user), or turn run_as_user off"
        )
    if isinstance(exc, OSError):
        return f"the {kind} {path} cannot be read: {os.strerror(exc.errno or errno.EIO)}"
    return (
        f"the {kind} {path} is not a valid keytab ({exc}): it is corrupt or another "
        f"kind of file; export the keys again ({_EXPORT})"
    )


def _key_problem(
    path: str, kind: str, entries: Sequence[KeytabEntry], principal: str, kvno: int | None
) -> str | None:
    """What the keytab's entries lack for `principal` (and `kvno`), with the fix."""
    mine = [e for e in entries if _same_principal(e.principal, principal)]
    if not mine:
        return (
            f"the {kind} {path} has no key for {principal}; it holds {_held(entries)}: "
            f"add that principal's keys ({_export(path, principal)}) or point the service "
            "at the keytab that has them"
        )
    if kvno is not None and all(e.kvno != kvno for e in mine):
        have = ", ".join(str(k) for k in sorted({e.kvno for e in mine}))
        return (
            f"the {kind} {path} holds {principal} with kvno {have}, but the client's "
            f"ticket is for kvno {kvno}: the key changed on the KDC since the keytab was "
            f"written; export its current keys again ({_export(path, principal)})"
        )
    return None


def service_keytabs(service: Service) -> list[tuple[str, str]]:
    """(kind, path) of the service's file keytabs that name no per-user
    template (those are checked per call, with the caller's uid)."""
    found = []
    for key, kind in (("keytab", "keytab"), ("client_keytab", "client keytab")):
        for value in service.cred_store_values(key):
            path = keytab_path(value)
            if path is not None and "%" not in path:
                found.append((kind, path))
    return found


def check_services(config: Config | Iterable[Service]) -> list[str]:
    """A warning, with the fix, for each configured keytab that is missing,
    unreadable by us, corrupt, empty, or without the service's
    `krb5_principal`."""
    services = config.services if isinstance(config, Config) else tuple(config)
    warnings = []
    for service in services:
        for kind, path in service_keytabs(service):
            principal = service.krb5_principal if kind == "keytab" else None
            problem = diagnose(path, principal=principal, kind=kind)
            if problem is not None:
                warnings.append(f"service '{service.name}': {problem}")
    return warnings
