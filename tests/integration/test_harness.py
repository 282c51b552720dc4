"""End-to-end proof of the test harness against a real GSS-Proxy daemon.

A non-root acceptor (gpytest1) that cannot read the service keytab accepts
alice's context token through proxymech.so and the daemon, then exchanges
wrap/unwrap and MIC tokens with the initiator.  Controls show the same acceptor
fails without the interposer.  gss-server/gss-client do the same through the
daemon.  Daemon-facing tests take the implementation as a parameter; only the
C gssproxy is enabled until gssproxy-py's server exists.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gssproxy_py.testing.daemon import (
    DaemonFactory,
    DaemonProcess,
    Impl,
    render_config,
    write_config,
)
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import free_port, tcp_listening, wait_until
from gssproxy_py.testing.peer import (
    PeerProcess,
    ccache_env,
    client_argv,
    establish,
    exercise_protection,
    peer_env,
)
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import DEFAULT_PATH, LocalUser, popen_as, run_as

# Add "py" once gssproxy_py.server.cli exists; every daemon test then runs on both.
IMPLEMENTATIONS: list[Impl] = ["c", "py"]

GSS_S_NO_CRED = 7 << 16  # 458752: what a client with no matching service gets

# Every test here runs a client as another uid (test_users), hence `root`.
pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> Impl:
    value: Impl = request.param
    return value


def acceptor_services(realm: StandardRealm, socket: Path, users: tuple[LocalUser, ...]) -> str:
    """One accept-only service per user, all on `socket`, keyed by euid."""
    return render_config(
        {
            f"accept-{u.name}": {
                "mechs": "krb5",
                "socket": str(socket),
                "cred_store": f"keytab:{realm.service_keytab}",
                "cred_usage": "accept",
                "euid": u.uid,
            }
            for u in users
        }
    )


def start_acceptor_daemon(
    impl: Impl, daemon_factory: DaemonFactory, realm: StandardRealm, users: tuple[LocalUser, ...]
) -> DaemonProcess:
    return daemon_factory(impl, lambda paths: acceptor_services(realm, paths.socket, users))


def initiator_peer(realm: StandardRealm) -> PeerProcess:
    """init.py as root with alice's TGT; no interposer (a plain client)."""
    return PeerProcess(
        client_argv("init.py", "--serve", "--target", realm.host_service),
        peer_env(realm.env(), ccache_env(realm.alice_ccache)),
    )


def proxied_env(realm: StandardRealm, daemon: DaemonProcess) -> dict[str, str]:
    return peer_env(realm.env(), interposer_env(daemon.socket, daemon.config.parent))


def test_realm_file_permissions(realm: StandardRealm, test_users: tuple[LocalUser, ...]) -> None:
    """The premise of every proxy test: a test uid reads krb5.conf, not the keytab."""
    user = test_users[0]
    conf = run_as(user, ["cat", str(realm.realm.krb5_conf)], {})
    assert conf.returncode == 0, conf.stderr
    assert "default_realm = EXAMPLE.TEST" in conf.stdout
    keytab = run_as(user, ["cat", str(realm.service_keytab)], {})
    assert keytab.returncode != 0
    assert "Permission denied" in keytab.stderr


