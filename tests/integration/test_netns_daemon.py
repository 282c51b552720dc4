"""End to end: a service with `netns = NAME` whose KDC exists only in that namespace.

A named namespace under /run/netns (where the daemon looks names up) runs
its own krb5kdc on its own 127.0.0.1. The daemon runs in the host namespace
with a service restricted to that namespace, initiating with a client
keytab. A GSSAPI initiator started inside the namespace (nsenter) goes
through the interposer: the daemon matches the service by the peer's netns
inode, and must get alice's TGT and the service ticket from the KDC, which
only works if that Kerberos traffic leaves from a thread inside the
namespace (the GSS layer runs the call on the server's NetnsExecutors).
The same initiator from the host namespace matches no service.

Needs root, the MIT KDC tools and Debian's proxymech.so.
"""

from __future__ import annotations

import json
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

import pytest

from gssproxy_py.netns import NetnsExecutors
from gssproxy_py.netns.named import NETNS_DIR, create_named, remove_named
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.net import tcp_answers
from gssproxy_py.testing.paths import PROXYMECH_SO
from gssproxy_py.testing.peer import client_argv, peer_env
from gssproxy_py.testing.realm import Realm

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, nsenter)"),
    pytest.mark.skipif(
        any(shutil.which(p) is None for p in ("krb5kdc", "kdb5_util", "nsenter", "ip")),
        reason="needs krb5kdc, kdb5_util, nsenter and ip",
    ),
    pytest.mark.skipif(not PROXYMECH_SO.exists(), reason=f"no interposer ({PROXYMECH_SO})"),
]


@dataclass(frozen=True)
class NsKdc:
    realm: Realm
    netns: str
    nspath: str
    alice_keytab: Path


@pytest.fixture(scope="module")
def ns_kdc() -> Iterator[NsKdc]:
    name = f"gpytest-e2e-{uuid.uuid4().hex[:6]}"
    nspath = os.path.join(NETNS_DIR, name)
    workdir = Path(tempfile.mkdtemp(prefix="gpy-nse2e-"))
    workdir.chmod(0o755)
    kdc: subprocess.Popen[bytes] | None = None
    executors = NetnsExecutors()
    try:
        create_named(name)
        subprocess.run(["nsenter", f"--net={nspath}", "ip", "link", "set", "lo", "up"], check=True)
        realm = Realm(workdir / "realm")
        realm.create()
        alice = realm.addprinc("alice", "alicepw")
        realm.addprinc("host/localhost")
        alice_keytab = realm.ktadd(alice, workdir / "alice.keytab")
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
        for _ in range(500):
            if pool.submit(tcp_answers, realm.port).result():
                break
            time.sleep(0.01)
        else:
            pytest.fail("krb5kdc did not listen inside the namespace")
        assert not tcp_answers(realm.port)  # and only there
        yield NsKdc(realm, name, nspath, alice_keytab)
    finally:
        if kdc is not None and kdc.poll() is None:
            kdc.send_signal(signal.SIGTERM)
            kdc.wait(10)
        executors.shutdown()
        remove_named(name)
        shutil.rmtree(workdir, ignore_errors=True)


def _config(ns: NsKdc) -> object:
    def render(paths: object) -> str:
        return f"""[gssproxy]
  state_dir = {paths.workdir}/state

[service/in-netns]
  mechs = krb5
  cred_store = client_keytab:{ns.alice_keytab}
  cred_store = ccache:MEMORY:gpytest-netns
  cred_usage = initiate
  euid = 0
  netns = {ns.netns}
"""

    return render


def _initiate(ns: NsKdc, socket_path: Path, workdir: Path, *, inside: bool) -> dict[str, object]:
    env = peer_env(ns.realm.env(), interposer_env(socket_path, workdir))
    argv = client_argv("init.py", "--target", "host@localhost")
    if inside:
        argv = ["nsenter", f"--net={ns.nspath}", *argv]
    proc = subprocess.run(
        argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=60
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    reply: dict[str, object] = json.loads(lines[-1]) if lines else {"ok": False}
    reply["stderr"] = proc.stderr
    return reply


def test_namespaced_service_talks_to_the_kdc_of_its_namespace(
    daemon_factory: object, ns_kdc: NsKdc
) -> None:
    daemon = daemon_factory("py", _config(ns_kdc), env=ns_kdc.realm.env())  # type: ignore[operator]
    reply = _initiate(ns_kdc, daemon.socket, daemon.socket.parent, inside=True)
    assert reply["ok"], reply
    log = ns_kdc.realm.kdc_log.read_text()
    assert "AS_REQ" in log and "TGS_REQ" in log and "host/localhost@" in log


def test_the_same_initiator_from_the_host_namespace_is_not_served(
    daemon_factory: object, ns_kdc: NsKdc
) -> None:
    daemon = daemon_factory("py", _config(ns_kdc), env=ns_kdc.realm.env())  # type: ignore[operator]
    reply = _initiate(ns_kdc, daemon.socket, daemon.socket.parent, inside=False)
    assert not reply["ok"]
    assert "requires network namespace" in daemon.log_tail()
