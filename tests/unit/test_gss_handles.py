"""Tests for sealed credential handles (gss/handles.py) and their key file (gss/keyfile.py)."""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.errors import LocalError, PeerError
from gssproxy_py.gss import handles, keyfile
from gssproxy_py.gss.handles import (
    HandleExpiredError,
    HandleMalformedError,
    HandleRejected,
    HandleSealError,
    HandleTamperedError,
    HandleUnknownKeyError,
    open_handle,
    seal,
)
from gssproxy_py.gss.keyfile import (
    MAX_OLD_KEYS,
    HandleKey,
    HandleKeys,
    KeyFileError,
    KeyFileInsecureError,
    KeyFileMalformedError,
    load_or_create,
    rotate,
)

KEYS = HandleKeys.generate()
NOW = 1_700_000_000


# --- sealing ---------------------------------------------------------------


@given(plaintext=st.binary(max_size=512), uid=st.integers(0, 0xFFFFFFFF), service=st.text())
def test_round_trip(plaintext: bytes, uid: int, service: str) -> None:
    blob = seal(KEYS, plaintext, service=service, uid=uid)
    assert blob[:4] == b"GPY1"
    assert open_handle(KEYS, blob, service=service, uid=uid, now=NOW) == plaintext


def test_layout() -> None:
    blob = seal(KEYS, b"abc", service="nfs", uid=7, not_after=NOW + 60)
    magic, key_id, not_after = struct.unpack_from(">4sIQ", blob)
    assert (magic, key_id, not_after) == (b"GPY1", KEYS.current.key_id, NOW + 60)
    assert len(blob) == 4 + 4 + 8 + 12 + 3 + 16


def test_nonces_differ() -> None:
    a = seal(KEYS, b"same", service="s", uid=1)
    b = seal(KEYS, b"same", service="s", uid=1)
    assert a != b


def test_other_uid_rejected() -> None:
    blob = seal(KEYS, b"cred", service="nfs", uid=1000)
    with pytest.raises(HandleTamperedError) as ei:
        open_handle(KEYS, blob, service="nfs", uid=1001, now=NOW)
    assert ei.value.reason == "wrong_binding_or_tampered"


def test_other_service_rejected() -> None:
    blob = seal(KEYS, b"cred", service="nfs", uid=1000)
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, blob, service="nfs-client", uid=1000, now=NOW)


def test_service_uid_boundary_is_unambiguous() -> None:
    # If the service were not length-prefixed, ("a\0\0\0", uid) could alias ("a", ...).
    blob = seal(KEYS, b"x", service="a", uid=0)
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, blob, service="a\0", uid=0, now=NOW)


def test_out_of_range_uid_on_open_rejected() -> None:
    blob = seal(KEYS, b"x", service="s", uid=0)
    with pytest.raises(HandleRejected):
        open_handle(KEYS, blob, service="s", uid=-1, now=NOW)


def _flip(blob: bytes, bit: int) -> bytes:
    b = bytearray(blob)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_every_single_bit_flip_rejected() -> None:
    blob = seal(KEYS, b"a credential token", service="nfs", uid=1000, not_after=NOW + 10)
    for bit in range(len(blob) * 8):
        with pytest.raises(HandleRejected):
            open_handle(KEYS, _flip(blob, bit), service="nfs", uid=1000, now=NOW)


@settings(max_examples=200)
@given(plaintext=st.binary(max_size=64), data=st.data(), expiring=st.booleans())
def test_single_bit_flip_rejected_hypothesis(
    plaintext: bytes, data: st.DataObject, expiring: bool
) -> None:
    blob = seal(KEYS, plaintext, service="svc", uid=42, not_after=NOW + 5 if expiring else None)
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    with pytest.raises(HandleRejected) as ei:
        open_handle(KEYS, _flip(blob, bit), service="svc", uid=42, now=NOW)
    # Which part was hit decides the reason; none may read as a valid handle.
    byte = bit // 8
    if byte < 4:
        assert ei.value.reason == "malformed"
    elif byte < 8:
        assert ei.value.reason == "unknown_key"
    else:
        assert ei.value.reason == "wrong_binding_or_tampered"


@given(blob=st.binary(max_size=80))
def test_arbitrary_bytes_never_open(blob: bytes) -> None:
    with pytest.raises(HandleRejected):
        open_handle(KEYS, blob, service="svc", uid=0, now=NOW)


def test_truncated_and_extended_rejected() -> None:
    blob = seal(KEYS, b"token", service="s", uid=1)
    for cut in range(len(blob)):
        with pytest.raises(HandleRejected):
            open_handle(KEYS, blob[:cut], service="s", uid=1, now=NOW)
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, blob + b"\0", service="s", uid=1, now=NOW)


