"""Reading keytabs (MIT format, versions 1 and 2) and saying what is wrong
with one, as the start-up check and the failure line do."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from gssproxy_py.config.load import load_config
from gssproxy_py.gss import keytabs
from gssproxy_py.gss.keytabs import KeytabEntry, KeytabFormatError


def entry_v2(principal: str, kvno: int, enctype: int = 18, key: bytes = b"K" * 32) -> bytes:
    name, realm = principal.split("@")
    parts = name.split("/")
    body = struct.pack(">H", len(parts)) + struct.pack(">H", len(realm)) + realm.encode()
    for part in parts:
        body += struct.pack(">H", len(part)) + part.encode()
    body += struct.pack(">IIBH", 1, 1700000000, kvno & 0xFF, enctype)
    body += struct.pack(">H", len(key)) + key + struct.pack(">I", kvno)
    return struct.pack(">i", len(body)) + body


def keytab(*entries: bytes) -> bytes:
    return b"\x05\x02" + b"".join(entries)


def test_entries_with_32_bit_kvno_and_holes() -> None:
    hole = struct.pack(">i", -10) + b"\0" * 10
    data = keytab(entry_v2("nfs/h.example@R", 300), hole, entry_v2("host/h@R", 2, 17))
    assert keytabs.parse_entries(data) == [
        KeytabEntry("nfs/h.example@R", 300, 18),
        KeytabEntry("host/h@R", 2, 17),
    ]


def test_version_1_counts_the_realm_and_is_native_endian() -> None:
    body = struct.pack("=H", 2) + struct.pack("=H", 1) + b"R" + struct.pack("=H", 4) + b"host"
    body += struct.pack("=IBH", 0, 3, 18) + struct.pack("=H", 2) + b"KK"
    data = b"\x05\x01" + struct.pack("=i", len(body)) + body
    assert keytabs.parse_entries(data) == [KeytabEntry("host@R", 3, 18)]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05",
        b"\x06\x02",
        b"\x05\x03",
        keytab(entry_v2("a@R", 1))[:-5],
        b"\x05\x02\x00\x00\x00\x40x",
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(KeytabFormatError):
        keytabs.parse_entries(data)


def test_entries_never_hold_the_key() -> None:
    (e,) = keytabs.parse_entries(keytab(entry_v2("a@R", 1, key=b"SECRETKEY" * 4)))
    assert "SECRET" not in repr(e) and not hasattr(e, "key")


def test_diagnose(tmp_path: Path) -> None:
    path = tmp_path / "k"
    assert "does not exist" in (keytabs.diagnose(str(path)) or "")
    path.write_bytes(b"not a keytab")
    assert "is not a valid keytab" in (keytabs.diagnose(str(path)) or "")
    path.write_bytes(b"\x05\x02")
    assert "holds no keys" in (keytabs.diagnose(str(path)) or "")
    path.write_bytes(keytab(entry_v2("nfs/h@R", 3)))
    assert keytabs.diagnose(str(path)) is None
    assert keytabs.diagnose(str(path), principal="nfs/h@R", kvno=3) is None
    assert keytabs.diagnose(str(path), principal="nfs/h") is None  # realm left out
    other = keytabs.diagnose(str(path), principal="host/h@R") or ""
    assert "has no key for host/h@R; it holds nfs/h@R (kvno 3)" in other
    stale = keytabs.diagnose(str(path), principal="nfs/h@R", kvno=4) or ""
    assert "holds nfs/h@R with kvno 3, but the client's ticket is for kvno 4" in stale
    assert "ktadd -norandkey" in stale


def test_check_services_warns_with_the_service(tmp_path: Path) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text(
        "[service/nfs]\n  mechs = krb5\n  euid = 0\n"
        f"  cred_store = keytab:{tmp_path}/missing.keytab\n"
        "  cred_store = client_keytab:/var/lib/gssproxy/clients/%U.keytab\n"
        "[service/good]\n  mechs = krb5\n  euid = 1\n"
        f"  cred_store = keytab:FILE:{tmp_path}/good.keytab\n  krb5_principal = nfs/h@R\n"
    )
    (tmp_path / "good.keytab").write_bytes(keytab(entry_v2("host/h@R", 1)))
    config = load_config(str(conf), None, default_socket=str(tmp_path / "s"))
    warnings = keytabs.check_services(config)
    assert len(warnings) == 2  # per-user templates are checked per call, not here
    assert warnings[0].startswith(f"service 'nfs': the keytab {tmp_path}/missing.keytab does not")
    assert (
        warnings[1].startswith("service 'good': the keytab ")
        and "no key for nfs/h@R" in warnings[1]
    )


def test_unreadable_keytab_reasons(tmp_path: Path) -> None:
    """The reasons only another uid or a failing disk produce (the tests run
    as root, which reads everything), from the exception `read_entries`
    would raise."""
    path = tmp_path / "k"
    path.write_bytes(b"")
    path.chmod(0o640)
    euid = os.geteuid()
    denied = keytabs._unreadable(str(path), "client keytab", PermissionError(errno.EACCES, "no"))
    assert denied == (
        f"the client keytab {path} is not readable by the daemon's uid {euid} "
        f"(mode 0640, owner uid {path.stat().st_uid}): chown it to uid {euid} (run_as_user), "
        "or turn run_as_user off"
    )
    hidden = keytabs._unreadable(str(tmp_path / "x" / "k"), "keytab", PermissionError())
    assert "(a directory above it is closed)" in hidden
    failing = keytabs._unreadable(str(path), "keytab", OSError(errno.EIO, "I/O error"))
    assert failing == f"the keytab {path} cannot be read: {os.strerror(errno.EIO)}"
