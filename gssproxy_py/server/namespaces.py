"""The daemon's network-namespace support: executors and the kernel upcall.

One `NamespaceSupport` per daemon owns the `NetnsExecutors` that the GSS
layer runs namespaced services' calls on (`gss.namespaced`) and the
`KernelUpcalls` that write `/proc/net/rpc/use-gss-proxy` for `kernel_nfsd`
services, in the daemon's namespace or in named ones. `serve` uses it so::

    support = NamespaceSupport(config)
    programs = load_programs(config, netns_executors=support.executors).programs
    ... sockets listen ...
    await support.start(config)     # prestart, then the upcall switches
    ... run_as_user drops privileges, "Initialization complete" ...
    await support.apply(config)     # on every successful reload
    support.close()                 # at shutdown

`start` comes after the sockets listen (writing `1` makes the kernel connect
at once) and before the privilege drop, for two reasons: the switch is a
root-only file, and `setns` needs CAP_SYS_ADMIN, so the executor threads of
every namespace the configuration names are started (and enter their
namespace) now, by `NetnsExecutors.prestart`. A namespace created later
cannot be entered by a daemon running as `run_as_user`; its calls fail.

Nothing here stops the daemon: a latched `0` is logged as an error with the
remedy (by the enabler), a missing switch or namespace is retried in the
background every 10 s, and a namespace that cannot be entered is logged.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Sequence

from gssproxy_py.config.model import Config
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.netns.named import NETNS_DIR, configured_names, list_named
from gssproxy_py.netns.upcall import AttemptResult, KernelUpcalls

__all__ = ["NamespaceSupport", "prestart_targets"]

_log = logging.getLogger(__name__)


def prestart_targets(config: Config, named: Sequence[str] = ()) -> tuple[str | None, ...]:
    """The namespaces whose executor threads must exist before the drop.

    Pure. None (the daemon's own: the upcall enabler's writes, and the calls
    of `netns = all` services from unnamed namespaces) when some service is
    namespaced or `kernel_nfsd`; then every name a service lists, and for
    `netns = all` every name in `named` (those existing now). Sorted, own
    first.
    """
    services = config.services
    if not any(s.netns or s.netns_all or s.kernel_nfsd for s in services):
        return ()
    names = set(configured_names(services))
    if any(s.netns_all for s in services):
        names.update(named)
    return (None, *sorted(names))


class NamespaceSupport:
    """Namespace executors and kernel upcall switches (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        *,
        netns_dir: str = NETNS_DIR,
        upcalls: KernelUpcalls | None = None,
    ) -> None:
        self.executors = NetnsExecutors(
            netns_dir=netns_dir, workers=max(1, config.globals.worker_threads)
        )
        self._netns_dir = netns_dir
        self.upcalls = (
            upcalls
            if upcalls is not None
            else KernelUpcalls(executors=self.executors, netns_dir=netns_dir, log=_log)
        )

    async def start(self, config: Config) -> tuple[AttemptResult, ...]:
        """Start the namespaces' executor threads, then enable the upcall."""
        self.prestart(config)
        return await self.apply(config)

    def prestart(self, config: Config) -> None:
        """Start the executor threads of every namespace `config` names. Blocking
        for as long as starting a few threads takes; failures are logged."""
        named: Sequence[str] = ()
        if any(s.netns_all for s in config.services):
            try:
                named = list_named(self._netns_dir)
            except Exception as exc:
                _log.error("cannot list the network namespaces in %s: %s", self._netns_dir, exc)
        for netns in prestart_targets(config, named):
            where = "the daemon's netns" if netns is None else f"netns {netns}"
            try:
                threads = self.executors.prestart(netns)
            except (
                NetnsError,
                concurrent.futures.BrokenExecutor,
                TimeoutError,
                OSError,
            ) as exc:
                # NetnsNotFoundError included: a service for a namespace that
                # does not exist yet matches nobody until it does.
                _log.warning("executor threads for %s not started: %s", where, exc)
                continue
            _log.debug("%d executor threads started in %s", threads, where)

    async def apply(self, config: Config) -> tuple[AttemptResult, ...]:
        """Enable the upcall wherever `config`'s kernel_nfsd services need it
        (one attempt now, retries in the background); never raises."""
        try:
            return await self.upcalls.apply(config)
        except Exception:
            _log.exception("use-gss-proxy: enabling the kernel upcall failed")
            return ()

    def close(self) -> None:
        """Stop retrying and shut the executors down."""
        self.upcalls.stop()
        self.executors.shutdown(wait=False)
