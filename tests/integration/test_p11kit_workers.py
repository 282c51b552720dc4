"""The p11-kit worker processes of the real daemon (`server.p11kit_workers`):
one per p11kit_socket connection, forked by the zygote.

A worker that is killed closes only its connection (the others and the
daemon keep serving, and it is logged once); a reload that takes a uid's
service away ends that uid's workers; beyond `p11kit_max_workers` a
connection is refused with one line naming uid, pid and program, and so is
one beyond `p11kit_max_workers_per_uid` for an ordinary uid, while root is
still served; a killed zygote takes its workers with it; stopping the
daemon ends every worker and the zygote; the PIN is in no worker's or the
zygote's argv or environment; a peer served on the loop (no service) that
a reload gives a service is closed and reconnects to a worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gssproxy_py.p11kit.ck import Ckf
from gssproxy_py.p11kit.wire import Mechanism
from gssproxy_py.testing.daemon import RELOADED_LINE, DaemonPaths
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.process import children
from gssproxy_py.testing.users import check_can_run_python, ensure_test_users, popen_as
from tests.support.p11kit_client import (
    INTEGRATION_MARKS,
    P11KitClient,
    Request,
    error_of,
    initialize,
    response,
)
from tests.support.softhsm import MAIN, put_pins_in_session_keyring, shared_softhsm

pytestmark = INTEGRATION_MARKS

MAX_WORKERS = 3
DEADLINE = 20.0


def _keys_service(name: str, euid: int, paths: DaemonPaths, module: str) -> str:
    """A service of `euid` with the P-256 key on the shared p11kit_socket."""
    return f"""[service/{name}]
  euid = {euid}
  mechs = krb5
  socket = {paths.workdir}/{name}.sock
  pkcs11_module = {module}
  pkcs11_pin = keyring:gpytest-p11kit
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  p11kit_socket = {paths.workdir}/p11.sock
"""


def _config(paths: DaemonPaths, module: str, *, served: bool = True, extra: str = "") -> str:
    service = f"""[service/root-keys]
  euid = 0
  mechs = krb5
  pkcs11_module = {module}
  pkcs11_pin = keyring:gpytest-p11kit
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  p11kit_socket = {paths.workdir}/p11.sock
{extra}"""
    # Without root's service, another keeps the socket open (for nobody).
    other = _keys_service("nobody-keys", 65534, paths, module)
    # An ordinary uid with keys of its own, held to one worker.
    (user1, _) = ensure_test_users()
    user = _keys_service("user1-keys", user1.uid, paths, module)
    return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state
  p11kit_max_workers = {MAX_WORKERS}
  p11kit_max_workers_per_uid = 1
{service if served else ""}{other}{user}"""


class Daemon:
    def __init__(self, process: object, paths: DaemonPaths, module: str) -> None:
        self.process = process
        self.paths = paths
        self.module = module
        self.sock = str(paths.workdir / "p11.sock")

    def log(self) -> str:
        return self.process.log_text()  # type: ignore[attr-defined,no-any-return]

    def zygote(self) -> int:
        found = re.findall(r"p11-kit worker zygote started: pid (\d+)", self.log())
        assert found, self.log()
        return int(found[-1])

    def workers(self) -> list[int]:
        """The zygote's children now, oldest first."""
        return children(self.zygote())

    def wait_workers(self, count: int) -> list[int]:
        deadline = time.monotonic() + DEADLINE
        while True:
            pids = self.workers()
            if len(pids) == count:
                return pids
            assert time.monotonic() < deadline, (pids, count, self.log()[-3000:])
            time.sleep(0.05)


@pytest.fixture
def daemon(daemon_factory: Callable[..., object]) -> Iterator[Daemon]:
    hsm = shared_softhsm()
    put_pins_in_session_keyring({"gpytest-p11kit": MAIN.pin})
    holder: dict[str, DaemonPaths] = {}

    def render(paths: DaemonPaths) -> str:
        holder["paths"] = paths
        return _config(paths, hsm.module)

    process = daemon_factory("py", render, env=hsm.env())
    d = Daemon(process, holder["paths"], hsm.module)
    yield d
    process.stop()  # type: ignore[attr-defined]
    assert MAIN.pin not in d.log()


