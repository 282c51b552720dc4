"""A KDC reachable only inside a network namespace, used from a namespace executor.

krb5kdc runs in a pyroute2-made namespace (entered with nsenter) and listens
on that namespace's 127.0.0.1. libkrb5 opens its own sockets, so getting a
TGT (acquire_cred_with_password: an AS exchange) and then a service ticket
(init_sec_context: a TGS exchange) works from a `NetnsExecutors` thread in
that namespace and fails with "cannot contact any KDC" from the daemon's own.

Needs root and the MIT KDC tools.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gssapi
import gssapi.raw
import pytest

from gssproxy_py.netns import NetnsExecutors, thread_netns_inode
from gssproxy_py.netns.named import create_named, remove_named
from gssproxy_py.testing.net import tcp_answers
from gssproxy_py.testing.realm import Realm

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setns, netns bind mounts)"),
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("krb5kdc", "kdb5_util", "nsenter", "ip")),
        reason="needs krb5kdc, kdb5_util, nsenter and ip",
    ),
]

PASSWORD = "alicepw"


@dataclass(frozen=True)
class NsRealm:
    realm: Realm
    netns: str
    netns_dir: str
    executors: NetnsExecutors


@pytest.fixture(scope="module")
def ns_realm() -> Iterator[NsRealm]:
    netns_dir = tempfile.mkdtemp(prefix="gpy-netns-")
    name = f"gpytest-kdc-{uuid.uuid4().hex[:6]}"
    workdir = Path(tempfile.mkdtemp(prefix="gpy-nskdc-"))
    kdc: subprocess.Popen[bytes] | None = None
    executors = NetnsExecutors(netns_dir=netns_dir)
    try:
        create_named(name, netns_dir)
        nspath = os.path.join(netns_dir, name)
        subprocess.run(["nsenter", f"--net={nspath}", "ip", "link", "set", "lo", "up"], check=True)
        realm = Realm(workdir / "realm")
        realm.create()  # configs name 127.0.0.1:<port>; inside the namespace
        realm.addprinc("alice", PASSWORD)
        realm.addprinc("host/localhost")
        with open(workdir / "krb5kdc.out", "wb") as out:
            kdc = subprocess.Popen(
                ["nsenter", f"--net={nspath}", "krb5kdc", "-n", "-P", str(workdir / "kdc.pid")],
                env={**os.environ, **realm.env()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pool = executors.executor_for(name)
        # Readiness polled from inside the namespace (the only place it listens).
        for _ in range(500):
            if pool.submit(tcp_answers, realm.port).result():
                break
            if kdc.poll() is not None:
                pytest.fail(f"krb5kdc exited: {(workdir / 'krb5kdc.out').read_text()}")
            time.sleep(0.01)
        else:
            pytest.fail("krb5kdc did not listen inside the namespace")
        yield NsRealm(realm, name, netns_dir, executors)
    finally:
        if kdc is not None and kdc.poll() is None:
            kdc.send_signal(signal.SIGTERM)
            kdc.wait(10)
        executors.shutdown()
        remove_named(name, netns_dir)
        subprocess.run(["umount", "-l", netns_dir], check=False, capture_output=True)
        shutil.rmtree(netns_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def krb5_env(ns_realm: NsRealm, monkeypatch: pytest.MonkeyPatch) -> None:
    # libkrb5 reads these per context: every GSS call below sees this realm.
    for key, value in ns_realm.realm.env().items():
        monkeypatch.setenv(key, value)


def kinit_and_get_ticket(principal: str, password: str) -> tuple[int, int]:
    """An AS exchange, then a TGS exchange for host/localhost; returns
    (thread netns inode, length of the first context token)."""
    name = gssapi.Name(principal, gssapi.NameType.kerberos_principal)
    creds = gssapi.raw.acquire_cred_with_password(name, password.encode(), usage="initiate").creds
    target = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
    ctx = gssapi.SecurityContext(name=target, creds=gssapi.Credentials(creds), usage="initiate")
    token = ctx.step()
    return thread_netns_inode(), len(token or b"")


def test_kdc_is_not_reachable_from_the_host(ns_realm: NsRealm) -> None:
    assert not tcp_answers(ns_realm.realm.port)


@pytest.mark.usefixtures("krb5_env")
def test_kerberos_from_a_namespace_thread(ns_realm: NsRealm) -> None:
    pool = ns_realm.executors.executor_for(ns_realm.netns)
    inode, token_len = pool.submit(
        kinit_and_get_ticket, ns_realm.realm.principal("alice"), PASSWORD
    ).result(timeout=30)
    assert inode == ns_realm.executors.inode_of(ns_realm.netns)
    assert token_len > 100  # an AP-REQ carrying the service ticket
    log = ns_realm.realm.kdc_log.read_text()
    assert "AS_REQ" in log and "TGS_REQ" in log and "host/localhost@" in log


@pytest.mark.usefixtures("krb5_env")
def test_the_same_call_fails_from_the_daemons_namespace(ns_realm: NsRealm) -> None:
    pool = ns_realm.executors.executor_for(None)
    future = pool.submit(kinit_and_get_ticket, ns_realm.realm.principal("alice"), PASSWORD)
    with pytest.raises(gssapi.exceptions.GSSError, match=r"(?i)cannot contact any KDC"):
        future.result(timeout=30)


@pytest.mark.usefixtures("krb5_env")
def test_concurrent_requests_in_both_namespaces(ns_realm: NsRealm) -> None:
    inside = ns_realm.executors.executor_for(ns_realm.netns)
    outside = ns_realm.executors.executor_for(None)
    alice = ns_realm.realm.principal("alice")
    futures = [inside.submit(kinit_and_get_ticket, alice, PASSWORD) for _ in range(3)]
    futures += [outside.submit(kinit_and_get_ticket, alice, PASSWORD) for _ in range(3)]
    done = concurrent.futures.wait(futures, timeout=60).done
    assert len(done) == 6
    assert [f.exception() is None for f in futures] == [True] * 3 + [False] * 3
