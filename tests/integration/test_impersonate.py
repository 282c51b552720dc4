"""gssproxy's t_impersonate against both daemons: S4U2Self and S4U2Proxy through the interposer.

The KDC keeps its database in a private slapd (gssproxy_py.testing.ldapkdc),
because only the LDAP backend stores constrained-delegation ACLs. As in
gssproxy's tests/testlib.py:

* host/localhost may get forwardable S4U2Self tickets
  (+ok_to_auth_as_delegate) and may delegate to proxy/localhost
  (krbAllowedToDelegateTo);
* proxy.keytab holds the keys of both, and is the daemon's keytab;
* alice is the user being impersonated.

The daemon serves gpytest1 (the client's uid is the services' euid, so named
acquisitions use the service keytab) on three sockets:

    impersonate   allow_protocol_transition + allow_constrained_delegation
    selfonly      allow_protocol_transition
    proxyonly     allow_constrained_delegation

and the client, as gpytest1 without any keytab, runs t_impersonate.c's steps
with python-gssapi (REMOTE_FIRST, like upstream; local fallbacks have
nothing to work with): acquire the impersonator (host@localhost, both),
impersonate alice, init to the target with mutual+deleg, accept it (through
the daemon), finish the init. `s4u2self` stops after storing the
impersonated credential into a ccache; `s4u2proxy` starts from that stored
credential. The seven cases and their expected outcome are upstream's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.daemon import ALL_IMPLEMENTATIONS
from gssproxy_py.testing.ldapkdc import LdapRealm, missing_ldap_tools
from gssproxy_py.testing.peer import PeerError, PeerProcess
from gssproxy_py.testing.users import LocalUser

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

USER = "alice"
HOST_GSS = "host@localhost"
PROXY_GSS = "proxy@localhost"
OTHER_SVC = "other/localhost"
OTHER_GSS = "other@localhost"


@dataclass(frozen=True)
class S4URealm:
    realm: LdapRealm
    user: str  # alice@REALM
    host: str
    proxy: str
    svc_keytab: Path
    proxy_keytab: Path


@pytest.fixture(scope="module")
def s4u_realm(harness_dir: Path) -> Iterator[S4URealm]:
    missing = missing_ldap_tools()
    if missing:
        pytest.skip(f"LDAP KDC tools missing: {', '.join(missing)}")
    realm = LdapRealm(harness_dir / "ldap-realm")
    try:
        realm.create()
        host = realm.addprinc("host/localhost", flags=["+ok_to_auth_as_delegate"])
        proxy = realm.addprinc("proxy/localhost", flags=["-requires_preauth"])
        # Not in host's krbAllowedToDelegateTo: the KDC refuses S4U2Proxy to it.
        realm.addprinc(OTHER_SVC)
        user = realm.addprinc(USER, "alicepw")
        realm.allow_delegation(host, [proxy])
        svc_keytab = realm.ktadd(host, realm.directory / "svc.keytab")
        proxy_keytab = realm.ktadd(host, realm.directory / "proxy.keytab")
        realm.ktadd(proxy, proxy_keytab)
        realm.start()
        yield S4URealm(realm, user, host, proxy, svc_keytab, proxy_keytab)
    finally:
        realm.stop()


SERVICES = {
    "impersonate": {"allow_protocol_transition": "yes", "allow_constrained_delegation": "yes"},
    "selfonly": {"allow_protocol_transition": "yes"},
    "proxyonly": {"allow_constrained_delegation": "yes"},
}


def config(s4u: S4URealm, user: LocalUser) -> Any:
    def text(paths: Any) -> str:
        sections = [
            h.service_section(
                name,
                {
                    "socket": str(paths.workdir / f"{name}.socket"),
                    "mechs": "krb5",
                    "cred_store": [f"keytab:{s4u.proxy_keytab}"],
                    "euid": user.uid,
                    **flags,
                },
            )
            for name, flags in SERVICES.items()
        ]
        return h.render(*sections)(paths)

    return text


@dataclass(frozen=True)
class Case:
    name: str
    socket: str
    target: str
    mode: str | None
    #: None = must succeed; else the op that must fail
    fails_at: str | None


# Upstream's order matters: s4u2self stores the credential the s4u2proxy cases use.
CASES = (
    Case("impersonate", "impersonate", PROXY_GSS, None, None),
    Case("impersonate fail self", "proxyonly", PROXY_GSS, None, "impersonate"),
    Case("impersonate fail proxy", "selfonly", PROXY_GSS, None, "init"),
    Case("s4u2self delegation", "selfonly", PROXY_GSS, "s4u2self", None),
    Case("impersonate to self", "selfonly", HOST_GSS, "s4u2proxy", None),
    Case("s4u2proxy fail", "selfonly", PROXY_GSS, "s4u2proxy", "init"),
    Case("s4u2proxy", "proxyonly", PROXY_GSS, "s4u2proxy", None),
)


def t_impersonate(client: PeerProcess, case: Case, ccache: str) -> dict[str, Any]:
    """t_impersonate.c's steps; raises PeerError (reply attached) at the first failure."""
    store = {"ccache": ccache}
    if case.mode == "s4u2proxy":
        client.call("acquire", **{"as": "cred"}, name=USER, name_type="user", store=store)
        flags = ["mutual"]
    else:
        client.call(
            "acquire",
            **{"as": "imp"},
            name=HOST_GSS,
            name_type="hostbased",
            usage="both",
            store=store,
        )
        client.call("impersonate", **{"as": "cred"}, cred="imp", user=USER)
        flags = ["mutual", "deleg"]
    if case.mode == "s4u2self":
        client.call("store", cred="cred", store=store, default=False)
        return {}
    first = client.call("init", ctx="i", cred="cred", target=case.target, flags=flags)
    assert not first["complete"], "mutual auth needs a second init step"
    accepted = client.call("accept", ctx="a", token=first["token"])
    client.call("init", ctx="i", target=case.target, token=accepted["token"])
    return accepted


@pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)
def test_t_impersonate(
    impl: str,
    daemon_factory: Any,
    s4u_realm: S4URealm,
    test_users: tuple[LocalUser, ...],
    harness_dir: Path,
) -> None:
    user = test_users[0]
    daemon = daemon_factory(impl, config(s4u_realm, user), env=s4u_realm.realm.env())
    home = h.user_dir(harness_dir, user)
    ccache = str(home / "impersonate.cache")
    outcomes: dict[str, str] = {}
    expected: dict[str, str] = {}
    for case in CASES:
        expected[case.name] = "ok" if case.fails_at is None else f"fails at {case.fails_at}"
        env = h.client_env(
            s4u_realm.realm.env(),
            daemon.socket.parent / f"{case.socket}.socket",
            f"FILE:{home}/default.ccache",
        )
        with h.gssops(env, user) as client:
            try:
                accepted = t_impersonate(client, case, ccache)
            except PeerError as exc:
                op = (exc.reply or {}).get("op", "?")
                outcomes[case.name] = f"fails at {op}"
                print(f"{case.name}: {exc}")
                continue
        outcomes[case.name] = "ok"
        if accepted:
            # The target saw alice, not the impersonator.
            assert accepted["initiator"] == s4u_realm.user, (case.name, accepted)
    assert outcomes == expected


# -- service-driven impersonation (`impersonate = yes`) ------------------------------------


@pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)
def test_service_impersonates_the_peer_uid(
    impl: str,
    daemon_factory: Any,
    s4u_realm: S4URealm,
    test_users: tuple[LocalUser, ...],
    harness_dir: Path,
) -> None:
    """A service with `impersonate = yes` initiates as the caller's user name.

    gpytest1 has no key and no ticket; the daemon (host/localhost from the
    keytab) gets an S4U2Self ticket for gpytest1@REALM, turns it into a
    delegated credential, and the client's init to proxy@localhost goes out
    by S4U2Proxy. An acceptor holding proxy's key sees gpytest1.
    """
    user = test_users[0]
    realm = s4u_realm.realm
    principal = realm.principal(user.name)
    if "Principal:" not in _getprinc(realm, principal):
        realm.addprinc(user.name)
    svc = h.service_section(
        "svcimp",
        {
            "mechs": "krb5",
            "cred_store": [f"keytab:{s4u_realm.proxy_keytab}"],
            "krb5_principal": s4u_realm.host,
            "cred_usage": "initiate",
            "impersonate": "yes",
            "euid": 0,
            "allow_any_uid": "yes",
        },
    )
    daemon = daemon_factory(impl, h.render(svc), env=realm.env())
    env = h.client_env(realm.env(), daemon.socket, "MEMORY:svcimp", "REMOTE_ONLY")
    for target, keytab in ((PROXY_GSS, s4u_realm.proxy_keytab), (HOST_GSS, s4u_realm.svc_keytab)):
        with h.gssops(env, user) as client, h.acceptor(realm.env(), keytab) as acc:
            accepted = h.establish(client, acc, target)
            assert accepted["initiator"] == principal, (target, accepted)
    with h.gssops(env, user) as client:
        refused = client.request("init", ctx="c", target=OTHER_GSS)
        assert not refused["ok"], refused


def _getprinc(realm: LdapRealm, principal: str) -> str:
    try:
        return realm.kadmin("getprinc", principal)
    except Exception:
        return ""
