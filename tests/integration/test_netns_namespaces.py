"""Namespace executors and the upcall enabler inside real network namespaces.

Namespaces are made with pyroute2 (`named.create_named`) under a private
directory, so nothing shows up in `ip netns list`. The proc entry is played
by a temporary file, written from a thread that entered the namespace; the
thread's namespace is what each result records, and what the tests check.
Retries are driven by a gated sleep: no test waits for real time.

Needs root (setns, mounting namespace files).
"""

# The stand-in file is a few bytes in tmp: writing it from a coroutine is the
# point of these tests, not a blocking hazard.

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import functools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from gssproxy_py.config.model import Config, GlobalSettings, Mech, Service
from gssproxy_py.netns import (
    KernelUpcalls,
    NetnsExecutors,
    NetnsNotFoundError,
    Outcome,
    UpcallEnabler,
    UpcallLatchedError,
    socket_netns_inode,
    thread_netns_inode,
)
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.named import create_named, inode_map, list_named, remove_named
from gssproxy_py.netns.nsfs import enter_netns, thread_proc_path
from gssproxy_py.netns.upcall import LATCHED_REMEDY, AttemptResult, ProcFileIO

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setns, netns bind mounts)"),
]

NsFactory = Callable[[], str]


@pytest.fixture
def netns_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="gpy-netns-")
    yield path
    for name in os.listdir(path):
        remove_named(name, path)
    # Like iproute2, pyroute2 makes the directory a (shared) mount point.
    subprocess.run(["umount", "-l", path], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_netns(netns_dir: str) -> NsFactory:
    """Factory: a fresh named namespace in `netns_dir`, loopback up."""

    def make() -> str:
        name = f"gpytest-{uuid.uuid4().hex[:8]}"
        create_named(name, netns_dir)
        # `ip -n` only knows /run/netns names; nsenter takes the path.
        nspath = os.path.join(netns_dir, name)
        subprocess.run(["nsenter", f"--net={nspath}", "ip", "link", "set", "lo", "up"], check=True)
        return name

    return make


@pytest.fixture
def executors(netns_dir: str) -> Iterator[NetnsExecutors]:
    ex = NetnsExecutors(netns_dir=netns_dir)
    yield ex
    ex.shutdown()


def aio(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


class GatedSleep:
    """Stands in for asyncio.sleep: records each delay, returns when released."""

    def __init__(self) -> None:
        self.requested: list[float] = []
        self._entered: asyncio.Queue[float] = asyncio.Queue()
        self._release = asyncio.Semaphore(0)

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        self._entered.put_nowait(seconds)
        await self._release.acquire()

    async def entered(self) -> float:
        return await asyncio.wait_for(self._entered.get(), 10)

    def release(self) -> None:
        self._release.release()


def _run(executor: concurrent.futures.Executor, fn: Callable[[], Any]) -> Any:
    return executor.submit(fn).result(timeout=10)


def _ifnames(path: str) -> set[str]:
    with open(path) as f:
        lines = f.read().splitlines()[2:]
    return {line.split(":")[0].strip() for line in lines}


# -- executors -------------------------------------------------------------------


def test_executor_threads_live_in_the_namespace(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str
) -> None:
    name = make_netns()
    inode = inode_map([name], netns_dir)[name]
    pool = executors.executor_for(name)
    assert _run(pool, thread_netns_inode) == inode
    # The event-loop thread (this one) never moved.
    assert thread_netns_inode() == executors.own_inode != inode
    assert executors.executor_for(name) is pool


def test_proc_net_follows_the_process_thread_self_follows_the_thread(
    make_netns: NsFactory, executors: NetnsExecutors
) -> None:
    pool = executors.executor_for(make_netns())
    inside = _run(pool, lambda: _ifnames(thread_proc_path("/proc/net/dev")))
    via_proc_net = _run(pool, lambda: _ifnames("/proc/net/dev"))
    assert inside == {"lo"}
    # /proc/net is /proc/self/net: the process's (main thread's) namespace.
    assert via_proc_net == _ifnames("/proc/net/dev")


def test_own_executor_stays_home_even_when_started_from_a_namespaced_thread(
    make_netns: NsFactory, executors: NetnsExecutors
) -> None:
    pool = executors.executor_for(make_netns())
    # Threads inherit the namespace of the thread that starts them; the own
    # executor's first worker is started from inside the namespace here.
    got = _run(pool, lambda: _run(executors.executor_for(None), thread_netns_inode))
    assert got == executors.own_inode


def test_missing_namespace(executors: NetnsExecutors) -> None:
    with pytest.raises(NetnsNotFoundError):
        executors.executor_for("gpytest-does-not-exist")


def test_recreated_namespace_gets_a_new_executor(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str
) -> None:
    name = make_netns()
    old = executors.executor_for(name)
    old_inode = _run(old, thread_netns_inode)
    remove_named(name, netns_dir)
    create_named(name, netns_dir)
    new = executors.executor_for(name)
    assert new is not old
    new_inode = _run(new, thread_netns_inode)
    assert new_inode == inode_map([name], netns_dir)[name] != old_inode


def test_entering_a_different_namespace_than_expected_is_refused(
    make_netns: NsFactory, netns_dir: str
) -> None:
    name = make_netns()
    path = os.path.join(netns_dir, name)
    errors: list[BaseException] = []
    where: list[int] = []

    def worker() -> None:
        try:
            enter_netns(path, expect_inode=1)
        except NetnsError as exc:
            errors.append(exc)
        where.append(thread_netns_inode())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert errors and "re-created" in str(errors[0])
    assert where == [thread_netns_inode()]  # it did not move


def test_accepted_socket_shows_the_connecting_namespace(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str, tmp_path: Path
) -> None:
    name = make_netns()
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()

        def connect() -> socket.socket:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            return s

        client = _run(executors.executor_for(name), connect)
        conn, _ = listener.accept()
        with client, conn:
            assert socket_netns_inode(conn) == inode_map([name], netns_dir)[name]


def test_list_named_sees_pyroute2_namespaces(make_netns: NsFactory, netns_dir: str) -> None:
    a, b = make_netns(), make_netns()
    Path(netns_dir, "leftover").touch()
    assert list_named(netns_dir) == tuple(sorted((a, b)))


# -- the enabler in a namespace -----------------------------------------------------


@aio
async def test_enabler_writes_from_inside_the_namespace(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str, tmp_path: Path
) -> None:
    name = make_netns()
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")
    enabler = UpcallEnabler(str(standin), netns=name, executors=executors, sleep=GatedSleep())
    res = await enabler.ensure_enabled()
    assert res.outcome is Outcome.ENABLED
    assert res.thread_inode == inode_map([name], netns_dir)[name]
    assert res.netns == name and f"netns {name}" in res.detail
    assert standin.read_text() == "1"
    enabler.stop()


@aio
async def test_enabler_retries_until_the_file_appears(
    make_netns: NsFactory, executors: NetnsExecutors, tmp_path: Path
) -> None:
    name = make_netns()
    standin = tmp_path / "use-gss-proxy"
    events: list[AttemptResult] = []
    sleep = GatedSleep()
    enabler = UpcallEnabler(
        str(standin),
        netns=name,
        executors=executors,
        sleep=sleep,
        interval=10.0,
        on_result=events.append,
    )
    assert (await enabler.ensure_enabled()).outcome is Outcome.ABSENT
    assert await sleep.entered() == 10.0
    standin.write_text("-1\n")
    sleep.release()
    final = await enabler.settled()
    assert final is not None and final.outcome is Outcome.ENABLED
    assert [e.outcome for e in events] == [Outcome.ABSENT, Outcome.ENABLED]
    assert {e.thread_inode for e in events} == {executors.inode_of(name)}
    assert sleep.requested == [10.0]


@aio
async def test_enabler_waits_for_the_namespace_itself(
    executors: NetnsExecutors, netns_dir: str, tmp_path: Path
) -> None:
    name = f"gpytest-{uuid.uuid4().hex[:8]}"
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")
    sleep = GatedSleep()
    enabler = UpcallEnabler(str(standin), netns=name, executors=executors, sleep=sleep)
    first = await enabler.ensure_enabled()
    assert first.outcome is Outcome.ABSENT and "does not exist" in first.detail
    assert standin.read_text() == "-1\n"  # nothing written from the wrong namespace
    await sleep.entered()
    inode = create_named(name, netns_dir)
    sleep.release()
    final = await enabler.settled()
    assert final is not None and final.outcome is Outcome.ENABLED
    assert final.thread_inode == inode


@aio
async def test_latched_zero_in_a_namespace(
    make_netns: NsFactory, executors: NetnsExecutors, tmp_path: Path
) -> None:
    name = make_netns()
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("0\n")
    enabler = UpcallEnabler(str(standin), netns=name, executors=executors, sleep=GatedSleep())
    with pytest.raises(UpcallLatchedError) as info:
        await enabler.ensure_enabled()
    assert str(info.value) == f"{standin} in netns {name} reads 0: {LATCHED_REMEDY}"
    assert not enabler.retrying


@aio
async def test_ebusy_in_a_namespace(
    make_netns: NsFactory, executors: NetnsExecutors, tmp_path: Path
) -> None:
    class Busy(ProcFileIO):
        def write(self, path: str, data: bytes) -> None:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    name = make_netns()
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")
    enabler = UpcallEnabler(
        str(standin), netns=name, executors=executors, io=Busy(), sleep=GatedSleep()
    )
    with pytest.raises(UpcallLatchedError, match="make sure gssproxy-py starts before nfsd"):
        await enabler.ensure_enabled()


@aio
async def test_enabler_without_shared_executors_makes_its_own(
    make_netns: NsFactory, netns_dir: str, tmp_path: Path
) -> None:
    name = make_netns()
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")
    enabler = UpcallEnabler(str(standin), netns=name, netns_dir=netns_dir, sleep=GatedSleep())
    res = await enabler.ensure_enabled()
    assert res.outcome is Outcome.ENABLED
    assert res.thread_inode == inode_map([name], netns_dir)[name]
    enabler.stop()


@aio
async def test_kernel_upcalls_for_all_and_named_namespaces(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str, tmp_path: Path
) -> None:
    a, b = make_netns(), make_netns()
    standin = tmp_path / "use-gss-proxy"
    standin.write_text("-1\n")
    config = Config(
        globals=GlobalSettings(use_gss_proxy_file=str(standin)),
        services=(
            Service(name="nfs", euid=0, mechs=(Mech.KRB5,), kernel_nfsd=True, netns_all=True),
        ),
    )
    upcalls = KernelUpcalls(executors=executors, netns_dir=netns_dir, sleep=GatedSleep())
    results = await upcalls.apply(config)
    inodes = inode_map([a, b], netns_dir)
    assert [(r.netns, r.outcome, r.thread_inode) for r in results] == [
        (None, Outcome.ENABLED, executors.own_inode),
        *sorted((n, Outcome.ENABLED, inodes[n]) for n in (a, b)),
    ]

    # Reload restricted to one name: the others are no longer retried.
    only_a = Config(
        globals=config.globals,
        services=(Service(name="nfs", euid=0, mechs=(Mech.KRB5,), kernel_nfsd=True, netns=(a,)),),
    )
    results = await upcalls.apply(only_a)
    assert [(r.netns, r.thread_inode) for r in results] == [(a, inodes[a])]
    assert list(upcalls.enablers) == [a]
    upcalls.stop()


def test_executor_for_a_peer_inode(
    make_netns: NsFactory, executors: NetnsExecutors, netns_dir: str
) -> None:
    name = make_netns()
    inode = inode_map([name], netns_dir)[name]
    assert executors.name_of(inode) == name
    assert executors.executor_for_inode(inode) is executors.executor_for(name)
    own = executors.executor_for(None)
    assert executors.executor_for_inode(None) is own
    assert executors.executor_for_inode(executors.own_inode) is own
    assert executors.executor_for_inode(1) is own  # no such named namespace


def test_prestart_puts_every_worker_in_the_namespace_up_front(
    make_netns: NsFactory, netns_dir: str
) -> None:
    name = make_netns()
    executors = NetnsExecutors(netns_dir=netns_dir, workers=3)
    try:
        assert executors.prestart(name) == 3
        inode = inode_map([name], netns_dir)[name]
        pool = executors.executor_for(name)
        seen = {pool.submit(thread_netns_inode).result(10) for _ in range(20)}
        assert seen == {inode}
    finally:
        executors.shutdown()


_DROP_SCRIPT = """
import concurrent.futures, os, sys
from gssproxy_py.netns import NetnsExecutors, thread_netns_inode
netns_dir, early, late = sys.argv[1:4]
ex = NetnsExecutors(netns_dir=netns_dir, workers=2)
ex.prestart(early)
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
ok = ex.executor_for(early).submit(thread_netns_inode).result(10) == ex.inode_of(early)
try:
    ex.executor_for(late).submit(thread_netns_inode).result(10)
    late_result = "entered"
except concurrent.futures.BrokenExecutor:
    late_result = "broken"
print(ok, late_result)
"""


def test_prestarted_workers_survive_dropping_privileges(
    make_netns: NsFactory, netns_dir: str
) -> None:
    # run_as_user drops CAP_SYS_ADMIN: only threads that entered before can work,
    # and a namespace first used afterwards fails closed. In a child process,
    # since the drop cannot be undone.
    early, late = make_netns(), make_netns()
    os.chmod(netns_dir, 0o755)  # like /run/netns
    proc = subprocess.run(
        [sys.executable, "-c", _DROP_SCRIPT, netns_dir, early, late],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout.split() == ["True", "broken"], proc.stderr
