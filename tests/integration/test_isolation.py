"""Tenant isolation against the real daemon (issue 14; docs/RELIABILITY.md):
a local user flooding connections, holding half records or trickling bytes
cannot lock out root, the kernel-style client or another user; idle
connections are closed and the clients reconnect.

The flooders run as the test users through `setpriv` (clients/flood.py).
Every wait is bounded by a generous deadline; nothing asserts how long a
step took.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gssapi
import pytest

from gssproxy_py.client import GssProxyClient, RemoteSystemError
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.testing.daemon import DaemonPaths, DaemonProcess
from gssproxy_py.testing.net import wait_until
from gssproxy_py.testing.peer import b64, client_argv, peer_env
from gssproxy_py.testing.realm import StandardRealm, keytab_without_kdc
from gssproxy_py.testing.users import LocalUser, popen_as, run_as
from gssproxy_py.vocab import oids
from tests.conformance.kernel_client import KernelConnection, nfsd_checks_complete

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

NFS = gssapi.Name("nfs@localhost", gssapi.NameType.hostbased_service)


def config(realm: StandardRealm, user: LocalUser, **limits: object) -> Any:
    """The kernel's nfs service (root, keytab) on the default socket, and a
    service for `user` with alice's client keytab, plus `limits` in [gssproxy]."""

    def render(paths: DaemonPaths) -> str:
        extra = "".join(f"  {k} = {v}\n" for k, v in limits.items())
        return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state
{extra}
[service/nfs-server]
  mechs = krb5
  cred_store = keytab:{realm.nfs_keytab}
  trusted = yes
  euid = 0

[service/user]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  cred_usage = accept
  euid = {user.uid}
