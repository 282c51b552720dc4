"""Reading a daemon's cost from /proc: CPU seconds and resident memory.

A daemon may be several processes (a master and forked workers), so both
figures are taken over the process tree under the daemon's pid.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children(pid: int) -> list[int]:
    """pid and all its descendants that are alive now."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent_of[int(entry)] = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
    tree = [pid]
    frontier = [pid]
    while frontier:
        nxt = [c for c, p in parent_of.items() if p in frontier]
        tree.extend(nxt)
        frontier = nxt
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid's whole tree (all threads), in seconds."""
    total = 0
    for p in children(pid):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        # fields after ')' start at 3 (state); utime is field 14, stime 15.
        total += int(f[11]) + int(f[12])
    return total / _TICK


def rss_bytes(pid: int) -> int:
    """Sum of VmRSS over pid's tree (counts shared pages once per process)."""
    total = 0
    for p in children(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def pss_bytes(pid: int) -> int:
    """Sum of Pss over pid's tree (shared pages split between the sharers)."""
    total = 0
    for p in children(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total


def memory_by_process(pid: int) -> list[dict[str, int]]:
    """RSS and PSS of each process of pid's tree, in tree order (the first
    process first), in bytes: what one worker process costs."""
    out = []
    for p in children(pid):
        try:
            fields = {
                key: int(line.split()[1]) * 1024
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
                if (key := line.split(":")[0]) in ("Rss", "Pss")
            }
        except OSError:
            continue
        out.append({"pid": p, "rss_bytes": fields.get("Rss", 0), "pss_bytes": fields.get("Pss", 0)})
    return out
