"""`server/workers.py` without forking: binding before the fork, the worker's
view of the sockets, the restart back-off, the single-thread check, and the
`worker_processes` option."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gssproxy_py.config.load import load_config
from gssproxy_py.config.model import Config, GlobalSettings, Service
from gssproxy_py.errors import ConfigError, LocalError
from gssproxy_py.server import workers
from gssproxy_py.server.activation import InheritedSocket


def _config(*sockets: str) -> Config:
    services = tuple(
        Service(name=f"s{i}", mechs=("krb5",), euid=0, socket=path)
        for i, path in enumerate(sockets)
    )
    return Config(globals=GlobalSettings(), services=services)


def _supervisor(count: int) -> workers.WorkerSupervisor:
    """A supervisor whose workers would serve nothing (none is forked here)."""
    return workers.WorkerSupervisor(
        count=count,
        run_worker=lambda _config, _slot: 0,
        reload_config=_config,
        config=_config(),
        shutdown_grace=1.0,
    )


def test_every_socket_is_bound_before_the_fork_and_released_once(tmp_path: Path) -> None:
    default, extra = str(tmp_path / "default.sock"), str(tmp_path / "d" / "extra.sock")
    bound = workers.bind_rpc_sockets(_config(extra), default, ())
    try:
        assert [b.path for b in bound] == [default, extra]
        for item in bound:
            st = os.lstat(item.path)
            assert item.bound == (st.st_dev, st.st_ino)
            assert item.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        # Workers never unlink: the first process owns the files.
        assert all(w.bound is None for w in workers.for_workers(bound))
        assert [w.fd for w in workers.for_workers(bound)] == [b.fd for b in bound]
        workers.release(bound)
        assert not os.path.exists(default) and not os.path.exists(extra)
        workers.release(bound)  # idempotent
    finally:
        for item in bound:
            item.sock.close()


def test_release_leaves_a_file_that_is_no_longer_ours(tmp_path: Path) -> None:
    path = str(tmp_path / "default.sock")
    (bound,) = workers.bind_rpc_sockets(_config(), path, ())
    bound.sock.close()
    # Renamed over the socket, so the new file cannot get the socket's inode
    # number back (a file created after an unlink often does).
    other = tmp_path / "other"
    other.write_text("someone else's")
    os.rename(other, path)
    workers.release([bound])
    assert Path(path).read_text() == "someone else's"


def test_a_passed_socket_is_used_and_never_unlinked(tmp_path: Path) -> None:
    path = str(tmp_path / "default.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen()
    passed = InheritedSocket(sock.fileno(), path, sock)
    with sock:
        (item,) = workers.bind_rpc_sockets(_config(), path, (passed,))
        assert item is passed and item.bound is None
        workers.release([item])
        assert os.path.exists(path)


def test_a_failed_bind_releases_what_was_bound(tmp_path: Path) -> None:
    default = str(tmp_path / "default.sock")
    blocked = tmp_path / "dir.sock"
    blocked.mkdir()  # a directory at a socket path is refused
    with pytest.raises(LocalError, match="is a directory"):
        workers.bind_rpc_sockets(_config(str(blocked)), default, ())
    assert not os.path.exists(default)


def test_restart_back_off() -> None:
    assert [workers.restart_delay(n) for n in range(9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]


def test_no_fork_while_another_thread_runs() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert workers.threads_running() >= 2
        supervisor = _supervisor(2)
        with pytest.raises(workers.WorkerStartError, match="threads already run"):
            workers.start_workers(supervisor)
    finally:
        release.set()
        thread.join()


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("4", True), ("0", False), ("65", False)])
def test_worker_processes_option(tmp_path: Path, value: str, ok: bool) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text(
        f"[gssproxy]\n  worker_processes = {value}\n[service/a]\n  mechs = krb5\n  euid = 0\n"
    )
    conf.chmod(0o600)
    if ok:
        config = load_config(str(conf), None, default_socket=str(tmp_path / "s"))
        assert config.globals.worker_processes == int(value)
    else:
        with pytest.raises(ConfigError, match=f"{conf}:2: option 'worker_processes'"):
            load_config(str(conf), None, default_socket=str(tmp_path / "s"))


def _fork_fails(code: int) -> Callable[[], int]:
    def refuse() -> int:
        raise OSError(code, os.strerror(code))

    return refuse


def test_a_fork_that_fails_backs_the_slot_off_and_the_supervisor_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EAGAIN from fork (RLIMIT_NPROC, the pids cgroup) must not end the
    supervisor: that would end every worker already serving with it."""
    monkeypatch.setattr(workers.os, "fork", _fork_fails(errno.EAGAIN))
    supervisor = _supervisor(3)
    slot = workers._Slot(1)
    for tries, delay in ((1, 1.0), (2, 2.0), (3, 4.0)):
        before = time.monotonic()
        supervisor._fork(slot)
        assert slot.pid is None
        assert slot.quick_deaths == tries
        assert slot.due >= before + delay
        assert supervisor._wait_time() > 0


def test_a_supervisor_that_cannot_be_forked_is_a_start_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon then says `cannot start: ...` (server.cli), not a traceback."""
    monkeypatch.setattr(workers.os, "fork", _fork_fails(errno.ENOMEM))
    monkeypatch.setattr(workers, "threads_running", lambda: 1)  # whatever pytest runs
    with pytest.raises(workers.WorkerStartError, match="cannot fork the supervisor"):
        workers.start_workers(_supervisor(2))