def _signs(c: P11KitClient) -> bool:
    """A whole session on `c`: the key found and a P-256 signature made."""
    assert error_of(c.call(initialize())) is None
    _, _, r = response(c.call(Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body()))
    session = r.ulong()
    c.call(Request(26, "uaA").u(session).aa([]).body())
    _, _, r = response(c.call(Request(27, "ufu").u(session).fu(8).body()))
    assert r.flag()
    handles = [r.ulong() for _ in range(r.u32())]
    c.call(Request(28, "u").u(session).body())
    for key in handles:
        if error_of(c.call(Request(42, "uMu").u(session).m(Mechanism(0x1041)).u(key).body())):
            continue
        reply = c.call(Request(43, "uayfy").u(session).ay(b"\x42" * 32).fy(64).body())
        _, _, r = response(reply)
        return r.flag() and len(r.byte_array() or b"") == 64
    return False


def _closed(c: P11KitClient) -> bool:
    try:
        c.call(initialize())
    except (EOFError, ConnectionResetError, BrokenPipeError):
        return True
    return False


def test_a_killed_worker_closes_only_its_connection(daemon: Daemon) -> None:
    with P11KitClient(daemon.sock) as first, P11KitClient(daemon.sock) as second:
        assert _signs(first) and _signs(second)
        victim, survivor = daemon.wait_workers(2)
        os.kill(victim, signal.SIGKILL)
        # Which connection the victim served: the one that is now closed.
        dead = [c for c in (first, second) if _closed(c)]
        assert len(dead) == 1
        alive = second if dead[0] is first else first
        assert error_of(alive.call(initialize())) is None and _signs(alive)
        assert daemon.wait_workers(1) == [survivor]
        with P11KitClient(daemon.sock) as third:
            assert _signs(third)  # the daemon still hands out new workers
    log = daemon.log()
    assert log.count(f"worker pid {victim} ") == 2, log  # started, and ended once
    assert re.search(rf"worker pid {victim} \(uid 0 .*\) ended: killed by signal SIGKILL", log)


def test_beyond_p11kit_max_workers_a_connection_is_refused(daemon: Daemon) -> None:
    clients = [P11KitClient(daemon.sock) for _ in range(MAX_WORKERS)]
    try:
        daemon.wait_workers(MAX_WORKERS)
        # closed at once: the version byte may not even be sent
        with pytest.raises((EOFError, ConnectionResetError, BrokenPipeError)):
            P11KitClient(daemon.sock, timeout=DEADLINE)
        assert all(_signs(c) for c in clients)  # the others keep serving
    finally:
        for c in clients:
            c.close()
    daemon.wait_workers(0)
    with P11KitClient(daemon.sock) as again:
        assert _signs(again)  # room again once they ended
    refused = [line for line in daemon.log().splitlines() if "p11kit_max_workers" in line]
    assert len(refused) == 1, refused
    program = os.path.realpath("/proc/self/exe")
    assert f"from pid {os.getpid()} uid 0 program {program}" in refused[0], refused


def _ended_before_the_reload_is_done(daemon: Daemon, worker: int) -> None:
    """The reload that ended `worker` was reported (the line
    DaemonProcess.reload waits for) only once the worker had exited: it
    answers nothing after, however late the zygote's SIGTERM reached it."""
    assert daemon.workers() == []
    log = daemon.log()
    asked = log.rindex(f"ending worker pid {worker}")
    ended = log.index(f"worker pid {worker} ended: killed by signal SIGTERM", asked)
    assert ended < log.index(RELOADED_LINE, asked), log[asked:]


