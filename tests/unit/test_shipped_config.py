"""The example configurations in conf/ load cleanly, as a whole directory."""

from __future__ import annotations

from pathlib import Path

from gssproxy_py.config import load_config

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_conf_dir_loads_without_warnings() -> None:
    config = load_config(
        str(CONF / "gssproxy.conf"), str(CONF), default_socket="/var/lib/gssproxy/default.sock"
    )
    names = [s.name for s in config.services]
    assert names[0] == "nfs-server" and names[-1] == "network-fs-clients"
    nfs = config.services[0]
    assert nfs.kernel_nfsd and nfs.trusted and nfs.socket == "/run/gssproxy.sock" and nfs.euid == 0
    assert config.warnings == ()


def test_cifs_upcall_service_comes_before_the_catch_all() -> None:
    """cifs.upcall of any user, only its own per-uid files, matched before
    network-fs-clients (whose allow_any_uid would take the call otherwise)."""
    config = load_config(
        str(CONF / "gssproxy.conf"), str(CONF), default_socket="/var/lib/gssproxy/default.sock"
    )
    names = [s.name for s in config.services]
    assert names.index("cifs-upcall") < names.index("network-fs-clients")
    cifs = config.service("cifs-upcall")
    assert cifs.program == "/usr/sbin/cifs.upcall" and cifs.allow_any_uid
    assert cifs.socket is None  # the interposer's default socket
    assert cifs.cred_usage.name == "INITIATE" and not cifs.trusted
    assert cifs.cred_store_values("keytab") == ()  # the host key never acts for a user
    assert cifs.cred_store_values("client_keytab") == ("/var/lib/gssproxy/clients/%U.keytab",)
    assert cifs.cred_store_values("ccache") == ("FILE:/var/lib/gssproxy/clients/krb5cc_%U",)


def test_token_keys_example_serves_p11kit() -> None:
    config = load_config(
        str(CONF / "gssproxy.conf"), str(CONF), default_socket="/var/lib/gssproxy/default.sock"
    )
    vpn = config.service("vpn-token")
    assert vpn.p11kit_socket == "/run/gssproxy/p11kit.sock"
    assert vpn.program == "/usr/sbin/openvpn" and vpn.p11kit_mechanisms == (
        "RSA_PKCS",
        "RSA_PKCS_PSS",
        "ECDSA",
    )
    shipped = (CONF.parent / "contrib" / "p11-kit" / "gssproxy-py.module").read_text()
    assert f"remote: unix:path={vpn.p11kit_socket}" in shipped
