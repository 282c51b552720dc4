"""The GSS side of PKINIT (gssproxy_py.gss.pkinit_creds) with a stand-in
token layer: which requests it applies to, where the TGT goes, single
flight, failures, and the call from a thread whose event loop is running.

The stand-in `TgtSource` gets alice's TGT with her password (the session
realm's), so these tests need a KDC but no token; the real source is tested
in test_pkinit_daemon.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
from pathlib import Path

import pytest

from gssproxy_py.config import load_config_text
from gssproxy_py.config.model import Config, CredUsage, Service
from gssproxy_py.errors import LocalError
from gssproxy_py.gss import policy
from gssproxy_py.gss.pkinit_creds import PkinitCreds, PkinitPlan, daemon_ccache
from gssproxy_py.gss.status import GSS_S_FAILURE, GSS_S_NO_CRED, GssFailure
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.vocab import oids

pytestmark = [pytest.mark.integration]

LOG = logging.getLogger("test")


def _config(state: Path, principal: str, extra: str = "") -> Config:
    return load_config_text(f"""
[gssproxy]
  state_dir = {state}
[service/tok/en]
  mechs = krb5
  euid = 1000
  cred_usage = both
  krb5_principal = {principal}
  pkcs11_module = /usr/lib/softhsm/libsofthsm2.so
  pkcs11_uri = pkcs11:token=t
  pkcs11_pin = file:/nonexistent
{extra}
""")


def _creq(
    uid: int = 1000,
    *,
    name: policy.NameSpec | None = None,
    usage: CredUsage = CredUsage.INITIATE,
    keytab: bool = False,
    impersonate: bool = False,
) -> policy.CredRequest:
    return policy.CredRequest(uid, keytab, name, usage, impersonate)


def test_plan_decides_which_requests(tmp_path: Path) -> None:
    config = _config(tmp_path, "alice@EXAMPLE.TEST")
    svc = config.services[0]
    pk = PkinitCreds(None)
    store = {"ccache": "MEMORY:private"}
    plan = pk.plan(config, svc, _creq(), store)
    assert plan is not None and plan.daemon_owned
    assert plan.ccache == daemon_ccache(config, svc)
    assert plan.ccache.startswith(f"FILE:{tmp_path}/pkinit/tok_en-")
    principal = policy.NameSpec(b"alice", oids.NT_KRB5_PRINCIPAL)
    assert pk.plan(config, svc, _creq(name=principal), store) is not None
    assert pk.plan(config, svc, _creq(usage=CredUsage.BOTH), store) is not None
    assert pk.plan(config, svc, _creq(2000, keytab=True), store) is not None
    # Not the service's own identity, acceptor only, impersonation, other names.
    assert pk.plan(config, svc, _creq(2000), store) is None
    assert pk.plan(config, svc, _creq(usage=CredUsage.ACCEPT), store) is None
    assert pk.plan(config, svc, _creq(impersonate=True), store) is None
    other = policy.NameSpec(b"bob@EXAMPLE.TEST", oids.NT_KRB5_PRINCIPAL)
    assert pk.plan(config, svc, _creq(name=other), store) is None
    host = policy.NameSpec(b"host@localhost", oids.NT_HOSTBASED_SERVICE)
    assert pk.plan(config, svc, _creq(name=host), store) is None
    # Without krb5_principal (or the token options) nothing changes.
    bare = Service(name="x", euid=1000, mechs=svc.mechs, pkcs11_module=svc.pkcs11_module)
    assert pk.plan(config, bare, _creq(), store) is None
    # A configured ccache is used as expanded by build_store.
    configured = _config(tmp_path, "alice", "  cred_store = ccache:FILE:/run/x/%U.cc")
    csvc = configured.services[0]
    cstore = policy.build_store(csvc, _creq())
    plan = pk.plan(configured, csvc, _creq(), cstore)
    assert plan is not None and not plan.daemon_owned
    assert plan.ccache == cstore["ccache"] and "%U" not in plan.ccache


class CastleError(LocalError):
    pass


class FakeSource:
    """Gets alice's TGT with her password; counts calls; can fail."""

    def __init__(self, realm: StandardRealm, *, fail: bool = False, delay: float = 0.0) -> None:
        self.realm = realm
        self.fail = fail
        self.delay = delay
        self.calls: list[str] = []
        self.threads: set[str] = set()

    async def pkinit_tgt(self, service: Service, *, ccache: str) -> None:
        self.calls.append(ccache)
        self.threads.add(threading.current_thread().name)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise CastleError("the token is in another castle")
        proc = await asyncio.create_subprocess_exec(
            "kinit",
            "-c",
            ccache,
            self.realm.alice,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.realm.env()},
        )
        _, err = await proc.communicate((self.realm.alice_password + "\n").encode())
        assert proc.returncode == 0, err


