"""cifs.upcall's GSSAPI calls through the interposer, and what the daemon log says when they fail.

The client (`clients/cifs_gss.py`) does what cifs.upcall does once it has
setuid() to the mount's user: init_sec_context for cifs@localhost with no
credential and req_flags 0, which must complete at once, then
gss_krb5_export_lucid_sec_context (the interposer imports the daemon's
exported context locally for it). It runs as gpytest1/gpytest2 through
proxymech.so. The service is the shipped cifs-upcall one
(conf/50-cifs-upcall.conf) with the client's interpreter as `program`
instead of /usr/sbin/cifs.upcall, and its files in a root-only directory:
`client_keytab:<dir>/%U.keytab` (the daemon gets the TGT and caches it in
`ccache:<dir>/krb5cc_%U`) or only a daemon-owned ccache.

The realm is this module's own, so the KDC can be stopped.

When the call fails, the gssproxy-py log line for it says why: no service
matched (and the nearest one), no credentials for the uid (naming the
missing keytab), KDC unreachable, principal unknown.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.daemon import ALL_IMPLEMENTATIONS, DaemonProcess
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.peer import client_argv
from gssproxy_py.testing.realm import Realm
from gssproxy_py.testing.users import LocalUser, run_as

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

impls = pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)

#: /proc/PID/exe of the client, as the daemon reads it.
CLIENT_PROGRAM = os.path.realpath(VENV_PYTHON)
SHIPPED = Path(__file__).resolve().parents[2] / "conf" / "50-cifs-upcall.conf"


@pytest.fixture(scope="module")
def cifs_realm(harness_dir: Path) -> Iterator[Realm]:
    """A KDC of our own with alice, bob and cifs/localhost."""
    realm = Realm(harness_dir / "cifs-realm")
    realm.create()
    realm.addprinc("alice")
    realm.addprinc("bob")
    realm.addprinc("cifs/localhost")
    realm.start()
    yield realm
    realm.stop()


@pytest.fixture
def clients(tmp_path: Path, harness_dir: Path) -> Iterator[Path]:
    """A fresh root-only directory for the users' keytabs and ccaches."""
    directory = harness_dir / f"cifs-clients-{tmp_path.name}"
    directory.mkdir(mode=0o700)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def service(clients: Path, program: str = CLIENT_PROGRAM) -> str:
    """The shipped cifs-upcall service with our paths and program."""
    text = SHIPPED.read_text()
    assert "/var/lib/gssproxy/clients/" in text and "program = /usr/sbin/cifs.upcall" in text
    text = text.replace("/var/lib/gssproxy/clients/", f"{clients}/")
    return text.replace("program = /usr/sbin/cifs.upcall", f"program = {program}")


def start(daemon_factory: Any, impl: str, realm: Realm, text: str) -> DaemonProcess:
    daemon: DaemonProcess = daemon_factory(impl, h.render(text), env=realm.env())
    return daemon


def cifs_gss(daemon: DaemonProcess, realm: Realm, user: LocalUser) -> dict[str, Any]:
    """Run clients/cifs_gss.py as `user` through the interposer to `daemon`."""
    env = {**realm.env(), **interposer_env(daemon.socket, daemon.socket.parent)}
    proc = run_as(user, client_argv("cifs_gss.py"), env)
    assert proc.returncode == 0, proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return reply


def klist(realm: Realm, ccache: Path) -> str:
    proc = subprocess.run(
        ["klist", "-c", f"FILE:{ccache}"],
        env={**os.environ, **realm.env()},
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout + proc.stderr


def why_lines(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.log_text().splitlines() if "; why: " in line]


def assert_private(path: Path) -> None:
    st = path.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600), path


# -- serving cifs.upcall ---------------------------------------------------------------


@impls
def test_client_keytab_mode(
    impl: str,
    daemon_factory: Any,
    cifs_realm: Realm,
    test_users: tuple[LocalUser, ...],
    clients: Path,
) -> None:
    user = test_users[0]
    keytab = cifs_realm.ktadd("alice", clients / f"{user.uid}.keytab")
    daemon = start(daemon_factory, impl, cifs_realm, service(clients))
    reply = cifs_gss(daemon, cifs_realm, user)
    assert reply["ok"], reply
    # Complete in one step (req_flags 0: no mutual auth), then a lucid v1 export.
    assert reply["complete"] and reply["lucid_version"] == 1 and reply["initiate"] == 1
    assert reply["token_len"] > 300
    # The daemon got the TGT from the keytab and cached it next to it.
    ccache = clients / f"krb5cc_{user.uid}"
    assert "krbtgt/EXAMPLE.TEST@EXAMPLE.TEST" in klist(cifs_realm, ccache)
    for path in (keytab, ccache):
        assert_private(path)
    assert stat.S_IMODE(clients.stat().st_mode) == 0o700
    # ... which the user cannot read, so nothing worked without the daemon.
    assert run_as(user, ["cat", str(keytab)], {}).returncode != 0
    if impl == "py":
        log = daemon.log_text()
        assert f"uid {user.uid} gid {user.gid} program {CLIENT_PROGRAM}" in log
        assert "GSSX_INIT_SEC_CONTEXT: service 'cifs-upcall'" in log
        assert " failed for uid " not in log, log


