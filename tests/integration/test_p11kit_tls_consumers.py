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
import shutil
import subprocess
import tempfile
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


class _Program:
    """A server or client the test started, stdout and stderr merged into a
    file (a pipe nobody drains while another program runs could fill and
    stall it; hostapd -d writes a lot); stopped (SIGTERM) when its `with`
    block ends, `output` then holds all it wrote."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed by __exit__)
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.output = ""

    def _read(self) -> str:
        self._log.seek(0)
        self.output = self._log.read()
        return self.output

    def read_until(self, marker: str) -> bool:
        """Wait until `marker` is in its output (True), or until it exits
        or 30 s pass (False)."""
        deadline = time.monotonic() + 30
        while marker not in self._read():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return marker in self._read()
            time.sleep(0.1)
        return True

    def __enter__(self) -> _Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self._read()
        self._log.close()


@pytest.mark.parametrize("label", KEYS)
def test_curl_logs_in_to_a_tls_server_with_the_token_key(
    p11kit_setup: Setup, pki: Pki, label: str
) -> None:
    s = p11kit_setup
    cert = pki.client_cert(f"{label}-client", shared_softhsm().keys[label].spki)
    port = free_port()
    with _Program(
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
        s.env,
    ) as server:
        wait_listening(port, server.proc, "openssl s_server")
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
    with _Program(
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
        s.env,
    ) as server:
        # a probe connection would be the one peer this p2p server takes
        assert server.read_until("Listening for incoming TCP connection"), server.output
        with _Program(
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
            s.env,
        ) as client:
            client.read_until("Initialization Sequence Completed")
    assert "Initialization Sequence Completed" in client.output, client.output + server.output
    assert f"VERIFY OK: depth=0, CN={label}" in server.output, server.output
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
    with _Program(
        ["ip", "netns", "exec", auth, "hostapd", "-d", str(_hostapd_conf(d, pki))], s.env
    ) as hostapd:
        assert hostapd.read_until("eth-auth: AP-ENABLED"), hostapd.output
        with _Program(
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
            s.env,
        ) as supplicant:
            supplicant.read_until("CTRL-EVENT-EAP-SUCCESS")
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
    out, hostapd_out = supplicant.output, hostapd.output
    assert "CTRL-EVENT-EAP-SUCCESS" in out, out + hostapd_out
    assert "Supplicant PAE state=AUTHENTICATED" in status and "EAP state=SUCCESS" in status, status
    # hostapd's EAP server verified the certificate the supplicant proved
    verified = f"ca_cert_verify=1 depth=0 buf='/CN={label}-client'"
    assert f"preverify_ok=1 err=0 (ok) {verified}" in hostapd_out, hostapd_out
    _audited(s, "/usr/sbin/wpa_supplicant")
