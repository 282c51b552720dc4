"""`python -m gssproxy_py.server`: the same as the `gssproxy-py` command."""

from __future__ import annotations

import sys

from gssproxy_py.server.cli import main

sys.exit(main())
