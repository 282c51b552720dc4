"""A service whose callers cannot search the directory of its socket is
warned about at start-up (and after each reload), naming the directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from gssproxy_py.config.load import load_config
from gssproxy_py.server.listeners import unreachable_sockets
from gssproxy_py.testing.daemon import DaemonProcess, render_config, write_config

pytestmark = [pytest.mark.integration]

NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: the directory must belong to someone other than the euid"
)


@pytest.fixture
def work(harness_dir: Path) -> Path:
    """A 0755 directory every user can reach (pytest's tmp_path is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="reach-", dir=harness_dir))
    path.chmod(0o755)
    return path


def warnings_for(tmp_path: Path, sockdir: Path, **service: str | int) -> list[str]:
    text = render_config({"svc": {"mechs": "krb5", **service}})
    config = load_config(
        str(write_config(tmp_path / "gssproxy.conf", text)),
        None,
        default_socket=str(sockdir / "default.sock"),
    )
    return unreachable_sockets(config, str(sockdir / "default.sock"))


@pytest.mark.parametrize(
    ("mode", "service", "warned"),
    [
        (0o700, {"euid": NOBODY}, f"uid {NOBODY} cannot search"),
        (0o700, {"euid": NOBODY, "allow_any_uid": "yes"}, "other users cannot search"),
        (0o700, {"euid": 0}, None),  # root, and the kernel, always can
        (0o755, {"euid": NOBODY}, None),
        (0o711, {"euid": NOBODY, "allow_any_uid": "yes"}, None),  # search is enough
    ],
)
@needs_root
def test_search_permission_of_the_socket_directory(
    work: Path, mode: int, service: dict[str, str | int], warned: str | None
) -> None:
    sockdir = work / "sock"
    sockdir.mkdir(mode=mode)
    sockdir.chmod(mode)
    got = warnings_for(work, sockdir, **service)
    if warned is None:
        assert got == []
    else:
        assert len(got) == 1 and warned in got[0]
        assert f"{sockdir} (mode {mode:04o}, owner uid 0)" in got[0]
        assert f"cannot reach {sockdir}/default.sock" in got[0] and "service 'svc'" in got[0]


@needs_root
def test_a_parent_directory_is_found_too(work: Path) -> None:
    (work / "closed").mkdir(mode=0o700)
    sockdir = work / "closed" / "open"
    sockdir.mkdir(mode=0o755)
    [warning] = warnings_for(work, sockdir, euid=NOBODY)
    assert f"cannot search {work / 'closed'} " in warning


@needs_root
def test_the_daemon_logs_it(work: Path) -> None:
    sockdir = work / "private"
    sockdir.mkdir(mode=0o700)
    text = render_config({"svc": {"mechs": "krb5", "euid": NOBODY}})
    daemon = DaemonProcess(
        "py",
        write_config(work / "gssproxy.conf", text),
        socket=sockdir / "default.sock",
        confdir=work / "conf.d",
        log_path=work / "gssproxy.log",
    )
    with daemon:
        pass
    log = daemon.log_text()
    assert f"WARNING: service 'svc': uid {NOBODY} cannot search {sockdir}" in log
