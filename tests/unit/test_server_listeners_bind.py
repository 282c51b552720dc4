"""Binding a listening socket's path (`server.listeners.bind_socket`): where
it is bound in place and where beside-and-renamed, and that its mode is
never set through anything but the socket itself."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from gssproxy_py.server import listeners
from gssproxy_py.server.listeners import ancestor_open_to_others, bind_socket

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to other users needs root")


def _bound_name(path: Path) -> str:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(path))
        name: str = conn.getpeername()
        return name


def test_in_a_root_only_tree_the_socket_is_bound_at_its_path(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "run" / "gp.sock"
    sock, _ = bind_socket(str(path))
    with sock:
        assert _bound_name(path) == str(path)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o666


def test_below_a_directory_others_can_write_it_is_bound_beside_and_renamed(
    tmp_path: Path,
) -> None:
    # A root-only directory inside one every user can write (not sticky):
    # another user could rename `run` away and put a directory of theirs there.
    tmp_path.chmod(0o777)
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    assert ancestor_open_to_others(str(run)) == f"{tmp_path} (mode 0777: writable by every user)"
    path = run / "gp.sock"
    sock, _ = bind_socket(str(path))
    with sock:
        assert _bound_name(path).startswith(f"{run}/.gp-")
        assert stat.S_IMODE(path.lstat().st_mode) == 0o666


def test_a_sticky_directory_above_a_root_owned_one_is_no_way_in(tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)  # like /tmp
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    assert ancestor_open_to_others(str(run)) is None


@needs_root
def test_a_sticky_directory_above_another_users_directory_is(tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chown(run, 65534, 65534)  # the user may rename its own directory away
    assert ancestor_open_to_others(str(run / "inner")) is not None


def test_the_mode_is_never_set_through_a_symlink(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.write_text("x")
    precious.chmod(0o600)
    link = tmp_path / "swapped"
    link.symlink_to(precious)
    with pytest.raises(OSError):
        listeners._chmod_socket(str(link), 0o666)
    plain = tmp_path / "plain"
    plain.write_text("y")
    plain.chmod(0o600)
    with pytest.raises(OSError, match="replaced by something else"):
        listeners._chmod_socket(str(plain), 0o666)
    assert stat.S_IMODE(precious.stat().st_mode) == 0o600
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600
