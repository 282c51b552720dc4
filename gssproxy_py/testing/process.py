"""Stopping the helper processes a harness starts (KDCs, slapd, daemons),
and finding a daemon's child processes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, timeout: float) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; nothing if already gone."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` now, by pid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # pid (comm) state ppid ...: comm may hold spaces, so cut after ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)
