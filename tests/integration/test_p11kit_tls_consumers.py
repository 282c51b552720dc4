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

import hashlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.p11kit_client import CLIENT, INTEGRATION_MARKS
from tests.support.p11kit_consumers import ENGINE, Setup, engine_env, free_port, run, wait_listening
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


def _need(program: str, package: str) -> None:
    if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
        pytest.fail(f"{program} is missing: `make deps` installs the Debian package {package}")


def _audited(s: Setup, program: str) -> None:
    """The daemon logged a signature by `program` with a key of the service."""
    lines = [line for line in s.log().splitlines() if "p11kit sign:" in line]
    assert any(f"program {program} " in line for line in lines), s.log()[-3000:]


def _read_until(proc: subprocess.Popen[str], marker: str) -> str:
    """What `proc` printed up to the line holding `marker` (all of its
    output if it exits first, or once 30 s pass)."""
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    seen = ""
    deadline = time.monotonic() + 30
    while marker not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            chunk = proc.stdout.read()
            if not chunk and proc.poll() is not None:
                break
            seen += chunk or ""
    return seen


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


def _show_pkcs11_ids(s: Setup) -> dict[str, str]:
    """`openvpn --show-pkcs11-ids p11-kit-client.so`: serialized id by the
    certificate's subject DN."""
    r = run(["openvpn", "--show-pkcs11-ids", CLIENT], s.env)
    assert r.returncode == 0, r.stdout + r.stderr
    ids: dict[str, str] = {}
    subject = ""
    for line in r.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "DN":
            subject = value.strip()
        elif key == "Serialized id":
            ids[subject] = value.strip()
    return ids


