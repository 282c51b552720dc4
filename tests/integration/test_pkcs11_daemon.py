"""TOKEN_SIGN end to end: the real server (in this process, on its own
thread and loop) serving `token_sign_service`, reached by the
`gssproxy-py-sign` CLI as root and, through setpriv, as other uids.

Services are matched by the server exactly as for GSS-Proxy (euid): root
gets the `signer` service (all of the main token), gpytest1 gets `limited`
(only the P-256 key), gpytest2 matches nothing. Signatures are checked with
openssl against the public keys `--list --pubkey-dir` wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.config import load_config_text
from gssproxy_py.pkcs11.program import build_token_sign
from gssproxy_py.server.daemon import GssProxyServer, ServerOptions
from gssproxy_py.testing.paths import VENV_PYTHON
from gssproxy_py.testing.users import LocalUser, run_as
from tests.support.softhsm import MAIN, SoftHsm, put_pins_in_session_keyring, shared_softhsm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/softhsm/libsofthsm2.so")
        or shutil.which("softhsm2-util") is None,
        reason="SoftHSM2 is not installed",
    ),
]

CLI = [str(VENV_PYTHON), "-m", "gssproxy_py.client.sign_cli"]
MECHS = {
    "rsa": [
        "rsa-pkcs1-sha256",
        "rsa-pkcs1-sha384",
        "rsa-pkcs1-sha512",
        "rsa-pss-sha256",
        "rsa-pss-sha384",
        "rsa-pss-sha512",
    ],
    "p256": ["ecdsa-sha256", "ecdsa-sha384"],
    "ed25519": ["ed25519"],
}


DIGEST_SAMPLE = ("rsa-pkcs1-sha512", "rsa-pss-sha384", "ecdsa-sha384")


class InProcessDaemon:
    """GssProxyServer on a private loop in a thread, serving only TOKEN_SIGN."""

    def __init__(self, config_text: str, socket: Path) -> None:
        self.config = load_config_text(config_text, default_socket=str(socket))
        self.service, self.backend = build_token_sign(self.config)
        options = ServerOptions(config_file=None, config_dir=None, default_socket=str(socket))
        self.server: GssProxyServer | None = None
        self._options = options
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="test-daemon", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            server = GssProxyServer(
                self.config, {self.service.program.number: self.service}, self._options
            )
            self._loop.run_until_complete(server.start())
            self.server = server
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_until_complete(server.wait_stopped())
        self._loop.run_until_complete(self.backend.aclose())

    def stop(self) -> None:
        if self.server is not None:
            self._loop.call_soon_threadsafe(self.server.request_stop)
        self._thread.join(15)


@pytest.fixture(scope="module")
def hsm() -> SoftHsm:
    hsm = shared_softhsm()
    put_pins_in_session_keyring({"gpytest-main": MAIN.pin})
    return hsm


@pytest.fixture(scope="module")
def sockdir() -> Iterator[Path]:
    # World-traversable, so that other uids reach the socket.
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="gpytest-ts-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _user_uid(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


@pytest.fixture(scope="module")
def daemon(hsm: SoftHsm, sockdir: Path) -> Iterator[InProcessDaemon]:
    socket = sockdir / "ts.sock"
    limited_uid = _user_uid("gpytest1")
    limited = (
        f"""
[service/limited]
  mechs = krb5
  euid = {limited_uid}
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  pkcs11_pin = keyring:gpytest-main
"""
        if limited_uid is not None
        else ""
    )
    text = f"""
