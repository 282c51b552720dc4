"""Test-side helpers shared by tests/integration/test_interposer_*.py (not a client program).

Lives next to the client programs so the test modules can import it the
same way they import `ccfile`: gssproxy.conf rendering that works for both
daemons, the interposer environment for a `gssops.py` client, a local
acceptor, and a relay that establishes a context between them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gssproxy_py.testing.daemon import DaemonProcess
from gssproxy_py.testing.interposer import Behavior, interposer_env
from gssproxy_py.testing.peer import PeerProcess, client_argv, peer_env
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.testing.users import LocalUser


def service_section(name: str, options: Mapping[str, str | int | list[str]]) -> str:
    """One `[service/NAME]`; a list value repeats the key (cred_store)."""
    lines = [f"[service/{name}]"]
    for key, value in options.items():
        lines.extend(f"  {key} = {v}" for v in (value if isinstance(value, list) else [value]))
    return "\n".join(lines) + "\n"


def render(*services: str, debug_level: int = 1) -> Callable[[Any], str]:
    """gssproxy.conf text for the daemon fixture (a callable of its paths)."""

    def text(paths: Any) -> str:
        # The C daemon drops -d/--debug-level once it reads a config without
        # debug_level, and its milestone lines are debug output. It ignores
        # state_dir (ours keeps the handle key file there).
        head = f"[gssproxy]\n  debug_level = {debug_level}\n  state_dir = {paths.workdir}/state\n\n"
        return head + "\n".join(services)

    return text


def reconfigure(daemon: DaemonProcess, *services: str, debug_level: int = 1) -> None:
    """Rewrite the daemon's config and SIGHUP it (waits for the reload)."""
    text = render(*services, debug_level=debug_level)(SimpleNamespace(workdir=daemon.config.parent))
    daemon.config.write_text(text)
    daemon.reload()


def user_dir(parent: Path, user: LocalUser) -> Path:
    """A fresh directory owned by `user` (mode 0700), for its ccaches."""
    path = Path(tempfile.mkdtemp(prefix=f"{user.name}-", dir=parent))
    os.chown(path, user.uid, user.gid)
    path.chmod(0o700)
    return path


def client_env(
    realm_env: Mapping[str, str],
    socket: Path,
    ccache: str,
    behavior: Behavior = "REMOTE_FIRST",
) -> dict[str, str]:
    """Environment of a client going through the interposer to `socket`."""
    return peer_env(
        realm_env, interposer_env(socket, socket.parent, behavior), {"KRB5CCNAME": ccache}
    )


def gssops(env: Mapping[str, str], user: LocalUser | None) -> PeerProcess:
    return PeerProcess(client_argv("gssops.py", "--serve"), env, user=user)


def acceptor(realm_env: Mapping[str, str], keytab: Path) -> PeerProcess:
    """A local acceptor with `keytab`, not using any daemon (runs as root)."""
    return PeerProcess(
        client_argv("accept.py", "--serve"),
        peer_env(realm_env, {"KRB5_KTNAME": f"FILE:{keytab}", "KRB5CCNAME": "MEMORY:acceptor"}),
    )


def establish(client: PeerProcess, acc: PeerProcess, target: str, **init: Any) -> dict[str, Any]:
    """init (gssops client) <-> accept (accept.py); returns the acceptor's final reply."""
    first = client.call("init", ctx="c", target=target, **init)
    accepted = acc.call("step", token=first["token"])
    assert accepted["complete"], accepted
    if accepted["token"] is not None:
        final = client.call("init", ctx="c", target=target, token=accepted["token"])
        assert final["complete"], final
    return accepted


def klist(realm: StandardRealm, ccache: str) -> str:
    proc = subprocess.run(
        ["klist", "-c", ccache],
        env={**os.environ, **realm.env()},
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout + proc.stderr


def tgs_requests(kdc_log: Path, server: str) -> int:
    """TGS requests for `server` the KDC has logged so far."""
    text = kdc_log.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "TGS_REQ" in line and f"for {server}" in line)
