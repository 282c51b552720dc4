"""TLS and VPN programs log in with a key that stays on the token, through
p11-kit-client.so and the real daemon holding the PIN (no consumer is given
it): curl presents a client certificate to `openssl s_server` through the
libp11 engine; an openvpn client completes its TLS handshake with an
openvpn server with `--pkcs11-providers p11-kit-client.so`; wpa_supplicant
authenticates with EAP-TLS to hostapd's internal EAP server over a veth
pair between two network namespaces the test creates.

Each server trusts only a CA the test makes (tests/support/tls_pki.py),
which issues the client certificate for the token's public key; the
servers demand a client certificate, so success means the token's key
signed, and the daemon's audit line names the program that asked.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.p11kit_client import INTEGRATION_MARKS
from tests.support.p11kit_consumers import Setup, engine_env, free_port, run, wait_listening
from tests.support.softhsm import MAIN, shared_softhsm
from tests.support.tls_pki import Pki, make_pki

pytestmark = INTEGRATION_MARKS

KEYS = ("rsa", "p256")
#: how s_server names the signature TLS 1.3 made with each key
PEER_SIGNATURE = {"rsa": "RSA-PSS", "p256": "ECDSA"}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def _uri(label: str) -> str:
    return f"pkcs11:token={MAIN.label};object={label};type=private"


def _audited(s: Setup, program: str) -> None:
    """The daemon logged a signature by `program` with a key of the service."""
    lines = [line for line in s.log().splitlines() if "p11kit sign:" in line]
    assert any(f"program {program} " in line for line in lines), s.log()[-3000:]


@pytest.mark.parametrize("label", KEYS)
def test_curl_logs_in_to_a_tls_server_with_the_token_key(
    p11kit_setup: Setup, pki: Pki, label: str
) -> None:
    s = p11kit_setup
    cert = pki.client_cert(f"{label}-client", shared_softhsm().keys[label].spki)
    port = free_port()
    server = subprocess.Popen(
        [
            "openssl",
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            str(pki.server_cert),
            "-key",
            str(pki.server_key),
            "-CAfile",
            str(pki.ca_cert),
            "-Verify",
            "1",
            "-verify_return_error",
            "-www",
        ],
        env=s.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_listening(port, server, "openssl s_server")
        r = run(
            [
                "curl",
                "--silent",
                "--show-error",
                "--max-time",
                "30",
                "--cacert",
                str(pki.ca_cert),
                "--cert",
                str(cert),
                "--engine",
                "pkcs11",
                "--key-type",
                "ENG",
                "--key",
                _uri(label),
                f"https://127.0.0.1:{port}/",
            ],
            engine_env(s),
        )
    finally:
        server.terminate()
        server.communicate(timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    # s_server -www shows the verified client certificate and how the
    # client signed its CertificateVerify
    page = r.stdout
    assert "Verify return code: 0 (ok)" in page, page
    assert f"Peer signature type: {PEER_SIGNATURE[label]}" in page, page
    assert "Client certificate" in page and cert.read_text().strip() in page, page
    _audited(s, "/usr/bin/curl")
