"""The gss layer's long-lived parts, and the one way they change: `reload`.

`GssEngine` is created once per daemon (by `program.gss_proxy_service`) and
outlives configuration reloads. It holds, each in its own module:

* the worker threads every blocking GSSAPI call runs in: one
  `executors.Executor` per service (`gss-NAME`), each of
  `config.globals.worker_threads` threads started on first use, so a
  service whose KDC hangs only takes its own threads (issue 14, item 1);
  re-created when a reload changes the count, dropped with their service;
  threads stuck past the call deadline are written off and replaced
  (`gss.stalls`);
* `credentials`: acquisition with its cache, sealing with the handle keys,
  pooled credential objects, PKINIT (`gss.credentials`, `gss.sealing`);
* `inline`: which calls are tried on the event loop, and the guard that
  sends a service back to the threads (`gss.inline`);
* two small caches of its own: the mechanism descriptions (INDICATE_MECHS)
  and the kernel's linux_creds per initiator name (`LOCAL_CREDS_TTL`).

`reload(config)` is the only way any of it changes after start-up; `close()`
the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from gssproxy_py.config.model import Config, Service
from gssproxy_py.executors import Executor
from gssproxy_py.gss import api
from gssproxy_py.gss.credcache import STAMPS, TtlCache
from gssproxy_py.gss.credentials import Credentials
from gssproxy_py.gss.inline import InlineCalls
from gssproxy_py.gss.krb5cc import hold_profile
from gssproxy_py.gss.linux_creds import LinuxCreds
from gssproxy_py.gss.stalls import StallWatch
from gssproxy_py.gss.status import ENOENT, GSS_S_BAD_MECH, GssFailure
from gssproxy_py.proto.gss_proxy import GssxOIDSet
from gssproxy_py.vocab import oids

__all__ = ["LOCAL_CREDS_TTL", "GssEngine", "pick_mech"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: How long a linux_creds lookup (local name, uid, gid, groups) is reused.
LOCAL_CREDS_TTL = 15.0

_Mechs = tuple[tuple[api.MechDescription, ...], tuple[api.AttrDescription, ...]]


def pick_mech(desired: GssxOIDSet) -> bytes:
    """krb5 for an empty set or one naming a krb5 OID; anything else is BAD_MECH."""
    if not desired:
        return oids.KRB5
    for mech in desired:
        if mech in oids.KRB5_FAMILY:
            return oids.KRB5
    raise GssFailure(GSS_S_BAD_MECH, ENOENT, "only the krb5 mechanism is served")


class GssEngine:
    """State shared by all gss procedures (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self._executor_lock = threading.Lock()
        self._workers = max(1, config.globals.worker_threads)
        #: one executor per service name
        self._executors: dict[str, Executor] = {}
        self.stalls = StallWatch()
        self._closed = False
        self.credentials = Credentials(self._workers)
        self.inline = InlineCalls()
        #: linux_creds per exported initiator name: (local user, creds)
        self.local_creds: TtlCache[tuple[bytes, LinuxCreds]] = TtlCache(LOCAL_CREDS_TTL)
        self._mechs: _Mechs | None = None
        # Keeps libkrb5 from parsing krb5.conf again in every GSSAPI call.
        hold_profile()

    # -- lifetime ---------------------------------------------------------------

    def reload(self, config: Config) -> None:
        """A new configuration is in force: resize the threads, forget
        credentials acquired under the old service definitions (their keys
        would never match again anyway), PKINIT failures, inline verdicts,
        linux_creds and the files' stamps (keytabs and the handle key file
        are stat()ed again at once)."""
        STAMPS.forget()
        with self._executor_lock:
            names = {s.name for s in config.services}
            if max(1, config.globals.worker_threads) != self._workers:
                names = set()  # every executor is made anew at its next call
            gone = [self._executors.pop(n) for n in list(self._executors) if n not in names]
            if not names:
                self._workers = max(1, config.globals.worker_threads)
                self.credentials.resize(self._workers)
        for executor in gone:
            self.stalls.forget(executor)
            executor.shutdown(wait=False)
        self.credentials.forget()
        self.inline.forget()
        self.local_creds.clear()

    def close(self) -> None:
        """Stop the worker threads (queued work is cancelled) and drop cached creds."""
        with self._executor_lock:
            self._closed = True
            executors, self._executors = list(self._executors.values()), {}
        for executor in executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self.credentials.forget()

    # -- threads ------------------------------------------------------------------

    def executor_for(self, config: Config, service: Service) -> Executor:
        """The threads of `service` under `config`: made on first use, anew
        when `worker_threads` changed; those of services no longer
        configured are shut down (work already queued finishes on them)."""
        wanted = max(1, config.globals.worker_threads)
        retired: list[Executor] = []
        with self._executor_lock:
            if wanted != self._workers and not self._closed:
                retired = list(self._executors.values())
                self._executors = {}
                self._workers = wanted
                self.credentials.resize(wanted)
            executor = self._executors.get(service.name)
            if executor is None:
                names = {s.name for s in config.services}
                for gone in [n for n in self._executors if n not in names]:
                    retired.append(self._executors.pop(gone))
                executor = Executor(f"gss-{service.name}", wanted)
                if not self._closed:
                    self._executors[service.name] = executor
        for old in retired:
            self.stalls.forget(old)
            old.shutdown(wait=False)
        return executor

    async def run(
        self,
        config: Config,
        service: Service,
        fn: Callable[[], _T],
        executor: Executor | None = None,
    ) -> _T:
        """`fn()` on `executor` (default: the service's own threads), after
        giving back threads stuck past the call deadline."""
        if executor is None:
            executor = self.executor_for(config, service)
        self.stalls.check(executor, service.name, config.globals.call_timeout)
        return await executor.run(fn)

    # -- mechanisms ---------------------------------------------------------------

    def mechs_known(self) -> bool:
        return self._mechs is not None

    def mechs(self) -> _Mechs:
        if self._mechs is None:
            self._mechs = api.describe_mechs()
        return self._mechs
