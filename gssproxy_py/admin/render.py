"""`gssproxy-py-ctl status` output: text for a person, Prometheus text
exposition format (version 0.0.4) for node_exporter's textfile collector.

With `worker_processes` > 1 the daemon's figures are the totals over its
processes, and each process's own follow (`processes`).

Both render the same `AdmStatus` the daemon sent (`idl/admin.x`); neither
computes anything the other lacks. Outcome codes are named per program: the
GSS routine error (`GSS_S_FAILURE`...) for GSS-Proxy, the `ts_status` name
for TOKEN_SIGN, `SYSTEM_ERR` for a call the server answered with an RPC
error.
"""

from __future__ import annotations

from collections.abc import Iterable

from gssproxy_py.admin.stats import SYSTEM_ERR_CODE, bucket_upper_us, quantile
from gssproxy_py.gss import status as gss_status
from gssproxy_py.proto.admin import AdmCallStats, AdmProcess, AdmStatus
from gssproxy_py.proto.gss_proxy import GSSPROXY
from gssproxy_py.proto.token_sign import TOKEN_SIGN, TsStatus

PROGRAM_NAMES = {GSSPROXY: "gssproxy", TOKEN_SIGN: "token_sign"}
#: GSS routine errors by their value (bits 16-23 of a major status).
_ROUTINE_NAMES = {
    value >> 16: name
    for name, value in vars(gss_status).items()
    if name.startswith("GSS_S_") and isinstance(value, int) and value and not value & 0xFF00FFFF
}
PREFIX = "gssproxy_py"


def code_name(program: int, code: int) -> str:
    """A person's name for an outcome code of `program`."""
    if code == SYSTEM_ERR_CODE:
        return "SYSTEM_ERR"
    if program == GSSPROXY:
        routine = (code >> 16) & 0xFF
        name = _ROUTINE_NAMES.get(routine)
        if name is None and code >> 24:
            name = "GSS_S_CALL_ERROR"
        return name or f"0x{code:08x}"
    if program == TOKEN_SIGN:
        try:
            return TsStatus(code).name
        except ValueError:
            pass
    return str(code)


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _duration(ms: int) -> str:
    seconds = ms // 1000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if days or hours:
        parts.append(f"{hours}h")
    if days or hours or minutes:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts)


def _us(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 1_000_000:
        return f"<{value / 1_000_000:g}s"
    if value >= 1000:
        return f"<{value / 1000:g}ms"
    return f"<{value}us"


def _errors(row: AdmCallStats) -> str:
    if not row.errors:
        return "0"
    total = sum(e.count for e in row.errors)
    named = ", ".join(f"{code_name(row.program, e.code)} {e.count}" for e in row.errors)
    return f"{total} ({named})"


def render_text(st: AdmStatus) -> str:
    """The status for a person."""
    lines = [
        f"gssproxy-py {_s(st.version)} ({_s(st.mode)} mode), up {_duration(st.uptime_ms)}",
        f"configuration generation {st.generation}: "
        + (", ".join(_s(f) for f in st.files) or "(synthesised)"),
        "connections: "
        + (", ".join(f"uid {c.uid}: {c.connections}" for c in st.connections) or "none")
        + f"; calls in flight: {st.calls_in_flight}",
        "",
        "calls (direct: by the direct path; latency: the bucket bound under which "
        "50 % / 99 % of calls ended):",
        *_calls_table(st.calls),
        "",
        "worker pools:",
        *_pools(st),
        "",
        "kernel upcall (use-gss-proxy):",
        *_upcalls(st),
        "",
        "token sessions:",
        *_tokens(st),
        *_processes(st),
    ]
    return "\n".join(lines) + "\n"


def _process_name(p: AdmProcess) -> str:
    return "first process" if p.number == 0 else f"worker {p.number}"


def _processes(st: AdmStatus) -> list[str]:
    """Each process's own counters (`worker_processes` > 1); nothing with one."""
    if not st.processes:
        return []
    lines = ["", "processes (the figures above are their totals):"]
    for p in st.processes:
        if not p.answered:
            lines.append(f"  {_process_name(p)}: no answer (being forked again, or stuck)")
            continue
        connections = ", ".join(f"uid {c.uid}: {c.connections}" for c in p.connections)
        calls = sum(r.calls for r in p.calls)
        errors = sum(e.count for r in p.calls for e in r.errors)
        lines.append(
            f"  {_process_name(p)}, pid {p.pid}: connections {connections or 'none'}; "
            f"calls in flight {p.calls_in_flight}; {calls} calls, {errors} errors"
        )
        lines.extend(f"  {line}" for line in _calls_table(p.calls))
    return lines


def _calls_table(calls: Iterable[AdmCallStats]) -> list[str]:
    """One aligned line per (service, program, procedure); the errors column
    last and not padded."""
    header = ("service", "program", "procedure", "calls", "direct", "p50", "p99", "errors")
    rows = [header]
    rows.extend(
        (
            _s(row.service) or "(no service)",
            PROGRAM_NAMES.get(row.program, str(row.program)),
            _s(row.procedure),
            str(row.calls),
            str(row.direct),
            _us(quantile(row.latency_buckets, 0.5)),
            _us(quantile(row.latency_buckets, 0.99)),
            _errors(row),
        )
        for row in calls
    )
    if len(rows) == 1:
        return ["  none yet"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)]
        lines.append("  " + "  ".join(cells) + "  " + r[-1])
    return lines


