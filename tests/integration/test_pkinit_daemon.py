"""PKINIT from a token key for the GSS side, through the real daemon process.

The daemon (`python -m gssproxy_py.server.cli`) has a service for gpytest1
whose `krb5_principal` (tokenuser, +requires_preauth) has its key and
certificate on a SoftHSM2 token, with `pkcs11_module`/`pkcs11_uri`/
`pkcs11_pin`. A client running as gpytest1 initiates to host@localhost
through Debian's interposer (GSS_USE_PROXY=yes, REMOTE_ONLY): it has no key,
no PIN and no ccache. The daemon gets a TGT by PKINIT (the PIN supplied
through libkrb5's responder) into a ccache of its own and initiates; a local
acceptor with the host keytab sees tokenuser as the initiator.

Also: a wrong PIN is a clear GSS failure (the token's verdict, not libkrb5's
"preauthentication failed") while the daemon keeps serving, and a reload
with the right PIN recovers; a TGT near expiry (min_lifetime) is replaced by
PKINIT, a good one is used as it is. The daemons run at debug level 3, which
logs every reply record in hex: the PIN appears in no log line and so in no
reply.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser
from tests.integration.test_pkcs11_pkinit import KEY_ID, PkinitRealm
from tests.support.softhsm import MODULE, create_key_token

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import ccfile
import gpharness as h

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/x86_64-linux-gnu/krb5/plugins/preauth/pkinit.so")
        or not os.path.exists(MODULE),
        reason="needs krb5-pkinit and SoftHSM2",
    ),
]

TOKEN = "gpypkinit"
PIN = "gpy-Daemon-PKINIT-PIN-8263"
WRONG_PIN = "gpy-Wrong-PKINIT-PIN-4410"
PASSWORD = "gpy-tokenuser-password-1975"
URI = f"pkcs11:token={TOKEN};id=%{KEY_ID.hex()}"


@dataclass(frozen=True)
class Env:
    realm: PkinitRealm
    principal: str
    keytab: Path
    softhsm_conf: Path
    pin_file: Path
    wrong_pin_file: Path
    directory: Path

    def env(self) -> dict[str, str]:
        return {**self.realm.env(), "SOFTHSM2_CONF": str(self.softhsm_conf)}


@pytest.fixture(scope="module")
def pk(harness_dir: Path, test_users: tuple[LocalUser, ...]) -> Iterator[Env]:
    d = Path(tempfile.mkdtemp(prefix="pkinit-", dir=harness_dir))
    d.chmod(0o755)  # clients (gpytest1) read krb5.conf below it
    realm = PkinitRealm(d / "realm")
    realm.create()
    principal = realm.addprinc("tokenuser", PASSWORD, flags=["+requires_preauth"])
    host = realm.addprinc("host/localhost")
    keytab = realm.ktadd(host, d / "host.keytab")
    realm.start()
    token_dir = d / "softhsm"
    conf = create_key_token(
        token_dir, TOKEN, PIN, realm.pki.client_key_der, realm.pki.client_cert_der, KEY_ID
    )
    token_dir.chmod(0o700)
    secrets = d / "secrets"
    secrets.mkdir(mode=0o700)
    pin_file, wrong = secrets / "pin", secrets / "wrong-pin"
    for path, value in ((pin_file, PIN), (wrong, WRONG_PIN)):
        path.write_text(value + "\n")
        path.chmod(0o600)
    yield Env(realm, principal, keytab, conf, pin_file, wrong, d)
    realm.stop()


def _service(pk: Env, user: LocalUser, pin_file: Path, **extra: str | int) -> str:
    return h.service_section(
        "tokenuser",
        {
            "mechs": "krb5",
            "euid": user.uid,
            "cred_usage": "initiate",
            "krb5_principal": pk.principal,
            "pkcs11_module": MODULE,
            "pkcs11_uri": URI,
            "pkcs11_pin": f"file:{pin_file}",
            **extra,
        },
    )


def _start(daemon_factory: Any, pk: Env, service: str) -> Any:
    return daemon_factory("py", h.render(service, debug_level=3), env=pk.env(), debug_level=3)


def _client_env(pk: Env, daemon: Any, ccache: Path) -> dict[str, str]:
    return h.client_env(pk.realm.env(), daemon.socket, f"FILE:{ccache}", "REMOTE_ONLY")


def _no_pin_in(text: str) -> None:
    for pin in (PIN, WRONG_PIN):
        assert pin not in text
        assert pin.encode().hex() not in text


def _pkinits(daemon: Any) -> int:
    return int(daemon.log_text().count("PKINIT: TGT for"))


def test_init_as_the_token_principal(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    pk: Env,
) -> None:
    user = test_users[0]
    daemon = _start(daemon_factory, pk, _service(pk, user, pk.pin_file))
    client_cc = h.user_dir(pk.directory, user) / "cc"
    env = _client_env(pk, daemon, client_cc)
    replies = []
    with h.gssops(env, user) as client, h.acceptor(pk.realm.env(), pk.keytab) as acc:
        accepted = h.establish(client, acc, "host@localhost", flags=["mutual"])
        replies.append(accepted)
        assert accepted["initiator"] == pk.principal
        # The client never had a ccache; the TGT sits in the daemon's own one.
        assert not client_cc.exists()
        # ACQUIRE_CRED (initiate) names the token's principal too.
        acquired = client.call("acquire", **{"as": "c"}, usage="initiate")
        replies.append(acquired)
        assert acquired["name"] == pk.principal
    assert _pkinits(daemon) == 1
    if client_cc.exists():
        # The interposer may keep the daemon's sealed handle, never a ticket.
        cache = ccfile.read(client_cc)
        assert len(cache.credentials) == len(cache.gssproxy_entries())
    state = daemon.config.parent / "state" / "pkinit"
    (ccache,) = state.iterdir()
    assert state.stat().st_mode & 0o777 == 0o700 and state.stat().st_uid == 0
    assert ccache.stat().st_mode & 0o777 == 0o600 and ccache.stat().st_uid == 0
    listing = h.klist(pk.realm, f"FILE:{ccache}")  # type: ignore[arg-type]
    assert f"Default principal: {pk.principal}" in listing
    assert f"krbtgt/{pk.realm.realm}@{pk.realm.realm}" in listing
    # A second client process: the TGT is reused, no new PKINIT.
    with h.gssops(env, user) as client, h.acceptor(pk.realm.env(), pk.keytab) as acc:
        assert h.establish(client, acc, "host@localhost")["initiator"] == pk.principal
    assert _pkinits(daemon) == 1
    daemon.stop()
    _no_pin_in(daemon.log_text())
    _no_pin_in(repr(replies))


def test_wrong_pin_is_a_clear_failure_and_the_daemon_keeps_serving(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    pk: Env,
) -> None:
    user = test_users[0]
    daemon = _start(daemon_factory, pk, _service(pk, user, pk.wrong_pin_file))
    env = _client_env(pk, daemon, h.user_dir(pk.directory, user) / "cc")
    errors = []
    with h.gssops(env, user) as client:
        for _ in range(2):  # the second answer comes without another login
            reply = client.request("init", ctx="c", target="host@localhost")
            assert not reply["ok"], reply
            errors.append(reply["error"])
    for error in errors:
        assert "PKINIT" in error and "rejected the configured PIN" in error, error
        assert "reauthentication failed" not in error, error
    assert daemon.running
    # Still serving: the right PIN after a reload, and the init works.
    h.reconfigure(daemon, _service(pk, user, pk.pin_file), debug_level=3)
    with h.gssops(env, user) as client, h.acceptor(pk.realm.env(), pk.keytab) as acc:
        assert h.establish(client, acc, "host@localhost")["initiator"] == pk.principal
    daemon.stop()
    log = daemon.log_text()
    assert "CKR_PIN_INCORRECT" in log
    _no_pin_in(log)
    _no_pin_in(repr(errors))


def _kinit_password(pk: Env, ccache: Path, lifetime: str) -> None:
    subprocess.run(
        ["kinit", "-l", lifetime, "-c", f"FILE:{ccache}", pk.principal],
        input=PASSWORD + "\n",
        env={**os.environ, **pk.realm.env()},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )


def _tgt_end(pk: Env, ccache: Path) -> str:
    listing = h.klist(pk.realm, f"FILE:{ccache}")  # type: ignore[arg-type]
    (line,) = [ln for ln in listing.splitlines() if "krbtgt/" in ln]
    return line


def test_configured_ccache_renewed_near_expiry(
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    pk: Env,
) -> None:
    user = test_users[0]
    private = pk.directory / "svc-ccache"
    private.mkdir(mode=0o700, exist_ok=True)
    ccache = private / "tokenuser.ccache"
    # A good TGT (password kinit, 10 hours) is used as it is.
    _kinit_password(pk, ccache, "10h")
    service = _service(pk, user, pk.pin_file, cred_store=f"ccache:FILE:{ccache}", min_lifetime=300)
    daemon = _start(daemon_factory, pk, service)
    env = _client_env(pk, daemon, h.user_dir(pk.directory, user) / "cc")
    with h.gssops(env, user) as client, h.acceptor(pk.realm.env(), pk.keytab) as acc:
        assert h.establish(client, acc, "host@localhost")["initiator"] == pk.principal
    assert _pkinits(daemon) == 0
    # One that ends within min_lifetime is replaced by PKINIT.
    _kinit_password(pk, ccache, "2m")
    short = _tgt_end(pk, ccache)
    h.reconfigure(daemon, service, debug_level=3)  # drops the daemon's cached credential
    with h.gssops(env, user) as client, h.acceptor(pk.realm.env(), pk.keytab) as acc:
        assert h.establish(client, acc, "host@localhost")["initiator"] == pk.principal
    assert _pkinits(daemon) == 1
    assert _tgt_end(pk, ccache) != short
    assert ccache.stat().st_mode & 0o777 == 0o600
    assert not [p for p in private.iterdir() if p != ccache], "temporary ccache left behind"
    daemon.stop()
    _no_pin_in(daemon.log_text())
