"""The p11-kit service options and matching on a p11kit_socket."""

from __future__ import annotations

import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.match import explain_no_match, match_service
from gssproxy_py.config.peer import Peer
from gssproxy_py.config.values import P11KIT_MECHANISM_NAMES
from gssproxy_py.errors import ConfigError
from gssproxy_py.pkcs11.p11kit_backend import SERVED_MECHANISMS

SOCK = "/run/gssproxy-p11kit.sock"
TEXT = f"""
[service/vpn]
  mechs = krb5
  euid = 1000
  program = /usr/sbin/openvpn
  pkcs11_module = /usr/lib/softhsm/libsofthsm2.so
  pkcs11_uri = pkcs11:token=t;object=vpn
  p11kit_socket = {SOCK}/../gssproxy-p11kit.sock
  p11kit_mechanisms = CKM_RSA_PKCS, ecdsa
[service/user]
  mechs = krb5
  euid = 1000
  pkcs11_module = /usr/lib/softhsm/libsofthsm2.so
  pkcs11_uri = pkcs11:token=t;object=ssh
  p11kit_socket = {SOCK}
[service/gss]
  mechs = krb5
  euid = 1000
  socket = /run/gss.sock
"""


def _peer(uid: int = 1000, program: str = "/usr/bin/ssh") -> Peer:
    return Peer(pid=1, uid=uid, gid=uid, program=program)


def test_options_parse() -> None:
    config = load_config_text(TEXT)
    vpn, user, gss = config.services
    assert vpn.p11kit_socket == "/run/gssproxy-p11kit.sock"  # normalised like socket
    assert vpn.p11kit_mechanisms == ("RSA_PKCS", "ECDSA")
    assert user.p11kit_mechanisms is None
    assert gss.p11kit_socket is None


def test_unknown_mechanism_names_file_line_and_option() -> None:
    with pytest.raises(ConfigError) as e:
        load_config_text(TEXT.replace("ecdsa", "CKM_EDDSA"), "x.conf")
    assert e.value.line == 9 and e.value.option == "p11kit_mechanisms"


def test_matching_by_uid_program_and_p11kit_socket() -> None:
    config = load_config_text(TEXT)

    def match(peer: Peer, sock: str = SOCK) -> str | None:
        s = match_service(
            config, peer, sock, default_socket="/d.sock", selinux_enabled=False, p11kit=True
        )
        return s.name if s is not None else None

    assert match(_peer(program="/usr/sbin/openvpn")) == "vpn"
    assert match(_peer()) == "user"
    assert match(_peer(uid=1001)) is None  # another uid
    assert match(_peer(), "/run/other.sock") is None
    # the GSS-Proxy socket never matches as a p11-kit one, and vice versa
    assert (
        match_service(config, _peer(), SOCK, default_socket="/d.sock", selinux_enabled=False)
        is None
    )
    why = explain_no_match(
        config, _peer(uid=1001), SOCK, default_socket="/d.sock", selinux_enabled=False, p11kit=True
    )
    assert "requires euid 1000" in why


def test_two_services_on_one_p11kit_socket_must_be_told_apart() -> None:
    clash = TEXT.replace("program = /usr/sbin/openvpn\n", "").replace(
        f"p11kit_socket = {SOCK}/../gssproxy-p11kit.sock",
        "socket = /run/vpn.sock\n  p11kit_socket = " + SOCK,
    )
    with pytest.raises(ConfigError, match="same p11kit_socket"):
        load_config_text(clash)


def test_config_names_are_the_served_mechanisms() -> None:
    assert {m.name for m in SERVED_MECHANISMS.values()} == P11KIT_MECHANISM_NAMES
