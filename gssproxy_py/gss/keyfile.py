"""The credential-handle key file: the only code that reads or writes handle keys.

Sealed credential handles (`gssproxy_py.gss.handles`) are encrypted under
256-bit keys kept in a root-only state file such as
``/var/lib/gssproxy-py/handle-keys``. The file holds up to five keys, each
tagged by a random 32-bit key id. The newest key seals; all of them open, so
handles sealed before a rotation stay valid until their key ages out (after
`MAX_OLD_KEYS` further rotations).

File format (big-endian, all fields fixed size)::

    b"GPYK"  u8 version=1  u8 count(1..5)
    count * ( u32 key_id, 32-byte key )      newest first
    32-byte SHA-256 over everything before it

The checksum only detects corruption (a torn or bit-rotted file); the file's
secrecy rests on its ownership and mode, which `load_or_create` checks on
every load.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gssproxy_py.errors import LocalError

__all__ = [
    "HANDLE_KEYS_FILE",
    "KEY_LEN",
    "MAX_OLD_KEYS",
    "HandleKey",
    "HandleKeys",
    "KeyFileError",
    "KeyFileInsecureError",
    "KeyFileMalformedError",
    "load_or_create",
    "rotate",
]

#: The key file's name in `state_dir` (the engine's sealing reads the same name).
HANDLE_KEYS_FILE = "handle-keys"
KEY_LEN = 32
MAX_OLD_KEYS = 4
_MAX_KEYS = MAX_OLD_KEYS + 1

_MAGIC = b"GPYK"
_VERSION = 1
_HEAD = struct.Struct(">4sBB")
_ENTRY = struct.Struct(f">I{KEY_LEN}s")
_DIGEST_LEN = hashlib.sha256().digest_size
_MAX_FILE_LEN = _HEAD.size + _MAX_KEYS * _ENTRY.size + _DIGEST_LEN


class KeyFileError(LocalError):
    """The handle key file cannot be used; `path` says which file."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = os.fspath(path)
        self.message = message
        super().__init__(f"handle key file {self.path}: {message}")


class KeyFileInsecureError(KeyFileError):
    """The file is not a regular file owned by us and closed to group and other."""


class KeyFileMalformedError(KeyFileError):
    """The file's contents do not follow the format."""


@dataclass(frozen=True, slots=True, repr=False)
class HandleKey:
    """One AES-256 key and its id. The key bytes never appear in repr or str."""

    key_id: int
    secret: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFFFFFFFF:
            raise ValueError(f"key id {self.key_id} is not a u32")
        if len(self.secret) != KEY_LEN:
            raise ValueError(f"a handle key is {KEY_LEN} bytes, not {len(self.secret)}")

    def __repr__(self) -> str:
        return f"HandleKey(key_id=0x{self.key_id:08x}, secret=<redacted>)"


