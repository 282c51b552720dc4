"""Reading and rewriting MIT FILE credential caches (format versions 3 and 4).

Enough of the format (MIT's ccache file format document) to list the
credentials in a ccache and to replace one credential's ticket bytes, which is
where the gssproxy interposer keeps its `Encrypted/Credentials/v1@X-GSSPROXY:`
entry (the XDR-encoded gssx_cred). Stdlib only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

GSSPROXY_SERVER = "Encrypted/Credentials/v1@X-GSSPROXY:"


@dataclass(frozen=True)
class Principal:
    name_type: int
    realm: str
    components: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join(self.components) + "@" + self.realm


@dataclass(frozen=True)
class Credential:
    client: Principal
    server: Principal
    ticket: bytes
    #: byte offset of the ticket's u32 length field in the file
    ticket_offset: int


@dataclass(frozen=True)
class CCache:
    version: int
    default_principal: Principal
    credentials: tuple[Credential, ...]

    def gssproxy_entries(self) -> list[Credential]:
        return [c for c in self.credentials if str(c.server) == GSSPROXY_SERVER]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated ccache")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def counted(self) -> bytes:
        return self.take(self.u32())

    def principal(self) -> Principal:
        name_type = self.u32()
        count = self.u32()
        realm = self.counted().decode("utf-8", "replace")
        comps = tuple(self.counted().decode("utf-8", "replace") for _ in range(count))
        return Principal(name_type, realm, comps)


def parse(data: bytes) -> CCache:
    r = _Reader(data)
    version = r.u16()
    if version not in (0x0503, 0x0504):
        raise ValueError(f"unsupported ccache version 0x{version:04x}")
    if version == 0x0504:
        r.take(r.u16())  # header tags (KDC time offset)
    default = r.principal()
    creds: list[Credential] = []
    while r.pos < len(data):
        client = r.principal()
        server = r.principal()
        r.u16()  # key enctype
        r.counted()  # key
        r.take(16)  # authtime, starttime, endtime, renew_till
        r.u8()  # is_skey
        r.u32()  # ticket flags
        for _ in range(r.u32()):  # addresses
            r.u16()
            r.counted()
        for _ in range(r.u32()):  # authdata
            r.u16()
            r.counted()
        offset = r.pos
        ticket = r.counted()
        r.counted()  # second ticket
        creds.append(Credential(client, server, ticket, offset))
    return CCache(version, default, tuple(creds))


def read(path: str | Path) -> CCache:
    return parse(Path(path).read_bytes())


def replace_ticket(path: str | Path, cred: Credential, ticket: bytes) -> None:
    """Rewrite `cred`'s ticket in place (the file is re-written, ownership kept)."""
    p = Path(path)
    data = p.read_bytes()
    start = cred.ticket_offset
    (old_len,) = struct.unpack_from(">I", data, start)
    new = data[:start] + struct.pack(">I", len(ticket)) + ticket + data[start + 4 + old_len :]
    with open(p, "r+b") as f:
        f.write(new)
        f.truncate()
