"""The p11-kit zygote's hardening: it (and the PKINIT child) imports nothing
from the daemon's working directory, and it and the workers it forks are not dumpable
(PR_SET_DUMPABLE 0): both hold the PIN, so neither may leave a core file
nor be read through ptrace or /proc/PID/mem by another process of the
daemon's uid. Seen from outside, the /proc/PID files of a process that is
not dumpable belong to root (the directory itself excepted) whatever uid it
runs as, so the real zygote runs here as an ordinary uid (as it does under
`run_as_user`) and is handed one connection, served by a real worker."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
from pathlib import Path

import pytest

from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.pkinit import PkinitError, PkinitRequest, obtain_tgt_sync
from gssproxy_py.server.p11kit_workers import P11KitWorkers
from gssproxy_py.server.p11kit_zygote import MAX_MESSAGE, Handoff
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.users import check_can_run_python, ensure_test_users, popen_as

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _real_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid: line for pid {pid}")


def test_the_zygote_and_its_workers_are_not_dumpable() -> None:
    (user, _) = ensure_test_users()
    check_can_run_python(user)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.settimeout(30)
    zygote = popen_as(
        user,
        [str(VENV_PYTHON), "-m", "gssproxy_py.server.p11kit_zygote", str(theirs.fileno())],
        {},
        pass_fds=(theirs.fileno(),),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    client, served = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        handoff = Handoff(
            token=1,
            number=1,
            socket_path="test",
            who="test",
            log_level=logging.WARNING,
            record_timeout=5.0,
            uid=user.uid,
            gid=user.gid,
            groups=(),
        )
        socket.send_fds(ours, [handoff.encode()], [served.fileno()])
        served.close()
        answer = json.loads(ours.recv(MAX_MESSAGE))
        assert answer.get("spawned") == 1, answer
        worker = int(answer["pid"])
        for pid in (zygote.pid, worker):
            assert _real_uid(pid) == user.uid, pid
            assert os.stat(f"/proc/{pid}/mem").st_uid == 0, f"pid {pid} is dumpable"
        client.close()
        ended = json.loads(ours.recv(MAX_MESSAGE))
        assert ended == {"exited": worker, "status": 0}, ended
    finally:
        client.close()
        ours.close()  # the end of the pair ends the zygote
        try:
            _, err = zygote.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            zygote.kill()
            _, err = zygote.communicate()
    assert zygote.returncode == 0, err.decode()


#: Stands for any module another user could leave in the daemon's working
#: directory: it leaves a mark if imported.
_PLANTED = "open(__file__ + '.imported', 'w').close()\nraise SystemExit(3)\n"


def test_the_zygote_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m` puts the working directory first on sys.path: the zygote
    of a daemon started with -i from a directory others can write must not
    import their modules (the first one it imports is json)."""
    (tmp_path / "json.py").write_text(_PLANTED)
    monkeypatch.chdir(tmp_path)

    async def start_and_stop() -> bool:
        workers = P11KitWorkers(None, 1.0)
        workers.start()
        # Time for its imports; close() then waits for it to end, so the
        # mark below is there if it imported the planted module at all.
        await asyncio.sleep(0.5)
        running = workers.running
        await workers.close()
        return running

    assert asyncio.run(start_and_stop())
    assert not (tmp_path / "json.py.imported").exists()


def test_the_pkinit_child_imports_nothing_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PKINIT child (`python -m gssproxy_py.pkcs11.pkinit`, given the PIN
    on stdin) is started the same way, and must not either."""
    (tmp_path / "json.py").write_text(_PLANTED)
    monkeypatch.chdir(tmp_path)
    request = PkinitRequest("nobody@EXAMPLE.TEST", "PKCS11:module_name=/nonexistent", "MEMORY:x")
    with pytest.raises(PkinitError):
        obtain_tgt_sync(request, Pin("not-a-pin", "test"), env={}, time_limit=60)
    assert not (tmp_path / "json.py.imported").exists()