"""

    return render


@contextmanager
def flood(user: LocalUser, socket: Path, count: int, mode: str = "null") -> Iterator[Any]:
    """clients/flood.py as `user`; yields (process, held) once it set up."""
    proc = popen_as(
        user,
        client_argv("flood.py", str(socket), str(count), mode),
        {},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"held (\d+)\n", line)
        assert match, f"flooder said {line!r}"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def closed_count(proc: Any) -> int:
    """Tell the flooder to stop; how many of its connections the daemon closed."""
    out, _ = proc.communicate("", timeout=60)
    match = re.search(r"closed (\d+)", out)
    assert match, out
    return int(match.group(1))


def kernel_accept(socket: Path) -> None:
    """One kernel-style ACCEPT_SEC_CONTEXT with a real AP-REQ for nfs@localhost."""
    init = gssapi.SecurityContext(name=NFS, usage="initiate")
    token = init.step()
    assert token is not None
    with KernelConnection(socket, timeout=30) as conn:
        nfsd_checks_complete(conn.accept(0x150_0001, token))


def log_count(daemon: DaemonProcess, text: str) -> int:
    return daemon.log_text().count(text)


# -- item 2: connection caps, fd reserve, the refusal log -----------------------------


def test_a_flooding_uid_is_capped_and_root_and_others_still_served(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    initiator_env: None,
) -> None:
    flooder, other = test_users[0], test_users[1]
    daemon: DaemonProcess = daemon_factory(
        "py",
        config(
            realm,
            flooder,
            max_connections_per_uid=5,
            max_connections=8,
            refusal_log_interval=3600,
        ),
    )
    with flood(flooder, daemon.socket, 40) as (proc_a, held_a):
        assert held_a == 5
        with flood(other, daemon.socket, 40) as (proc_b, held_b):
            assert held_b == 3  # the rest of max_connections
            # Root (the kernel's uid) is neither capped per uid nor by the total.
            with GssProxyClient(daemon.socket, timeout=30) as client:
                assert client.indicate_mechs().status.major_status == 0
            kernel_accept(daemon.socket)
            assert closed_count(proc_b) == 0
        assert closed_count(proc_a) == 0
    log = daemon.log_text()
    refusals = re.findall(
        r"refused a connection on \S+ from pid (\d+) uid (\d+) program (\S+)", log
    )
    # One line per interval, naming the first refused peer.
    assert len(refusals) == 1, log
    _, uid, program = refusals[0]
    assert int(uid) == flooder.uid
    assert program.endswith("python3") or "python" in program
    assert "max_connections_per_uid" in log
    # The interval (3600 s) never ended: stopping says the count no line did.
    refused = (40 - held_a) + (40 - held_b)
    daemon.stop()
    assert f"and {refused - 1} more connections refused since the last" in daemon.log_text()


def test_the_fd_reserve_keeps_root_and_keytabs_served_at_a_low_fd_limit(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    initiator_env: None,
) -> None:
    """The finding: at 1024/1024 fds root got EOF and keytabs could not be
    opened. With a hard limit of 128 the flooder gets what the reserve leaves."""
    flooder = test_users[0]
    daemon: DaemonProcess = daemon_factory(
        "py",
        config(realm, flooder, max_connections_per_uid=10_000, fd_reserve=32),
        start=False,
    )
    daemon.argv = ["prlimit", "--nofile=128:128", "--", *daemon.argv]
    daemon.start()
    with flood(flooder, daemon.socket, 200) as (proc, held):
        assert 0 < held < 128 - 32
        for _ in range(3):
            with GssProxyClient(daemon.socket, timeout=30) as client:
                assert client.indicate_mechs().status.major_status == 0
            kernel_accept(daemon.socket)  # opens the keytab and the replay cache
        assert closed_count(proc) == 0
    assert "refused a connection" in daemon.log_text()


# -- item 3: partial records and idle connections -------------------------------------


@pytest.mark.parametrize("mode", ["half-mark", "trickle"])
def test_records_that_do_not_complete_are_closed(
    mode: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    initiator_env: None,
) -> None:
    flooder = test_users[0]
    daemon: DaemonProcess = daemon_factory(
        "py", config(realm, flooder, record_timeout=1, idle_connection_timeout=0)
    )
    with flood(flooder, daemon.socket, 30, mode) as (proc, held):
        assert held == 30
        assert wait_until(
            lambda: log_count(daemon, "a record was not complete within 1s") >= 30, timeout=60
        ), daemon.log_tail()
        assert closed_count(proc) == 30
    # Root was served throughout, and its connection with a whole call stays.
    with GssProxyClient(daemon.socket, timeout=30) as client:
        assert client.indicate_mechs().status.major_status == 0


def test_idle_connections_are_closed_and_clients_reconnect(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    initiator_env: None,
) -> None:
    user = test_users[0]
    daemon: DaemonProcess = daemon_factory("py", config(realm, user, idle_connection_timeout=1))
    # The kernel-style client: the daemon closes its idle connection (the
    # kernel's transport sees EOF) and a new connection is served.
    init = gssapi.SecurityContext(name=NFS, usage="initiate")
    token = init.step()
    assert token is not None
    with KernelConnection(daemon.socket, timeout=60) as conn:
        nfsd_checks_complete(conn.accept(0x150_0002, token))
        assert conn.sock.recv(1) == b"", "the idle connection was not closed"
    kernel_accept(daemon.socket)
    # The interposer: one process, one connection the daemon closes while it
    # sleeps; its next call reconnects.
    base = peer_env(realm.env(), {"PYTHONPATH": str(Path(__file__).parent / "clients")})
    env = h.client_env(base, daemon.socket, "MEMORY:none", "REMOTE_ONLY")
    mark = log_count(daemon, "closing: idle for 1s")
    with h.gssops(env, user) as client:
        # An accept through the daemon, then idle, then another.
        for round_ in range(2):
            ctx = gssapi.SecurityContext(
                name=gssapi.Name(realm.host_service, gssapi.NameType.hostbased_service),
                usage="initiate",
            )
            reply = client.call("accept", ctx=f"a{round_}", token=b64(ctx.step()))
            assert reply["initiator"] == realm.alice
            if round_ == 0:
                count = mark
                assert wait_until(
                    lambda c=count: log_count(daemon, "closing: idle for 1s") > c, timeout=60
                ), daemon.log_tail()


# -- item 4: one budget for buffered input --------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_partial_records_stay_within_the_input_budget(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    initiator_env: None,
) -> None:
    """The finding: 200 connections each sending all but 200 bytes of a 1 MiB
    record took RSS from 53 to 270 MB. Here two uids send 40 such records
    each; the daemon holds at most the budget."""
    mib = 1024 * 1024
    daemon: DaemonProcess = daemon_factory(
        "py",
        config(
            realm,
            test_users[0],
            input_budget=6 * mib,
            input_budget_per_uid=4 * mib,
            refusal_log_interval=3600,
        ),
    )
    with GssProxyClient(daemon.socket, timeout=30) as client:
        assert client.indicate_mechs().status.major_status == 0
    before = rss_kib(daemon.pid)
    peak = before
    with (
        flood(test_users[0], daemon.socket, 40, "big") as (proc_a, sent_a),
        flood(test_users[1], daemon.socket, 40, "big") as (proc_b, sent_b),
    ):
        peak = max(peak, rss_kib(daemon.pid))
        with GssProxyClient(daemon.socket, timeout=30) as client:
            assert client.indicate_mechs().status.major_status == 0
        kernel_accept(daemon.socket)
        closed_a, closed_b = closed_count(proc_a), closed_count(proc_b)
    # Each uid keeps at most its 4 MiB share, both together at most 6 MiB
    # (records of 1 MiB - 200 bytes); the rest were dropped while the
    # flooder sent them (not counted in `sent`) or after.
    kept_a, kept_b = sent_a - closed_a, sent_b - closed_b
    record = mib - 200
    assert kept_a * record <= 4 * mib and kept_b * record <= 4 * mib, (sent_a, closed_a)
    assert (kept_a + kept_b) * record <= 6 * mib, (
        sent_a,
        closed_a,
        sent_b,
        closed_b,
    )
    # Generous: the budget, the largest reads in flight, and allocator slack.
    assert peak - before < (6 + 32) * 1024, (before, peak)
    log = daemon.log_text()
    assert "dropping a partial record: uid" in log


# -- item 9: StrictModes ----------------------------------------------------------------


def test_strict_modes_refuses_start_and_reload(
    daemon_factory: Any, realm: StandardRealm, test_users: tuple[LocalUser, ...]
) -> None:
    user = test_users[0]
    daemon: DaemonProcess = daemon_factory("py", config(realm, user))
    # A world-writable configuration file: the reload is refused and the
    # old configuration stays in force.
    daemon.config.chmod(0o666)
    mark = len(daemon.log_text())
    os.kill(daemon.pid, signal.SIGHUP)
    assert wait_until(lambda: "configuration not reloaded" in daemon.log_text()[mark:], 30)
    log = daemon.log_text()[mark:]
    assert f"{daemon.config}: is writable by every user (mode 0666)" in log
    assert "strict_modes = no" in log
    with GssProxyClient(daemon.socket, timeout=30) as client:
        assert client.indicate_mechs().status.major_status == 0
    daemon.stop()
    # At start: exit 1, naming the file.
    assert daemon.running is False
    proc = subprocess.run(
        daemon.argv, env=daemon.env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 1
    assert f"{daemon.config}: is writable by every user" in proc.stderr


# -- item 7: the exec race ------------------------------------------------------------------

EXEC_RACE_TRIES = 20


def test_the_exec_race_is_attributed_to_the_process_that_wrote_the_call(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    harness_dir: Path,
) -> None:
    """Connect, fork, the parent execs the configured program while the
    child sends: the call is the child's (not the program's), 0 of N."""
    user = test_users[0]
    bindir = Path(tempfile.mkdtemp(prefix="execrace-", dir=harness_dir))
    bindir.chmod(0o755)
    program = bindir / "prog-python"
    shutil.copy("/usr/bin/python3.11", program)
    program.chmod(0o755)

    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state

[service/prog]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  euid = {user.uid}
  program = {program}
"""

    daemon: DaemonProcess = daemon_factory("py", render)
    served = re.compile(r"xid (0x[0-9a-f]{8})\] GSSX_INDICATE_MECHS: service 'prog'")
    # Control: the program itself writing its call is served as the program.
    sender = (
        "import socket, sys; sys.path.insert(0, sys.argv[2]); import execrace; "
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "s.sendall(execrace.indicate_mechs_call(0x7e570001)); print(len(s.recv(65536)))"
    )
    clients = str(Path(__file__).parent / "clients")
    proc = run_as(user, [str(program), "-c", sender, str(daemon.socket), clients], {})
    assert proc.returncode == 0 and int(proc.stdout) > 0, proc.stderr
    assert wait_until(lambda: "0x7e570001" in " ".join(served.findall(daemon.log_text())), 30)
    # The attack, N times.
    xids = [0x7E580000 + i for i in range(EXEC_RACE_TRIES)]
    for xid in xids:
        race = run_as(
            user,
            client_argv("execrace.py", str(daemon.socket), str(program), hex(xid)),
            {},
            timeout=60,
        )
        assert f"replied {xid:#010x}" in race.stdout, (race.stdout, race.stderr)
    log = daemon.log_text()
    answered = {int(x, 16) for x in re.findall(r"xid (0x[0-9a-f]{8})\] GSSX_INDICATE_MECHS", log)}
    assert set(xids) <= answered, "every attack call was answered"
    won = [x for x in served.findall(log) if int(x, 16) in xids]
    assert won == [], f"{len(won)} of {EXEC_RACE_TRIES} served as the program"