@impls
def test_daemon_ccache_mode(
    impl: str,
    daemon_factory: Any,
    cifs_realm: Realm,
    test_users: tuple[LocalUser, ...],
    clients: Path,
) -> None:
    user = test_users[1]
    # bob's TGT only in the daemon-owned ccache; his keys are gone.
    scratch = clients / "bob.keytab"
    cifs_realm.ktadd("bob", scratch)
    ccache = clients / f"krb5cc_{user.uid}"
    cifs_realm.kinit("bob", ccache, keytab=scratch)
    scratch.unlink()
    ccache.chmod(0o600)
    daemon = start(daemon_factory, impl, cifs_realm, service(clients))
    reply = cifs_gss(daemon, cifs_realm, user)
    assert reply["ok"] and reply["complete"], reply
    assert not (clients / f"{user.uid}.keytab").exists()
    # The service ticket went into the same ccache.
    assert "cifs/localhost@EXAMPLE.TEST" in klist(cifs_realm, ccache)
    assert_private(ccache)


# -- what the log says when it fails (gssproxy-py) ---------------------------------------


def test_missing_keytab_names_the_path(
    daemon_factory: Any, cifs_realm: Realm, test_users: tuple[LocalUser, ...], clients: Path
) -> None:
    user = test_users[0]
    daemon = start(daemon_factory, "py", cifs_realm, service(clients))
    reply = cifs_gss(daemon, cifs_realm, user)
    assert not reply["ok"], reply
    lines = why_lines(daemon)
    assert lines, daemon.log_text()
    expected = (
        f"why: no credentials for uid {user.uid} (service 'cifs-upcall'): "
        f"the client keytab {clients}/{user.uid}.keytab does not exist; "
        f"the ccache FILE:{clients}/krb5cc_{user.uid} does not exist"
    )
    assert all(expected in line and "WARNING" in line for line in lines), lines


def test_kdc_unreachable(
    daemon_factory: Any, cifs_realm: Realm, test_users: tuple[LocalUser, ...], clients: Path
) -> None:
    user = test_users[0]
    cifs_realm.ktadd("alice", clients / f"{user.uid}.keytab")
    daemon = start(daemon_factory, "py", cifs_realm, service(clients))
    cifs_realm.stop()
    try:
        reply = cifs_gss(daemon, cifs_realm, user)
    finally:
        cifs_realm.start()
    assert not reply["ok"], reply
    lines = why_lines(daemon)
    assert lines and all(
        "why: KDC unreachable (Cannot contact any KDC for realm 'EXAMPLE.TEST')" in line
        for line in lines
    ), daemon.log_text()


def test_unknown_principal(
    daemon_factory: Any, cifs_realm: Realm, test_users: tuple[LocalUser, ...], clients: Path
) -> None:
    user = test_users[0]
    ghost = cifs_realm.addprinc("ghost")
    keytab = cifs_realm.ktadd(ghost, clients / f"{user.uid}.keytab")
    cifs_realm.kadmin("delprinc", "-force", ghost)
    daemon = start(daemon_factory, "py", cifs_realm, service(clients))
    reply = cifs_gss(daemon, cifs_realm, user)
    assert not reply["ok"], reply
    lines = why_lines(daemon)
    expected = (
        "why: principal unknown to the KDC (Client 'ghost@EXAMPLE.TEST' not found in "
        f"Kerberos database): it comes from the client keytab {keytab} of uid {user.uid}"
    )
    assert lines and all(expected in line for line in lines), daemon.log_text()


def test_no_service_matched_names_the_nearest(
    daemon_factory: Any, cifs_realm: Realm, test_users: tuple[LocalUser, ...], clients: Path
) -> None:
    user = test_users[0]
    cifs_realm.ktadd("alice", clients / f"{user.uid}.keytab")
    # The real program: our python client is not cifs.upcall.
    daemon = start(daemon_factory, "py", cifs_realm, service(clients, "/usr/sbin/cifs.upcall"))
    reply = cifs_gss(daemon, cifs_realm, user)
    assert not reply["ok"], reply
    refused = [line for line in daemon.log_text().splitlines() if ", no service: " in line]
    expected = f"no service matched uid {user.uid}, program {CLIENT_PROGRAM}"
    assert refused and all(
        expected in line
        and "nearest: service 'cifs-upcall' requires program /usr/sbin/cifs.upcall" in line
        for line in refused
    ), daemon.log_text()
