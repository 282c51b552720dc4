"""The Linux kernel keyring through libkeyutils, by ctypes.

Used to read a token PIN stored as a `user` key (`pkcs11_pin =
keyring:DESCRIPTION`) and, by the test helper, to make a fresh session
keyring and put a PIN in it.

Why libkeyutils in-process rather than running `keyctl`: the PIN never
passes through a pipe, argv or the environment of another process, errors
arrive as errno values rather than parsed text, and nothing depends on PATH
or on keyctl's output format. libkeyutils.so.1 ships with keyutils (and
most systems have it for nfs-utils or krb5's KEYRING ccache); raw
syscalls would avoid even that but need per-architecture numbers.

Which keyrings are searched: request_key(2) without a callout searches the
thread, process and session keyrings (and the user-session keyring when
there is no session keyring); then the user keyring (@u) explicitly, which a
daemon started from a login session would otherwise miss. Permission to read
comes from "possession" (the key is reachable from one of our keyrings), so
a key put into the session keyring of the shell that starts the daemon
(`keyctl padd user DESCRIPTION @s`) is readable by it.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

from gssproxy_py.errors import LocalError

__all__ = [
    "KEY_SPEC_SESSION_KEYRING",
    "KEY_SPEC_USER_KEYRING",
    "KeyringError",
    "add_user_key",
    "find_user_key",
    "join_new_session_keyring",
    "read_user_key",
    "unlink_key",
]

KEY_SPEC_THREAD_KEYRING: Final = -1
KEY_SPEC_PROCESS_KEYRING: Final = -2
KEY_SPEC_SESSION_KEYRING: Final = -3
KEY_SPEC_USER_KEYRING: Final = -4

_LIBNAME: Final = "libkeyutils.so.1"
# No key may be bigger than this in the user type (the kernel's limit is
# 32767); a PIN is far smaller, so anything larger is refused rather than read.
_MAX_KEY_SIZE: Final = 32767


class KeyringError(LocalError):
    """A keyring operation failed; `errno` is the reason."""

    def __init__(self, message: str, err: int) -> None:
        self.errno = err
        super().__init__(f"{message}: {os.strerror(err)}")


_lib: ctypes.CDLL | None = None


def _keyutils() -> ctypes.CDLL:
    global _lib  # one handle per process, loaded on first use
    if _lib is None:
        try:
            lib = ctypes.CDLL(_LIBNAME, use_errno=True)
        except OSError as e:
            raise KeyringError(f"cannot load {_LIBNAME} (install keyutils)", errno.ENOSYS) from e
        c_str, c_i32 = ctypes.c_char_p, ctypes.c_int32
        lib.request_key.argtypes = [c_str, c_str, c_str, c_i32]
        lib.request_key.restype = ctypes.c_int32
        lib.keyctl_search.argtypes = [c_i32, c_str, c_str, c_i32]
        lib.keyctl_search.restype = ctypes.c_long
        lib.keyctl_read.argtypes = [ctypes.c_int32, ctypes.c_char_p, ctypes.c_size_t]
        lib.keyctl_read.restype = ctypes.c_long
        lib.add_key.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int32,
        ]
        lib.add_key.restype = ctypes.c_int32
        lib.keyctl_join_session_keyring.argtypes = [ctypes.c_char_p]
        lib.keyctl_join_session_keyring.restype = ctypes.c_int32
        lib.keyctl_unlink.argtypes = [ctypes.c_int32, ctypes.c_int32]
        lib.keyctl_unlink.restype = ctypes.c_long
        _lib = lib
    return _lib


def _find(lib: ctypes.CDLL, description: bytes) -> int:
    key = int(lib.request_key(b"user", description, None, 0))
    if key >= 0:
        return key
    first = ctypes.get_errno()
    key = int(lib.keyctl_search(KEY_SPEC_USER_KEYRING, b"user", description, 0))
    if key >= 0:
        return key
    # Report the first search's reason: "no such key" is the common case,
    # while EACCES/EKEYREVOKED/EKEYEXPIRED from it are the interesting ones.
    err = first if first != errno.ENOKEY else ctypes.get_errno()
    raise KeyringError(f"no readable user key {description.decode(errors='replace')!r}", err)


def read_user_key(description: str) -> bytes:
    """The payload of the `user` key called `description`."""
    lib = _keyutils()
    key = _find(lib, description.encode("utf-8"))
    buf = ctypes.create_string_buffer(_MAX_KEY_SIZE)
    try:
        n = int(lib.keyctl_read(key, buf, _MAX_KEY_SIZE))
        if n < 0:
            raise KeyringError(f"cannot read user key {description!r}", ctypes.get_errno())
        if n > _MAX_KEY_SIZE:
            raise KeyringError(f"user key {description!r} is too large", errno.EMSGSIZE)
        return buf.raw[:n]
    finally:
        # The buffer held the PIN; overwrite it (the bytes we return are a
        # copy Python cannot scrub, but this one we can).
        ctypes.memset(buf, 0, _MAX_KEY_SIZE)


def add_user_key(description: str, payload: bytes, keyring: int = KEY_SPEC_SESSION_KEYRING) -> int:
    """Add (or update) a `user` key in `keyring`; returns its serial."""
    lib = _keyutils()
    key = int(lib.add_key(b"user", description.encode("utf-8"), payload, len(payload), keyring))
    if key < 0:
        raise KeyringError(f"cannot add user key {description!r}", ctypes.get_errno())
    return key


def find_user_key(description: str, keyring: int) -> int | None:
    """The serial of the `user` key `description` reachable from `keyring`
    (keyctl_search), or None when there is none."""
    lib = _keyutils()
    key = int(lib.keyctl_search(keyring, b"user", description.encode("utf-8"), 0))
    if key >= 0:
        return key
    err = ctypes.get_errno()
    if err in (errno.ENOKEY, errno.EKEYEXPIRED, errno.EKEYREVOKED):
        return None
    raise KeyringError(f"cannot search for user key {description!r}", err)


def unlink_key(key: int, keyring: int = KEY_SPEC_SESSION_KEYRING) -> None:
    lib = _keyutils()
    if int(lib.keyctl_unlink(key, keyring)) < 0:
        raise KeyringError(f"cannot unlink key {key}", ctypes.get_errno())


def join_new_session_keyring() -> int:
    """Give this process a new anonymous session keyring (what `keyctl
    session` does before running its command); returns its serial."""
    lib = _keyutils()
    ring = int(lib.keyctl_join_session_keyring(None))
    if ring < 0:
        raise KeyringError("cannot join a new session keyring", ctypes.get_errno())
    return ring
