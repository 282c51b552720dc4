"""Call counters: per (service, program, procedure) the calls that ended,
how many of them the program's direct path served, their outcome codes and
a latency histogram.

Kept on the event loop thread only (the server records a call when its reply
is ready), so a count is a plain integer increment: no lock, no atomics. One
call costs two clock reads, one dict lookup and three increments; the
percentiles are computed when someone asks (`quantile`), from the histogram.

Histogram: bucket i counts calls of at least 2^(i-1) and under 2^i
microseconds (bucket 0: under 1 us); the last bucket holds everything
slower. `quantile` answers with a bucket's upper bound, so a p99 of "1024 us"
means "99 % of calls took under 1.024 ms" - within a factor of two, which is
what an administrator needs to see a pool clogging or a KDC slowing down.

The outcome code of a result: for GSS-Proxy the GSS major status, for
TOKEN_SIGN the `ts_status`; `SYSTEM_ERR_CODE` when the server answered
SYSTEM_ERR (a handler failed or ran past `call_timeout`). 0 is success and
is not counted as an error.

With `worker_processes` > 1 each process keeps its own counters; the
`total_*` functions add up what the processes report (`server.admin`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gssproxy_py.proto.admin import (
    AdmCallStats,
    AdmErrorCount,
    AdmPool,
    AdmProcess,
    AdmUidConnections,
)

#: Buckets up to 2^31 us (about 36 minutes); more would never fill.
BUCKETS = 32
SYSTEM_ERR_CODE = -1


class CallStats:
    """One (service, program, procedure)'s counters."""

    __slots__ = ("buckets", "calls", "direct", "errors", "sum_ns")

    def __init__(self) -> None:
        self.calls = 0
        #: of `calls`, those a program's direct path served (`gss.direct`)
        self.direct = 0
        self.sum_ns = 0
        self.errors: dict[int, int] = {}
        self.buckets = [0] * BUCKETS


def outcome_code(result: Any) -> int:
    """The outcome of a program's result: GSS major, ts_status, or 0."""
    status = getattr(result, "status", None)
    if status is not None:
        return int(getattr(status, "major_status", 0))
    outcome = getattr(result, "outcome", None)
    if outcome is not None:
        return int(getattr(outcome, "status", 0))
    return 0


class CallCounters:
    """Every (service, program, procedure) row, from the daemon's start."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int, str], CallStats] = {}

    def record(
        self, service: str, program: int, procedure: str, elapsed_ns: int, code: int
    ) -> CallStats:
        """One call ended after `elapsed_ns` with outcome `code`; its row
        (whose `direct` the caller counts when the direct path served it:
        nothing more for the calls it did not)."""
        key = (service, program, procedure)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = CallStats()
        row.calls += 1
        row.sum_ns += elapsed_ns
        bucket = (elapsed_ns // 1000).bit_length()
        row.buckets[bucket if bucket < BUCKETS else BUCKETS - 1] += 1
        if code:
            row.errors[code] = row.errors.get(code, 0) + 1
        return row

    def snapshot(self) -> tuple[AdmCallStats, ...]:
        """The rows as the admin program sends them, sorted."""
        return tuple(
            _wire_row(service.encode(), program, procedure.encode(), row)
            for (service, program, procedure), row in sorted(self._rows.items())
        )


def _wire_row(service: bytes, program: int, procedure: bytes, row: CallStats) -> AdmCallStats:
    return AdmCallStats(
        service=service,
        program=program,
        procedure=procedure,
        calls=row.calls,
        errors=tuple(AdmErrorCount(code=code, count=n) for code, n in sorted(row.errors.items())),
        latency_sum_us=row.sum_ns // 1000,
        latency_buckets=tuple(row.buckets),
        direct=row.direct,
    )


def bucket_upper_us(index: int) -> int:
    """The exclusive upper bound of bucket `index`, in microseconds."""
    return 1 << index


def quantile(buckets: Sequence[int], q: float) -> int | None:
    """The upper bound (us) of the bucket holding quantile `q`; None if empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return bucket_upper_us(index)
    return bucket_upper_us(len(buckets) - 1)


# -- totals over the processes of `worker_processes` > 1 ----------------------------


def total_calls(processes: Iterable[AdmProcess]) -> tuple[AdmCallStats, ...]:
    """Every process's rows added up per (service, program, procedure):
    calls, errors per code, latency sum and buckets."""
    rows: dict[tuple[bytes, int, bytes], CallStats] = {}
    for p in processes:
        for r in p.calls:
            key = (r.service, r.program, r.procedure)
            row = rows.get(key)
            if row is None:
                row = rows[key] = CallStats()
            row.calls += r.calls
            row.direct += r.direct
            row.sum_ns += r.latency_sum_us * 1000
            for e in r.errors:
                row.errors[e.code] = row.errors.get(e.code, 0) + e.count
            for i, n in enumerate(r.latency_buckets[:BUCKETS]):
                row.buckets[i] += n
    return tuple(
        _wire_row(service, program, procedure, row)
        for (service, program, procedure), row in sorted(rows.items())
    )


def total_connections(processes: Iterable[AdmProcess]) -> tuple[AdmUidConnections, ...]:
    """Open connections per uid over every process."""
    by_uid: dict[int, int] = {}
    for p in processes:
        for c in p.connections:
            by_uid[c.uid] = by_uid.get(c.uid, 0) + c.connections
    return tuple(AdmUidConnections(uid=u, connections=n) for u, n in sorted(by_uid.items()))


def total_pools(processes: Iterable[AdmProcess]) -> tuple[AdmPool, ...]:
    """The pools of the same name added up (each process has its own
    threads); broken if broken in any, in the order first seen."""
    pools: dict[bytes, AdmPool] = {}
    for p in processes:
        for pool in p.pools:
            seen = pools.get(pool.name)
            pools[pool.name] = (
                pool
                if seen is None
                else AdmPool(
                    name=pool.name,
                    threads=seen.threads + pool.threads,
                    busy=seen.busy + pool.busy,
                    queued=seen.queued + pool.queued,
                    written_off=seen.written_off + pool.written_off,
                    broken=seen.broken or pool.broken,
                )
            )
    return tuple(pools.values())