def test_a_reload_keeps_the_workers_whose_service_is_unchanged(daemon: Daemon) -> None:
    config = Path(daemon.process.config)  # type: ignore[attr-defined]
    with P11KitClient(daemon.sock) as c:
        assert _signs(c)
        (worker,) = daemon.wait_workers(1)
        daemon.process.reload()  # type: ignore[attr-defined]  # the same file
        assert _signs(c) and daemon.workers() == [worker]
        # the service's mechanisms change: its worker ends
        config.write_text(
            _config(daemon.paths, daemon.module, extra="  p11kit_mechanisms = ECDSA\n")
        )
        daemon.process.reload()  # type: ignore[attr-defined]
        _ended_before_the_reload_is_done(daemon, worker)
        assert _closed(c)
    with P11KitClient(daemon.sock) as again:
        assert _signs(again)  # under the new policy, by a new worker


def test_reload_ends_the_workers_of_a_uid_that_lost_its_service(daemon: Daemon) -> None:
    with P11KitClient(daemon.sock) as c:
        assert _signs(c)
        (worker,) = daemon.wait_workers(1)
        config = Path(daemon.process.config)  # type: ignore[attr-defined]
        config.write_text(_config(daemon.paths, daemon.module, served=False))
        daemon.process.reload()  # type: ignore[attr-defined]
        _ended_before_the_reload_is_done(daemon, worker)
        assert _closed(c)
    with P11KitClient(daemon.sock) as after:
        # root now matches no service: the daemon answers it, with no slot
        # and no worker.
        assert error_of(after.call(initialize())) is None
        _, _, r = response(after.call(Request(4, "yfu").y(1).fu(8).body()))
        assert r.flag() and r.u32() == 0
        assert daemon.workers() == []


def test_a_peer_that_gains_a_service_at_reload_reconnects_to_a_worker(daemon: Daemon) -> None:
    """A connection whose peer matched no service is served on the daemon's
    loop (no slot); the reload that gives its peer a service closes it, so
    the client's next connection is handed to a worker like any new one,
    rather than served with the service on the loop."""
    config = Path(daemon.process.config)  # type: ignore[attr-defined]
    config.write_text(_config(daemon.paths, daemon.module, served=False))
    daemon.process.reload()  # type: ignore[attr-defined]
    with P11KitClient(daemon.sock) as c:
        assert error_of(c.call(initialize())) is None
        _, _, r = response(c.call(Request(4, "yfu").y(1).fu(8).body()))
        assert r.flag() and r.u32() == 0  # no slot
        assert daemon.workers() == []
        config.write_text(_config(daemon.paths, daemon.module))
        daemon.process.reload()  # type: ignore[attr-defined]
        assert _closed(c)
        assert daemon.workers() == []  # closed, not served with the service here
    assert "service root-keys now; closing, so that the client's next connection" in daemon.log()
    with P11KitClient(daemon.sock) as again:
        assert _signs(again)
        assert len(daemon.wait_workers(1)) == 1


def test_stop_ends_every_worker_and_no_pin_in_their_argv_or_environment(daemon: Daemon) -> None:
    clients = [P11KitClient(daemon.sock) for _ in range(2)]
    try:
        assert all(_signs(c) for c in clients)
        zygote = daemon.zygote()
        workers = daemon.wait_workers(2)
        pin = MAIN.pin.encode()
        for pid in (zygote, *workers):
            for what in ("cmdline", "environ"):
                assert pin not in Path(f"/proc/{pid}/{what}").read_bytes(), (pid, what)
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "gssproxy_py.admin.ctl",
                "status",
                "-s",
                str(daemon.paths.socket),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert "p11kit-workers: 2 processes, 2 busy" in status.stdout, status.stdout + status.stderr
        daemon.process.stop()  # type: ignore[attr-defined]
        for pid in (zygote, *workers):
            deadline = time.monotonic() + DEADLINE
            while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
                assert time.monotonic() < deadline, f"pid {pid} still runs"
                time.sleep(0.05)
        assert all(_closed(c) for c in clients)
    finally:
        for c in clients:
            c.close()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


