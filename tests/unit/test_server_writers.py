"""The writer-credentials transport on a real socket pair: each read names
the process that wrote it, two writers' bytes never come in one read, and
close/abort/backpressure behave as a transport's should."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

from gssproxy_py.server.writers import Writer, WriterTransport, writer_of


class Recorder(asyncio.Protocol):
    def __init__(self, *, keep_open: bool = False) -> None:
        self.keep_open = keep_open
        self.transport: WriterTransport | None = None
        self.reads: list[tuple[bytes, Writer | None]] = []
        self.eof = asyncio.Event()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, WriterTransport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.reads.append((data, self.transport.writer))

    def eof_received(self) -> bool:
        self.eof.set()
        return self.keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


def test_writer_of_reads_scm_credentials() -> None:
    creds = struct.pack("=iII", 42, 1000, 100)
    assert writer_of([(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)]) == Writer(42, 1000, 100)
    assert (
        writer_of([(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, struct.pack("=iII", 0, 0, 0))])
        is None
    )
    assert writer_of([]) is None


def test_each_read_names_its_writer_and_writers_are_never_glued() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    theirs.sendall(b"parent-1")
    child = os.fork()
    if child == 0:
        theirs.sendall(b"child")
        os._exit(0)
    os.waitpid(child, 0)
    theirs.sendall(b"parent-2")
    theirs.shutdown(socket.SHUT_WR)

    async def run() -> Recorder:
        proto = Recorder(keep_open=True)
        transport = WriterTransport(asyncio.get_running_loop(), ours, proto)
        await asyncio.wait_for(proto.eof.wait(), 10)
        transport.write(b"reply")
        transport.close()
        await asyncio.wait_for(proto.lost.wait(), 10)
        return proto

    proto = asyncio.run(run())
    assert theirs.recv(16) == b"reply"
    theirs.close()
    by_writer = [(data, w.pid if w else None) for data, w in proto.reads]
    assert b"".join(d for d, _ in by_writer) == b"parent-1childparent-2"
    # The kernel never returns two writers' bytes in one read.
    assert (b"child", child) in by_writer
    assert all(pid == os.getpid() for d, pid in by_writer if d != b"child")


def test_abort_loses_the_connection_and_closes_the_socket() -> None:
    async def run() -> bool:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        proto = Recorder()
        transport = WriterTransport(asyncio.get_running_loop(), ours, proto)
        transport.abort()
        await asyncio.wait_for(proto.lost.wait(), 10)
        closed = theirs.recv(1) == b""
        theirs.close()
        return closed and ours.fileno() == -1

    assert asyncio.run(run())
