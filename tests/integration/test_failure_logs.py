"""The failures an NFS-server administrator meets most, each explained by one
WARNING line (visible at the default debug level) that names the caller's
uid and pid, the service, and the keytab file or principal involved; the
start-up keytab check; and what debug levels 1, 2 and 3 add."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import gssapi
import pytest

from gssproxy_py.client import GssProxyClient
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.testing.daemon import DaemonPaths, DaemonProcess
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser

pytestmark = [pytest.mark.integration, pytest.mark.root]

CC = gp.GssxCallCtx(b"", b"", ())
HOST = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
SERVICE = "acceptor"

Start = Callable[..., DaemonProcess]


@pytest.fixture
def work(harness_dir: Path) -> Path:
    """Reachable by other uids (run_as_user), unlike pytest's tmp_path."""
    path = Path(tempfile.mkdtemp(prefix="fail-", dir=harness_dir))
    path.chmod(0o755)
    return path


@pytest.fixture
def start(daemon_factory: object, initiator_env: None) -> Start:
    """An acceptor service on `keytab`, with extra [gssproxy] lines."""

    def run(keytab: Path, *, debug_level: int = 1, extra: str = "") -> DaemonProcess:
        def render(paths: DaemonPaths) -> str:
            return f"""[gssproxy]
  debug_level = {debug_level}
  state_dir = {paths.workdir}/state
{extra}
[service/{SERVICE}]
  mechs = krb5
  cred_store = keytab:{keytab}
  euid = 0
"""

        daemon: DaemonProcess = daemon_factory("py", render, debug_level=debug_level)  # type: ignore[operator]
        return daemon

    return run


def accept(daemon: DaemonProcess, token: bytes) -> gp.GssxResAcceptSecContext:
    with GssProxyClient(str(daemon.socket)) as client:
        return client.accept_sec_context(
            gp.GssxArgAcceptSecContext(CC, None, None, token, None, False, ())
        )


def token_for(target: gssapi.Name = HOST) -> bytes:
    token = gssapi.SecurityContext(name=target, usage="initiate").step()
    assert token is not None
    return token


def warnings_of(daemon: DaemonProcess) -> list[str]:
    return [line for line in daemon.log_text().splitlines() if "WARNING:" in line]


def the_failure_line(daemon: DaemonProcess) -> str:
    """The one default-level line of the failed call, after its basic checks."""
    lines = [line for line in warnings_of(daemon) if "ACCEPT_SEC_CONTEXT failed for" in line]
    assert len(lines) == 1, daemon.log_text()
    line = lines[0]
    assert f"failed for uid 0 pid {os.getpid()} program " in line
    assert f"service '{SERVICE}'" in line and "; why: " in line
    return line


def test_missing_keytab(start: Start, work: Path) -> None:
    keytab = work / "absent.keytab"
    daemon = start(keytab)
    assert f"service '{SERVICE}': the keytab {keytab} does not exist" in daemon.log_text()
    res = accept(daemon, token_for())
    assert res.status.major_status != 0
    line = the_failure_line(daemon)
    assert f"why: the keytab {keytab} does not exist" in line


def test_corrupt_keytab(start: Start, work: Path) -> None:
    keytab = work / "corrupt.keytab"
    keytab.write_bytes(b"\x05\x02\x00\x00\x00\x40garbage where entries should be")
    keytab.chmod(0o600)
    daemon = start(keytab)
    assert f"the keytab {keytab} is not a valid keytab" in daemon.log_text()  # at start-up
    accept(daemon, token_for())
    assert f"why: the keytab {keytab} is not a valid keytab" in the_failure_line(daemon)


