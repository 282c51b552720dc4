"""The clients stand on the shared vocabulary, not on the daemon's layers.

Importing every client module must not load cryptography, python-pkcs11,
python-gssapi or pyroute2, nor any daemon layer; of `pkcs11/` only the pure
RFC 7512 URI parser (`pkcs11/uri.py`), which `gssproxy-py-sign` uses to name
the files it writes. Run in a fresh interpreter, since this one has loaded
everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

CLIENT_MODULES = (
    "gssproxy_py.client",
    "gssproxy_py.client.token_sign",
    "gssproxy_py.client.sign_cli",
    "gssproxy_py.client.call_cli",
)
FORBIDDEN_PACKAGES = ("cryptography", "pkcs11", "gssapi", "pyroute2")
DAEMON_LAYERS = ("gss", "pkcs11", "server", "config", "rpc", "netns")
ALLOWED = {"gssproxy_py.pkcs11", "gssproxy_py.pkcs11.uri"}


def loaded_by(modules: tuple[str, ...]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for m in {list(modules)!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def test_clients_load_no_daemon_layer_and_no_crypto_library() -> None:
    loaded = loaded_by(CLIENT_MODULES)
    third_party = {m for m in loaded if m.split(".")[0] in FORBIDDEN_PACKAGES}
    layers = {
        m
        for m in loaded
        if m.split(".")[0] == "gssproxy_py"
        and len(m.split(".")) > 1
        and m.split(".")[1] in DAEMON_LAYERS
    }
    assert third_party == set()
    assert layers == ALLOWED


def test_the_token_sign_client_alone_loads_no_pkcs11_module() -> None:
    loaded = loaded_by(("gssproxy_py.client.token_sign",))
    assert not {m for m in loaded if "pkcs11" in m}
