"""Well-known paths the harness uses: the repo, its venv python, system binaries."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Clients run as other uids need a python those uids can execute: the repo venv is
# built from /usr/bin/python3 for that reason.  Fall back to whatever runs us.
_VENV = REPO_ROOT / ".venv" / "bin" / "python"
VENV_PYTHON = _VENV if _VENV.exists() else Path(sys.executable)

# Small python-gssapi programs the integration tests run as peers.
CLIENTS_DIR = REPO_ROOT / "tests" / "integration" / "clients"

# Debian's gssproxy package: the C daemon and the GSSAPI interposer plugin.
C_GSSPROXY = Path("/usr/sbin/gssproxy")
PROXYMECH_SO = Path("/usr/lib/x86_64-linux-gnu/gssproxy/proxymech.so")
