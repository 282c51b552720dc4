"""p11-kit RPC connections: the listener side of `p11kit_socket`.

A `P11KitConnection` reads the peer once at accept (SO_PEERCRED, program),
answers the one-byte version handshake with min(client's, ours) (a newer
client is never refused), cuts the stream into frames (`p11kit.wire`) and
answers them in order, one at a time, as p11-kit's own server does; a
threaded consumer may still have several requests in flight, they wait in
the connection's queue (reading pauses past `MAX_QUEUED`).

The service is matched like a GSS-Proxy call (`config.match`, by uid,
program and socket) against the configuration in force; after a reload
the next request is matched again, and a connection whose service changed
starts afresh (its sessions are gone). A peer no service matches sees no
slot. A malformed frame or body closes only that connection.

In the daemon (`serve` builds the token layer itself), a connection whose
peer matches a service is handed to a worker process instead
(`server.p11kit_workers`) once its peer is read, admitted and matched: this
object then only stands for it in the connection table (caps, status,
stop) until the worker ends. Served here on the loop: peers no service
matches (no slot), tests' injected backends, and whatever runs without
workers. With workers, a connection served here never gets a service:
one whose peer a reload gives a service is closed with that reload
(`rematched`), so its client's next connection is handed to a worker like
any new one; until the reload's hooks have run it still sees no slot.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
from collections.abc import Coroutine
from typing import Any, Protocol, cast

from gssproxy_py.config.match import match_or_explain
from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.p11kit.calls import call_id, dispatch
from gssproxy_py.p11kit.model import Backend
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import (
    PROTOCOL_VERSION,
    Frame,
    FrameReader,
    ProtocolError,
    encode_frame,
)
from gssproxy_py.pkcs11.p11kit_backend import P11KitTokens
from gssproxy_py.pkcs11.program import TokenSignBackend
from gssproxy_py.server.connection import PrefixLog, admitted_peer
from gssproxy_py.server.p11kit_workers import P11KitWorkers

__all__ = ["P11KitConnection", "P11KitHost", "P11KitViews", "load_p11kit_views"]


async def _drive(coro: Coroutine[Any, Any, bytes], waiting: object) -> bytes:
    """Run a coroutine that was started by hand and is waiting on
    `waiting` (what its first step yielded) to its end, as a task would."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # What a task does with a future its coroutine yields: the
                # flag says "yielded by an await", and it is ours to clear.
                waiting._asyncio_future_blocking = False  # type: ignore[attr-defined]
                await waiting  # type: ignore[misc]
        except asyncio.CancelledError:
            coro.close()
            raise
        except BaseException:  # noqa: S110 -- the coroutine sees it when resumed
            pass
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


_log = logging.getLogger(__name__)

#: Requests waiting on one connection before reading pauses.
MAX_QUEUED = 32


class P11KitViews(Protocol):
    """Gives each connection its service's view (`pkcs11.p11kit_backend`)."""

    def view(self, service: Service, who: str) -> Backend: ...


def load_p11kit_views(token_backend: TokenSignBackend) -> P11KitViews:
    """The p11-kit views over the TOKEN_SIGN backend (`load_programs`
    provides it). Without views, p11-kit peers see no slot."""
    return P11KitTokens(token_backend)


class P11KitHost(Protocol):
    """What a p11-kit connection needs from the server."""

    @property
    def config(self) -> Config: ...

    @property
    def default_socket(self) -> str: ...

    @property
    def selinux_enabled(self) -> bool: ...

    def p11kit_backend(self, service: Service, who: str) -> Backend | None: ...

    @property
    def p11kit_workers(self) -> P11KitWorkers | None:
        """The worker processes connections are handed to (None: served on
        the loop)."""
        ...

    def admit(self, conn: P11KitConnection, peer: Peer) -> bool:
        """The per-uid and total connection caps (shared with GSS-Proxy)."""
        ...

    def connection_opened(self, conn: P11KitConnection) -> None: ...

    def connection_closed(self, conn: P11KitConnection) -> None: ...


