"""Environment for GSSAPI clients that should go through the gssproxy interposer.

MIT libgssapi loads proxymech.so (Debian's gssproxy package) as an interposer
mechanism when it is named in the mech config; the plugin then forwards calls to
the daemon socket in GSSPROXY_SOCKET if GSS_USE_PROXY=yes.  We write a private
mech.conf and point GSS_MECH_CONFIG at it (which *replaces* /etc/gss/mech.d) so
the tests do not depend on the system-wide file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from gssproxy_py.testing.paths import PROXYMECH_SO

GSSPROXY_INTERPOSER_OID = "2.16.840.1.113730.3.8.15.1"

Behavior = Literal["LOCAL_ONLY", "LOCAL_FIRST", "REMOTE_FIRST", "REMOTE_ONLY"]


def write_mech_conf(workdir: str | os.PathLike[str]) -> Path:
    """Write workdir/mech.conf naming proxymech.so as an interposer.

    World-readable: the clients reading it run as other uids.
    """
    path = Path(workdir).absolute() / "mech.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"gssproxy_v1 {GSSPROXY_INTERPOSER_OID} {PROXYMECH_SO} <interposer>\n", encoding="utf-8"
    )
    path.chmod(0o644)
    return path


def interposer_env(
    socket_path: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    behavior: Behavior = "REMOTE_ONLY",
) -> dict[str, str]:
    """Env vars that make a GSSAPI client use the daemon at socket_path.

    Also:
    - KRB5_KTNAME=FILE:/nonexistent, so a "works" result cannot come from a
      keytab the client could read itself;
    - a private MEMORY ccache: acquiring named creds through the interposer
      stores an `X-GSSPROXY` entry in the default ccache, which would overwrite
      e.g. alice's TGT if the ccache were a shared FILE.
    """
    return {
        "GSS_USE_PROXY": "yes",
        "GSSPROXY_SOCKET": str(Path(socket_path).absolute()),
        "GSSPROXY_BEHAVIOR": behavior,
        "GSS_MECH_CONFIG": str(write_mech_conf(workdir)),
        "KRB5_KTNAME": "FILE:/nonexistent",
        "KRB5CCNAME": f"MEMORY:gpytest-{secrets.token_hex(4)}",
    }
