"""Userproxy mode (`gssproxy-py -u`): the one service synthesised for the
invoking user, with no configuration file.

As gssproxy 0.9 does (gssproxy.conf(5), "userproxy mode"), the daemon runs
as an ordinary user and serves only that user: one service, `user-proxy`,
with `euid` the user's own, the krb5 mechanism, the user's own credentials,
`allow_client_ccache_sync`, and two worker threads. "The user's own
credentials" are the default ccache, keytab and client keytab libkrb5 names
for the user (`KRB5CCNAME` and friends included; the caller asks libkrb5,
see `server.krb5_defaults`), written into `cred_store`: without a `ccache`
there, every acquisition would get a private MEMORY ccache (as for a system
service) and never see the user's tickets. The socket is
`$XDG_RUNTIME_DIR/gssproxy/default.sock` unless `-s` names one; its directory
is created mode 0700, so no other user can even reach the socket.

Our addition: the credential-handle key file lives in
`$XDG_RUNTIME_DIR/gssproxy-py` (or next to the `-s` socket when there is no
runtime directory), so handles a client holds stay valid when the
socket-activated daemon exits after idling and is started again.

Pure: the caller passes the uid and the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gssproxy_py.config.model import Config, GlobalSettings, Mech, Service
from gssproxy_py.errors import ConfigError

SERVICE_NAME = "user-proxy"
#: gssproxy's userproxy mode runs two workers.
WORKER_THREADS = 2
SOCKET_DIR_NAME = "gssproxy"
SOCKET_NAME = "default.sock"
STATE_DIR_NAME = "gssproxy-py"
#: The socket directory: only the user may traverse it.
SOCKET_DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class UserProxyPaths:
    """Where a userproxy daemon listens and keeps its state."""

    socket: str
    state_dir: str


def userproxy_paths(socket: str | None, environ: Mapping[str, str]) -> UserProxyPaths:
    """The socket (`-s`, else under `$XDG_RUNTIME_DIR`) and the state directory.

    Raises ConfigError when neither `-s` nor `$XDG_RUNTIME_DIR` says where.
    """
    runtime = environ.get("XDG_RUNTIME_DIR") or None
    if runtime is not None and not os.path.isabs(runtime):
        raise ConfigError(f"XDG_RUNTIME_DIR is not an absolute path: {runtime!r}")
    if socket is None:
        if runtime is None:
            raise ConfigError("userproxy mode: XDG_RUNTIME_DIR is not set; name a socket with -s")
        socket = os.path.join(runtime, SOCKET_DIR_NAME, SOCKET_NAME)
    socket = os.path.normpath(socket)
    base = runtime if runtime is not None else os.path.dirname(os.path.abspath(socket))
    return UserProxyPaths(socket=socket, state_dir=os.path.join(base, STATE_DIR_NAME))


def userproxy_config(
    uid: int, paths: UserProxyPaths, credentials: Sequence[tuple[str, str]] = ()
) -> Config:
    """The configuration of a userproxy daemon running as `uid`.

    `credentials` are `cred_store` pairs (`ccache`, `keytab`,
    `client_keytab`) naming the user's own; a `%` in a name is kept literal.
    """
    store = tuple((key, value.replace("%", "%%")) for key, value in credentials)
    service = Service(
        name=SERVICE_NAME,
        euid=uid,
        mechs=(Mech.KRB5,),
        file="<userproxy>",
        cred_store=store,
        allow_client_ccache_sync=True,
    )
    settings = GlobalSettings(worker_threads=WORKER_THREADS, state_dir=paths.state_dir)
    return Config(globals=settings, services=(service,), files=())
