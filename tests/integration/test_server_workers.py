"""`gssproxy-py --workers N`: GSS-Proxy calls answered in worker processes.

The real daemon with two workers: calls (also many in flight on one
connection, as the kernel sends them) are answered, a reload reaches the
workers before the next call, a worker that dies costs only its own calls,
and stopping the daemon ends the workers too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gssproxy_py.client import (
    AsyncGssProxyClient,
    GssProxyClient,
    ProgramUnavailable,
    RpcClient,
    call_ctx,
    find_option,
    option,
)
from gssproxy_py.client.gssproxy import (
    OPT_EXPORTED_CONTEXT_TYPE,
    OPT_EXPORTED_CREDS_TYPE,
    VAL_LINUX_CREDS_V1,
    VAL_LINUX_LUCID_V1,
)
from gssproxy_py.proto.gss_proxy import GssxArgAcceptSecContext, GssxArgGetCallContext
from gssproxy_py.testing.daemon import DaemonProcess, unavailable_reason, write_config
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.xdr import Procedure, Program, Version
from gssproxy_py.xdr.program import decode_void, encode_void

pytestmark = pytest.mark.integration

WORKERS = 2


def config_text(realm: StandardRealm, workdir: Path, name: str) -> str:
    return f"""[gssproxy]
  debug_level = 1
  state_dir = {workdir}/state

[service/{name}]
  mechs = krb5
  cred_store = keytab:{realm.nfs_keytab}
  cred_usage = accept
  euid = {os.geteuid()}
"""


@pytest.fixture
def daemon(harness_dir: Path, realm: StandardRealm) -> Iterator[DaemonProcess]:
    reason = unavailable_reason("py")
    if reason is not None:
        pytest.skip(reason)
    workdir = Path(tempfile.mkdtemp(prefix="gp-workers-", dir=harness_dir))
    workdir.chmod(0o755)
    conf = write_config(workdir / "gssproxy.conf", config_text(realm, workdir, "first"))
    d = DaemonProcess(
        "py",
        conf,
        socket=workdir / "gssproxy.sock",
        env=realm.env(),
        extra_args=(f"--workers={WORKERS}",),
    )
    d.start()
    try:
        yield d
    finally:
        if d.running:
            d.stop()
        print(d.log_tail())


def worker_pids(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def service_name(client: GssProxyClient) -> bytes | None:
    res = client.get_call_context(GssxArgGetCallContext(call_ctx(), ()))
    assert res.status.major_status == 0, res.status
    return find_option(res.options, "service_name")


async def service_names(socket: Path, count: int) -> list[bytes | None]:
    """`count` GET_CALL_CONTEXT calls in flight together on one connection."""
    async with AsyncGssProxyClient(socket, timeout=20) as client:
        results = await asyncio.gather(
            *(client.get_call_context(GssxArgGetCallContext(call_ctx(), ())) for _ in range(count))
        )
    return [find_option(r.options, "service_name") for r in results]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_workers_answer_calls(daemon: DaemonProcess) -> None:
    assert len(worker_pids(daemon.pid)) == WORKERS
    assert f"{WORKERS} worker processes" in daemon.log_text()
    with GssProxyClient(daemon.socket, timeout=20) as client:
        client.null()
        assert service_name(client) == b"first\0"
        assert client.indicate_mechs().status.major_status == 0
    # RPC-level refusals are the same as without workers.
    null = Procedure(0, "NULL", None, None, decode_void, encode_void, decode_void, encode_void)
    other = Program(0x20000099, "OTHER", {1: Version(1, "V1", {0: null})})
    with RpcClient(daemon.socket, other, 1, timeout=20) as rpc, pytest.raises(ProgramUnavailable):
        rpc.null()


def test_kernel_style_accepts_in_flight_on_one_connection(
    daemon: DaemonProcess, realm: StandardRealm, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gssapi

    for key, value in realm.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{realm.alice_ccache}")
    monkeypatch.setenv("GSS_USE_PROXY", "no")
    target = gssapi.Name("nfs@localhost", gssapi.NameType.hostbased_service)
    tokens = [gssapi.SecurityContext(name=target, usage="initiate").step() for _ in range(16)]
    ctx = call_ctx(
        option(OPT_EXPORTED_CONTEXT_TYPE, VAL_LINUX_LUCID_V1),
        option(OPT_EXPORTED_CREDS_TYPE, VAL_LINUX_CREDS_V1),
    )

    async def accept_all() -> list[object]:
        async with AsyncGssProxyClient(daemon.socket, timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.accept_sec_context(
                        GssxArgAcceptSecContext(ctx, None, None, t, None, False, ())
                    )
                    for t in tokens
                )
            )

    for res in asyncio.run(accept_all()):
        assert res.status.major_status == 0, res.status  # type: ignore[attr-defined]
        assert res.context_handle is not None  # type: ignore[attr-defined]
        assert len(res.context_handle.exported_context_token) <= 128  # type: ignore[attr-defined]
        assert find_option(res.options, VAL_LINUX_CREDS_V1) is not None  # type: ignore[attr-defined]


def test_reload_reaches_every_worker_before_the_next_call(
    daemon: DaemonProcess, realm: StandardRealm
) -> None:
    assert set(asyncio.run(service_names(daemon.socket, 8))) == {b"first\0"}
    daemon.config.write_text(config_text(realm, daemon.config.parent, "second"))
    daemon.reload()
    # Several calls in flight at once reach both workers.
    assert set(asyncio.run(service_names(daemon.socket, 8))) == {b"second\0"}


def test_a_dead_worker_costs_only_its_own_calls(daemon: DaemonProcess) -> None:
    first, second = worker_pids(daemon.pid)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: "worker process" in daemon.log_text() and " ended " in daemon.log_text())
    assert set(asyncio.run(service_names(daemon.socket, 8))) == {b"first\0"}
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: "no worker process left" in daemon.log_text())
    # The daemon process answers by itself from now on.
    assert set(asyncio.run(service_names(daemon.socket, 8))) == {b"first\0"}
    assert daemon.running


def test_stopping_ends_the_workers(daemon: DaemonProcess) -> None:
    pids = worker_pids(daemon.pid)
    assert daemon.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert not daemon.socket.exists()
