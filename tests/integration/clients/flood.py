"""Open many connections to a GSS-Proxy socket and hold them: the local
flooder of docs/RELIABILITY.md (issue 14, items 2 and 3).

    flood.py SOCKET COUNT [MODE]

MODE `null` (default): connect COUNT times, send a NULL call on each and
count the connections that answer it (a refused connection reads EOF or a
reset). MODE `half-mark`: send two bytes of a record mark on each.
MODE `big`: send all but the last 200 bytes of a 1 MiB record on each.
MODE `trickle`: send the mark of a 1000-byte record, then one byte of it
every 0.3 s, on each.
Prints `held N` once the connections are set up (for `trickle`, at once),
then `closed M` when stdin closes (M: connections the daemon closed), and
exits. Stdlib only: it runs as another uid with the venv python.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import sys
import threading
import time

NULL_CALL = struct.pack(">I", 0x80000000 | 40) + struct.pack(
    ">10I", 0x1234, 0, 2, 400112, 1, 0, 0, 0, 0, 0
)


def answered(sock: socket.socket) -> bool:
    sock.settimeout(20)
    try:
        sock.sendall(NULL_CALL)
        data = b""
        while len(data) < 4:
            chunk = sock.recv(64)
            if not chunk:
                return False
            data += chunk
        return True
    except OSError:
        return False


def closed_by_peer(socks: list[socket.socket], wait: float = 3.0) -> int:
    """How many of `socks` the peer closed, waiting up to `wait` seconds for
    closes still on their way (the daemon closes after logging)."""
    open_ = list(socks)
    closed = 0
    deadline = time.monotonic() + wait
    while open_ and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(open_, [], [], left)
        if not readable:
            break
        for s in readable:
            try:
                gone = s.recv(4096, socket.MSG_PEEK) == b""
            except OSError:
                gone = True
            if gone:
                closed += 1
            open_.remove(s)
    return closed


def main() -> int:
    path, count = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "null"
    socks: list[socket.socket] = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            continue
        socks.append(s)
    if mode == "null":
        held = [s for s in socks if answered(s)]
    elif mode == "half-mark":
        for s in socks:
            s.sendall(b"\x80\x00")
        held = socks
    elif mode == "big":
        size = 1024 * 1024
        part = struct.pack(">I", 0x80000000 | size) + b"x" * (size - 200)
        held = []
        for s in socks:
            s.settimeout(20)
            try:
                s.sendall(part)
            except OSError:
                continue  # dropped while we were still sending
            held.append(s)
    else:
        held = socks
        stop = threading.Event()
        for s in held:
            s.sendall(struct.pack(">I", 0x80000000 | 1000))

        def trickle() -> None:
            while not stop.wait(0.3):
                for s in held:
                    with contextlib.suppress(OSError):
                        s.send(b"x")

        threading.Thread(target=trickle, daemon=True).start()
    print(f"held {len(held)}", flush=True)
    sys.stdin.read()
    print(f"closed {closed_by_peer(held)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
