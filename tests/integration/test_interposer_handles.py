"""Stored credential handles presented by the wrong uid, or tampered with.

gpytest1 acquires alice's credential through the daemon and stores it (the
interposer's `X-GSSPROXY` ccache entry, which holds the sealed handle). Then:

* gpytest2 presents a copy of that entry. Our handles are sealed to service
  and uid, so the daemon logs why it refuses the handle and treats it as "no
  credential"; gpytest2 cannot acquire anything itself, so its init fails.
  The C gssproxy seals with the first usable key of the service's keytab
  and binds the blob to nothing: with both services sharing a keytab it
  honours the copy, and
  gpytest2 authenticates as alice. That case documents the difference.
* the same uid takes the handle to another service: it works where the
  service has the same keytab (the C daemon's key, our handle scope) and
  not elsewhere;
* the handle bytes are changed: both daemons refuse them and start over,
  which fails when the daemon can no longer acquire for the user and gives a
  fresh credential (a new entry) when it can.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.testing.daemon import ALL_IMPLEMENTATIONS, DaemonProcess
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser
from gssproxy_py.xdr.runtime import Decoder, Encoder

sys.path.insert(0, str(Path(__file__).parent / "clients"))
import ccfile
import gpharness as h

pytestmark = [pytest.mark.integration, pytest.mark.root]

impls = pytest.mark.parametrize("impl", ALL_IMPLEMENTATIONS)


@pytest.fixture(scope="module")
def client_keytabs(realm: StandardRealm, test_users: tuple[LocalUser, ...]) -> Path:
    directory = realm.realm.directory / "handle-client-keytabs"
    directory.mkdir(exist_ok=True)
    realm.realm.ktadd(realm.alice, directory / f"{test_users[0].uid}.keytab")
    return directory


def service(
    name: str,
    user: LocalUser,
    realm: StandardRealm,
    keytabs: Path,
    keytab: Path | None = None,
    **extra: str,
) -> str:
    # By default services share the service keytab, and with it the C
    # daemon's handle key (and our handle scope).
    return h.service_section(
        name,
        {
            "mechs": "krb5",
            "cred_store": [
                f"keytab:{keytab or realm.service_keytab}",
                f"client_keytab:{keytabs}/%U.keytab",
            ],
            "cred_usage": "initiate",
            "euid": user.uid,
            **extra,
        },
    )


def store_alice(
    daemon: DaemonProcess, realm: StandardRealm, user: LocalUser, path: Path
) -> ccfile.Credential:
    env = h.client_env(realm.env(), daemon.socket, f"FILE:{path}")
    with h.gssops(env, user) as client:
        assert client.call("acquire", **{"as": "c"})["name"] == realm.alice
        client.call("store", cred="c")
    (entry,) = ccfile.read(path).gssproxy_entries()
    return entry


def init_reply(
    daemon: DaemonProcess, realm: StandardRealm, user: LocalUser, path: Path
) -> dict[str, Any]:
    """One init with default creds (REMOTE_ONLY: no local fallback), then accept if it worked."""
    env = h.client_env(realm.env(), daemon.socket, f"FILE:{path}", "REMOTE_ONLY")
    with (
        h.gssops(env, user) as client,
        h.acceptor(realm.env(), realm.service_keytab) as acc,
    ):
        reply = client.request("init", ctx="c", target=realm.host_service)
        if not reply["ok"]:
            return reply
        return acc.call("step", token=reply["token"])


@impls
def test_handle_replayed_by_another_uid(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    harness_dir: Path,
) -> None:
    u1, u2 = test_users
    config = h.render(
        service("one", u1, realm, client_keytabs), service("two", u2, realm, client_keytabs)
    )
    daemon = daemon_factory(impl, config)
    mine = h.user_dir(harness_dir, u1) / "cc"
    store_alice(daemon, realm, u1, mine)
    stolen = h.user_dir(harness_dir, u2) / "cc"
    shutil.copyfile(mine, stolen)
    os.chown(stolen, u2.uid, u2.gid)
    mark = len(daemon.log_text())
    reply = init_reply(daemon, realm, u2, stolen)
    if impl == "py":
        assert not reply["ok"], f"gpytest2 authenticated with alice's handle: {reply}"
        log = daemon.log_text()[mark:]
        assert "credential handle not honoured (wrong_binding_or_tampered)" in log, log
    else:
        # The C daemon's blob is bound to nothing but the shared keytab key.
        assert reply["ok"] and reply["initiator"] == realm.alice, reply
    # The rightful owner still gets in.
    assert init_reply(daemon, realm, u1, mine)["initiator"] == realm.alice


@impls
def test_handle_scope_is_the_keytab(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    harness_dir: Path,
) -> None:
    """The same uid on three sockets: a handle from "one" works at "same" (same
    keytab) and not at "other" (another keytab), for both daemons."""
    u1 = test_users[0]
    sockets: dict[str, Path] = {}

    def sections(keytabs: Path) -> list[str]:
        return [
            service("one", u1, realm, keytabs, socket=str(sockets["one"])),
            service("same", u1, realm, keytabs, socket=str(sockets["same"])),
            service(
                "other", u1, realm, keytabs, keytab=realm.nfs_keytab, socket=str(sockets["other"])
            ),
        ]

    def config(paths: Any) -> str:
        sockets.update({n: paths.workdir / f"{n}.sock" for n in ("one", "same", "other")})
        return h.render(*sections(client_keytabs))(paths)

    daemon = daemon_factory(impl, config)
    path = h.user_dir(harness_dir, u1) / "cc"
    env = h.client_env(realm.env(), sockets["one"], f"FILE:{path}")
    with h.gssops(env, u1) as client:
        client.call("acquire", **{"as": "c"})
        client.call("store", cred="c")
    # Only the stored handle can work from now on.
    h.reconfigure(daemon, *sections(Path("/nonexistent")))

    def init_via(name: str) -> dict[str, Any]:
        env = h.client_env(realm.env(), sockets[name], f"FILE:{path}", "REMOTE_ONLY")
        with h.gssops(env, u1) as client, h.acceptor(realm.env(), realm.service_keytab) as acc:
            reply = client.request("init", ctx="c", target=realm.host_service)
            return acc.call("step", token=reply["token"]) if reply["ok"] else reply

    assert init_via("same")["initiator"] == realm.alice
    mark = len(daemon.log_text())
    assert not init_via("other")["ok"]
    if impl == "py":
        assert "not honoured (wrong_binding_or_tampered)" in daemon.log_text()[mark:]


def tamper(path: Path, entry: ccfile.Credential) -> None:
    """Flip the last byte of the sealed handle inside the stored gssx_cred."""
    cred = gp.decode_gssx_cred(Decoder(entry.ticket))
    blob = bytearray(cred.cred_handle_reference)
    blob[-1] ^= 0x01
    enc = Encoder()
    gp.encode_gssx_cred(
        enc,
        gp.GssxCred(
            desired_name=cred.desired_name,
            elements=cred.elements,
            cred_handle_reference=bytes(blob),
            needs_release=cred.needs_release,
        ),
    )
    ccfile.replace_ticket(path, entry, bytes(enc.get_buffer()))


@impls
def test_tampered_handle_is_not_honoured(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    test_users: tuple[LocalUser, ...],
    client_keytabs: Path,
    harness_dir: Path,
) -> None:
    u1 = test_users[0]
    daemon = daemon_factory(impl, h.render(service("one", u1, realm, client_keytabs)))
    path = h.user_dir(harness_dir, u1) / "cc"
    tamper(path, store_alice(daemon, realm, u1, path))
    (tampered,) = ccfile.read(path).gssproxy_entries()
    # While the daemon can still acquire for gpytest1, the bad handle is
    # replaced by a fresh credential...
    assert init_reply(daemon, realm, u1, path)["initiator"] == realm.alice
    (fresh,) = ccfile.read(path).gssproxy_entries()
    assert fresh.ticket != tampered.ticket
    # ...and once it cannot, a tampered handle gets the client nothing.
    tamper(path, fresh)
    h.reconfigure(daemon, service("one", u1, realm, Path("/nonexistent")))
    mark = len(daemon.log_text())
    reply = init_reply(daemon, realm, u1, path)
    assert not reply["ok"], reply
    if impl == "py":
        log = daemon.log_text()[mark:]
        assert "credential handle not honoured (wrong_binding_or_tampered)" in log, log
