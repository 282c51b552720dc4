"""Unmodified PKCS#11 programs through p11-kit-client.so and the real daemon
(`python -m gssproxy_py.server.cli`), with SoftHSM2 holding an RSA-2048 and
a P-256 key (each with a certificate) and the daemon holding the PIN (from
the kernel keyring): no consumer is given it.

pkcs11-tool lists and signs with every served mechanism (each signature
checked by openssl) and decrypts; p11tool lists and test-signs; ssh-keygen
-D prints the keys and ssh logs in with one to an sshd the test starts on
127.0.0.1; openssl signs through the libp11 engine with a pkcs11: URI.
Another uid sees no key; refused calls fail with their CKR and the daemon
keeps serving; the PIN is in no reply byte and no log line.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gssproxy_py.p11kit.attributes import Attribute, Cka
from gssproxy_py.p11kit.ck import Ckf, Cko, Ckr
from gssproxy_py.p11kit.wire import Mechanism
from gssproxy_py.testing.users import ensure_test_users, run_as
from tests.support.p11kit_client import (
    CLIENT,
    INTEGRATION_MARKS,
    P11KitClient,
    Request,
    error_of,
    initialize,
    response,
)
from tests.support.p11kit_consumers import (
    ENGINE,
    Setup,
    engine_env,
    free_port,
    pubkeys,
    run,
    verified,
    wait_listening,
)
from tests.support.softhsm import MAIN

pytestmark = INTEGRATION_MARKS


def test_pkcs11_tool_lists_signs_with_every_mechanism_and_decrypts(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    listing = s.tool("-L")
    assert listing.returncode == 0 and MAIN.label in listing.stdout, listing.stderr
    assert "login required" not in listing.stdout
    objects = s.tool("-O")
    assert objects.stdout.count("Private Key Object") == 2, objects.stdout
    assert objects.stdout.count("Certificate Object") == 2
    assert "ed25519" not in objects.stdout and "soft" not in objects.stdout
    assert "never extractable" in objects.stdout
    pems = pubkeys(s)
    data = s.tmp / "data.txt"
    data.write_bytes(b"signed through p11-kit-client.so by a key that never left the token\n")
    sha256 = s.tmp / "data.sha256"
    sha256.write_bytes(
        subprocess.run(
            ["openssl", "dgst", "-sha256", "-binary", data], capture_output=True, check=True
        ).stdout
    )
    for n, (mech, key_id, hashed, verify) in enumerate(
        [
            ("SHA256-RSA-PKCS", "01", False, ["-sha256"]),
            ("SHA384-RSA-PKCS", "01", False, ["-sha384"]),
            ("SHA512-RSA-PKCS", "01", False, ["-sha512"]),
            ("ECDSA", "02", True, ["-sha256"]),
            (
                "RSA-PKCS-PSS",
                "01",
                True,
                ["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:-1"],
            ),
        ]
    ):
        sig = s.tmp / f"sig{n}"
        extra = ["--signature-format", "openssl"] if mech == "ECDSA" else []
        if mech == "RSA-PKCS-PSS":
            extra = ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"]
        r = s.tool(
            "-s",
            "-m",
            mech,
            "--id",
            key_id,
            "-i",
            str(sha256 if hashed else data),
            "-o",
            str(sig),
            *extra,
        )
        assert r.returncode == 0, (mech, r.stderr)
        pem = pems["p256" if key_id == "02" else "rsa"]
        verified(
            ["openssl", "dgst", *verify, "-verify", str(pem), "-signature", str(sig), str(data)]
        )
    # CKM_RSA_PKCS over a DigestInfo the caller built (what TLS 1.2 clients do)
    digest_info = s.tmp / "digestinfo"
    digest_info.write_bytes(
        bytes.fromhex("3031300d060960864801650304020105000420") + sha256.read_bytes()
    )
    sig = s.tmp / "sig-raw"
    r = s.tool("-s", "-m", "RSA-PKCS", "--id", "01", "-i", str(digest_info), "-o", str(sig))
    assert r.returncode == 0, r.stderr
    verified(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(pems["rsa"]),
            "-signature",
            str(sig),
            str(data),
        ]
    )
    # RSA decryption round trips: PKCS#1 v1.5 and OAEP (SoftHSM 2.6 does OAEP with SHA-1 only)
    for mech, opts, pkcs11_opts in (
        ("RSA-PKCS", [], []),
        (
            "RSA-PKCS-OAEP",
            ["-pkeyopt", "rsa_padding_mode:oaep"],
            ["--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1"],
        ),
    ):
        enc = s.tmp / f"enc-{mech}"
        subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-encrypt",
                "-pubin",
                "-inkey",
                pems["rsa"],
                *opts,
                "-in",
                data,
                "-out",
                enc,
            ],
            check=True,
        )
        r = s.tool("--decrypt", "-m", mech, "--id", "01", "-i", str(enc), *pkcs11_opts)
        assert r.returncode == 0 and data.read_text() in r.stdout, (mech, r.stdout, r.stderr)
    log = s.log()
    assert log.count("p11kit sign:") >= 6 and log.count("p11kit decrypt:") >= 2
    assert "service root-keys key pkcs11:" in log and "CKM_SHA384_RSA_PKCS" in log


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _worker_serving(s: Setup, peer_pid: int, proc: subprocess.Popen[str]) -> int:
    """The pid of the worker the daemon handed `peer_pid`'s connection to."""
    pattern = re.compile(rf"worker pid (\d+) serves uid \d+ pid {peer_pid} ")
    deadline = time.monotonic() + 30
    while not (found := pattern.search(s.log())):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, s.log()[-2000:]
        time.sleep(0.05)
    return int(found.group(1))


