"""The config layer: gssproxy.conf parsing and validation, the service model,
and matching a peer to a service (pure stdlib; see docs/ARCHITECTURE.md).

Modules: `ini` (the INI reader and merge rules), `options` (the option
table, one row per option, and `check_services`), `values` (the kinds of
value: parsers and their descriptions), `reference` (docs/CONFIG.md from the
table), `load` (which files are read), `model` (the frozen values), `flags`
(`filter_flags`/`enforce_flags`), `expand` (`%U`/`%u` in `cred_store`),
`match` (peer → service), `peer` (the peer's identity).
"""

from __future__ import annotations

from gssproxy_py.config.expand import UnknownUserError, expand_cred_store, expand_cred_store_value
from gssproxy_py.config.flags import GssFlag, parse_flags
from gssproxy_py.config.load import (
    DEFAULT_CONFIG_DIR,
    DEFAULT_CONFIG_FILE,
    DEFAULT_SOCKET,
    load_config,
    load_config_text,
)
from gssproxy_py.config.match import explain_no_match, match_service
from gssproxy_py.config.model import (
    Config,
    CredUsage,
    GlobalSettings,
    Mech,
    PinSource,
    PinSourceKind,
    SelinuxContext,
    Service,
)
from gssproxy_py.config.options import check_services
from gssproxy_py.config.peer import Peer

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_SOCKET",
    "Config",
    "CredUsage",
    "GlobalSettings",
    "GssFlag",
    "Mech",
    "Peer",
    "PinSource",
    "PinSourceKind",
    "SelinuxContext",
    "Service",
    "UnknownUserError",
    "check_services",
    "expand_cred_store",
    "expand_cred_store_value",
    "explain_no_match",
    "load_config",
    "load_config_text",
    "match_service",
    "parse_flags",
]
