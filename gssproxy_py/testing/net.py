"""Loopback port helpers for the test harness: free ports and readiness polls.

Everything here is about 127.0.0.1 only; the harness never listens elsewhere.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"

# /proc/net/tcp state code for LISTEN.
_TCP_LISTEN = "0A"


def free_port(*, udp_too: bool = False, attempts: int = 50) -> int:
    """Return a loopback port that is currently free for TCP (and UDP if asked).

    The port is released before returning, so another process can still take it;
    callers that start a server on it should be ready to retry with a new port.
    """
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port: int = tcp.getsockname()[1]
            if not udp_too:
                return port
            # The kernel picked a free TCP port; the same number may be taken for UDP.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError(f"no free loopback port after {attempts} attempts")


def tcp_answers(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True if a TCP connect to host:port succeeds (the connection is closed at once)."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def tcp_listening(port: int, host: str = LOOPBACK) -> bool:
    """True if some socket LISTENs on host:port, judged from /proc/net/tcp.

    Unlike tcp_answers() this does not connect, which matters for one-shot
    servers such as `gss-server -once` that would treat a probe as their client.
    """
    want_addr = socket.inet_aton(host)[::-1].hex().upper()  # /proc shows little-endian hex
    want_any = "00000000"
    want_port = f"{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)  # header
        for line in f:
            fields = line.split()
            addr, lport = fields[1].split(":")
            if lport == want_port and fields[3] == _TCP_LISTEN and addr in (want_addr, want_any):
                return True
    return False


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.01) -> bool:
    """Poll a zero-argument callable until it returns truthy or timeout passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