[gssproxy]
[service/signer]
  mechs = krb5
  euid = 0
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label}
  pkcs11_pin = keyring:gpytest-main
{limited}"""
    d = InProcessDaemon(text, socket)
    yield d
    d.stop()


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=60,
    )


@pytest.fixture(scope="module")
def listing(
    daemon: InProcessDaemon, sockdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    pubdir = tmp_path_factory.mktemp("pub")
    proc = cli("--socket", str(sockdir / "ts.sock"), "--list", "--pubkey-dir", str(pubdir))
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    by_label = {}
    for line in lines:
        uri = line.split("\t")[0]
        assert uri.startswith("pkcs11:")
        by_label[uri.split("object=")[1].split(";")[0]] = line
    by_label["_pubdir"] = str(pubdir)
    return by_label


def test_list(listing: dict[str, str]) -> None:
    assert set(listing) - {"_pubdir"} == {"rsa", "p256", "ed25519", "soft"}
    assert listing["rsa"].split("\t")[1:] == ["rsa-2048", "cert", ",".join(MECHS["rsa"])]
    assert listing["p256"].split("\t")[1:3] == ["ec-P-256", "cert"]
    assert listing["ed25519"].split("\t")[1:] == ["edwards-Ed25519", "ed25519"]
    pubdir = Path(listing["_pubdir"])
    assert (pubdir / "rsa.pub.pem").exists() and (pubdir / "rsa.crt.pem").exists()


def _openssl_verify(pub: Path, mech: str, msg: Path, sig: Path) -> subprocess.CompletedProcess[str]:
    if mech == "ed25519":
        argv = [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pub),
            "-rawin",
            "-in",
            str(msg),
            "-sigfile",
            str(sig),
        ]
    else:
        argv = [
            "openssl",
            "dgst",
            "-" + mech.rsplit("-", 1)[1],
            "-verify",
            str(pub),
            "-signature",
            str(sig),
        ]
        if mech.startswith("rsa-pss"):
            argv += ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
        argv.append(str(msg))
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("digest", [False, True], ids=["message", "digest"])
def test_every_mechanism_verifies_with_openssl(
    listing: dict[str, str], sockdir: Path, tmp_path: Path, digest: bool
) -> None:
    pubdir = Path(listing["_pubdir"])
    msg = tmp_path / "msg"
    msg.write_bytes(os.urandom(3000))
    for label, mechs in MECHS.items():
        uri = listing[label].split("\t")[0]
        for mech in mechs:
            # Digest inputs are covered per mechanism at the handler level;
            # here one per family keeps the CLI runs (~0.3 s each) few.
            if digest and mech not in DIGEST_SAMPLE:
                continue
            sig = tmp_path / f"{label}-{mech}.sig"
            args = [
                "--socket",
                str(sockdir / "ts.sock"),
                "--key",
                uri,
                "--mech",
                mech,
                "--out",
                str(sig),
            ]
            if digest:
                algo = mech.rsplit("-", 1)[1]
                dfile = tmp_path / f"{algo}.bin"
                dfile.write_bytes(hashlib.new(algo, msg.read_bytes()).digest())
                args += ["--in", str(dfile), "--digest"]
            else:
                args += ["--in", str(msg)]
            proc = cli(*args)
            assert proc.returncode == 0, (mech, proc.stderr.decode())
            check = _openssl_verify(pubdir / f"{label}.pub.pem", mech, msg, sig)
            assert check.returncode == 0 and "Verified" in check.stdout, (mech, check)


def test_stdin_stdout_and_gssproxy_socket_env(
    listing: dict[str, str], sockdir: Path, tmp_path: Path
) -> None:
    uri = listing["ed25519"].split("\t")[0]
    proc = cli(
        "--key",
        uri,
        "--mech",
        "ed25519",
        stdin=b"hello",
        env={"GSSPROXY_SOCKET": str(sockdir / "ts.sock")},
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout) == 64
    (tmp_path / "m").write_bytes(b"hello")
    (tmp_path / "s").write_bytes(proc.stdout)
    check = _openssl_verify(
        Path(listing["_pubdir"]) / "ed25519.pub.pem", "ed25519", tmp_path / "m", tmp_path / "s"
    )
    assert check.returncode == 0


def test_cli_errors(daemon: InProcessDaemon, sockdir: Path, tmp_path: Path) -> None:
    sock = str(sockdir / "ts.sock")
    proc = cli("--socket", sock, "--key", "pkcs11:object=rsa", "--mech", "rsa-md5", stdin=b"x")
    assert proc.returncode == 64 and b"unknown mechanism" in proc.stderr
    proc = cli("--socket", sock, "--key", "pkcs11:object=nope", "--mech", "ed25519", stdin=b"x")
    assert proc.returncode == 3 and b"TS_UNKNOWN_KEY" in proc.stderr
    proc = cli("--socket", sock, "--key", "pkcs11:object=rsa", "--mech", "ed25519", stdin=b"x")
    assert proc.returncode == 3 and b"TS_BAD_MECHANISM" in proc.stderr
    proc = cli("--socket", str(tmp_path / "none.sock"), "--list")
    assert proc.returncode == 1 and b"no such socket" in proc.stderr
    proc = cli("--list", "--mech", "ed25519")
    assert proc.returncode == 64


def _as(user: LocalUser, *args: str) -> subprocess.CompletedProcess[str]:
    return run_as(user, [*CLI, *args], {})


def test_other_uids_get_only_their_services_keys(
    daemon: InProcessDaemon,
    listing: dict[str, str],
    sockdir: Path,
    test_users: tuple[LocalUser, ...],
) -> None:
    sock = str(sockdir / "ts.sock")
    limited, stranger = test_users
    proc = _as(limited, "--socket", sock, "--list")
    assert proc.returncode == 0, proc.stderr
    uris = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert len(uris) == 1 and "object=p256" in uris[0]
    proc = _as(
        limited,
        "--socket",
        sock,
        "--key",
        uris[0],
        "--mech",
        "ecdsa-sha256",
        "--in",
        "/etc/hostname",
        "--out",
        "/dev/null",
    )
    assert proc.returncode == 0, proc.stderr
    rsa_uri = listing["rsa"].split("\t")[0]
    proc = _as(
        limited,
        "--socket",
        sock,
        "--key",
        rsa_uri,
        "--mech",
        "rsa-pss-sha256",
        "--in",
        "/etc/hostname",
    )
    assert proc.returncode == 3 and "TS_KEY_NOT_PERMITTED" in proc.stderr, proc.stderr
    proc = _as(stranger, "--socket", sock, "--list")
    assert proc.returncode == 3 and "TS_NO_SERVICE" in proc.stderr, proc.stderr
    assert f"{stranger.uid}" in proc.stderr  # the server's reason names the uid


def test_python_api(daemon: InProcessDaemon, sockdir: Path) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gssproxy_py.client.token_sign import TokenSignClient, TokenSignError
    from gssproxy_py.proto.token_sign import TsStatus

    with TokenSignClient(str(sockdir / "ts.sock")) as client:
        client.ping()
        keys = {k.uri.split("object=")[1].split(";")[0]: k for k in client.list_keys().keys}
        k = keys["p256"]
        sig = client.sign(k.uri, "ecdsa-sha384", b"data")
        pub = serialization.load_der_public_key(k.spki)
        assert isinstance(pub, ec.EllipticCurvePublicKey)
        pub.verify(sig, b"data", ec.ECDSA(hashes.SHA384()))
        with pytest.raises(TokenSignError) as e:
            client.sign(k.uri, "ed25519", b"data")
        assert e.value.status is TsStatus.TS_BAD_MECHANISM
    assert sys.modules["gssproxy_py.client.token_sign"]