def test_short_blob_is_malformed() -> None:
    with pytest.raises(HandleMalformedError) as ei:
        open_handle(KEYS, b"GPY1", service="s", uid=1, now=NOW)
    assert ei.value.reason == "malformed"
    assert isinstance(ei.value, PeerError)


def test_bad_magic_is_malformed() -> None:
    blob = b"GPY2" + seal(KEYS, b"t", service="s", uid=1)[4:]
    with pytest.raises(HandleMalformedError):
        open_handle(KEYS, blob, service="s", uid=1, now=NOW)


def test_unknown_key_id() -> None:
    other = HandleKeys.generate()
    blob = seal(other, b"t", service="s", uid=1)
    with pytest.raises(HandleUnknownKeyError) as ei:
        open_handle(KEYS, blob, service="s", uid=1, now=NOW)
    assert ei.value.reason == "unknown_key"
    assert ei.value.key_id == other.current.key_id


def test_same_key_id_different_key_is_tampered() -> None:
    impostor = HandleKeys((HandleKey(KEYS.current.key_id, b"\x01" * 32),))
    blob = seal(impostor, b"t", service="s", uid=1)
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, blob, service="s", uid=1, now=NOW)


def test_expiry() -> None:
    blob = seal(KEYS, b"t", service="s", uid=1, not_after=NOW)
    assert open_handle(KEYS, blob, service="s", uid=1, now=NOW) == b"t"
    with pytest.raises(HandleExpiredError) as ei:
        open_handle(KEYS, blob, service="s", uid=1, now=NOW + 1)
    assert ei.value.reason == "expired"
    assert (ei.value.not_after, ei.value.now) == (NOW, NOW + 1)


def test_no_expiry_opens_at_any_time() -> None:
    blob = seal(KEYS, b"t", service="s", uid=1)
    assert open_handle(KEYS, blob, service="s", uid=1, now=2**62) == b"t"


def test_extending_expiry_is_tampering() -> None:
    blob = seal(KEYS, b"t", service="s", uid=1, not_after=NOW)
    forged = blob[:8] + struct.pack(">Q", NOW + 3600) + blob[16:]
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, forged, service="s", uid=1, now=NOW + 1)
    stripped = blob[:8] + struct.pack(">Q", 0) + blob[16:]
    with pytest.raises(HandleTamperedError):
        open_handle(KEYS, stripped, service="s", uid=1, now=NOW + 1)


@pytest.mark.parametrize("kwargs", [{"uid": -1}, {"uid": 2**32}, {"uid": 1, "not_after": 0}])
def test_seal_refuses_bad_arguments(kwargs: dict[str, int]) -> None:
    with pytest.raises(HandleSealError):
        seal(KEYS, b"t", service="s", **kwargs)
    assert issubclass(HandleSealError, LocalError)


def test_all_rejections_share_one_root() -> None:
    for cls in (HandleMalformedError, HandleUnknownKeyError, HandleTamperedError):
        assert issubclass(cls, HandleRejected)
    assert issubclass(HandleExpiredError, HandleRejected)
    assert issubclass(HandleRejected, PeerError)
    assert handles.MAGIC == b"GPY1"


# --- key set -----------------------------------------------------------------


def test_repr_and_str_hide_key_bytes() -> None:
    keys = HandleKeys.generate().rotated()
    for text in (repr(keys), str(keys), repr(keys.current), str(keys.keys), f"{keys!r}"):
        for k in keys.keys:
            assert k.secret.hex() not in text
            assert k.secret.hex().upper() not in text
            assert repr(k.secret) not in text
        assert "redacted" in text
    assert f"0x{keys.current.key_id:08x}" in repr(keys)


def test_rotated_in_memory_keeps_at_most_four_old() -> None:
    keys = HandleKeys.generate()
    history = [keys.current]
    for _ in range(10):
        keys = keys.rotated()
        history.insert(0, keys.current)
        assert len({k.key_id for k in keys.keys}) == len(keys.keys)
    assert keys.keys == tuple(history[: MAX_OLD_KEYS + 1])


def test_keys_validation() -> None:
    with pytest.raises(ValueError, match="unique"):
        HandleKeys((HandleKey(1, b"\0" * 32), HandleKey(1, b"\1" * 32)))
    with pytest.raises(ValueError, match="1 to 5"):
        HandleKeys(())
    with pytest.raises(ValueError, match="32 bytes"):
        HandleKey(1, b"\0" * 16)
    with pytest.raises(ValueError, match="u32"):
        HandleKey(2**32, b"\0" * 32)


# --- key file --------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_create_then_load(tmp_path: Path) -> None:
    path = tmp_path / "state" / "sub" / "handle-keys"
    created = load_or_create(path)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert path.stat().st_uid == os.geteuid()
    assert len(created.keys) == 1
    assert load_or_create(path) == created
    # No temporary files left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == ["handle-keys"]