def test_keytab_unreadable_by_run_as_user(
    start: Start, work: Path, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    keytab = work / "root-only.keytab"
    shutil.copy(realm.service_keytab, keytab)
    keytab.chmod(0o600)  # root's; the daemon runs as the test user
    daemon = start(keytab, extra=f"  run_as_user = {user.name}")
    assert f"is not readable by the daemon's uid {user.uid}" in daemon.log_text()
    accept(daemon, token_for())
    line = the_failure_line(daemon)
    assert f"why: the keytab {keytab} is not readable by the daemon's uid {user.uid}" in line


def test_keytab_of_another_principal(start: Start, work: Path, realm: StandardRealm) -> None:
    keytab = work / "nfs.keytab"
    shutil.copy(realm.nfs_keytab, keytab)
    daemon = start(keytab)
    accept(daemon, token_for())
    line = the_failure_line(daemon)
    assert f"the keytab {keytab} has no key for {realm.service_principal}" in line
    assert f"it holds {realm.nfs_principal} (kvno " in line


def test_stale_kvno(start: Start, work: Path, realm: StandardRealm) -> None:
    principal = realm.realm.addprinc("stale/localhost")
    keytab = realm.realm.ktadd("stale/localhost", work / "stale.keytab")
    realm.realm.kadmin("cpw", "-randkey", principal)  # the KDC moves on to kvno 2
    daemon = start(keytab)
    accept(daemon, token_for(gssapi.Name("stale@localhost", gssapi.NameType.hostbased_service)))
    line = the_failure_line(daemon)
    assert f"the keytab {keytab} holds {principal} with kvno 1" in line
    assert "the client's ticket is for kvno 2" in line


@pytest.mark.skipif(shutil.which("faketime") is None, reason="faketime missing: make deps")
def test_clock_skew(start: Start, work: Path, realm: StandardRealm) -> None:
    keytab = work / "svc.keytab"
    shutil.copy(realm.service_keytab, keytab)
    ccache = work / "alice.ccache"
    shutil.copy(realm.alice_ccache, ccache)
    env = {**realm.env(), "KRB5CCNAME": f"FILE:{ccache}", "PATH": "/usr/bin:/bin"}
    code = (
        "import gssapi, sys; n = gssapi.Name('host@localhost', gssapi.NameType.hostbased_service);"
        "sys.stdout.write(gssapi.SecurityContext(name=n, usage='initiate').step().hex())"
    )
    # The service ticket first, at the right time; then an authenticator 10 minutes ahead.
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    skewed = subprocess.run(
        ["faketime", "+10 minutes", sys.executable, "-c", code],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    daemon = start(keytab)
    accept(daemon, bytes.fromhex(skewed))
    line = the_failure_line(daemon)
    assert "(Clock skew too great)" in line
    assert f"why: the clocks of the client (uid 0, pid {os.getpid()}) and of this host" in line


def test_repeats_are_counted_and_the_count_logged_after_the_burst(start: Start, work: Path) -> None:
    """A burst, then silence: no next line carries the count, so the daemon's
    loop logs it once the 10 s interval has ended."""
    daemon = start(work / "absent.keytab")
    for _ in range(5):
        accept(daemon, token_for())
    assert len([w for w in warnings_of(daemon) if "ACCEPT_SEC_CONTEXT failed" in w]) == 1
    count = f"and 4 more failed calls like the last one for uid 0, service '{SERVICE}' (major "
    daemon.wait_for_log(count, timeout=60)
    (line,) = [w for w in warnings_of(daemon) if "more failed calls" in w]
    assert line.endswith(" in the last 10 s"), line


def test_a_refusal_is_logged_once(daemon_factory: object, initiator_env: None) -> None:
    """No service for this caller: one line with the reason, not one per level."""
    daemon = daemon_factory(  # type: ignore[operator]
        "py", "[gssproxy]\n  debug_level = 1\n[service/other]\n  mechs = krb5\n  euid = 4242\n"
    )
    res = accept(daemon, token_for())
    assert res.status.major_status != 0
    log = daemon.log_text()
    assert log.count("no service matched uid 0") == 1, log
    (line,) = [w for w in warnings_of(daemon) if "failed for" in w]
    assert f"failed for uid 0 pid {os.getpid()}" in line and "no service:" in line


# -- what the debug levels add -----------------------------------------------------------


@pytest.fixture
def good_keytab(work: Path, realm: StandardRealm) -> Iterator[Path]:
    keytab = work / "svc.keytab"
    shutil.copy(realm.service_keytab, keytab)
    yield keytab


def test_level_1_names_who_authenticated(
    start: Start, good_keytab: Path, realm: StandardRealm
) -> None:
    daemon = start(good_keytab)
    assert accept(daemon, token_for()).status.major_status == 0
    assert f"accepted a context from {realm.alice} for service '{SERVICE}'" in daemon.log_text()


def test_level_2_dumps_requests_without_secrets(start: Start, good_keytab: Path) -> None:
    daemon = start(good_keytab, debug_level=2)
    token = token_for()
    assert accept(daemon, token).status.major_status == 0
    log = daemon.log_text()
    assert "ACCEPT_SEC_CONTEXT arguments: GssxArgAcceptSecContext(" in log
    assert f"input_token=<{len(token)} bytes>" in log
    assert "ACCEPT_SEC_CONTEXT result: GssxResAcceptSecContext(" in log
    assert "exported_context_token=<" in log
    assert token.hex()[:32] not in log and "SECRET:" not in log


def test_level_3_bridges_the_krb5_trace(start: Start, good_keytab: Path) -> None:
    daemon = start(good_keytab, debug_level=3)
    assert accept(daemon, token_for()).status.major_status == 0
    # A thread forwards the trace: wait for it (a generous deadline, not a timing).
    daemon.wait_for_log("SECRET: krb5: ", timeout=20)