@dataclass(frozen=True, slots=True, repr=False)
class HandleKeys:
    """The current key followed by up to `MAX_OLD_KEYS` older ones (newest first)."""

    keys: tuple[HandleKey, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= _MAX_KEYS:
            raise ValueError(f"need 1 to {_MAX_KEYS} handle keys, got {len(self.keys)}")
        ids = [k.key_id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("handle key ids must be unique")

    def __repr__(self) -> str:
        ids = ", ".join(f"0x{k.key_id:08x}" for k in self.keys)
        return f"HandleKeys(key_ids=[{ids}], secrets=<redacted>)"

    @property
    def current(self) -> HandleKey:
        """The key new handles are sealed with."""
        return self.keys[0]

    def find(self, key_id: int) -> HandleKey | None:
        """The key with this id, or None if it was never ours or has aged out."""
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None

    @classmethod
    def generate(cls) -> HandleKeys:
        """A fresh single-key set, e.g. for tests or a daemon without a state dir."""
        return cls((_new_key(()),))

    def rotated(self) -> HandleKeys:
        """A new set with a fresh current key; the oldest beyond the limit are dropped."""
        fresh = _new_key(k.key_id for k in self.keys)
        return HandleKeys((fresh, *self.keys[:MAX_OLD_KEYS]))


def _new_key(taken_ids: Iterable[int]) -> HandleKey:
    taken = set(taken_ids)
    while True:
        key_id = secrets.randbits(32)
        if key_id not in taken:
            return HandleKey(key_id, secrets.token_bytes(KEY_LEN))


def _encode(keys: HandleKeys) -> bytes:
    body = _HEAD.pack(_MAGIC, _VERSION, len(keys.keys)) + b"".join(
        _ENTRY.pack(k.key_id, k.secret) for k in keys.keys
    )
    return body + hashlib.sha256(body).digest()


def _decode(path: Path, data: bytes) -> HandleKeys:
    if len(data) < _HEAD.size + _DIGEST_LEN:
        raise KeyFileMalformedError(path, f"too short ({len(data)} bytes)")
    magic, version, count = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise KeyFileMalformedError(path, "not a gssproxy-py handle key file (bad magic)")
    if version != _VERSION:
        raise KeyFileMalformedError(path, f"unsupported format version {version}")
    if not 1 <= count <= _MAX_KEYS:
        raise KeyFileMalformedError(path, f"key count {count} outside 1..{_MAX_KEYS}")
    expected = _HEAD.size + count * _ENTRY.size + _DIGEST_LEN
    if len(data) != expected:
        raise KeyFileMalformedError(path, f"length {len(data)} bytes, expected {expected}")
    body, digest = data[:-_DIGEST_LEN], data[-_DIGEST_LEN:]
    if not secrets.compare_digest(hashlib.sha256(body).digest(), digest):
        raise KeyFileMalformedError(path, "checksum mismatch (file corrupted)")
    entries = tuple(
        HandleKey(*_ENTRY.unpack_from(body, _HEAD.size + i * _ENTRY.size)) for i in range(count)
    )
    try:
        return HandleKeys(entries)
    except ValueError as exc:
        raise KeyFileMalformedError(path, str(exc)) from None


def _read_checked(path: Path) -> bytes:
    """Read the file, refusing anything another local user could have read or planted.

    The parent directory's mode is not checked: a file we own with mode 0600
    cannot have been written by anyone but us (or root), wherever it lives.
    """
    # O_NOFOLLOW: a symlink could point us at a file chosen by someone else.
    # O_NONBLOCK: opening a FIFO planted at the path must not hang the daemon;
    # it has no effect on the regular file we expect.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise  # the caller decides whether a missing file is created
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise KeyFileInsecureError(path, "is a symbolic link") from None
        raise KeyFileError(path, f"cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileInsecureError(path, "is not a regular file")
        euid = os.geteuid()
        if st.st_uid != euid:
            raise KeyFileInsecureError(path, f"owned by uid {st.st_uid}, not by our euid {euid}")
        if st.st_mode & 0o077:
            raise KeyFileInsecureError(
                path,
                f"mode {stat.S_IMODE(st.st_mode):04o} gives group/other access; "
                "it must be 0600 or stricter",
            )
        chunks: list[bytes] = []
        total = 0
        # Read one byte past the largest valid size so oversize files are caught
        # without reading an arbitrarily large file.
        while total <= _MAX_FILE_LEN:
            chunk = os.read(fd, _MAX_FILE_LEN + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise KeyFileError(path, f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _load(path: Path) -> HandleKeys:
    return _decode(path, _read_checked(path))


def _ensure_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    try:
        # Only the directories we create get 0700; an existing /var/lib is left alone.
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise KeyFileError(directory, f"cannot create directory: {exc.strerror}") from exc


@contextlib.contextmanager
def _dir_locked(directory: Path) -> Iterator[int]:
    """Hold an exclusive flock on the directory, serialising writers of the key file."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(dfd, fcntl.LOCK_EX)
        yield dfd
    finally:
        os.close(dfd)  # closing releases the lock


def _write_temp(directory: Path, base: str, data: bytes) -> Path:
    tmp = directory / f".{base}.tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # The umask may have narrowed the mode further; make it exactly 0600.
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def _install(path: Path, keys: HandleKeys, *, replace: bool, dfd: int) -> bool:
    """Write `keys` to `path` atomically; False if `replace` is off and the file exists."""
    tmp = _write_temp(path.parent, path.name, _encode(keys))
    try:
        if replace:
            os.replace(tmp, path)
        else:
            # link() fails with EEXIST instead of overwriting: two daemons
            # starting at once must not each believe their own new key is current.
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        os.fsync(dfd)
        return True
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_or_create(path: str | os.PathLike[str]) -> HandleKeys:
    """Load the key file, creating it (and a 0700 parent) with one fresh key if missing.

    Raises `KeyFileInsecureError` for a file that is not a regular file owned by
    our euid with mode 0600 or stricter, `KeyFileMalformedError` for bad contents,
    and `KeyFileError` for other I/O failures.
    """
    p = Path(path)
    try:
        return _load(p)
    except FileNotFoundError:
        pass
    _ensure_dir(p.parent)
    try:
        with _dir_locked(p.parent) as dfd:
            keys = HandleKeys.generate()
            if _install(p, keys, replace=False, dfd=dfd):
                return keys
    except OSError as exc:
        raise KeyFileError(p, f"cannot create: {exc.strerror}") from exc
    return _load(p)


def rotate(path: str | os.PathLike[str]) -> HandleKeys:
    """Add a fresh current key, keeping at most `MAX_OLD_KEYS` older ones.

    A missing file is created with a single key. The same checks as
    `load_or_create` apply to an existing file; a refused file is not touched.
    """
    p = Path(path)
    _ensure_dir(p.parent)
    try:
        with _dir_locked(p.parent) as dfd:
            try:
                keys = _load(p).rotated()
            except FileNotFoundError:
                keys = HandleKeys.generate()
            _install(p, keys, replace=True, dfd=dfd)
            return keys
    except OSError as exc:
        raise KeyFileError(p, f"cannot rotate: {exc.strerror}") from exc