def _plan(pk: PkinitCreds, config: Config) -> PkinitPlan:
    svc = config.services[0]
    store = policy.build_store(svc, _creq())
    plan = pk.plan(config, svc, _creq(), store)
    assert plan is not None
    return plan


def test_single_flight_into_the_daemon_ccache(tmp_path: Path, realm: StandardRealm) -> None:
    config = _config(tmp_path / "state", realm.alice)
    source = FakeSource(realm, delay=0.2)
    pk = PkinitCreds(source)
    plan = _plan(pk, config)
    errors: list[BaseException] = []

    def one() -> None:
        try:
            pk.ensure(plan, LOG)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(source.calls) == 1 and pk.obtained == 1
    # The source wrote a temporary file; the ccache appeared by rename.
    assert source.calls[0] != plan.ccache
    directory = tmp_path / "state" / "pkinit"
    (ccache,) = directory.iterdir()
    assert directory.stat().st_mode & 0o777 == 0o700
    assert ccache.stat().st_mode & 0o777 == 0o600
    listing = subprocess.run(
        ["klist", "-c", f"FILE:{ccache}"],
        env={**os.environ, **realm.env()},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert realm.alice in listing
    # Good for hours: no new PKINIT.
    pk.ensure(plan, LOG)
    assert len(source.calls) == 1


def test_a_tgt_within_min_lifetime_is_refused(tmp_path: Path, realm: StandardRealm) -> None:
    config = _config(tmp_path, realm.alice, "  min_lifetime = 86400000")
    source = FakeSource(realm)
    pk = PkinitCreds(source)
    plan = _plan(pk, config)
    with pytest.raises(GssFailure) as e:
        pk.ensure(plan, LOG)
    # It tried (the TGT it got is still within min_lifetime) and says so.
    assert len(source.calls) == 1 and "min_lifetime" in e.value.message


def test_failures_are_clear_and_held(tmp_path: Path, realm: StandardRealm) -> None:
    config = _config(tmp_path, realm.alice)
    source = FakeSource(realm, fail=True)
    pk = PkinitCreds(source)
    plan = _plan(pk, config)
    for _ in range(3):
        with pytest.raises(GssFailure) as e:
            pk.ensure(plan, LOG)
        assert e.value.major == GSS_S_NO_CRED
        assert "another castle" in e.value.message and realm.alice in e.value.message
    assert len(source.calls) == 1  # held, not retried at once
    assert not list((tmp_path / "pkinit").iterdir()), "temporary ccache left behind"
    pk.forget()  # a reload
    with pytest.raises(GssFailure):
        pk.ensure(plan, LOG)
    assert len(source.calls) == 2


def test_without_source_or_with_memory_ccache(tmp_path: Path, realm: StandardRealm) -> None:
    config = _config(tmp_path, realm.alice)
    with pytest.raises(GssFailure) as e:
        PkinitCreds(None).ensure(_plan(PkinitCreds(None), config), LOG)
    assert "not available in this process" in e.value.message
    memory = _config(tmp_path, realm.alice, "  cred_store = ccache:MEMORY:svc")
    source = FakeSource(realm)
    pk = PkinitCreds(source)
    with pytest.raises(GssFailure) as e:
        pk.ensure(_plan(pk, memory), LOG)
    assert "MEMORY" in e.value.message and not source.calls


def test_called_on_a_thread_whose_loop_runs(tmp_path: Path, realm: StandardRealm) -> None:
    """On an event loop's thread `ensure` would block that loop: it refuses
    with a GSS error at once, and the token layer is never asked (the GSS
    engine only calls it from its executor threads)."""
    config = _config(tmp_path, realm.alice)
    source = FakeSource(realm)
    pk = PkinitCreds(source)
    plan = _plan(pk, config)

    async def on_the_loop() -> None:
        with pytest.raises(GssFailure) as e:
            pk.ensure(plan, LOG)  # a deadlock would hang here (pytest-timeout ends it)
        assert (
            e.value.major == GSS_S_FAILURE and "PKINIT failed inside the daemon" in e.value.message
        )

    asyncio.run(on_the_loop())
    assert source.calls == []
