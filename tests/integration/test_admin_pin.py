"""`gssproxy-py-ctl pin set|clear` with a real session keyring and a real
token: the PIN goes in from standard input (never an argument), lands as a
`user` key named after the service, the daemon started in that keyring logs
in with it (TOKEN_SIGN lists the key; `status` shows the open session), and
`pin clear` takes it out again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gssproxy_py.admin.pin import container_name, default_description
from gssproxy_py.pkcs11.keyring import (
    KEY_SPEC_SESSION_KEYRING,
    find_user_key,
    join_new_session_keyring,
    read_user_key,
)
from gssproxy_py.testing.daemon import DaemonPaths
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON
from tests.support.softhsm import MAIN, shared_softhsm

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(
        not os.path.exists("/usr/lib/softhsm/libsofthsm2.so")
        or shutil.which("softhsm2-util") is None,
        reason="SoftHSM2 is not installed",
    ),
]

CTL = [str(VENV_PYTHON), "-m", "gssproxy_py.admin.ctl"]
SIGN_CLI = str(REPO_ROOT / ".venv" / "bin" / "gssproxy-py-sign")
DESCRIPTION = "gssproxy-py:signer"


def ctl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CTL, *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_pin_set_unlocks_the_token_and_pin_clear_removes_it(
    daemon_factory: object, tmp_path: Path
) -> None:
    hsm = shared_softhsm()
    join_new_session_keyring()  # ours and our children's: the ctl's and the daemon's

    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  state_dir = {paths.workdir}/state
[service/signer]
  mechs = krb5
  euid = 0
  pkcs11_module = {hsm.module}
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  pkcs11_pin = keyring:{DESCRIPTION}
"""

    daemon = daemon_factory("py", render, env=hsm.env(), start=False)  # type: ignore[operator]
    conf = str(daemon.config)
    assert find_user_key(DESCRIPTION, KEY_SPEC_SESSION_KEYRING) is None
    pin_set = ("pin", "set", "--service", "signer", "-c", conf, "--keyring", "session", "--stdin")
    stored = ctl(*pin_set, stdin=MAIN.pin + "\n")
    assert stored.returncode == 0, stored.stderr
    assert f"stored key '{DESCRIPTION}' in the session keyring" in stored.stdout
    assert MAIN.pin not in stored.stdout + stored.stderr
    assert read_user_key(DESCRIPTION) == MAIN.pin.encode()
    # --if-missing does not ask again (no input: it would read an empty PIN).
    again = ctl(*pin_set, "--if-missing", stdin="")
    assert again.returncode == 0 and again.stdout == ""

    daemon.start()
    env = {**os.environ, "GSSPROXY_SOCKET": str(daemon.socket)}
    listing = subprocess.run(
        [SIGN_CLI, "--list", "--pubkey-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "object=p256" in listing.stdout
    prom = ctl("status", "-s", str(daemon.socket), "--format=prometheus")
    assert prom.returncode == 0, prom.stderr
    assert re.search(
        rf'^gssproxy_py_token_session_open\{{module="[^"]*softhsm2.so",token="{MAIN.label}"\}} 1$',
        prom.stdout,
        re.M,
    ), prom.stdout
    daemon.stop()
    assert MAIN.pin not in daemon.log_text()

    cleared = ctl("pin", "clear", "--service", "signer", "-c", conf, "--keyring", "session")
    assert cleared.returncode == 0, cleared.stderr
    assert find_user_key(DESCRIPTION, KEY_SPEC_SESSION_KEYRING) is None


def test_pin_set_refuses_a_service_without_a_keyring_pin(tmp_path: Path) -> None:
    conf = tmp_path / "gssproxy.conf"
    conf.write_text("[service/signer]\n  mechs = krb5\n  euid = 0\n")
    done = ctl("pin", "set", "--service", "signer", "-c", str(conf), "--stdin", stdin="1234\n")
    assert done.returncode == 1
    wanted = default_description("signer", container_name())
    assert f"add to [service/signer]: pkcs11_pin = keyring:{wanted}" in done.stderr