@pytest.mark.parametrize("label", KEYS)
def test_openvpn_client_completes_its_tls_handshake_with_the_token_key(
    p11kit_setup: Setup, pki: Pki, label: str
) -> None:
    s = p11kit_setup
    _need("openvpn", "openvpn")
    ids = _show_pkcs11_ids(s)
    assert set(ids) == {"CN=rsa", "CN=p256"}, ids
    # openvpn presents the token's own certificate (its issuer's key is gone):
    # the server pins it by its SHA-256 fingerprint, openvpn 2.6's way
    # to trust a peer without a CA
    token_cert = shared_softhsm().keys[label].certificate
    assert token_cert is not None
    fingerprint = hashlib.sha256(token_cert).hexdigest().upper()
    port = free_port()
    common = ["--dev", "null", "--verb", "3"]
    server = subprocess.Popen(
        [
            "openvpn",
            *common,
            "--proto",
            "tcp-server",
            "--local",
            "127.0.0.1",
            "--lport",
            str(port),
            "--tls-server",
            "--peer-fingerprint",
            ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)),
            "--dh",
            "none",
            "--cert",
            str(pki.server_cert),
            "--key",
            str(pki.server_key),
        ],
        env=s.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # a probe connection would be the one peer this p2p server takes
        started = _read_until(server, "Listening for incoming TCP connection")
        assert "Listening for incoming TCP connection" in started, started
        client = subprocess.Popen(
            [
                "openvpn",
                *common,
                "--proto",
                "tcp-client",
                "--remote",
                "127.0.0.1",
                str(port),
                "--tls-client",
                "--ca",
                str(pki.ca_cert),
                "--pkcs11-providers",
                CLIENT,
                "--pkcs11-id",
                ids[f"CN={label}"],
            ],
            env=s.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out = _read_until(client, "Initialization Sequence Completed")
        finally:
            client.terminate()
            rest, _ = client.communicate(timeout=10)
    finally:
        server.terminate()
        server_out, _ = server.communicate(timeout=10)
    assert "Initialization Sequence Completed" in out, out + rest + server_out
    assert f"VERIFY OK: depth=0, CN={label}" in server_out, server_out
    _audited(s, "/usr/sbin/openvpn")


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    assert r.returncode == 0, (args, r.stderr)


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """Two network namespaces joined by a veth pair (`eth-auth` in the
    first, `eth-supp` in the second, both up), deleted after the test."""
    tag = f"gpy{os.getpid()}"
    auth, supp = f"{tag}-auth", f"{tag}-supp"
    try:
        for ns in (auth, supp):
            _ip("netns", "add", ns)
        _ip(
            "-n", auth, "link", "add", "eth-auth", "type", "veth", "peer", "eth-supp", "netns", supp
        )
        _ip("-n", auth, "link", "set", "eth-auth", "up")
        _ip("-n", supp, "link", "set", "eth-supp", "up")
        yield auth, supp
    finally:
        for ns in (auth, supp):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _hostapd_conf(d: Path, pki: Pki) -> Path:
    """A wired authenticator: 802.1X on eth-auth, hostapd's own EAP server
    taking EAP-TLS from any identity whose certificate the test CA issued."""
    (d / "eap_users").write_text("* TLS\n")
    conf = d / "hostapd.conf"
    conf.write_text(
        "interface=eth-auth\ndriver=wired\nieee8021x=1\neapol_version=2\n"
        f"eap_server=1\neap_user_file={d}/eap_users\nca_cert={pki.ca_cert}\n"
        f"server_cert={pki.server_cert}\nprivate_key={pki.server_key}\n"
        f"ctrl_interface={d}/hostapd-ctrl\nlogger_stdout=-1\nlogger_stdout_level=1\n"
    )
    return conf


def _wpa_conf(d: Path, pki: Pki, label: str, cert: Path) -> Path:
    """A wired supplicant doing EAP-TLS with the token's key by its URI
    through the libp11 engine on p11-kit-client.so; no PIN anywhere."""
    conf = d / "wpa_supplicant.conf"
    conf.write_text(
        f"ctrl_interface={d}/wpa-ctrl\nap_scan=0\n"
        f"pkcs11_engine_path={ENGINE}\npkcs11_module_path={CLIENT}\n"
        "network={\n  key_mgmt=IEEE8021X\n  eap=TLS\n  eapol_flags=0\n"
        f'  identity="{label}-client"\n  ca_cert="{pki.ca_cert}"\n'
        f'  client_cert="{cert}"\n  engine=1\n  engine_id="pkcs11"\n'
        f'  key_id="{_uri(label)}"\n}}\n'
    )
    return conf


@pytest.mark.parametrize("label", KEYS)
def test_wpa_supplicant_authenticates_with_eap_tls_and_the_token_key(
    p11kit_setup: Setup, pki: Pki, veth: tuple[str, str], label: str
) -> None:
    s = p11kit_setup
    _need("wpa_supplicant", "wpasupplicant")
    _need("hostapd", "hostapd")
    auth, supp = veth
    d = s.tmp / "eap"
    d.mkdir()
    cert = pki.client_cert(f"{label}-client", shared_softhsm().keys[label].spki)
    hostapd = subprocess.Popen(
        ["ip", "netns", "exec", auth, "hostapd", "-d", str(_hostapd_conf(d, pki))],
        env=s.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = _read_until(hostapd, "eth-auth: AP-ENABLED")
        assert "AP-ENABLED" in started, started
        supplicant = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                supp,
                "wpa_supplicant",
                "-D",
                "wired",
                "-i",
                "eth-supp",
                "-c",
                str(_wpa_conf(d, pki, label, cert)),
            ],
            env=s.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            out = _read_until(supplicant, "CTRL-EVENT-EAP-SUCCESS")
            status = run(
                [
                    "ip",
                    "netns",
                    "exec",
                    supp,
                    "wpa_cli",
                    "-p",
                    f"{d}/wpa-ctrl",
                    "-i",
                    "eth-supp",
                    "status",
                ],
                s.env,
            ).stdout
        finally:
            supplicant.terminate()
            rest, _ = supplicant.communicate(timeout=10)
    finally:
        hostapd.terminate()
        hostapd_out, _ = hostapd.communicate(timeout=10)
    assert "CTRL-EVENT-EAP-SUCCESS" in out, out + rest + hostapd_out
    assert "Supplicant PAE state=AUTHENTICATED" in status and "EAP state=SUCCESS" in status, status
    # hostapd's EAP server verified the certificate the supplicant proved
    verified = f"ca_cert_verify=1 depth=0 buf='/CN={label}-client'"
    assert f"preverify_ok=1 err=0 (ok) {verified}" in hostapd_out, hostapd_out
    _audited(s, "/usr/sbin/wpa_supplicant")
