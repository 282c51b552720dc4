"""The gss layer's long-lived parts, and the one way they change: `reload`.

`GssEngine` is created once per daemon (by `program.gss_proxy_service`) and
outlives configuration reloads. It holds, each in its own module:

* the worker threads every blocking GSSAPI call runs in (an
  `executors.Executor` named `gss`), sized from
  `config.globals.worker_threads` and re-created when a reload changes it;
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

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from gssproxy_py.config.model import Config
from gssproxy_py.executors import Executor
from gssproxy_py.gss import api
from gssproxy_py.gss.credcache import TtlCache
from gssproxy_py.gss.credentials import Credentials
from gssproxy_py.gss.inline import InlineCalls
from gssproxy_py.gss.krb5cc import hold_profile
from gssproxy_py.gss.linux_creds import LinuxCreds
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
        self._executor = Executor("gss", self._workers)
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
        would never match again anyway), PKINIT failures, inline verdicts and
        linux_creds."""
        self.executor_for(config)
        self.credentials.forget()
        self.inline.forget()
        self.local_creds.clear()

    def close(self) -> None:
        """Stop the worker threads (queued work is cancelled) and drop cached creds."""
        with self._executor_lock:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.credentials.forget()

    # -- threads ------------------------------------------------------------------

    def executor_for(self, config: Config) -> Executor:
        """The threads for `config`'s `worker_threads` (made anew when it changed)."""
        wanted = max(1, config.globals.worker_threads)
        with self._executor_lock:
            if wanted != self._workers and not self._closed:
                # Work already queued finishes on the old pool.
                self._executor.shutdown(wait=False)
                self._executor = Executor("gss", wanted)
                self._workers = wanted
                self.credentials.resize(wanted)
            return self._executor

    async def run(
        self, config: Config, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self.executor_for(config).run(functools.partial(fn, *args, **kwargs))

    # -- mechanisms ---------------------------------------------------------------

    def mechs_known(self) -> bool:
        return self._mechs is not None

    def mechs(self) -> _Mechs:
        if self._mechs is None:
            self._mechs = api.describe_mechs()
        return self._mechs