def _pools(st: AdmStatus) -> list[str]:
    lines = []
    for p in st.pools:
        state = " BROKEN" if p.broken else ""
        # One pool is of processes: the p11-kit workers (server.p11kit_workers).
        unit = "processes" if p.name == b"p11kit-workers" else "threads"
        lines.append(
            f"  {_s(p.name)}: {p.threads} {unit}, {p.busy} busy, {p.queued} queued, "
            f"{p.written_off} written off{state}"
        )
    return lines or ["  none started"]


def _upcalls(st: AdmStatus) -> list[str]:
    lines = []
    for u in st.upcalls:
        where = _s(u.netns) or "own network namespace"
        retry = ", retrying" if u.retrying else ""
        lines.append(f"  {where}: {_s(u.outcome)}{retry} - {_s(u.detail)}")
    return lines or ["  not used (no kernel_nfsd service)"]


def _tokens(st: AdmStatus) -> list[str]:
    lines = [f"  {_s(t.module)} {_s(t.token)}: {'open' if t.open else 'closed'}" for t in st.tokens]
    return lines or ["  none"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


class _Metrics:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
        self.lines.append(f"# HELP {PREFIX}_{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}_{name} {kind}")
        self.lines.extend(samples)


def _histogram(row: AdmCallStats, labels: dict[str, str]) -> list[str]:
    name = f"{PREFIX}_call_duration_seconds"
    out = []
    last = max((i for i, n in enumerate(row.latency_buckets) if n), default=0)
    seen = 0
    for index in range(last + 1):
        seen += row.latency_buckets[index]
        le = f"{bucket_upper_us(index) / 1e6:g}"
        out.append(f"{name}_bucket{_labels(**labels, le=le)} {seen}")
    out.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {row.calls}")
    out.append(f"{name}_sum{_labels(**labels)} {row.latency_sum_us / 1e6:g}")
    out.append(f"{name}_count{_labels(**labels)} {row.calls}")
    return out


def render_prometheus(st: AdmStatus) -> str:
    """The same counters in the Prometheus text exposition format."""
    m = _Metrics()
    info = _labels(version=_s(st.version), mode=_s(st.mode))
    m.family("info", "gauge", "the daemon's version and mode", [f"{PREFIX}_info{info} 1"])
    m.family(
        "uptime_seconds",
        "gauge",
        "seconds since the daemon started",
        [f"{PREFIX}_uptime_seconds {st.uptime_ms / 1000:g}"],
    )
    m.family(
        "config_generation",
        "gauge",
        "1 at start, +1 per successful reload",
        [f"{PREFIX}_config_generation {st.generation}"],
    )
    m.family(
        "connections",
        "gauge",
        "open GSS-Proxy connections per peer uid",
        [f"{PREFIX}_connections{_labels(uid=str(c.uid))} {c.connections}" for c in st.connections],
    )
    m.family(
        "calls_in_flight",
        "gauge",
        "calls received and not yet answered",
        [f"{PREFIX}_calls_in_flight {st.calls_in_flight}"],
    )
    calls, direct, errors, hist = [], [], [], []
    for row in st.calls:
        labels = {
            "service": _s(row.service),
            "program": PROGRAM_NAMES.get(row.program, str(row.program)),
            "procedure": _s(row.procedure),
        }
        calls.append(f"{PREFIX}_calls_total{_labels(**labels)} {row.calls}")
        direct.append(f"{PREFIX}_calls_direct_total{_labels(**labels)} {row.direct}")
        for e in row.errors:
            code = code_name(row.program, e.code)
            errors.append(f"{PREFIX}_call_errors_total{_labels(**labels, code=code)} {e.count}")
        hist.extend(_histogram(row, labels))
    m.family("calls_total", "counter", "calls answered, per service and procedure", calls)
    m.family(
        "calls_direct_total",
        "counter",
        "of calls_total, those the direct path served (gss/direct.py)",
        direct,
    )
    m.family(
        "call_errors_total",
        "counter",
        "calls answered with a failure, by GSS routine error / ts_status / SYSTEM_ERR",
        errors,
    )
    m.family(
        "call_duration_seconds",
        "histogram",
        "time from a call's arrival to its reply being ready",
        hist,
    )
    for field, help_text in (
        ("threads", "threads of the worker pool"),
        ("busy", "threads in a call now"),
        ("queued", "calls waiting for a thread"),
        ("written_off", "stuck threads given up on and replaced"),
        ("broken", "1 if a thread of the pool could not be set up"),
    ):
        m.family(
            f"pool_{field}",
            "gauge",
            help_text,
            [
                f"{PREFIX}_pool_{field}{_labels(pool=_s(p.name))} {int(getattr(p, field))}"
                for p in st.pools
            ],
        )
    m.family(
        "kernel_upcall_enabled",
        "gauge",
        "1 if the kernel's nfsd upcall is enabled in the network namespace",
        [
            f"{PREFIX}_kernel_upcall_enabled{_labels(netns=_s(u.netns))} "
            f"{int(u.outcome == b'enabled')}"
            for u in st.upcalls
        ],
    )
    m.family(
        "token_session_open",
        "gauge",
        "1 if a PKCS#11 session is open on the token",
        [
            f"{PREFIX}_token_session_open{_labels(module=_s(t.module), token=_s(t.token))} "
            f"{int(t.open)}"
            for t in st.tokens
        ],
    )
    _process_metrics(m, st)
    return "\n".join(m.lines) + "\n"


def _process_metrics(m: _Metrics, st: AdmStatus) -> None:
    """Per process (`worker_processes` > 1; the families above are totals)."""
    if not st.processes:
        return
    m.family(
        "process_answered",
        "gauge",
        "1 if the process answered the status request (0: its figures are missing)",
        [
            f"{PREFIX}_process_answered{_labels(process=str(p.number))} {int(p.answered)}"
            for p in st.processes
        ],
    )
    answered = [p for p in st.processes if p.answered]
    m.family(
        "process_connections",
        "gauge",
        "open GSS-Proxy connections of one process",
        [
            f"{PREFIX}_process_connections{_labels(process=str(p.number))} "
            f"{sum(c.connections for c in p.connections)}"
            for p in answered
        ],
    )
    calls = []
    for p in answered:
        for row in p.calls:
            labels = _labels(
                process=str(p.number),
                service=_s(row.service),
                program=PROGRAM_NAMES.get(row.program, str(row.program)),
                procedure=_s(row.procedure),
            )
            calls.append(f"{PREFIX}_process_calls_total{labels} {row.calls}")
    m.family(
        "process_calls_total",
        "counter",
        "calls one process answered, per service and procedure (from its start)",
        calls,
    )
