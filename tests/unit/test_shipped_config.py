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