@pytest.mark.parametrize("ktname", ["FILE:/nonexistent", "service.keytab"])
def test_control_accept_fails_without_interposer(
    realm: StandardRealm, test_users: tuple[LocalUser, ...], ktname: str
) -> None:
    """Same acceptor, no GSS_USE_PROXY: it must fail for lack of keys, whether
    pointed at no keytab or at the real one it may not read."""
    if ktname == "service.keytab":
        ktname = f"FILE:{realm.service_keytab}"
    init = subprocess.run(
        client_argv("init.py", "--target", realm.host_service),
        env={"PATH": DEFAULT_PATH, **realm.env(), **ccache_env(realm.alice_ccache)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    token = json.loads(init.stdout)["token"]
    acc = run_as(
        test_users[0],
        client_argv("accept.py", token),
        {**realm.env(), "KRB5_KTNAME": ktname, "KRB5CCNAME": "MEMORY:control"},
    )
    assert acc.returncode == 1, acc.stdout + acc.stderr
    reply = json.loads(acc.stdout)
    assert not reply["ok"]
    # MIT reports an unreadable keytab like a missing one.
    assert reply.get("major") == GSS_S_NO_CRED, reply
    assert "Key table entry not found" in reply["error"], reply["error"]


def test_accept_through_daemon(
    impl: Impl,
    daemon_factory: DaemonFactory,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
) -> None:
    user = test_users[0]
    daemon = start_acceptor_daemon(impl, daemon_factory, realm, (user,))
    with (
        initiator_peer(realm) as initiator,
        PeerProcess(
            client_argv("accept.py", "--serve"), proxied_env(realm, daemon), user=user
        ) as acceptor,
    ):
        who = acceptor.call("whoami")
        assert (who["uid"], who["gid"], who["groups"]) == (user.uid, user.gid, [])
        assert who["env"]["GSS_USE_PROXY"] == "yes"

        done = establish(initiator, acceptor)
        assert done.acceptor["initiator"] == realm.alice
        assert done.acceptor["target"] == realm.service_principal
        assert done.initiator["target"] == realm.service_principal
        assert "mutual_authentication" in done.initiator["flags"]
        assert done.tokens == 2  # AP-REQ, AP-REP

        exercise_protection(initiator, acceptor)

    if impl == "c":
        # Log wording is the C daemon's; the Python daemon only promises the
        # milestone lines, so these checks stay C-only.
        log = daemon.log_text()
        assert f"(uid = {user.uid})" in log
        assert "accept-gpytest1" in log


def test_reload_adds_service(
    impl: Impl,
    daemon_factory: DaemonFactory,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
) -> None:
    """gpytest2 has no service until a SIGHUP reload adds one."""
    user1, user2 = test_users[:2]
    daemon = start_acceptor_daemon(impl, daemon_factory, realm, (user1,))
    acc_argv = client_argv("accept.py", "--serve")

    with (
        initiator_peer(realm) as initiator,
        PeerProcess(acc_argv, proxied_env(realm, daemon), user=user2) as acceptor,
    ):
        token = initiator.call("step")["token"]
        reply = acceptor.request("step", token=token)
        assert not reply["ok"]
        assert reply.get("major") == GSS_S_NO_CRED, reply

    write_config(daemon.config, acceptor_services(realm, daemon.socket, (user1, user2)))
    daemon.reload()

    with (
        initiator_peer(realm) as initiator,
        PeerProcess(acc_argv, proxied_env(realm, daemon), user=user2) as acceptor,
    ):
        done = establish(initiator, acceptor)
        assert done.acceptor["initiator"] == realm.alice


def test_gss_sample_programs(
    impl: Impl,
    daemon_factory: DaemonFactory,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
) -> None:
    """MIT's gss-server (as gpytest1, via the daemon) and gss-client (as root)."""
    user = test_users[0]
    daemon = start_acceptor_daemon(impl, daemon_factory, realm, (user,))
    port = free_port()
    server = popen_as(
        user,
        ["gss-server", "-port", str(port), "-once", "-verbose", realm.host_service],
        proxied_env(realm, daemon),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Poll /proc, not connect(): a probe connection would be the -once client.
        assert wait_until(lambda: tcp_listening(port) or server.poll() is not None, 10)
        assert server.poll() is None, server.communicate()[0]
        client = subprocess.run(
            [
                "gss-client",
                "-port",
                str(port),
                "localhost",
                realm.host_service,
                "hello via gssproxy",
            ],
            env={"PATH": DEFAULT_PATH, **realm.env(), **ccache_env(realm.alice_ccache)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        server_out, _ = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert client.returncode == 0, client.stdout + client.stderr
    assert "Signature verified" in client.stdout
    assert f'Accepted connection: "{realm.alice}"' in server_out
    assert 'Received message: "hello via gssproxy"' in server_out
    # gss_localname via the daemon and krb5.conf's DEFAULT auth_to_local rule.
    # gss-server prints the name without NUL-terminating it, hence no closing quote.
    assert "localname: alice" in server_out, server_out
