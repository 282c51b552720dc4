"""The worker processes' counters for the first process's admin socket
(`worker_processes` > 1, `gssproxy-py-ctl status`).

One private socket pair per worker slot, made by the first process before
it forks the supervisor (`server.cli`): no path, no name, so nothing but
the daemon's own processes holds either end. The supervisor closes the
first process's ends and keeps every slot's other end, so a worker forked
again into a slot inherits it; each worker closes the ends of the other
slots.

The exchange, on SOCK_SEQPACKET (whole messages: a worker that dies while
answering leaves no half message behind for the next one):

* request, first process to worker: 4 bytes, the request's number;
* reply: one or more messages, each `number (4) index (2) count (2)` and
  at most `CHUNK` bytes of the XDR-encoded `adm_process`.

The first process asks every slot at once and waits `REPLY_TIMEOUT` at
most; it keeps only the chunks of the number it asked, in order, and
reads away what an earlier, late answer left before asking again. A slot
that does not answer in time (its worker is being forked again, or is
stuck) is reported as not answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["CHUNK", "REPLY_TIMEOUT", "StatusChannels", "StatusGatherer", "answer_status_requests"]

_log = logging.getLogger(__name__)

#: Payload bytes per reply message (below any socket buffer's size).
CHUNK: Final = 32 * 1024
#: Seconds the first process waits for the workers' answers.
REPLY_TIMEOUT: Final = 2.0
_REQUEST: Final = struct.Struct("!I")
_HEADER: Final = struct.Struct("!IHH")


@dataclass(frozen=True, slots=True)
class StatusChannels:
    """Every slot's socket pair, before the fork: `first[i]` and
    `workers[i]` are the two ends for worker slot i + 1."""

    first: tuple[socket.socket, ...]
    workers: tuple[socket.socket, ...]

    @classmethod
    def create(cls, slots: int) -> StatusChannels:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(slots)]
        return cls(tuple(a for a, _ in pairs), tuple(b for _, b in pairs))

    def in_first_process(self) -> StatusGatherer:
        """After the supervisor's fork, in the first process."""
        for sock in self.workers:
            sock.close()
        return StatusGatherer(self.first)

    def in_supervisor(self) -> None:
        """The first process's ends are not the supervisor's (nor its workers')."""
        for sock in self.first:
            sock.close()

    def in_worker(self, slot: int) -> socket.socket:
        """In the worker of `slot` (1..N-1): its own end; the others closed."""
        for number, sock in enumerate(self.workers, start=1):
            if number != slot:
                sock.close()
        return self.workers[slot - 1]


class StatusGatherer:
    """The first process's side: ask every worker, gather the answers."""

    def __init__(
        self, sockets: Sequence[socket.socket], reply_timeout: float = REPLY_TIMEOUT
    ) -> None:
        self._sockets = tuple(sockets)
        self._timeout = reply_timeout
        for sock in self._sockets:
            sock.setblocking(False)
        self._numbers = itertools.count(1)
        # One exchange at a time: two admin calls must not read each
        # other's replies.
        self._lock = asyncio.Lock()

    async def gather(self) -> list[tuple[int, bytes | None]]:
        """(slot, its encoded `adm_process` or None if it did not answer)
        for every worker slot."""
        async with self._lock:
            number = next(self._numbers) & 0xFFFFFFFF
            replies = await asyncio.gather(*(self._ask(sock, number) for sock in self._sockets))
        return list(enumerate(replies, start=1))

    async def _ask(self, sock: socket.socket, number: int) -> bytes | None:
        """The slot's answer, or None: no answer in time, or the channel
        failed (ECONNRESET once the supervisor, which holds the workers'
        ends, is gone with a request unread), which is logged."""
        try:
            _read_away(sock)
            sock.send(_REQUEST.pack(number))
            return await asyncio.wait_for(_reply(sock, number), self._timeout)
        except TimeoutError:
            return None
        except OSError as exc:
            _log.warning("status: cannot ask a worker process: %s", exc)
            return None


def _read_away(sock: socket.socket) -> None:
    """Drop what late answers to earlier requests left."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while sock.recv(_HEADER.size + CHUNK):
            pass


async def _reply(sock: socket.socket, number: int) -> bytes | None:
    loop = asyncio.get_running_loop()
    parts: list[bytes] = []
    while True:
        data = await loop.sock_recv(sock, _HEADER.size + CHUNK)
        if not data:
            return None  # the supervisor is gone, and the slot with it
        if len(data) < _HEADER.size:
            continue
        got, index, count = _HEADER.unpack_from(data)
        if got != number:
            continue
        if index == 0:
            parts = []  # a reply begins (a cut one before it is dropped)
        elif index != len(parts):
            parts = []
            continue
        parts.append(data[_HEADER.size :])
        if len(parts) == count:
            return b"".join(parts)


def answer_status_requests(sock: socket.socket, status: Callable[[], bytes]) -> Callable[[], None]:
    """In a worker, on its loop: answer each request with `status()`
    (its encoded `adm_process`). Returns what stops it."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    sending: set[asyncio.Task[None]] = set()

    async def send(number: int, payload: bytes) -> None:
        chunks = [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)] or [b""]
        try:
            for index, chunk in enumerate(chunks):
                header = _HEADER.pack(number, index, len(chunks))
                await loop.sock_sendall(sock, header + chunk)
        except OSError as exc:
            _log.warning("status: answering the first process failed: %s", exc)

    def readable() -> None:
        while True:
            try:
                data = sock.recv(_REQUEST.size + 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(sock.fileno())
                return
            if len(data) != _REQUEST.size:
                continue
            (number,) = _REQUEST.unpack(data)
            task = loop.create_task(send(number, status()))
            sending.add(task)
            task.add_done_callback(sending.discard)

    loop.add_reader(sock.fileno(), readable)

    def stop() -> None:
        loop.remove_reader(sock.fileno())
        for task in sending:
            task.cancel()

    return stop