# -- item 1: a hung KDC for one service ---------------------------------------------------


def _init_arg() -> Any:
    cc = gp.GssxCallCtx(b"", b"", ())
    target = gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ())
    return gp.GssxArgInitSecContext(cc, None, None, target, oids.KRB5, 2, 0, None, None, ())


def _init(socket_path: Path) -> str:
    """One INIT_SEC_CONTEXT: "complete", "continue" or "system_err"."""
    with GssProxyClient(socket_path, timeout=60) as client:
        try:
            res = client.init_sec_context(_init_arg())
        except RemoteSystemError:
            return "system_err"
    return "continue" if res.status.major_status == 1 else f"major {res.status.major_status}"


def test_a_hung_kdc_takes_only_its_own_services_threads(
    daemon_factory: Any,
    realm: StandardRealm,
    initiator_env: None,
    harness_dir: Path,
) -> None:
    """The finding: eight INITs for a service whose KDC accepts TCP and never
    answers held every worker; an INIT of another service and a kernel-style
    ACCEPT then timed out. Here each service has its own threads; the stuck
    ones are written off and the stall is logged once, naming the KDC."""
    work = Path(tempfile.mkdtemp(prefix="hungkdc-", dir=harness_dir))
    work.chmod(0o755)
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(32)
    port = blackhole.getsockname()[1]
    extra_conf = work / "blackhole.conf"
    extra_conf.write_text(
        f"[realms]\n    BLACKHOLE.TEST = {{\n        kdc = 127.0.0.1:{port}\n    }}\n"
    )
    bob_keytab = work / "bob.keytab"
    keytab_without_kdc("bob@BLACKHOLE.TEST", "bobpw", bob_keytab)
    alice_keytab = realm.realm.ktadd(realm.alice, work / "alice.keytab")

    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state
  worker threads = 2
  call_timeout = 2

