"""Fixtures of the integration tests that need more than one module."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gssproxy_py.testing.daemon import DaemonPaths
from gssproxy_py.testing.users import ensure_test_users
from tests.support.p11kit_consumers import Setup
from tests.support.softhsm import MAIN, put_pins_in_session_keyring, shared_softhsm


@pytest.fixture
def p11kit_setup(daemon_factory: Callable[..., object], tmp_path: Path) -> Iterator[Setup]:
    """The real daemon on SoftHSM2's MAIN token with the PIN in its keyring
    only: root's service `root-keys` has the RSA and P-256 keys on the
    p11-kit socket, user1's `user1-keys` the P-256 key, ECDSA only. At the
    end the PIN must be in no log line."""
    hsm = shared_softhsm()
    put_pins_in_session_keyring({"gpytest-p11kit": MAIN.pin})
    (user1, _user2) = ensure_test_users()
    holder: dict[str, DaemonPaths] = {}

    def render(paths: DaemonPaths) -> str:
        holder["paths"] = paths
        common = f"""  mechs = krb5
  pkcs11_module = {hsm.module}
  pkcs11_pin = keyring:gpytest-p11kit
  p11kit_socket = {paths.workdir}/p11.sock
"""
        return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state
[service/root-keys]
  euid = 0
  pkcs11_uri = pkcs11:token={MAIN.label};object=rsa
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
{common}
[service/user1-keys]
  euid = {user1.uid}
  socket = {paths.workdir}/user1.sock
  pkcs11_uri = pkcs11:token={MAIN.label};object=p256
  p11kit_mechanisms = ECDSA
{common}"""

    daemon = daemon_factory("py", render, env=hsm.env())
    s = Setup(daemon, holder["paths"], tmp_path, user1.uid)
    yield s
    daemon.stop()  # type: ignore[attr-defined]
    assert MAIN.pin not in s.log()
