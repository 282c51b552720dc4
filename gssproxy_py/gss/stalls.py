"""Threads stuck past the call deadline: written off, replaced, logged once.

A call whose KDC accepts the connection and never answers keeps its thread
inside libkrb5 long after the caller got SYSTEM_ERR at the deadline; nothing
can interrupt it. Each service has its own executor (`engine.GssEngine`),
so such threads only take that service's capacity; `StallWatch` gives it
back: when a call is about to be handed to an executor, threads that have
been in one call for longer than the deadline are written off and replaced
(`executors.Executor.write_off`, at most `max_written_off` at a time, so a
KDC that never answers cannot make the daemon grow without bound).

The first write-off of a stall is logged once, naming the service and the
KDC connections the daemon holds open (the remote ends of its TCP and
connected UDP sockets, with the realm a krb5.conf `kdc =` line gives them);
the next line for that executor comes only after it has had no stuck thread
again. Which thread waits on which socket cannot be told from outside, so
when two services stall at once, both lines list every open KDC connection.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable

from gssproxy_py.executors import Executor

_log = logging.getLogger(__name__)

#: At most one look at an executor's threads per this many seconds.
CHECK_INTERVAL = 1.0

# /proc/net/{tcp,udp}[6] states of a socket with a peer: ESTABLISHED, SYN_SENT.
_CONNECTED_STATES = frozenset({"01", "02"})
_KDC_LINE = re.compile(r"^\s*kdc\s*=\s*(\S+)\s*$")
_REALM_OPEN = re.compile(r"^\s*([^\s=]+)\s*=\s*\{\s*$")


def _addr(hex_addr: str) -> tuple[str, int]:
    """A /proc/net address `HEXIP:HEXPORT` as (ip, port)."""
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(ip_hex, 16)))
    else:
        words = struct.unpack("<4I", raw)
        ip = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return ip, int(port_hex, 16)


def _socket_inodes() -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def open_remote_endpoints() -> list[tuple[str, int]]:
    """The (ip, port) peers of this process's connected TCP and UDP sockets."""
    ours = _socket_inodes()
    found: list[tuple[str, int]] = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"/proc/self/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[9] not in ours or fields[3] not in _CONNECTED_STATES:
                continue
            ip, port = _addr(fields[2])
            if port and (ip, port) not in found:
                found.append((ip, port))
    return found


def configured_kdcs(files: Iterable[str]) -> dict[str, str]:
    """`kdc = HOST[:PORT]` values of krb5.conf files, to their realm."""
    kdcs: dict[str, str] = {}
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        realm: str | None = None
        for line in lines:
            if (m := _REALM_OPEN.match(line)) is not None:
                realm = m.group(1)
            elif line.strip() == "}":
                realm = None
            elif realm is not None and (m := _KDC_LINE.match(line)) is not None:
                kdcs[m.group(1)] = realm
    return kdcs


def describe_kdc_connections() -> str:
    """The KDC connections open now, as a log phrase."""
    files = [p for p in os.environ.get("KRB5_CONFIG", "/etc/krb5.conf").split(":") if p]
    realms = configured_kdcs(files)
    described = []
    for ip, port in open_remote_endpoints():
        endpoint = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        realm = realms.get(endpoint) or realms.get(ip if port == 88 else endpoint)
        described.append(f"{endpoint} (realm {realm})" if realm else endpoint)
    return ", ".join(described) if described else "no KDC connection open now"


class StallWatch:
    """Writes off threads stuck past the deadline, and logs each stall once."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        describe_kdcs: Callable[[], str] = describe_kdc_connections,
    ) -> None:
        self._clock = clock
        self._describe_kdcs = describe_kdcs
        self._lock = threading.Lock()
        self._next_check: dict[int, float] = {}
        self._stalled: set[int] = set()

    def check(self, executor: Executor, service: str, deadline: float) -> None:
        """Before work goes to `executor` (of `service`): give back the
        threads stuck for longer than `deadline` seconds."""
        key = id(executor)
        now = self._clock()
        with self._lock:
            if now < self._next_check.get(key, 0.0):
                return
            self._next_check[key] = now + CHECK_INTERVAL
        written_off = executor.write_off(deadline)
        if written_off:
            with self._lock:
                first = key not in self._stalled
                self._stalled.add(key)
            if first:
                longest = max(t.seconds for t in written_off)
                _log.warning(
                    "service '%s': %d thread(s) stuck in one call for %.0fs, past the %gs "
                    "deadline (the KDC does not answer?); written off and replaced, at most %d "
                    "at a time. KDC connections open: %s",
                    service,
                    len(written_off),
                    longest,
                    deadline,
                    executor.max_written_off,
                    self._describe_kdcs(),
                )
        elif key in self._stalled and not executor.stuck(deadline) and not executor.written_off:
            with self._lock:
                self._stalled.discard(key)
            _log.info("service '%s': no thread is stuck any more", service)

    def forget(self, executor: Executor) -> None:
        """`executor` is gone (a reload)."""
        with self._lock:
            self._next_check.pop(id(executor), None)
            self._stalled.discard(id(executor))
