"""In-guest check of gssproxy_py.netns against the real kernel (no daemon).

Run by guest.sh before the daemon phase, with two named namespaces already
made by `ip netns add` (argv: NAME_OK NAME_NOLISTENER). In each, nfsd's
per-namespace `use-gss-proxy` is written by `UpcallEnabler` from an executor
thread that entered the namespace:

* NAME_OK, with a listener on /run/gssproxy.sock: enabled; the kernel's
  connection arrives, its socket lives in NAME_OK (SIOCGSKNS), and the first
  record is the NULL call; the daemon's own namespace still reads -1.
* NAME_NOLISTENER, with no listener: the write fails (the kernel cannot
  connect), the enabler schedules a retry; once a listener exists, releasing
  the retry's sleep enables it.

Prints PASS:/FAIL: lines; exit status 1 if anything failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import struct
import sys

from gssproxy_py.netns import NetnsExecutors, Outcome, UpcallEnabler, socket_netns_inode
from gssproxy_py.netns.nsfs import netns_inode

SOCK = "/run/gssproxy.sock"
PROC = "/proc/net/rpc/use-gss-proxy"
failed = False


def check(what: str, ok: bool) -> None:
    global failed
    print(f"{'PASS' if ok else 'FAIL'}: {what}", flush=True)
    failed = failed or not ok


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


class Listener:
    """A bare listener on the kernel's socket path that records each connection."""

    def __init__(self) -> None:
        self.conns: list[tuple[int | None, bytes]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCK)
        self.server = await asyncio.start_unix_server(self._conn, path=SOCK)

    async def stop(self) -> None:
        assert self.server is not None
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()
        os.unlink(SOCK)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        sock = writer.get_extra_info("socket")
        inode = socket_netns_inode(sock.fileno())
        try:
            marker = await asyncio.wait_for(reader.readexactly(4), 30)
            (rm,) = struct.unpack(">I", marker)
            body = await reader.readexactly(rm & 0x7FFFFFFF)
        except (TimeoutError, asyncio.IncompleteReadError):
            body = b""
        self.conns.append((inode, body))
        self.arrived.set()
        # Keep the connection open, as a daemon would: the kernel expects no reply.
        await reader.read()


async def main(ok_ns: str, nolisten_ns: str) -> None:
    executors = NetnsExecutors()
    own_before = read_text(PROC)
    ok_inode = netns_inode(f"/run/netns/{ok_ns}")

    listener = Listener()
    await listener.start()
    results = []
    enabler = UpcallEnabler(netns=ok_ns, executors=executors, on_result=results.append)
    res = await enabler.ensure_enabled()
    check(
        f"netns {ok_ns}: UpcallEnabler enabled the upcall ({res.detail})",
        res.outcome is Outcome.ENABLED,
    )
    check(f"netns {ok_ns}: read -1 before, 1 after the write", (res.before, res.after) == (-1, 1))
    check(
        f"netns {ok_ns}: the write ran on a thread in that namespace (inode {res.thread_inode})",
        res.thread_inode == ok_inode and res.opened.startswith("/proc/thread-self/net/"),
    )
    await asyncio.wait_for(listener.arrived.wait(), 30)
    conn_inode, body = listener.conns[0]
    check(
        f"the kernel's connection lives in netns {ok_ns} (SIOCGSKNS inode {conn_inode})",
        conn_inode == ok_inode,
    )
    _xid, mtype, rpcvers, prog, vers, proc = struct.unpack(">6I", body[:24])
    check(
        f"its first record is the NULL call (prog {prog} vers {vers} proc {proc})",
        (mtype, rpcvers, prog, vers, proc) == (0, 2, 400112, 1, 0),
    )
    own_after = read_text(PROC)
    check(
        f"the daemon's own namespace is untouched ({own_before} -> {own_after})",
        own_before == own_after == "-1",
    )
    enabler.stop()

    # No listener: the kernel cannot connect, the enabler retries.
    await listener.stop()
    released = asyncio.Event()
    sleeps: list[float] = []

    async def gated_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await released.wait()
        released.clear()

    results2 = []
    enabler2 = UpcallEnabler(
        netns=nolisten_ns, executors=executors, sleep=gated_sleep, on_result=results2.append
    )
    res = await enabler2.ensure_enabled()
    check(
        f"netns {nolisten_ns}: no listener, the write fails and is retried ({res.detail})",
        res.outcome is Outcome.FAILED and enabler2.retrying,
    )
    await listener.start()
    released.set()
    final = await enabler2.settled()
    check(
        f"netns {nolisten_ns}: the retry after the listener appeared enabled it",
        final is not None
        and final.outcome is Outcome.ENABLED
        and len(results2) == 2
        and sleeps == [10.0],
    )
    enabler2.stop()
    executors.shutdown()
    # The listener is left as it is: the kernel clients whose connections
    # the first stop() closed keep reconnecting, and tearing a server down
    # with an accept in flight can wedge asyncio's shutdown on 3.11.


if __name__ == "__main__":
    # A hang in the guest would otherwise only show as the VM's timeout.
    faulthandler.dump_traceback_later(90, exit=True)
    asyncio.new_event_loop().run_until_complete(main(sys.argv[1], sys.argv[2]))
    sys.stdout.flush()
    os._exit(1 if failed else 0)
