"""gssproxy-py: a GSS-Proxy daemon (ONC RPC program 400112) in Python."""

from __future__ import annotations

__version__ = "0.1.0"