def test_create_under_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        load_or_create(tmp_path / "k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == 0o600


def test_existing_parent_mode_untouched(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    load_or_create(tmp_path / "k")
    assert _mode(tmp_path) == 0o755


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o660, 0o644, 0o666, 0o700 | 0o010])
def test_refuses_group_or_other_access(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k"
    load_or_create(path)
    path.chmod(mode)
    with pytest.raises(KeyFileInsecureError, match="0600") as ei:
        load_or_create(path)
    assert ei.value.path == str(path)
    with pytest.raises(KeyFileInsecureError):
        rotate(path)
    assert _mode(path) == mode  # a refused file is left as found


def test_stricter_mode_accepted(tmp_path: Path) -> None:
    path = tmp_path / "k"
    keys = load_or_create(path)
    path.chmod(0o400)
    assert load_or_create(path) == keys


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_refuses_other_owner(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create(path)
    os.chown(path, 4242, -1)
    with pytest.raises(KeyFileInsecureError, match="uid 4242"):
        load_or_create(path)


def test_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real"
    load_or_create(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(KeyFileInsecureError, match="symbolic link"):
        load_or_create(link)


def test_refuses_non_regular(tmp_path: Path) -> None:
    path = tmp_path / "k"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileInsecureError, match="regular"):
        load_or_create(path)


def _write_raw(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],
        lambda d: d + b"\0",
        lambda d: b"",
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:4] + b"\x02" + d[5:],
        lambda d: d[:5] + b"\x00" + d[6:],
        lambda d: d[:5] + b"\x06" + d[6:],
        lambda d: d[:10] + bytes([d[10] ^ 1]) + d[11:],
        lambda d: d * 200,
    ],
    ids=[
        "truncated",
        "trailing",
        "empty",
        "magic",
        "version",
        "count0",
        "count6",
        "bitflip",
        "huge",
    ],
)
def test_refuses_malformed(tmp_path: Path, mutate: Callable[[bytes], bytes]) -> None:
    path = tmp_path / "k"
    load_or_create(path)
    _write_raw(path, mutate(path.read_bytes()))
    with pytest.raises(KeyFileMalformedError):
        load_or_create(path)


def test_refuses_duplicate_ids_even_with_valid_checksum(tmp_path: Path) -> None:
    entry = struct.pack(">I", 5) + b"\0" * 32
    body = b"GPYK\x01\x02" + entry + entry
    path = tmp_path / "k"
    _write_raw(path, body + hashlib.sha256(body).digest())
    with pytest.raises(KeyFileMalformedError, match="unique"):
        load_or_create(path)


def test_unreadable_path_is_keyfile_error(tmp_path: Path) -> None:
    (tmp_path / "k").mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_or_create(tmp_path / "k")


def test_rotate_keeps_old_keys_and_they_still_open(tmp_path: Path) -> None:
    path = tmp_path / "k"
    first = load_or_create(path)
    blob = seal(first, b"old cred", service="s", uid=5)
    for n in range(1, MAX_OLD_KEYS + 1):
        rotated = rotate(path)
        assert len(rotated.keys) == n + 1
        assert rotated.keys[1:] == load_or_create(path).keys[1:]
        assert load_or_create(path) == rotated
        assert open_handle(rotated, blob, service="s", uid=5, now=NOW) == b"old cred"
        assert _mode(path) == 0o600
    # One rotation more ages the first key out.
    rotated = rotate(path)
    assert len(rotated.keys) == MAX_OLD_KEYS + 1
    assert rotated.find(first.current.key_id) is None
    with pytest.raises(HandleUnknownKeyError):
        open_handle(rotated, blob, service="s", uid=5, now=NOW)
    new_blob = seal(rotated, b"new", service="s", uid=5)
    assert struct.unpack_from(">I", new_blob, 4)[0] == rotated.current.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_rotate_missing_file_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "k"
    keys = rotate(path)
    assert len(keys.keys) == 1
    assert load_or_create(path) == keys
    assert _mode(path) == 0o600


def test_concurrent_create_agrees(tmp_path: Path) -> None:
    path = tmp_path / "k"
    results: list[HandleKeys] = []
    lock = threading.Lock()

    def worker() -> None:
        keys = load_or_create(path)
        with lock:
            results.append(keys)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 16
    assert all(r == results[0] for r in results)
    assert load_or_create(path) == results[0]


def test_concurrent_rotate_loses_no_update(tmp_path: Path) -> None:
    path = tmp_path / "k"
    load_or_create(path)
    threads = [threading.Thread(target=rotate, args=(path,)) for _ in range(MAX_OLD_KEYS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(load_or_create(path).keys) == MAX_OLD_KEYS + 1


def test_error_classes() -> None:
    assert issubclass(KeyFileInsecureError, KeyFileError)
    assert issubclass(KeyFileMalformedError, KeyFileError)
    assert issubclass(KeyFileError, LocalError)
    assert keyfile.KEY_LEN == 32
