"""TOKEN_SIGN through the real daemon process (`python -m gssproxy_py.server.cli`),
as the distro unit runs it: program 0x2F5E5001 is served on the same socket as
400112, the PIN comes from the kernel keyring the daemon inherited, and a
signature made through `gssproxy-py-sign` verifies with openssl. The daemon's
log never holds the PIN."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gssproxy_py.client import GssProxyClient
from gssproxy_py.testing.paths import REPO_ROOT
from tests.support.softhsm import MAIN, put_pins_in_session_keyring, shared_softhsm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/softhsm/libsofthsm2.so")
        or shutil.which("softhsm2-util") is None,
        reason="SoftHSM2 is not installed",
    ),
]

SIGN_CLI = str(REPO_ROOT / ".venv" / "bin" / "gssproxy-py-sign")


def test_sign_through_the_daemon_process(daemon_factory: object, tmp_path: Path) -> None:
    hsm = shared_softhsm()
    put_pins_in_session_keyring({"gpytest-real-daemon": MAIN.pin})

    def render(paths: object) -> str:
        return f"""[gssproxy]
  debug_level = 2
  state_dir = {paths.workdir}/state
[service/signer]
  mechs = krb5
  euid = 0
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  pkcs11_pin = keyring:gpytest-real-daemon
"""

    daemon = daemon_factory("py", render, env=hsm.env(), debug_level=2)  # type: ignore[operator]
    sock = str(daemon.socket)
    # the same socket still serves GSS-Proxy
    with GssProxyClient(sock) as gss:
        assert gss.indicate_mechs().status.major_status == 0
    env = {**os.environ, "GSSPROXY_SOCKET": sock}
    listing = subprocess.run(
        [SIGN_CLI, "--list", "--pubkey-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    uris = [line.split("\t")[0] for line in listing.stdout.splitlines()]
    assert len(uris) == 1 and "object=p256" in uris[0]
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed by a key that never left the token")
    sig = tmp_path / "sig"
    r = subprocess.run(
        [SIGN_CLI, "--key", uris[0], "--mech", "ecdsa-sha256", "--in", str(msg), "--out", str(sig)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    verify = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(tmp_path / "p256.pub.pem"),
            "-signature",
            str(sig),
            str(msg),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.stdout.strip() == "Verified OK", verify.stdout + verify.stderr
    daemon.stop()
    assert MAIN.pin not in daemon.log_text()
