"""PIN sources: `file:` permission rules and `keyring:` through libkeyutils
(in a fresh session keyring, as `keyctl session` would give)."""

from __future__ import annotations

import os
import pickle
import subprocess
import uuid
from pathlib import Path

import pytest

from gssproxy_py.config.model import PinSource, PinSourceKind
from gssproxy_py.pkcs11.errors import PinSourceError
from gssproxy_py.pkcs11.keyring import (
    KeyringError,
    add_user_key,
    join_new_session_keyring,
    read_user_key,
    unlink_key,
)
from gssproxy_py.pkcs11.pin import Pin, read_pin


def _file(tmp_path: Path, content: bytes, mode: int = 0o600) -> PinSource:
    path = tmp_path / "pin"
    path.write_bytes(content)
    path.chmod(mode)
    return PinSource(PinSourceKind.FILE, str(path))


@pytest.mark.parametrize(
    ("content", "pin"),
    [
        (b"1234", "1234"),
        (b"1234\n", "1234"),
        (b"1234\r\n", "1234"),
        (b" 12 34 ", " 12 34 "),  # only one trailing newline is stripped
        ("pïn".encode(), "pïn"),
    ],
)
def test_file_pin(tmp_path: Path, content: bytes, pin: str) -> None:
    assert read_pin(_file(tmp_path, content)).reveal() == pin


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660])
def test_file_pin_refused_when_group_or_other_have_access(tmp_path: Path, mode: int) -> None:
    source = _file(tmp_path, b"1234", mode)
    with pytest.raises(PinSourceError, match=f"mode {mode:04o} gives group or other access"):
        read_pin(source)


def test_file_pin_0400_is_fine(tmp_path: Path) -> None:
    assert read_pin(_file(tmp_path, b"1234", 0o400)).reveal() == "1234"


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"\n", "empty"),
        (b"12\n34", "line break"),
        (b"12\x0034", "NUL"),
        (b"\xff\xfe", "not UTF-8"),
        (b"9" * 300, "longer than 256"),
    ],
)
def test_bad_file_content(tmp_path: Path, content: bytes, why: str) -> None:
    with pytest.raises(PinSourceError, match=why) as e:
        read_pin(_file(tmp_path, content))
    assert "9999" not in str(e.value)


def test_file_pin_refuses_symlinks_dirs_and_missing(tmp_path: Path) -> None:
    real = _file(tmp_path, b"1234")
    link = tmp_path / "link"
    link.symlink_to(real.location)
    with pytest.raises(PinSourceError):
        read_pin(PinSource(PinSourceKind.FILE, str(link)))
    with pytest.raises(PinSourceError, match="not a regular file"):
        read_pin(PinSource(PinSourceKind.FILE, str(tmp_path)))
    with pytest.raises(PinSourceError, match="no such file"):
        read_pin(PinSource(PinSourceKind.FILE, str(tmp_path / "missing")))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_file_pin_owned_by_someone_else(tmp_path: Path) -> None:
    source = _file(tmp_path, b"1234")
    os.chown(source.location, 65534, 65534)
    with pytest.raises(PinSourceError, match="owned by uid 65534"):
        read_pin(source)


def test_pin_hides_its_value() -> None:
    pin = Pin("s3cret", "file:/x")
    for shown in (repr(pin), str(pin), f"{pin}", f"{[pin]}"):
        assert "s3cret" not in shown
    assert pin.same_as(Pin("s3cret", "keyring:y"))
    assert not pin.same_as(Pin("other", "keyring:y"))
    with pytest.raises(TypeError):
        pickle.dumps(pin)


# -- keyring -------------------------------------------------------------------


@pytest.fixture(scope="module")
def session_keyring() -> int:
    """A fresh session keyring for this process (`keyctl session`)."""
    return join_new_session_keyring()


def test_keyring_pin(session_keyring: int) -> None:
    desc = f"gpytest-{uuid.uuid4().hex}"
    key = add_user_key(desc, b"4321\n")
    assert read_user_key(desc) == b"4321\n"
    assert read_pin(PinSource(PinSourceKind.KEYRING, desc)).reveal() == "4321"
    # visible to keyctl too, which is how an administrator would check it
    out = subprocess.run(["keyctl", "search", "@s", "user", desc], capture_output=True, text=True)
    assert out.stdout.strip() == str(key)
    unlink_key(key)
    with pytest.raises(PinSourceError, match=f"keyring:{desc}") as e:
        read_pin(PinSource(PinSourceKind.KEYRING, desc))
    assert "4321" not in str(e.value)


def test_keyring_pin_added_by_keyctl(session_keyring: int) -> None:
    desc = f"gpytest-{uuid.uuid4().hex}"
    subprocess.run(["keyctl", "padd", "user", desc, "@s"], input=b"8765", check=True)
    assert read_pin(PinSource(PinSourceKind.KEYRING, desc)).reveal() == "8765"


def test_keyring_missing_key(session_keyring: int) -> None:
    with pytest.raises(KeyringError, match="no readable user key") as e:
        read_user_key(f"gpytest-missing-{uuid.uuid4().hex}")
    assert e.value.errno != 0