[service/nfs-server]
  mechs = krb5
  cred_store = keytab:{realm.nfs_keytab}
  trusted = yes
  euid = 0

[service/slow]
  mechs = krb5
  cred_store = client_keytab:{bob_keytab}
  cred_usage = initiate
  socket = {paths.workdir}/slow.sock
  euid = 0

[service/good]
  mechs = krb5
  cred_store = client_keytab:{alice_keytab}
  cred_usage = initiate
  socket = {paths.workdir}/good.sock
  euid = 0
"""

    env = {"KRB5_CONFIG": f"{realm.env()['KRB5_CONFIG']}:{extra_conf}"}
    daemon: DaemonProcess = daemon_factory("py", render, env=env)
    slow, good = daemon.socket.parent / "slow.sock", daemon.socket.parent / "good.sock"
    held: list[socket.socket] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            stuck = [pool.submit(_init, slow) for _ in range(8)]
            blackhole.settimeout(30)
            held.append(blackhole.accept()[0])  # an AS-REQ reached "the KDC"
            # While slow's threads wait on its KDC, the others are served.
            assert _init(good) == "continue"
            kernel_accept(daemon.socket)
            assert [f.result(timeout=60) for f in stuck] == ["system_err"] * 8
        # Past the deadline: the next calls find slow's threads written off
        # (and replaced); the stall is logged once, with the KDC.
        line = "service 'slow': "
        for _ in range(3):
            assert _init(slow) == "system_err"
            assert _init(good) == "continue"
            kernel_accept(daemon.socket)
        log = daemon.log_text()
        stalls = [x for x in log.splitlines() if line in x and "written off and replaced" in x]
        assert len(stalls) == 1, log
        assert f"127.0.0.1:{port} (realm BLACKHOLE.TEST)" in stalls[0]
    finally:
        for conn in held:
            conn.close()
        blackhole.close()
