"""gss_localname through the daemon, and service matching by program and socket.

Clients run as gpytest1 through proxymech.so, against both daemons.

* gss_localname (gssproxy's t_names): the client accepts through the daemon
  and asks for the local name of the initiator; the interposer sends
  IMPORT_AND_CANON_NAME with the `localname` option. The daemon's krb5.conf
  has one auth_to_local mapping the client's does not, so an answer that
  uses it can only have come from the daemon. (gss_localname on a name the
  client imported itself, with the krb5 mech, never reaches the daemon: the
  mechglue cannot import it for the interposer and fails with
  CALL_INACCESSIBLE_READ, with either daemon.)
* program/socket: three services for the same uid, each on its own socket;
  two name the client's interpreter as `program` and initiate as different
  principals (the socket picks the service), the third names another program
  and does not match, so the client gets a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.daemon import ALL_IMPLEMENTATIONS
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.peer import ccache_env, client_argv, peer_env
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

impls = pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)

#: Known to the daemon's krb5.conf only.
DAEMON_ONLY_PRINCIPAL = "polmapped"
DAEMON_ONLY_USER = "mapped-by-daemon"
#: Two components: the DEFAULT auth_to_local rule maps no such principal.
UNMAPPED_PRINCIPAL = "polsvc/localhost"


@pytest.fixture(scope="module")
def daemon_krb5_conf(realm: StandardRealm) -> Path:
    """An addition to the realm's krb5.conf for the daemon only (KRB5_CONFIG is a list)."""
    extra = realm.realm.directory / "policy-daemon-extra.conf"
    extra.write_text(
        "[realms]\n"
        f"    {realm.realm.realm} = {{\n"
        "        auth_to_local_names = {\n"
        f"            {DAEMON_ONLY_PRINCIPAL} = {DAEMON_ONLY_USER}\n"
        "        }\n"
        "    }\n"
    )
    extra.chmod(0o644)
    return extra


@pytest.fixture(scope="module")
def initiator_ccaches(realm: StandardRealm) -> dict[str, Path]:
    """Root-only ccaches with TGTs for alice and the two extra principals."""
    out = {realm.alice: realm.alice_ccache}
    for name in (DAEMON_ONLY_PRINCIPAL, UNMAPPED_PRINCIPAL):
        princ = realm.realm.addprinc(name, "policypw")
        path = realm.realm.directory / f"policy-{name.replace('/', '_')}.ccache"
        realm.realm.kinit(princ, path, password="policypw")
        out[princ] = path
    return out


def base_service(user: LocalUser, keytab: Path, **extra: str | int) -> dict[str, Any]:
    return {
        "mechs": "krb5",
        "cred_store": [f"client_keytab:{keytab}"],
        "cred_usage": "initiate",
        "euid": user.uid,
        **extra,
    }


def local_init_token(realm: StandardRealm, ccache: Path) -> str:
    """A first context token from a local initiator (no daemon involved)."""
    proc = subprocess.run(
        client_argv("init.py", "--target", realm.host_service, "--no-mutual"),
        env=peer_env({"PATH": "/usr/bin:/bin"}, realm.env(), ccache_env(ccache)),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    token: str = json.loads(proc.stdout)["token"]
    return token


@impls
def test_gss_localname_through_the_daemon(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    daemon_krb5_conf: Path,
    initiator_ccaches: dict[str, Path],
) -> None:
    """gssproxy's t_names: accept through the daemon, gss_localname of the initiator."""
    user = test_users[0]
    svc = h.service_section(
        "names",
        {
            "mechs": "krb5",
            "cred_store": [f"keytab:{realm.service_keytab}"],
            "cred_usage": "accept",
            "euid": user.uid,
        },
    )
    krb5_config = f"{realm.realm.krb5_conf}:{daemon_krb5_conf}"
    daemon = daemon_factory(impl, h.render(svc), env={"KRB5_CONFIG": krb5_config})
    env = h.client_env(realm.env(), daemon.socket, "MEMORY:names", "REMOTE_ONLY")
    expected = {
        realm.alice: "alice",
        # The client's own krb5.conf would say "polmapped": the answer comes from the daemon.
        realm.realm.principal(DAEMON_ONLY_PRINCIPAL): DAEMON_ONLY_USER,
    }
    mark = len(daemon.log_text())
    with h.gssops(env, user) as client:
        for principal, local in expected.items():
            token = local_init_token(realm, initiator_ccaches[principal])
            assert client.call("accept_localname", token=token)["localname"] == local
        token = local_init_token(
            realm, initiator_ccaches[realm.realm.principal(UNMAPPED_PRINCIPAL)]
        )
        unmapped = client.request("accept_localname", token=token)
        assert not unmapped["ok"] and "gss_localname" in unmapped["error"], unmapped
    log = daemon.log_text()[mark:]
    assert "IMPORT_AND_CANON_NAME" in log, log


@pytest.fixture(scope="module")
def per_socket_keytabs(realm: StandardRealm) -> tuple[Path, Path, str]:
    """alice's keytab and one for a second principal (each root-only)."""
    other = realm.realm.addprinc("polbob")
    alice_kt = realm.realm.ktadd(realm.alice, realm.realm.directory / "policy-alice.keytab")
    other_kt = realm.realm.ktadd(other, realm.realm.directory / "policy-bob.keytab")
    return alice_kt, other_kt, other


@impls
def test_program_and_socket_select_the_service(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    per_socket_keytabs: tuple[Path, Path, str],
    harness_dir: Path,
) -> None:
    user = test_users[0]
    alice_kt, other_kt, other = per_socket_keytabs
    python = os.path.realpath(VENV_PYTHON)  # what /proc/<pid>/exe shows for the client
    sockets: dict[str, Path] = {}

    def config(paths: Any) -> str:
        for name in ("alice", "other", "badprog"):
            sockets[name] = paths.workdir / f"{name}.sock"
        return h.render(
            h.service_section(
                "alice",
                base_service(user, alice_kt, socket=str(sockets["alice"]), program=python),
            ),
            h.service_section(
                "other",
                base_service(user, other_kt, socket=str(sockets["other"]), program=python),
            ),
            h.service_section(
                "badprog",
                base_service(user, alice_kt, socket=str(sockets["badprog"]), program="/bin/true"),
            ),
        )(paths)

    daemon = daemon_factory(impl, config)

    def init(socket: Path) -> dict[str, Any]:
        env = h.client_env(realm.env(), socket, "MEMORY:prog", "REMOTE_ONLY")
        with (
            h.gssops(env, user) as client,
            h.acceptor(realm.env(), realm.service_keytab) as acc,
        ):
            reply = client.request("init", ctx="c", target=realm.host_service)
            return acc.call("step", token=reply["token"]) if reply["ok"] else reply

    assert init(sockets["alice"])["initiator"] == realm.alice
    assert init(sockets["other"])["initiator"] == other
    mark = len(daemon.log_text())
    refused = init(sockets["badprog"])
    assert not refused["ok"], refused
    if impl == "py":
        log = daemon.log_text()[mark:]
        assert "GSSX_ACQUIRE_CRED failed for uid" in log, log
        assert "no service: major 0x00070000" in log and "why: no service matched uid" in log