class P11KitConnection(asyncio.Protocol):
    """The server side of one p11-kit-client.so connection."""

    def __init__(self, host: P11KitHost, socket_path: str, number: int) -> None:
        self._host = host
        self.socket_path = socket_path
        self.number = number
        self.log = PrefixLog(_log, f"[p11kit {number}]")
        self._transport: asyncio.Transport | None = None
        self._peer: Peer | None = None
        self._reader = FrameReader()
        self._queue: collections.deque[Frame] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._cryptoki: Cryptoki | None = None
        self._config: Config | None = None
        self._service_name: str | None = None
        self._reading = True
        self._stopped = False
        self._eof = False
        self._opened = False
        self._partial_since: float | None = None
        #: a worker process serves it (`server.p11kit_workers`)
        self._handed_off = False

    # -- for the server ----------------------------------------------------

    @property
    def peer_uid(self) -> int | None:
        return None if self._peer is None or not self._opened else self._peer.uid

    def check_timeouts(self, now: float, record_timeout: float, idle_timeout: float) -> None:
        """Close if a partial frame took longer than `record_timeout`. Idle
        connections stay: a consumer (openvpn, sshd's agent) keeps its
        module initialised for days, and a closed one never reconnects."""
        del idle_timeout
        if self._stopped or not self._reader.pending:
            self._partial_since = None
            return
        if self._partial_since is None:
            self._partial_since = now
        elif now - self._partial_since >= record_timeout:
            self._abandon(f"closing: a partial frame for {record_timeout:g}s")

    @property
    def calls_in_flight(self) -> int:
        return 1 if self._task is not None else 0

    def stop_accepting_calls(self) -> int:
        self._stopped = True
        dropped = len(self._queue)
        self._queue.clear()
        return dropped

    async def wait_calls(self) -> None:
        if self._task is not None:
            await asyncio.wait({self._task})

    def close(self) -> None:
        workers = self._host.p11kit_workers
        if self._handed_off and workers is not None:
            workers.end(self)
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def rematched(self, config: Config) -> None:
        """After a reload, with workers: close a connection served here (its
        peer matched no service) whose peer now matches a service."""
        if self._handed_off or self._stopped or self._peer is None:
            return
        if self._host.p11kit_workers is None:
            return
        service, reason = self._match(config, self._peer)
        if service is None:
            return
        self.log.info(
            "reload: %s now; closing, so that the client's next connection goes to a worker",
            reason,
        )
        self._stopped = True
        self._queue.clear()
        self.close()

    def worker_ended(self) -> None:
        """The worker serving this connection is gone, and the connection
        with it."""
        if self._handed_off and self._opened:
            self._host.connection_closed(self)  # while peer_uid still counts it
            self._opened = False

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        p = admitted_peer(
            transport,
            self.log,
            self.socket_path,
            self._host.selinux_enabled,
            functools.partial(self._host.admit, self),
        )
        if p is None:
            self._stopped = True
            self._transport.abort()
            return
        self._peer = p
        self.log.info(
            "accepted on %s: pid %d uid %d gid %d program %s",
            self.socket_path,
            p.pid,
            p.uid,
            p.gid,
            p.program or "(unknown)",
        )
        self._opened = True
        self._host.connection_opened(self)
        workers = self._host.p11kit_workers
        if workers is not None:
            self._hand_off(workers, p)

    def _hand_off(self, workers: P11KitWorkers, peer: Peer) -> None:
        """Give the connection to a worker process; the daemon's copy of
        the socket closes either way (refused: the connection ends). A peer
        no service matches stays here: it sees no slot, needs no module,
        and so takes no worker from those who have a service."""
        transport = self._transport
        assert transport is not None
        config = self._host.config
        service, reason = self._match(config, peer)
        if service is None:
            return  # served on the loop, matched again per request
        self.log.info("%s", reason)
        sock = transport.get_extra_info("socket")
        self._handed_off = workers.hand_off(self, peer, service, sock.fileno(), config)
        self._stopped = True
        transport.close()

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            return
        had_version = self._reader.version is not None
        try:
            frames = self._reader.feed(data)
        except ProtocolError as exc:
            self._abandon(f"closing: {exc}")
            return
        if not had_version and self._reader.version is not None and self._transport:
            # min(client, ours): a newer client then speaks our version.
            self._transport.write(bytes((min(self._reader.version, PROTOCOL_VERSION),)))
        if frames:
            self._partial_since = None
            self._queue.extend(frames)
            self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        if self._task is None:
            self.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._stopped = True
        if self._handed_off:
            return  # the worker has the connection; worker_ended() closes it here
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        if self._opened:
            self.log.info("closed%s", f": {exc}" if exc is not None else "")
            self._host.connection_closed(self)

    # -- requests -------------------------------------------------------------

    def _cryptoki_now(self, frame: Frame) -> Cryptoki:
        """This connection's state, matched again after a reload."""
        host = self._host
        config = host.config
        if self._cryptoki is not None and self._config is config:
            return self._cryptoki
        assert self._peer is not None
        service, reason = self._match(config, self._peer)
        if service is not None and host.p11kit_workers is not None:
            # Only a worker serves a service (`rematched` closes this one).
            service, reason = None, f"{reason}, served by a worker only"
        name = service.name if service is not None else None
        if self._cryptoki is None or name != self._service_name:
            self.log.info("%s", reason)
            self._cryptoki = Cryptoki(self._backend_for(service))
            self._service_name = name
        elif service is not None:
            # The same service, reloaded: its new policy from the next call
            # (the objects and handles this connection knows stay).
            self._cryptoki.rebind(self._backend_for(service))
        self._config = config
        return self._cryptoki

    def _match(self, config: Config, peer: Peer) -> tuple[Service | None, str]:
        """The peer's service in `config`, and what to log of it."""
        host = self._host
        service, reason = match_or_explain(
            config,
            peer,
            self.socket_path,
            default_socket=host.default_socket,
            selinux_enabled=host.selinux_enabled,
            p11kit=True,
        )
        if service is None:
            return None, reason or "no service"
        return service, f"service {service.name}"

    def _backend_for(self, service: Service | None) -> Backend | None:
        if service is None or self._peer is None:
            return None
        p = self._peer
        who = f"uid {p.uid} pid {p.pid} program {p.program or '(unknown)'}"
        return self._host.p11kit_backend(service, who)

    def _pump(self) -> None:
        """Answer queued requests in order. Each is started at once on the
        loop (no task): most never wait and are answered here, the replies
        of one read leaving in one write; the first that waits (a signature
        on the module's thread) continues as the connection's one task, and
        the queue behind it waits for it."""
        out: list[bytes] = []
        try:
            while self._queue and not self._stopped and self._task is None:
                frame = self._queue.popleft()
                # Request bodies are never logged, not even at level 3: a
                # consumer's C_Login carries its PIN.
                coro = dispatch(self._cryptoki_now(frame), frame.body)
                try:
                    waiting = coro.send(None)
                except StopIteration as done:
                    out.append(encode_frame(frame.code, done.value))
                    continue
                except Exception as exc:
                    # The answers before the bad request still leave.
                    if out:
                        self._write(b"".join(out))
                        out.clear()
                    self._failed(frame, exc)
                    return
                self._task = asyncio.get_running_loop().create_task(
                    self._resume(coro, waiting, frame)
                )
        finally:
            if out:
                self._write(out[0] if len(out) == 1 else b"".join(out))
            self._update_reading()
            if self._eof and not self._queue and self._task is None:
                self.close()

    async def _resume(
        self, coro: Coroutine[Any, Any, bytes], waiting: object, frame: Frame
    ) -> None:
        try:
            body = await _drive(coro, waiting)
        except asyncio.CancelledError:
            self._task = None
            raise
        except Exception as exc:
            self._task = None
            self._failed(frame, exc)
            return
        self._task = None
        self._write(encode_frame(frame.code, body))
        self._pump()

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _failed(self, frame: Frame, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):
            self._abandon(f"closing: call {call_id(frame.body)}: {exc}")
            return
        self.log.error("call %d: internal error", call_id(frame.body), exc_info=exc)
        self._abandon("closing after an internal error")

    # -- reading and closing ---------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want = not self._stopped and not self._eof and len(self._queue) < MAX_QUEUED
        if want and not self._reading:
            transport.resume_reading()
        elif not want and self._reading:
            transport.pause_reading()
        self._reading = want

    def _abandon(self, why: str) -> None:
        self.log.warning("%s", why)
        self._stopped = True
        self._queue.clear()
        self.close()