def _open_once_read(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """The write end of `fifo`, opened once `proc` opens it to read (an
    O_NONBLOCK open for writing fails with ENXIO until a reader has it)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the FIFO was never opened to read"
        time.sleep(0.05)


def test_a_worker_serves_with_no_capability(p11kit_setup: Setup) -> None:
    """With no run_as_user a worker runs as root, loads the module and logs
    in as root, then drops every capability before serving: seen in its
    /proc status while pkcs11-tool (a real p11-kit-client.so consumer) waits
    for its input on a FIFO, and the signature made after still verifies."""
    s = p11kit_setup
    pem = pubkeys(s)["p256"]
    data = b"signed by a worker that holds no capability\n"
    fifo = s.tmp / "input"
    os.mkfifo(fifo)
    sig = s.tmp / "sig"
    argv = ["pkcs11-tool", "--module", CLIENT, "-s", "-m", "ECDSA", "--id", "02"]
    argv += ["-i", str(fifo), "-o", str(sig), "--signature-format", "openssl"]
    proc = subprocess.Popen(
        argv, env=s.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        worker = _worker_serving(s, proc.pid, proc)
        # The daemon names the worker as soon as it is forked, before it
        # has logged in and dropped its capabilities. pkcs11-tool opens its
        # input once it has found the key, so after the worker read its
        # first byte, which comes after the drop.
        fd = _open_once_read(fifo, proc)
        with open(fd, "wb") as f:
            status = _status(worker)
            assert status["Uid"].split()[0] == "0", status  # root: the drop is what matters
            for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                assert int(status[key], 16) == 0, (key, status[key])
            assert status["NoNewPrivs"] == "1"
            f.write(hashlib.sha256(data).digest())  # 32 bytes: a FIFO takes them at once
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    (s.tmp / "data").write_bytes(data)
    verified(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(pem),
            "-signature",
            str(sig),
            str(s.tmp / "data"),
        ]
    )


def test_p11tool_lists_and_test_signs(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    r = run(["p11tool", "--provider", CLIENT, "--list-all"], s.env)
    assert r.returncode == 0, r.stderr
    assert "object=rsa;type=private" in r.stdout and "object=p256;type=cert" in r.stdout
    for label in ("p256", "rsa"):
        r = run(
            ["p11tool", "--provider", CLIENT, "--test-sign", f"pkcs11:object={label};type=private"],
            s.env,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Verifying against public key in the token... ok" in r.stdout + r.stderr


def test_openssl_engine_signs_with_a_uri(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    if not os.path.exists(ENGINE):
        pytest.fail("libengine-pkcs11-openssl is not installed (make deps installs it)")
    env = engine_env(s)
    pems = pubkeys(s)
    data = s.tmp / "data"
    data.write_bytes(b"engine")
    for label in ("rsa", "p256"):
        sig = s.tmp / f"{label}.sig"
        r = run(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-engine",
                "pkcs11",
                "-keyform",
                "engine",
                "-sign",
                f"pkcs11:token={MAIN.label};object={label};type=private",
                "-out",
                str(sig),
                str(data),
            ],
            env,
        )
        assert r.returncode == 0, r.stderr
        verified(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-verify",
                str(pems[label]),
                "-signature",
                str(sig),
                str(data),
            ]
        )


def test_ssh_keygen_and_an_ssh_login(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    r = run(["ssh-keygen", "-D", CLIENT], s.env)
    assert r.returncode == 0, r.stderr
    keys = r.stdout.splitlines()
    assert any(k.startswith("ecdsa-sha2-nistp256 ") and k.endswith(" p256") for k in keys), keys
    assert any(k.startswith("ssh-rsa ") and k.endswith(" rsa") for k in keys), keys
    if shutil.which("sshd") is None and not os.path.exists("/usr/sbin/sshd"):
        pytest.fail("openssh-server is not installed (make deps installs it)")
    d = s.tmp / "sshd"
    d.mkdir()
    d.chmod(0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", d / "host"], check=True)
    ec_line = next(k for k in keys if k.startswith("ecdsa"))
    (d / "authorized_keys").write_text(ec_line + "\n")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host\nPidFile {d}/pid\n"
        f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, sshd, "sshd")
        r = run(
            [
                "ssh",
                "-F",
                "none",
                "-I",
                CLIENT,
                "-p",
                str(port),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                f"UserKnownHostsFile={d}/known_hosts",
                "-o",
                "PasswordAuthentication=no",
                "root@127.0.0.1",
                "echo LOGIN-OK",
            ],
            s.env,
        )
        assert r.stdout.strip() == "LOGIN-OK", r.stdout + r.stderr
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
    assert "p11kit sign:" in s.log() and "program /usr/bin/ssh " in s.log()


def _objects_as(s: Setup, user: object) -> str:
    r = run_as(
        user,
        ["pkcs11-tool", "--module", CLIENT, "-O"],
        {"P11_KIT_SERVER_ADDRESS": s.env["P11_KIT_SERVER_ADDRESS"]},
    )  # type: ignore[arg-type]
    return r.stdout + r.stderr


def test_another_uid_sees_no_key(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    user1, user2 = ensure_test_users()
    seen1 = _objects_as(s, user1)
    assert "label:      p256" in seen1 and "label:      rsa" not in seen1, seen1
    seen2 = _objects_as(s, user2)
    assert "Private Key Object" not in seen2 and "Public Key Object" not in seen2, seen2
    # user1's service allows ECDSA only
    r = run_as(
        user1,
        ["pkcs11-tool", "--module", CLIENT, "-M"],
        {"P11_KIT_SERVER_ADDRESS": s.env["P11_KIT_SERVER_ADDRESS"]},
    )
    assert "ECDSA" in r.stdout and "RSA-PKCS" not in r.stdout, r.stdout


def _session(c: P11KitClient) -> int:
    assert error_of(c.call(initialize())) is None
    _, _, r = response(c.call(Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body()))
    return r.ulong()


def _find_private(c: P11KitClient, s: int) -> int:
    c.call(
        Request(26, "uaA")
        .u(s)
        .aa([Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY)), Attribute(Cka.ID, b"\x02")])
        .body()
    )
    _, _, r = response(c.call(Request(27, "ufu").u(s).fu(4).body()))
    assert r.flag() and r.u32() == 1
    handle = r.ulong()
    c.call(Request(28, "u").u(s).body())
    return handle


def test_refusals_hostile_frames_and_the_pin(p11kit_setup: Setup) -> None:
    s = p11kit_setup
    replies: list[bytes] = []
    with P11KitClient(s.sock, version=2) as c:
        assert c.version == 0  # a newer client is answered, never refused
        session = _session(c)
        replies.append(c.call(Request(18, "uuay").u(session).u(1).ay(MAIN.pin.encode()).body()))
        assert error_of(replies[-1]) is None  # login "succeeds"; the PIN went nowhere
        for body, rv in (
            (
                Request(15, "uayay").u(session).ay(MAIN.pin.encode()).ay(b"new-pin-1234").body(),
                Ckr.TOKEN_WRITE_PROTECTED,
            ),
            (
                Request(59, "uMaAaA").u(session).m(Mechanism(0x1050)).aa([]).aa([]).body(),
                Ckr.TOKEN_WRITE_PROTECTED,
            ),
        ):
            replies.append(c.call(body))
            assert error_of(replies[-1]) == rv
        key = _find_private(c, session)
        replies.append(
            c.call(
                Request(24, "uufA").u(session).u(key).fa([(Cka.VALUE, 256), (Cka.LABEL, 64)]).body()
            )
        )
        _, _, r = response(replies[-1])
        assert r.u32() == 2 and r.u32() == Cka.VALUE and not r.flag()
        assert r.u32() == Cka.LABEL and r.flag()
        r.u32()
        assert r.byte_array() == b"p256"
        assert r.ulong() == Ckr.ATTRIBUTE_SENSITIVE
        # still serving, and a real signature works after the refusals
        c.call(Request(42, "uMu").u(session).m(Mechanism(0x1041)).u(key).body())
        replies.append(c.call(Request(43, "uayfy").u(session).ay(b"\x42" * 32).fy(64).body()))
        _, sig, r = response(replies[-1])
        assert sig == "ay" and r.flag() and len(r.byte_array() or b"") == 64
        # several requests in flight on one connection, answered by code
        codes = list(range(c.code, c.code + 8))
        c.code += 8
        body = Request(13, "u").u(session).body()
        c.send_raw(
            b"".join(
                code.to_bytes(4) + (6).to_bytes(4) + len(body).to_bytes(4) + b"client" + body
                for code in codes
            )
        )
        for code in codes:
            header = c.read_exact(12)
            assert int.from_bytes(header[:4]) == code
            replies.append(c.read_exact(int.from_bytes(header[8:12])))
    assert all(MAIN.pin.encode() not in reply for reply in replies)
    # a malformed frame closes only its own connection
    with P11KitClient(s.sock) as bad:
        bad.send_raw(
            (0x10).to_bytes(4)
            + (0).to_bytes(4)
            + (8).to_bytes(4)
            + b"\x00\x00\x00\x04\xff\xff\xff\xf0"
        )
        # Closed: seen as EOF, a reset, or (when the worker closed before
        # this write) a broken pipe.
        with pytest.raises((EOFError, ConnectionResetError, BrokenPipeError)):
            bad.call(initialize())
    with P11KitClient(s.sock) as good:
        assert error_of(good.call(initialize())) is None
    log = s.log()
    assert MAIN.pin not in log and "C_Login (user type 1) answered without using its PIN" in log


def test_the_shipped_module_file_without_any_environment(p11kit_setup: Setup) -> None:
    """contrib/p11-kit/gssproxy-py.module with the test's socket path, as a
    user's module file: p11-kit-proxy.so then shows the user's key with no
    P11_KIT_SERVER_ADDRESS."""
    s = p11kit_setup
    user1, _ = ensure_test_users()
    shipped = (Path(__file__).parents[2] / "contrib" / "p11-kit" / "gssproxy-py.module").read_text()
    assert "remote: unix:path=/run/gssproxy/p11kit.sock" in shipped
    home = Path(s.sock).parent / "home"  # pytest's tmp_path is root-only
    modules = home / ".config" / "pkcs11" / "modules"
    modules.mkdir(parents=True)
    (modules / "gssproxy-py.module").write_text(
        shipped.replace("/run/gssproxy/p11kit.sock", s.sock)
    )
    for p in (home, home / ".config", home / ".config" / "pkcs11", modules):
        os.chown(p, user1.uid, user1.gid)
    proxy = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"
    r = run_as(user1, ["ssh-keygen", "-D", proxy], {"HOME": str(home)})
    assert any(line.endswith(" p256") for line in r.stdout.splitlines()), r.stdout + r.stderr
