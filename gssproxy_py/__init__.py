"""gssproxy-py: a GSS-Proxy daemon (ONC RPC program 400112) in Python."""

from __future__ import annotations

__version__ = "0.1.0"

# Before any submodule is imported: a stale or disabled mypyc build must not
# shadow the .py files (gssproxy_py/compiled.py).
from gssproxy_py import compiled as _compiled

_compiled.guard()
