"""Token PINs: where they come from and how they are held.

`pkcs11_pin = keyring:DESCRIPTION` reads a `user` key from the kernel
keyring (`keyring.py`); `pkcs11_pin = file:PATH` reads a file that must be a
regular file, not a symlink, owned by the daemon's user or root, and with no
permission bits for group or other (like ssh with private keys: a PIN
anybody else can read, or replace, is not a secret). Both are read when the
daemon starts and again on reload, never per call.

A `Pin` never shows its value: repr and str are fixed strings, and it
compares in constant time. Python cannot scrub a str, so the value lives as
long as the Pin does; it is handed to the module only for C_Login.
"""

from __future__ import annotations

import hmac
import os
import stat
from typing import Final

from gssproxy_py.config.model import PinSource, PinSourceKind
from gssproxy_py.pkcs11.errors import PinSourceError
from gssproxy_py.pkcs11.keyring import KeyringError, read_user_key

__all__ = ["MAX_PIN_LENGTH", "Pin", "read_pin"]

#: Longer "PINs" are refused: no token takes one, and a big file is a mistake.
MAX_PIN_LENGTH: Final = 256


class Pin:
    """A token PIN. Its value is only reachable through `reveal()`."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value = value
        #: where it came from ("keyring:NAME"/"file:PATH"), for messages
        self.source = source

    def reveal(self) -> str:
        """The PIN, for C_Login only."""
        return self._value

    def same_as(self, other: Pin) -> bool:
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __repr__(self) -> str:
        return f"Pin(<redacted>, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Pin cannot be pickled")


def _clean(raw: bytes, source: str) -> Pin:
    # One trailing newline is what `echo PIN > file` and `keyctl padd` with
    # echo leave; strip exactly that, never inner or other whitespace.
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise PinSourceError(f"pkcs11_pin {source}: empty")
    if len(raw) > MAX_PIN_LENGTH:
        raise PinSourceError(f"pkcs11_pin {source}: longer than {MAX_PIN_LENGTH} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # PKCS#11 PINs are UTF-8 (CK_UTF8CHAR); python-pkcs11 sends str as UTF-8.
        raise PinSourceError(f"pkcs11_pin {source}: not UTF-8") from None
    if "\x00" in text or "\n" in text:
        raise PinSourceError(f"pkcs11_pin {source}: contains a NUL or a line break")
    return Pin(text, source)


def _read_file(path: str, source: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise PinSourceError(f"pkcs11_pin {source}: no such file") from None
    except OSError as e:
        raise PinSourceError(f"pkcs11_pin {source}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PinSourceError(f"pkcs11_pin {source}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise PinSourceError(
                f"pkcs11_pin {source}: owned by uid {st.st_uid}, not root or the daemon's user"
            )
        if st.st_mode & 0o077:
            raise PinSourceError(
                f"pkcs11_pin {source}: mode {stat.S_IMODE(st.st_mode):04o} gives group or "
                "other access; make it 0600 or 0400"
            )
        chunks = []
        total = 0
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_PIN_LENGTH + 2:
                raise PinSourceError(f"pkcs11_pin {source}: longer than {MAX_PIN_LENGTH} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_pin(source: PinSource) -> Pin:
    """Read the PIN a service's `pkcs11_pin` names; PinSourceError if it
    cannot be read or is unsafe. Messages never contain the PIN."""
    where = f"{source.kind.value}:{source.location}"
    if source.kind is PinSourceKind.FILE:
        return _clean(_read_file(source.location, where), where)
    try:
        raw = read_user_key(source.location)
    except KeyringError as e:
        raise PinSourceError(f"pkcs11_pin {where}: {e}") from None
    return _clean(raw, where)
