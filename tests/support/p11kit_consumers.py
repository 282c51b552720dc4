"""What the tests of real PKCS#11 consumers through p11-kit-client.so share:
`Setup` (the daemon serving the p11-kit socket, the consumers' environment
without SOFTHSM2_CONF or any PIN), a runner, the keys' public halves read
back through the client, a signature check and a free loopback port.
The fixture that starts the daemon is `p11kit_setup` in
tests/integration/conftest.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from gssproxy_py.testing.daemon import DaemonPaths
from tests.support.p11kit_client import CLIENT

ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"


def run(argv: list[str], env: dict[str, str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        **kw,  # type: ignore[call-overload]
    )


class Setup:
    def __init__(self, daemon: object, paths: DaemonPaths, tmp: Path, uid1: int) -> None:
        self.daemon = daemon
        self.sock = str(paths.workdir / "p11.sock")
        self.tmp = tmp
        self.env = {
            **os.environ,
            "P11_KIT_SERVER_ADDRESS": f"unix:path={self.sock}",
            "OPENSSL_CONF": "/dev/null",
        }
        self.env.pop("SOFTHSM2_CONF", None)  # the consumers never see the token
        self.uid1 = uid1

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(["pkcs11-tool", "--module", CLIENT, *args], self.env)

    def log(self) -> str:
        return self.daemon.log_text()  # type: ignore[attr-defined,no-any-return]


def pubkeys(s: Setup) -> dict[str, Path]:
    out = {}
    for name, key_id in (("rsa", "01"), ("p256", "02")):
        der = s.tmp / f"{name}.der"
        r = s.tool("--read-object", "--type", "pubkey", "--id", key_id, "-o", str(der))
        assert r.returncode == 0, r.stderr
        pem = s.tmp / f"{name}.pem"
        subprocess.run(
            ["openssl", "pkey", "-pubin", "-inform", "DER", "-in", der, "-out", pem], check=True
        )
        out[name] = pem
    return out


def verified(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert "Verified OK" in r.stdout + r.stderr or "Signature Verified Successfully" in r.stdout, (
        r.stdout + r.stderr
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def engine_env(s: Setup) -> dict[str, str]:
    """The consumers' environment with an OpenSSL configuration that loads
    the libp11 engine (`pkcs11`) on p11-kit-client.so: what curl and openssl
    read to find the token (wpa_supplicant names engine and module in its
    own configuration)."""
    conf = s.tmp / "engine.cnf"
    conf.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
        "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n"
        f"dynamic_path = {ENGINE}\nMODULE_PATH = {CLIENT}\ninit = 0\n"
    )
    return {**s.env, "OPENSSL_CONF": str(conf)}


def wait_listening(port: int, proc: subprocess.Popen[str], what: str) -> None:
    """Return once something accepts on 127.0.0.1:`port`; fail if `proc`
    (the server the test started) exits first or 20 s pass."""
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None, f"{what} exited: {proc.communicate()}"
        assert time.monotonic() < deadline, f"{what} did not start"
        time.sleep(0.1)
