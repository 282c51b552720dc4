"""Caches that keep a stream of requests from re-acquiring credentials every time.

* `AcquireCache`: the sealed `GssxCred` answer for one (service, peer uid,
  request, store) key, valid until the credential's lifetime minus the
  service's `min_lifetime`, and only while the keytab files named in the
  store look the same (inode, size, mtime: a new kvno written by `ktadd` or
  a replaced file is picked up without a restart, within `STAT_INTERVAL`,
  since `FileStamps` stat()s each file at most once a second).
* `TtlCache`: a small map whose entries live `ttl` seconds (the kernel's
  linux_creds lookups: local name, uid, gid and groups per initiator).
* `CredPool`: idle python-gssapi credential objects per handle (service, uid,
  digest of the sealed blob). A request *checks out* one object and checks
  it in when done, so no object is ever used by two threads at once, and a
  busy handle simply gets a second object imported.

Both are bounded LRU maps guarded by a `threading.Lock`: they are used from
the executor's worker threads.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar, final

from gssproxy_py.proto.gss_proxy import GssxCred

__all__ = [
    "STAMPS",
    "AcquireCache",
    "AcquireKey",
    "CredPool",
    "FileStamps",
    "Fingerprint",
    "TtlCache",
    "fingerprint",
    "handle_digest",
]

#: A file as change detection sees it: (inode, size, mtime_ns), or None if
#: it could not be stat()ed.
Stamp = tuple[int, int, int] | None

#: Per keytab path, its stamp.
Fingerprint = tuple[tuple[str, Stamp], ...]

#: How long a file's stamp is trusted before it is stat()ed again (seconds).
STAT_INTERVAL = 1.0

_T = TypeVar("_T")


def stat_stamp(path: str | os.PathLike[str]) -> Stamp:
    """The file's stamp now (one stat)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileStamps:
    """Stamps of the files every call checks (keytabs, the handle key file),
    each stat()ed at most once per `interval` seconds: a change is seen
    within a second, and at once after `forget` (a reload).

    Used from the event loop and the worker threads without a lock: each
    entry is replaced whole, and two threads that both find it old only
    stat the file twice.
    """

    __slots__ = ("_seen", "clock", "interval")

    def __init__(
        self, interval: float = STAT_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._seen: dict[str, tuple[float, Stamp]] = {}

    def stamp(self, path: str) -> Stamp:
        """The file's stamp, stat()ed again if the last one is `interval` old."""
        now = self.clock()
        seen = self._seen.get(path)
        if seen is not None and now - seen[0] < self.interval:
            return seen[1]
        return self.refresh(path, now)

    def refresh(self, path: str, now: float | None = None) -> Stamp:
        """stat() the file now (e.g. after writing it) and keep its stamp."""
        stamp = stat_stamp(path)
        if len(self._seen) >= _MAX_STAMPED:
            self._seen.clear()
        self._seen[path] = (self.clock() if now is None else now, stamp)
        return stamp

    def forget(self) -> None:
        self._seen.clear()


#: Bounds the stamps kept (configured keytabs; `%U` templates can name many).
_MAX_STAMPED = 1024

#: The daemon's stamps (the GSS engine forgets them on reload).
STAMPS = FileStamps()


def fingerprint(paths: Iterable[str], stamps: FileStamps = STAMPS) -> Fingerprint:
    return tuple([(path, stamps.stamp(path)) for path in paths])


def handle_digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


@dataclass(slots=True)
class _Entry(Generic[_T]):
    value: _T
    expires_at: float | None  # wall clock; None = no expiry
    fingerprint: Fingerprint


@final
class AcquireKey:
    """An `AcquireCache` key whose hash is computed once: its parts hold the
    `Service` (a frozen dataclass of some forty fields, hashed field by
    field on every lookup: ~30,000 instructions per accept before this,
    docs/PERFORMANCE.md), and `gss.direct` looks the same key up for every
    call. Equal when the parts are equal."""

    __slots__ = ("_hash", "parts")

    def __init__(self, parts: tuple[Hashable, ...]) -> None:
        self.parts: Final = parts
        self._hash: Final = hash(parts)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, AcquireKey):
            return NotImplemented
        return self._hash == other._hash and self.parts == other.parts


class AcquireCache:
    """Sealed acquisition results, keyed by everything that decided them."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Entry[GssxCred]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(
        self, key: Hashable, fp: Fingerprint, *, min_lifetime: int, now: float | None = None
    ) -> GssxCred | None:
        t = time.time() if now is None else now
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            stale = entry.fingerprint != fp or (
                entry.expires_at is not None and entry.expires_at - min_lifetime <= t
            )
            if stale:
                del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def put(
        self, key: Hashable, value: GssxCred, expires_at: float | None, fp: Fingerprint
    ) -> None:
        with self._lock:
            self._entries[key] = _Entry(value, expires_at, fp)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class TtlCache(Generic[_T]):
    """Values that are good for `ttl` seconds after they were put (monotonic)."""

    def __init__(self, ttl: float, max_entries: int = 1024) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[float, _T]] = OrderedDict()

    def get(self, key: Hashable, *, now: float | None = None) -> _T | None:
        t = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= t:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Hashable, value: _T, *, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._entries[key] = (t + self.ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(slots=True)
class _Idle(Generic[_T]):
    objects: list[_T] = field(default_factory=list)
    expires_at: float | None = None
    fingerprint: Fingerprint = ()


class CredPool(Generic[_T]):
    """Idle credential objects per handle; exclusive checkout."""

    def __init__(self, max_keys: int = 1024, max_idle_per_key: int = 8) -> None:
        self._max_keys = max_keys
        self.max_idle_per_key = max_idle_per_key
        self._lock = threading.Lock()
        self._idle: OrderedDict[Hashable, _Idle[_T]] = OrderedDict()
        #: +1 at each `clear` (a reload): an object leased before it is
        #: not checked in after it (`checkin`'s `generation`)
        self.generation = 0

    def checkout(self, key: Hashable, fp: Fingerprint, *, now: float | None = None) -> _T | None:
        t = time.time() if now is None else now
        with self._lock:
            idle = self._idle.get(key)
            if idle is None:
                return None
            if idle.fingerprint != fp or (idle.expires_at is not None and idle.expires_at <= t):
                del self._idle[key]
                return None
            self._idle.move_to_end(key)
            return idle.objects.pop() if idle.objects else None

    def checkin(
        self,
        key: Hashable,
        obj: _T,
        expires_at: float | None,
        fp: Fingerprint,
        generation: int | None = None,
    ) -> bool:
        """Return an object to the pool; False if it was dropped (pool full,
        stale key, or leased before a `clear`: `generation`, read before
        it was checked out or made, is not the pool's any more)."""
        with self._lock:
            if generation is not None and generation != self.generation:
                return False
            idle = self._idle.get(key)
            if idle is None or idle.fingerprint != fp:
                idle = _Idle(expires_at=expires_at, fingerprint=fp)
                self._idle[key] = idle
            self._idle.move_to_end(key)
            if len(idle.objects) >= self.max_idle_per_key:
                return False
            idle.objects.append(obj)
            while len(self._idle) > self._max_keys:
                self._idle.popitem(last=False)
            return True

    def drop(self, key: Hashable) -> int:
        with self._lock:
            idle = self._idle.pop(key, None)
            return 0 if idle is None else len(idle.objects)

    def clear(self) -> None:
        with self._lock:
            self._idle.clear()
            self.generation += 1

    def idle_count(self, key: Hashable) -> int:
        with self._lock:
            idle = self._idle.get(key)
            return 0 if idle is None else len(idle.objects)
