"""The cost of a connection path, from one client: serial NULL calls on one
connection for S seconds, then connect + NULL + close for S seconds.

    python bench/writer_path.py SOCKET [SECONDS]

docs/RELIABILITY.md uses it against a daemon whose only service is for
uid 0, without and with `program =` (with it, the root client's connection
is read on the writer-credentials path). Stdlib only, raw record bytes, so
the client costs little next to the daemon.
"""

from __future__ import annotations

import socket
import struct
import sys
import time


def null_call(xid: int) -> bytes:
    body = struct.pack(">10I", xid, 0, 2, 400112, 1, 0, 0, 0, 0, 0)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def call(sock: socket.socket, xid: int) -> None:
    sock.sendall(null_call(xid))
    got = b""
    while len(got) < 28:  # mark + the 24-byte accepted reply
        chunk = sock.recv(64)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk


def main() -> int:
    path = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 4.0
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        calls, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            call(sock, calls)
            calls += 1
    connects, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            call(sock, connects)
        connects += 1
    print(f"null/s {calls / seconds:.0f} connect+null/s {connects / seconds:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
