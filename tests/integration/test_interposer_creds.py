"""Credentials through the interposer: client_keytab init, gssproxy's t_acquire, sync_creds.

Clients run as gpytest1 through Debian's proxymech.so and have neither a
keytab nor a ticket of their own: alice's keys sit in a root-only keytab
named after the client's uid (`client_keytab:<dir>/%U.keytab`) that only the
daemon opens. The acceptor is a separate local process (root, service
keytab, no interposer). Every test runs against the Python daemon and the C
gssproxy; where they differ on purpose the test says so.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.daemon import ALL_IMPLEMENTATIONS
from gssproxy_py.testing.peer import peer_env
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import ccfile
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

impls = pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)


@pytest.fixture(scope="module")
def client_keytabs(realm: StandardRealm, test_users: tuple[LocalUser, ...]) -> Path:
    """<dir>/<uid>.keytab with alice's keys for gpytest1 (root-only); none for gpytest2."""
    directory = realm.realm.directory / "client-keytabs"
    directory.mkdir(exist_ok=True)
    realm.realm.ktadd(realm.alice, directory / f"{test_users[0].uid}.keytab")
    return directory


@pytest.fixture
def ccache_path(harness_dir: Path, test_users: tuple[LocalUser, ...]) -> Path:
    """Where gpytest1's FILE ccache goes (not created)."""
    return h.user_dir(harness_dir, test_users[0]) / "cc"


def service(
    name: str, user: LocalUser, realm: StandardRealm, keytabs: Path, **extra: str | int
) -> str:
    return h.service_section(
        name,
        {
            "mechs": "krb5",
            "cred_store": [
                f"keytab:{realm.service_keytab}",
                f"client_keytab:{keytabs}/%U.keytab",
            ],
            "cred_usage": "both",
            "euid": user.uid,
            **extra,
        },
    )


def acceptor(realm: StandardRealm) -> Any:
    return h.acceptor(realm.env(), realm.service_keytab)


# -- 1. init with a client_keytab service -------------------------------------------


@impls
def test_init_with_client_keytab(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    ccache_path: Path,
) -> None:
    user = test_users[0]
    daemon = daemon_factory(impl, h.render(service("ckt", user, realm, client_keytabs)))
    ccache = f"FILE:{ccache_path}"
    env = h.client_env(realm.env(), daemon.socket, ccache, "REMOTE_ONLY")
    with h.gssops(env, user) as client, acceptor(realm) as acc:
        accepted = h.establish(client, acc, realm.host_service, flags=["mutual"])
        assert accepted["initiator"] == realm.alice
    # The client never had a ccache of its own.
    assert not ccache_path.exists()
    # Control: the same client without the interposer has nothing to init with.
    ctl = peer_env(realm.env(), {"KRB5CCNAME": ccache, "KRB5_KTNAME": "FILE:/nonexistent"})
    with h.gssops(ctl, user) as client:
        reply = client.request("init", ctx="c", target=realm.host_service)
        assert not reply["ok"]


# -- 2. gssproxy's t_acquire: acquire, store, reuse -----------------------------------


@impls
def test_acquire_store_then_reuse(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    ccache_path: Path,
) -> None:
    user = test_users[0]
    daemon = daemon_factory(impl, h.render(service("acq", user, realm, client_keytabs)))
    env = h.client_env(realm.env(), daemon.socket, f"FILE:{ccache_path}")
    with h.gssops(env, user) as client:
        acquired = client.call("acquire", **{"as": "c"}, usage="initiate")
        assert acquired["name"] == realm.alice
        client.call("store", cred="c")
    # The interposer keeps the daemon's credential as a fake ticket in the ccache.
    cache = ccfile.read(ccache_path)
    (entry,) = cache.gssproxy_entries()
    assert str(entry.client) == realm.alice
    assert len(cache.credentials) == 1, "only the X-GSSPROXY entry, no TGT"
    assert ccfile.GSSPROXY_SERVER in h.klist(realm, f"FILE:{ccache_path}")
    # From now on the daemon cannot acquire for this user any more: a later
    # init with default creds only works by reusing the stored handle.
    h.reconfigure(daemon, service("acq", user, realm, Path("/nonexistent")))
    mark = len(daemon.log_text())
    with h.gssops(env, user) as client, acceptor(realm) as acc:
        accepted = h.establish(client, acc, realm.host_service, flags=["mutual", "replay"])
        assert accepted["initiator"] == realm.alice
    if impl == "py":
        log = daemon.log_text()[mark:]
        assert "credential handle is still good" in log, log
        assert "acquire: new credential" not in log, log
    # The daemon returned the same handle, so the entry was left alone.
    assert ccfile.read(ccache_path).gssproxy_entries()[0].ticket == entry.ticket


# -- 6. sync_creds: the daemon hands back the credential with its new ticket --------------


def _store_alice(env: dict[str, str], user: LocalUser, ccache_path: Path) -> ccfile.Credential:
    with h.gssops(env, user) as client:
        client.call("acquire", **{"as": "c"}, usage="initiate")
        client.call("store", cred="c")
    (entry,) = ccfile.read(ccache_path).gssproxy_entries()
    return entry


@impls
def test_sync_creds_updates_the_stored_entry(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    ccache_path: Path,
) -> None:
    user = test_users[0]
    svc = service("sync", user, realm, client_keytabs, allow_client_ccache_sync="yes")
    daemon = daemon_factory(impl, h.render(svc))
    env = h.client_env(realm.env(), daemon.socket, f"FILE:{ccache_path}")
    before = _store_alice(env, user, ccache_path)
    tgs = h.tgs_requests(realm.realm.kdc_log, realm.service_principal)
    # An init with the stored credential needs a new service ticket: the daemon
    # gets it from the KDC and returns the grown credential as sync_creds.
    with h.gssops(env, user) as client, acceptor(realm) as acc:
        h.establish(client, acc, realm.host_service)
    assert h.tgs_requests(realm.realm.kdc_log, realm.service_principal) == tgs + 1
    (after,) = ccfile.read(ccache_path).gssproxy_entries()
    assert after.ticket != before.ticket, "sync_creds did not replace the stored entry"
    assert str(after.client) == realm.alice
    if impl == "py":
        assert "sync_creds: the credential gained tickets" in daemon.log_text()
    # The synced credential carries the service ticket: no new TGS request.
    with h.gssops(env, user) as client, acceptor(realm) as acc:
        assert h.establish(client, acc, realm.host_service)["initiator"] == realm.alice
    assert h.tgs_requests(realm.realm.kdc_log, realm.service_principal) == tgs + 1


@impls
def test_no_sync_without_allow_client_ccache_sync(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    ccache_path: Path,
) -> None:
    user = test_users[0]
    daemon = daemon_factory(impl, h.render(service("nosync", user, realm, client_keytabs)))
    env = h.client_env(realm.env(), daemon.socket, f"FILE:{ccache_path}")
    before = _store_alice(env, user, ccache_path)
    tgs = h.tgs_requests(realm.realm.kdc_log, realm.service_principal)
    for _ in range(2):
        with h.gssops(env, user) as client, acceptor(realm) as acc:
            h.establish(client, acc, realm.host_service)
    (after,) = ccfile.read(ccache_path).gssproxy_entries()
    assert after.ticket == before.ticket
    # The C daemon starts from the client's blob every time: two TGS requests.
    # Ours keeps the opened credential object per handle (gss/credcache.py
    # CredPool), so the ticket from the first init serves the second.
    assert h.tgs_requests(realm.realm.kdc_log, realm.service_principal) - tgs == (
        2 if impl == "c" else 1
    )
