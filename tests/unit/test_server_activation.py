"""Socket activation (sd_listen_fds semantics) and the userproxy configuration,
without a daemon: real sockets at real descriptors, in this process."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.config.userproxy import SERVICE_NAME, userproxy_config, userproxy_paths
from gssproxy_py.errors import ConfigError
from gssproxy_py.server.activation import (
    LISTEN_FDS_START,
    ActivationError,
    InheritedSocket,
    assign,
    inherited_sockets,
)


@contextlib.contextmanager
def _fd3_saved() -> Iterator[None]:
    """Whatever descriptor 3 is (pytest's or nothing) is put back afterwards."""
    try:
        saved: int | None = os.dup(LISTEN_FDS_START)
    except OSError:
        saved = None
    try:
        yield
    finally:
        if saved is None:
            os.close(LISTEN_FDS_START)
        else:
            os.dup2(saved, LISTEN_FDS_START, inheritable=False)
            os.close(saved)


@pytest.fixture
def at_fd3(tmp_path: Path) -> Iterator[str]:
    """A listening socket at descriptor 3."""
    path = str(tmp_path / "passed.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(1)
    with _fd3_saved():
        os.dup2(sock.fileno(), LISTEN_FDS_START, inheritable=True)
        sock.close()
        yield path


def _item(fd: int, path: str) -> InheritedSocket:
    return InheritedSocket(fd=fd, path=path, sock=socket.socket(socket.AF_UNIX))


def test_nothing_passed_without_listen_pid() -> None:
    env = {"LISTEN_FDS": "1"}
    assert inherited_sockets(env, pid=123) == []
    assert env == {}  # unset either way, so children never see them


def test_fds_meant_for_another_process_are_ignored() -> None:
    env = {"LISTEN_PID": "999", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
    assert inherited_sockets(env, pid=123) == []
    assert env == {}


@pytest.mark.parametrize("fds", ["", "one", "-1"])
def test_malformed_count_is_an_error(fds: str) -> None:
    with pytest.raises(ActivationError):
        inherited_sockets({"LISTEN_PID": "7", "LISTEN_FDS": fds}, pid=7)


def test_a_passed_listening_socket_is_adopted_close_on_exec(at_fd3: str) -> None:
    env = {"LISTEN_PID": "7", "LISTEN_FDS": "1"}
    (item,) = inherited_sockets(env, pid=7)
    try:
        assert (item.fd, item.path) == (LISTEN_FDS_START, os.path.normpath(at_fd3))
        assert not os.get_inheritable(LISTEN_FDS_START)
        assert env == {}
    finally:
        item.sock.detach()


def test_a_passed_socket_that_does_not_listen_is_refused() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _fd3_saved():
        os.dup2(sock.fileno(), LISTEN_FDS_START)
        sock.close()
        with pytest.raises(ActivationError, match="descriptor 3 is not a listening"):
            inherited_sockets({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, pid=7)


def test_assign_by_name_then_one_unnamed_to_the_default() -> None:
    a, b = _item(3, "/run/b.sock"), _item(4, "/run/elsewhere.sock")
    chosen = assign([a, b], ["/run/default.sock", "/run/b.sock"], "/run/default.sock")
    assert chosen == {"/run/b.sock": a, "/run/default.sock": b}


def test_assign_refuses_sockets_that_serve_nothing() -> None:
    items = [_item(3, "/x.sock"), _item(4, "")]
    with pytest.raises(ActivationError, match=r"fd 3 \(/x.sock\), fd 4 \(unnamed\)"):
        assign(items, ["/run/default.sock"], "/run/default.sock")


def test_userproxy_paths_under_the_runtime_dir() -> None:
    paths = userproxy_paths(None, {"XDG_RUNTIME_DIR": "/run/user/1000"})
    assert paths.socket == "/run/user/1000/gssproxy/default.sock"
    assert paths.state_dir == "/run/user/1000/gssproxy-py"
    assert userproxy_paths("/tmp/s/./x.sock", {}).socket == "/tmp/s/x.sock"
    with pytest.raises(ConfigError, match="XDG_RUNTIME_DIR is not set"):
        userproxy_paths(None, {})


def test_userproxy_service() -> None:
    paths = userproxy_paths(None, {"XDG_RUNTIME_DIR": "/run/user/1000"})
    config = userproxy_config(1000, paths, [("ccache", "FILE:/tmp/krb5cc_1000"), ("keytab", "a%b")])
    (svc,) = config.services
    assert (svc.name, svc.euid, svc.allow_client_ccache_sync) == (SERVICE_NAME, 1000, True)
    assert svc.cred_store == (("ccache", "FILE:/tmp/krb5cc_1000"), ("keytab", "a%%b"))
    assert config.globals.worker_threads == 2
    assert config.globals.state_dir == paths.state_dir
