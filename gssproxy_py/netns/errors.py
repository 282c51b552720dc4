"""Errors of the namespace and kernel-upcall layer.

All are `LocalError`s: a missing namespace, a failed `setns` or a kernel that
latched legacy mode are the environment's or the administrator's business,
never the peer's.
"""

from __future__ import annotations

from gssproxy_py.errors import LocalError


class NetnsError(LocalError):
    """A network namespace could not be found, read or entered."""


class NetnsNotFoundError(NetnsError):
    """A named network namespace does not exist (no /run/netns/NAME)."""


class UpcallError(LocalError):
    """The kernel's `use-gss-proxy` switch could not be set."""


class UpcallLatchedError(UpcallError):
    """nfsd latched legacy mode (rpc.svcgssd) before we enabled gss-proxy.

    Only a reboot or a new network namespace undoes that, so retrying is
    pointless; the message says what to do.
    """
