"""The server over real sockets, run in-process with a test program.

`tests/conformance/data/testprog.x` is compiled with our IDL compiler and
served, with handlers written here, by a `GssProxyServer` on its own uvloop
thread. That lets the tests control what handlers do (sleep, fail, report the
matched service) while everything else is the daemon's own code: listeners,
SO_PEERCRED, /proc lookups, matching, flow control, deadlines and reload.
Clients are plain blocking sockets, some run as other uids with setpriv.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import uvloop

from gssproxy_py.config.load import load_config
from gssproxy_py.rpc.dispatch import CallInfo, ProgramService
from gssproxy_py.server.daemon import GssProxyServer, ServerOptions
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.users import LocalUser, run_as
from gssproxy_py.xdr.runtime import decode_bytes
from gssproxy_py.xdrgen import compile_file

TESTPROG_X = Path(__file__).parents[1] / "conformance" / "data" / "testprog.x"
PROG = 0x20000042
LAST = 0x80000000
SUCCESS, PROG_MISMATCH, PROC_UNAVAIL, SYSTEM_ERR = 0, 2, 3, 5
WHOAMI = 5


# -- the test program ------------------------------------------------------------------


@pytest.fixture(scope="module")
def testprog() -> Iterator[types.ModuleType]:
    """The generated module for testprog.x."""
    name = "gpytest_testprog"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up while building
    exec(compile(compile_file(str(TESTPROG_X)), str(TESTPROG_X), "exec"), module.__dict__)
    yield module
    del sys.modules[name]


class Handlers:
    """The handlers, and what they observed."""

    def __init__(self, testprog: types.ModuleType) -> None:
        self.testprog = testprog
        self.running = 0
        self.max_running = 0
        #: when set, a sleeping call ends as soon as this many run at once (or at
        #: its own time): concurrency is then shown by a count, never by a clock
        self.until_running: int | None = None
        self._all_running: asyncio.Event | None = None

    async def echo(self, info: CallInfo, arg: bytes) -> bytes:
        return arg

    async def sleep(self, info: CallInfo, arg: Any) -> int:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.until_running is None:
                await asyncio.sleep(arg.milliseconds / 1000)
            else:
                if self._all_running is None:  # made on the server's own loop
                    self._all_running = asyncio.Event()
                if self.max_running >= self.until_running:
                    self._all_running.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._all_running.wait(), arg.milliseconds / 1000)
        finally:
            self.running -= 1
        return int(arg.tag)

    async def fail(self, info: CallInfo, arg: None) -> None:
        raise RuntimeError("the handler failed on purpose")

    async def oversize(self, info: CallInfo, arg: int) -> bytes:
        return b"x" * arg

    async def whoami(self, info: CallInfo, arg: None) -> Any:
        return self.testprog.TestWhoamiRes(
            service=info.service.name.encode() if info.service else b"",
            no_match_reason=(info.no_match_reason or "").encode(),
            uid=info.peer.uid,
            program=(info.peer.program or "").encode(),
            socket=info.socket_path.encode(),
        )

    def service(self) -> ProgramService:
        handlers: Mapping[tuple[int, int], Any] = {
            (1, 1): self.echo,
            (1, 2): self.sleep,
            (1, 3): self.fail,
            (1, 4): self.oversize,
            (1, 5): self.whoami,
            (3, 1): self.echo,
        }
        return ProgramService(self.testprog.TESTPROG_PROGRAM, handlers)


# -- the server on its own thread ---------------------------------------------------------


class ServerThread:
    """A GssProxyServer on a uvloop loop in a background thread."""

    def __init__(self, workdir: Path, config_text: str, programs: Mapping[int, ProgramService]):
        self.workdir = workdir
        self.config_path = workdir / "gssproxy.conf"
        self.default_socket = str(workdir / "default.sock")
        self.config_path.write_text(config_text)
        self.programs = programs
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: GssProxyServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="gssproxy-server", daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        config = load_config(str(self.config_path), None, default_socket=self.default_socket)
        options = ServerOptions(
            str(self.config_path), None, self.default_socket, cli_debug_level=1, shutdown_grace=1
        )
        self.server = GssProxyServer(config, self.programs, options)
        await self.server.start()
        self._ready.set()
        await self.server.wait_stopped()

    def reload(self, config_text: str) -> bool:
        assert self.loop is not None and self.server is not None
        self.config_path.write_text(config_text)
        return asyncio.run_coroutine_threadsafe(self.server.reload(), self.loop).result(10)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self.loop is not None and self.server is not None:
            self.loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "server did not stop"


@pytest.fixture
def workdir() -> Iterator[Path]:
    # World-traversable: clients running as other uids must reach the sockets.
    path = Path(tempfile.mkdtemp(prefix="gp-inproc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def handlers(testprog: types.ModuleType) -> Handlers:
    return Handlers(testprog)


def service_config(services: str, global_options: str = "") -> str:
    return f"[gssproxy]\n{global_options}\n{services}"


ROOT_SERVICE = "[service/root]\n  mechs = krb5\n  euid = 0\n"


@pytest.fixture
def start_server(workdir: Path, handlers: Handlers) -> Iterator[Any]:
    started: list[ServerThread] = []

    def start(config_text: str = service_config(ROOT_SERVICE)) -> ServerThread:
        server = ServerThread(workdir, config_text, {PROG: handlers.service()}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- a blocking client -------------------------------------------------------------------


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def call(xid: int, proc: int, args: bytes = b"", *, vers: int = 1) -> bytes:
    body = u32(xid, 0, 2, PROG, vers, proc, 0, 0, 0, 0) + args
    return u32(LAST | len(body)) + body


def sleep_args(ms: int, tag: int) -> bytes:
    return u32(ms, tag)


def blob(data: bytes) -> bytes:
    return u32(len(data)) + data + b"\0" * (-len(data) % 4)


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def read_reply(sock: socket.socket) -> tuple[int, int, bytes]:
    """(xid, accept_stat, result bytes) of one MSG_ACCEPTED reply."""
    (mark,) = struct.unpack(">I", recv_exactly(sock, 4))
    assert mark & LAST
    body = recv_exactly(sock, mark & ~LAST)
    xid, mtype, reply_stat, verf_flavor, verf_len, stat = struct.unpack(">6I", body[:24])
    assert (mtype, reply_stat, verf_flavor, verf_len) == (1, 0, 0, 0)
    return xid, stat, body[24:]


def whoami(testprog: types.ModuleType, result: bytes) -> Any:
    return decode_bytes(testprog.decode_test_whoami_res, result)


# -- several calls on one connection --------------------------------------------------------


def test_replies_come_back_in_completion_order(start_server: Any) -> None:
    server = start_server()
    with connect(server.default_socket) as sock:
        sock.sendall(
            call(1, 2, sleep_args(400, 101))
            + call(2, 2, sleep_args(0, 102))
            + call(3, 1, blob(b"now"))
        )
        replies = [read_reply(sock) for _ in range(3)]
    assert {r[0] for r in replies[:2]} == {2, 3}
    assert replies[2] == (1, SUCCESS, u32(101))
    assert (2, SUCCESS, u32(102)) in replies
    assert (3, SUCCESS, blob(b"now")) in replies


def test_calls_on_one_connection_run_concurrently(start_server: Any, handlers: Handlers) -> None:
    server = start_server()
    handlers.until_running = 8
    with connect(server.default_socket) as sock:
        sock.sendall(b"".join(call(i, 2, sleep_args(20000, i)) for i in range(8)))
        replies = sorted(read_reply(sock) for _ in range(8))
    assert replies == [(i, SUCCESS, u32(i)) for i in range(8)]
    # all eight were running at once: concurrency shown by count, not by a clock
    assert handlers.max_running == 8


def test_in_flight_limit_per_connection(start_server: Any, handlers: Handlers) -> None:
    server = start_server(service_config(ROOT_SERVICE, "  max_calls_per_connection = 2"))
    with connect(server.default_socket) as sock, connect(server.default_socket) as other:
        sock.sendall(b"".join(call(i, 2, sleep_args(100, i)) for i in range(6)))
        # The limit is per connection: another one is served meanwhile.
        other.sendall(call(99, 1, blob(b"x")))
        assert read_reply(other) == (99, SUCCESS, blob(b"x"))
        replies = sorted(read_reply(sock) for _ in range(6))
    assert replies == [(i, SUCCESS, u32(i)) for i in range(6)]
    assert handlers.max_running == 2


def test_deadline_answers_system_err(start_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    server = start_server(service_config(ROOT_SERVICE, "  call_timeout = 0.2"))
    with connect(server.default_socket) as sock:
        # The handler would answer SUCCESS after 5 s; SYSTEM_ERR means the deadline won.
        sock.sendall(call(5, 2, sleep_args(5000, 5)))
        assert read_reply(sock) == (5, SYSTEM_ERR, b"")
        sock.sendall(call(6, 1, blob(b"still here")))
        assert read_reply(sock) == (6, SUCCESS, blob(b"still here"))
    assert "TEST_SLEEP: no result within 0.2s; replying SYSTEM_ERR" in caplog.text


def test_handler_failures_are_system_err(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server()
    with connect(server.default_socket) as sock:
        sock.sendall(call(7, 3))
        assert read_reply(sock) == (7, SYSTEM_ERR, b"")
        sock.sendall(call(8, 4, u32(2000)))  # beyond test_blob<1024>
        assert read_reply(sock) == (8, SYSTEM_ERR, b"")
        sock.sendall(call(9, 4, u32(3)))
        assert read_reply(sock) == (9, SUCCESS, blob(b"xxx"))
    assert "TEST_FAIL failed; replying SYSTEM_ERR" in caplog.text
    assert "the handler failed on purpose" in caplog.text
    assert "TEST_OVERSIZE: result cannot be sent" in caplog.text


def test_versions_and_procedures_of_the_test_program(start_server: Any) -> None:
    server = start_server()
    with connect(server.default_socket) as sock:
        sock.sendall(call(10, 1, blob(b"v2"), vers=2))
        assert read_reply(sock) == (10, PROG_MISMATCH, u32(1, 3))
        sock.sendall(call(11, 1, blob(b"v3"), vers=3))
        assert read_reply(sock) == (11, SUCCESS, blob(b"v3"))
        sock.sendall(call(12, 6))  # in the table, no handler
        assert read_reply(sock) == (12, PROC_UNAVAIL, b"")
        sock.sendall(call(13, 0))
        assert read_reply(sock) == (13, SUCCESS, b"")


# -- matching a caller to a service ----------------------------------------------------------

CLIENT = r"""
import socket, struct, sys
path, xid = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(path)
body = struct.pack(">10I", xid, 0, 2, 0x20000042, 1, 5, 0, 0, 0, 0)
s.sendall(struct.pack(">I", 0x80000000 | len(body)) + body)
def exactly(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise SystemExit("connection closed")
        data += chunk
    return data
(mark,) = struct.unpack(">I", exactly(4))
print(exactly(mark & 0x7FFFFFFF).hex())
"""


def whoami_as(user: LocalUser, path: str, testprog: types.ModuleType, xid: int = 77) -> Any:
    """WHOAMI from a client process running as `user` (the venv python)."""
    proc = run_as(user, [str(VENV_PYTHON), "-c", CLIENT, path, str(xid)], {}, timeout=20)
    assert proc.returncode == 0, proc.stderr
    body = bytes.fromhex(proc.stdout.strip())
    assert struct.unpack(">I", body[:4])[0] == xid
    assert body[20:24] == u32(SUCCESS)
    return whoami(testprog, body[24:])


def whoami_here(path: str, testprog: types.ModuleType) -> Any:
    with connect(path) as sock:
        sock.sendall(call(70, WHOAMI))
        xid, stat, result = read_reply(sock)
    assert (xid, stat) == (70, SUCCESS)
    return whoami(testprog, result)


def test_matching_by_uid_program_and_socket(
    start_server: Any,
    workdir: Path,
    testprog: types.ModuleType,
    test_users: tuple[LocalUser, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    user1, user2 = test_users
    python = os.path.realpath(VENV_PYTHON)
    private = workdir / "private.sock"
    server = start_server(
        service_config(
            f"[service/root-other-program]\n  mechs = krb5\n  euid = 0\n"
            f"  program = /usr/bin/env\n"
            f"[service/root]\n  mechs = krb5\n  euid = 0\n"
            f"[service/user1]\n  mechs = krb5\n  euid = {user1.name}\n"
            f"[service/user2-python]\n  mechs = krb5\n  euid = {user2.uid}\n"
            f"  program = {python}\n"
            f"[service/root-private]\n  mechs = krb5\n  euid = 0\n  socket = {private}\n"
        )
    )
    assert sorted(server.server.socket_paths) == sorted([server.default_socket, str(private)])
    assert oct(os.stat(private).st_mode & 0o777) == "0o666"

    me = whoami_here(server.default_socket, testprog)
    assert (me.service, me.uid) == (b"root", 0)
    assert me.program == os.path.realpath(sys.executable).encode()
    assert me.socket == server.default_socket.encode()
    assert whoami_here(str(private), testprog).service == b"root-private"

    one = whoami_as(user1, server.default_socket, testprog)
    assert (one.service, one.uid, one.no_match_reason) == (b"user1", user1.uid, b"")
    two = whoami_as(user2, server.default_socket, testprog)
    assert (two.service, two.program) == (b"user2-python", python.encode())

    # Nothing serves user2 on the private socket: the handler still runs and
    # can tell the client why.
    none = whoami_as(user2, str(private), testprog)
    assert none.service == b""
    reason = none.no_match_reason.decode()
    assert reason.startswith(f"no service matched uid {user2.uid}, program {python}")
    assert f" on {private}; " in reason
    assert reason.endswith(f"nearest: service 'user2-python' listens on {server.default_socket}")

    log = caplog.text
    assert "TEST_WHOAMI: service 'root'" in log
    assert "TEST_WHOAMI: service 'root-private'" in log
    assert "TEST_WHOAMI: service 'user1'" in log
    assert "TEST_WHOAMI: service 'user2-python'" in log
    # Why is the program's to say (its answer, or for GSS its failure line):
    # the server's line at level 1 does not repeat it.
    assert "TEST_WHOAMI: no service matched\n" in log and reason not in log
    assert f"uid {user1.uid} gid {user1.gid} program {python}" in log  # the accept line


def test_reload_applies_to_the_next_call_on_an_open_connection(
    start_server: Any, testprog: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = start_server()
    with connect(server.default_socket) as sock:

        def ask(xid: int) -> Any:
            sock.sendall(call(xid, WHOAMI))
            got_xid, stat, result = read_reply(sock)
            assert (got_xid, stat) == (xid, SUCCESS)
            return whoami(testprog, result)

        assert ask(1).service == b"root"
        renamed = "[service/renamed]\n  mechs = krb5\n  euid = 0\n"
        assert server.reload(service_config(renamed))
        assert ask(2).service == b"renamed"
        # A bad configuration changes nothing.
        assert not server.reload(service_config(renamed + "  cred_usage = sideways\n"))
        assert ask(3).service == b"renamed"
        # No service left for root: the connection stays, the reason is given.
        assert server.reload(service_config("[service/u]\n  mechs = krb5\n  euid = 4242\n"))
        third = ask(4)
        assert third.service == b""
        assert "nearest: service 'u' requires euid 4242" in third.no_match_reason.decode()
    assert caplog.text.count("New config loaded successfully.") == 2
    assert "option 'cred_usage'" in caplog.text


def test_a_failing_reload_hook_does_not_keep_the_others_from_running(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The hooks after a reload (the worker processes' SIGHUP, the kernel
    upcall, the p11-kit workers' rematch) each run even when one before
    them raises; the configuration is in force and the failure logged."""
    caplog.set_level(logging.INFO)
    server = start_server()
    seen: list[str] = []

    async def broken(config: Any) -> None:
        raise RuntimeError("a hook's bug")

    async def rematch(config: Any) -> None:
        seen.append(config.services[0].name)

    server.server.reload_hooks.extend([broken, rematch])
    renamed = "[service/renamed]\n  mechs = krb5\n  euid = 0\n"
    assert server.reload(service_config(renamed))
    assert seen == ["renamed"]
    assert "reload: " in caplog.text and "a hook's bug" in caplog.text
    assert "New config loaded successfully." in caplog.text


# -- stopping ---------------------------------------------------------------------------------


def test_stop_lets_calls_in_flight_finish_within_the_grace(
    start_server: Any, handlers: Handlers
) -> None:
    server = start_server()  # shutdown_grace = 1 s
    with connect(server.default_socket) as quick, connect(server.default_socket) as slow:
        quick.sendall(call(1, 2, sleep_args(300, 1)))
        slow.sendall(call(2, 2, sleep_args(5000, 2)))
        deadline = time.monotonic() + 5
        while handlers.running < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()
        assert not os.path.exists(server.default_socket)
        assert read_reply(quick) == (1, SUCCESS, u32(1))
        with pytest.raises(EOFError):
            read_reply(slow)  # still running when the grace ran out