#: Run as an ordinary uid: two p11-kit connections, each told as served (the
#: handshake's version byte came back) or refused (closed without one); both
#: held until stdin closes.
_HOLD_TWO = """
import socket, sys
held = []
for _ in range(2):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(sys.argv[1])
    try:
        s.sendall(b"\\0")
        answer = s.recv(1)
    except (ConnectionResetError, BrokenPipeError):
        answer = b""
    print("served" if answer else "refused", flush=True)
    held.append(s)
sys.stdin.read()
"""


def test_one_uid_cannot_take_more_than_its_share_of_workers(daemon: Daemon) -> None:
    (user1, _) = ensure_test_users()
    check_can_run_python(user1)
    proc = popen_as(
        user1,
        [str(VENV_PYTHON), "-c", _HOLD_TWO, daemon.sock],
        {},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        seen = [proc.stdout.readline().strip() for _ in range(2)]
        assert seen == ["served", "refused"], (seen, daemon.log()[-2000:])
        # Root is not held to the share: served while user1 holds its worker.
        with P11KitClient(daemon.sock) as root:
            assert _signs(root)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=DEADLINE)
    refused = [line for line in daemon.log().splitlines() if "p11kit_max_workers_per_uid" in line]
    assert len(refused) == 1, refused
    assert f"uid {user1.uid} holds 1 p11-kit workers" in refused[0], refused
    assert f" uid {user1.uid} program {os.path.realpath(VENV_PYTHON)}" in refused[0], refused


def test_a_killed_zygote_takes_its_workers_with_it(daemon: Daemon) -> None:
    with P11KitClient(daemon.sock) as first:
        assert _signs(first)
        (worker,) = daemon.wait_workers(1)
        zygote = daemon.zygote()
        os.kill(zygote, signal.SIGKILL)
        deadline = time.monotonic() + DEADLINE
        # The worker ends with it (it would otherwise go on serving a
        # connection the daemon no longer counts nor can revoke).
        while Path(f"/proc/{worker}").exists() and _state(worker) != "Z":
            assert time.monotonic() < deadline, daemon.log()[-2000:]
            time.sleep(0.05)
        assert _closed(first)
    # The daemon reaped it and said how it ended (no zombie left until the
    # next zygote starts).
    wait_for = time.monotonic() + DEADLINE
    while "the p11-kit worker zygote ended (status -9)" not in daemon.log():
        assert time.monotonic() < wait_for, daemon.log()[-2000:]
        time.sleep(0.05)
    assert _state(zygote) == "gone"
    # A new zygote serves new connections.
    deadline = time.monotonic() + DEADLINE
    while daemon.zygote() == zygote:
        with P11KitClient(daemon.sock) as probe:
            if _signs(probe):
                break
        assert time.monotonic() < deadline, daemon.log()[-2000:]
        time.sleep(0.1)
    with P11KitClient(daemon.sock) as again:
        assert _signs(again)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _memory_holds(pid: int, needle: bytes) -> bool:
    """Whether `needle` is anywhere in the writable memory of `pid` (heap,
    data, anonymous mappings: where freed objects stay until reused)."""
    with (
        open(f"/proc/{pid}/maps") as maps,
        open(f"/proc/{pid}/mem", "rb", buffering=0) as mem,
    ):
        for line in maps:
            fields = line.split()
            if "rw" not in fields[1] or (len(fields) > 5 and fields[5].startswith("[v")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:
                continue
    return False


def test_the_pin_is_in_its_worker_and_never_in_the_zygote(daemon: Daemon) -> None:
    """The zygote passes the PIN's pipe on unread, so a worker it forks
    later, for another service, cannot find that PIN in what it inherits.
    The worker that logged in holds it: the same search finds it there."""
    clients = [P11KitClient(daemon.sock) for _ in range(2)]
    try:
        assert all(_signs(c) for c in clients)
        workers = daemon.wait_workers(2)
        pin = MAIN.pin.encode()
        assert _memory_holds(workers[0], pin)
        assert not _memory_holds(daemon.zygote(), pin)
    finally:
        for c in clients:
            c.close()
