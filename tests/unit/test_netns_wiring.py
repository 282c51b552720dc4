"""How the server and the GSS layer use the namespace executors, without namespaces:
which namespaces are started before the privilege drop, and which calls run
on a namespace executor instead of the engine's threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.config.model import Config, GlobalSettings, Mech, Service
from gssproxy_py.config.peer import Peer
from gssproxy_py.gss.namespaced import NamespacedCalls, is_namespaced
from gssproxy_py.netns import NetnsError, NetnsExecutors
from gssproxy_py.server.namespaces import prestart_targets


def svc(name: str, **options: object) -> Service:
    return Service(name=name, euid=0, mechs=(Mech.KRB5,), **options)  # type: ignore[arg-type]


def config(*services: Service, workers: int = 2) -> Config:
    return Config(globals=GlobalSettings(worker_threads=workers), services=services)


def test_prestart_targets() -> None:
    assert prestart_targets(config(svc("plain"))) == ()
    # The enabler writes from the daemon's own namespace executor.
    assert prestart_targets(config(svc("nfs", kernel_nfsd=True))) == (None,)
    named = config(svc("a", netns=("red", "blue")), svc("b", netns=("blue",)))
    assert prestart_targets(named, ("green",)) == (None, "blue", "red")
    everywhere = config(svc("all", netns_all=True), svc("a", netns=("red",)))
    assert prestart_targets(everywhere, ("green", "red")) == (None, "green", "red")


@pytest.fixture
def executors(tmp_path: Path) -> Iterator[NetnsExecutors]:
    ex = NetnsExecutors(netns_dir=str(tmp_path))  # no named namespaces at all
    yield ex
    ex.shutdown()


def peer(inode: int | None) -> Peer:
    return Peer(pid=1, uid=0, gid=0, program=None, netns_inode=inode)


def test_only_namespaced_services_from_other_namespaces_leave_the_engine(
    executors: NetnsExecutors,
) -> None:
    calls = NamespacedCalls(executors)
    cfg = config()
    plain, named, everywhere = svc("p"), svc("n", netns=("red",)), svc("a", netns_all=True)
    assert not is_namespaced(plain) and is_namespaced(named) and is_namespaced(everywhere)
    other = executors.own_inode + 1
    assert calls.executor_for(plain, peer(other), cfg) is None
    # The daemon's own namespace, or an unknown one: the engine's threads.
    assert calls.executor_for(named, peer(executors.own_inode), cfg) is None
    assert calls.executor_for(everywhere, peer(None), cfg) is None
    # Another namespace without a /run/netns name: the daemon's own executor.
    assert calls.executor_for(everywhere, peer(other), cfg) is executors.executor_for(None)
    calls.close()  # shared executors are the server's: still usable
    assert executors.executor_for(None).submit(int, "3").result(10) == 3


def test_without_shared_executors_the_program_makes_and_closes_its_own() -> None:
    calls = NamespacedCalls()
    cfg = config(workers=3)
    own = calls.executors(cfg)
    assert calls.executors(cfg) is own
    assert calls.executor_for(svc("a", netns_all=True), peer(own.own_inode + 1), cfg) is not None
    calls.close()
    with pytest.raises(NetnsError):
        own.executor_for(None)
