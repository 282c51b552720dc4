"""Per-call CPU cost of the call counters behind `gssproxy-py-ctl status`, in
process: what `server.calls` adds to every call (two clock reads, the
`_Count` record, `outcome_code`, one `CallCounters.record`), against an
empty function call. Run: `.venv/bin/python -m bench.counters`."""

from __future__ import annotations

import time
import timeit

from gssproxy_py.admin.stats import CallCounters, outcome_code
from gssproxy_py.proto.gss_proxy import GSSPROXY
from gssproxy_py.server.calls import _Count


class _Status:
    major_status = 0


class _Result:
    status = _Status()


class _Service:
    name = "nfs-server"


class _Info:
    service = _Service()
    program = GSSPROXY


def main(n: int = 200_000) -> None:
    counters, info, result = CallCounters(), _Info(), _Result()

    def counted() -> None:
        count = _Count(counters, info, "GSSX_ACCEPT_SEC_CONTEXT", time.perf_counter_ns())  # type: ignore[arg-type]
        count(outcome_code(result))

    def bare() -> None:
        pass

    for name, fn in (("counted call", counted), ("empty call", bare)):
        best = min(timeit.repeat(fn, number=n, repeat=7)) / n * 1e9
        print(f"{name}: {best:.0f} ns")


if __name__ == "__main__":
    main()
