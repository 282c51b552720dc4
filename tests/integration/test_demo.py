"""`make run` does what the README says: a real client authenticates through the daemon."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gssproxy_py.testing.users import is_root

pytestmark = [pytest.mark.integration, pytest.mark.root]


@pytest.mark.skipif(not is_root(), reason="needs root (test users, KDC)")
def test_make_run_once() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gssproxy_py.testing.demo", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert 'Accepted connection: "alice@EXAMPLE.TEST"' in r.stdout
    assert "Signature verified." in r.stdout
    assert "RESULT: the token was accepted through gssproxy-py" in r.stdout
    assert "export GSSPROXY_SOCKET=" in r.stdout
