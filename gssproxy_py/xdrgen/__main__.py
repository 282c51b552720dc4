"""`python -m gssproxy_py.xdrgen`."""

from __future__ import annotations

import sys

from gssproxy_py.xdrgen.cli import main

sys.exit(main())
