"""The table: min, median and max of every figure per daemon, the ratio of
the medians (py/C), and whether each target of docs/PERFORMANCE.md is met
(issue 15's: accepts with 1 and 8 clients >= C, p50 <= C, daemon CPU per
interposer accept <= 0.8 x C, kernel-style >= 1.3 x C at <= C's CPU per
call, RSS <= 80 MB). `cpu_table` shows what bounds each workload: the
daemon's and the clients' CPU per operation and the cores they used.

The bench reports; it never asserts. A target that is not met says "no".
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Round = dict[
    str, Any
]  # {"impl", "round", "workloads": {name: Outcome.as_dict()}, "rss_bytes", ...}


@dataclass(frozen=True)
class Target:
    kind: str  # "ratio_ge" | "ratio_le" | "py_le"
    value: float

    def text(self) -> str:
        if self.kind == "ratio_ge":
            return f"py/C >= {self.value:g}"
        if self.kind == "ratio_le":
            return f"py/C <= {self.value:g}"
        return f"py <= {self.value:g}"

    def met(self, py: float | None, ratio: float | None) -> bool | None:
        if self.kind == "py_le":
            return None if py is None else py <= self.value
        if ratio is None:
            return None
        return ratio >= self.value if self.kind == "ratio_ge" else ratio <= self.value


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    read: Callable[[Round], float | None]
    target: Target | None = None
    digits: int = 0


def _w(workload: str, field: str) -> Callable[[Round], float | None]:
    def read(r: Round) -> float | None:
        w = r["workloads"].get(workload)
        if w is None or w.get("errors"):
            return None
        v = w.get(field)
        return None if v is None else float(v)

    return read


def _cpu_per_1000(*workloads: str) -> Callable[[Round], float | None]:
    def read(r: Round) -> float | None:
        got = [r["workloads"].get(w) for w in workloads]
        if any(g is None or "daemon_cpu_s" not in g for g in got):
            return None
        cpu = sum(float(g["daemon_cpu_s"]) for g in got if g is not None)
        count = sum(int(g["count"]) for g in got if g is not None)
        return cpu / count * 1000 if count else None

    return read


def _mb(field: str) -> Callable[[Round], float | None]:
    def read(r: Round) -> float | None:
        v = r.get(field)
        return None if v is None else v / 1e6

    return read


FIGURES: tuple[Figure, ...] = (
    Figure(
        "accept_1_rate",
        "accept via interposer, 1 client",
        "accepts/s",
        _w("accept_1", "rate_per_s"),
        Target("ratio_ge", 1.0),
    ),
    Figure(
        "accept_1_p50",
        "  latency p50, 1 client",
        "us",
        _w("accept_1", "p50_us"),
        Target("ratio_le", 1.0),
    ),
    Figure(
        "accept_8_rate",
        "accept via interposer, 8 clients",
        "accepts/s",
        _w("accept_8", "rate_per_s"),
        Target("ratio_ge", 1.0),
    ),
    Figure("init_rate", "init via interposer (client_keytab)", "inits/s", _w("init", "rate_per_s")),
    Figure(
        "kernel_8_rate",
        "kernel-style ACCEPT, lucid, 8 in flight, 1 conn",
        "accepts/s",
        _w("kernel_8", "rate_per_s"),
        Target("ratio_ge", 1.3),
    ),
    Figure(
        "cpu_per_1000_accepts",
        "daemon CPU per 1000 interposer accepts",
        "s",
        _cpu_per_1000("accept_1", "accept_8"),
        Target("ratio_le", 0.8),
        digits=3,
    ),
    Figure(
        "cpu_per_1000_kernel",
        "daemon CPU per 1000 kernel-style accepts",
        "s",
        _cpu_per_1000("kernel_8"),
        Target("ratio_le", 1.0),
        digits=3,
    ),
    Figure(
        "rss_mb",
        "daemon RSS after the workloads (all processes)",
        "MB",
        _mb("rss_bytes"),
        Target("py_le", 80.0),
        digits=1,
    ),
    Figure("pss_mb", "  PSS (shared pages split)", "MB", _mb("pss_bytes"), digits=1),
)

BASELINE_FIGURES: tuple[Figure, ...] = (
    Figure(
        "baseline_1_rate",
        "no daemon: local keytab, 1 client",
        "accepts/s",
        _w("baseline_1", "rate_per_s"),
    ),
    Figure(
        "baseline_8_rate",
        "no daemon: local keytab, 8 clients",
        "accepts/s",
        _w("baseline_8", "rate_per_s"),
    ),
    Figure("baseline_1_p50", "  latency p50, 1 client", "us", _w("baseline_1", "p50_us")),
)


def _stats(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


def summarize(rounds: Sequence[Round]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in FIGURES:
        per: dict[str, Any] = {}
        for impl in ("c", "py"):
            vals = [v for r in rounds if r["impl"] == impl and (v := f.read(r)) is not None]
            per[impl] = _stats(vals)
        c, py = per["c"], per["py"]
        ratio = py["median"] / c["median"] if c and py and c["median"] else None
        entry: dict[str, Any] = {"label": f.label.strip(), "unit": f.unit, **per, "ratio": ratio}
        if f.target is not None:
            entry["target"] = f.target.text()
            entry["met"] = f.target.met(py["median"] if py else None, ratio)
        out[f.key] = entry
    for f in BASELINE_FIGURES:
        vals = [v for r in rounds if r["impl"] == "baseline" and (v := f.read(r)) is not None]
        out[f.key] = {"label": f.label.strip(), "unit": f.unit, "baseline": _stats(vals)}
    return out


def _fmt(v: float, digits: int) -> str:
    return f"{v:,.{digits}f}"


def _triple(s: dict[str, float] | None, digits: int) -> str:
    if not s:
        return "n/a"
    return " / ".join(_fmt(s[k], digits) for k in ("min", "median", "max"))


def table(summary: dict[str, Any], codec: dict[str, float] | None = None) -> str:
    """A Markdown table (readable as plain text too)."""
    lines = [
        "| figure | unit | C min / median / max | py min / median / max | py/C | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in FIGURES:
        e = summary[f.key]
        ratio = "n/a" if e["ratio"] is None else f"{e['ratio']:.2f}"
        met = e.get("met")
        met_text = "" if f.target is None else ("n/a" if met is None else ("yes" if met else "NO"))
        lines.append(
            f"| {f.label} | {f.unit} | {_triple(e['c'], f.digits)} | {_triple(e['py'], f.digits)}"
            f" | {ratio} | {e.get('target', '')} | {met_text} |"
        )
    for f in BASELINE_FIGURES:
        e = summary[f.key]
        lines.append(f"| {f.label} | {f.unit} | {_triple(e['baseline'], f.digits)} | | | | |")
    if codec:
        for k, v in codec.items():
            what = k.removesuffix("_us").replace("_", " ")
            lines.append(f"| codec (py): {what} | us/message | | {v:.1f} | | | |")
    return "\n".join(lines)


def before_after(
    rounds: Sequence[Round], *, before: str = "py-before", after: str = "py"
) -> dict[str, Any]:
    """Medians of C, `before` and `after` per figure (rounds of one run)."""
    out: dict[str, Any] = {}
    for f in FIGURES:
        med: dict[str, float | None] = {}
        for impl in ("c", before, after):
            med[impl] = _median_of(rounds, impl, f.read)
        old, new = med[before], med[after]
        change = new / old if old and new is not None else None
        out[f.key] = {"label": f.label.strip(), "unit": f.unit, "digits": f.digits, **med}
        out[f.key]["after_over_before"] = change
    return out


def before_after_table(ba: dict[str, Any], *, before: str = "py-before", after: str = "py") -> str:
    lines = [
        f"| figure | unit | C | {before} | {after} | {after} / {before} | {after} / C |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in ba.values():
        d = e["digits"]

        def cell(v: float | None, digits: int = d) -> str:
            return "n/a" if v is None else _fmt(v, digits)

        c, new = e["c"], e[after]
        vs_c = new / c if c and new is not None else None
        lines.append(
            f"| {e['label']} | {e['unit']} | {cell(c)} | {cell(e[before])} | {cell(new)}"
            f" | {cell(e['after_over_before'], 2)} | {cell(vs_c, 2)} |"
        )
    return "\n".join(lines)


def memory_table(rounds: Sequence[Round]) -> str:
    """RSS and PSS of each process of each gssproxy-py daemon, in tree order
    (medians over rounds): first process, then (with workers) the supervisor
    and the workers."""
    lines = ["| daemon | process | RSS MB | PSS MB |", "|---|---|---|---|"]
    for impl in _labels(rounds):
        if impl in ("c", "baseline"):
            continue
        per = [r["memory_by_process"] for r in rounds if r["impl"] == impl]
        for i in range(max((len(p) for p in per), default=0)):
            rss = statistics.median(p[i]["rss_bytes"] for p in per if len(p) > i) / 1e6
            pss = statistics.median(p[i]["pss_bytes"] for p in per if len(p) > i) / 1e6
            role = "first" if i == 0 else "supervisor" if i == 1 else f"worker {i - 1}"
            lines.append(f"| {impl} | {role} | {rss:.1f} | {pss:.1f} |")
    return "\n".join(lines)


def _labels(rounds: Sequence[Round]) -> list[str]:
    """The daemons of a run, in the order they ran."""
    return list(dict.fromkeys(r["impl"] for r in rounds if "memory_by_process" in r))


#: The workloads whose CPU `cpu_table` shows (rate, daemon and client CPU).
CPU_WORKLOADS: tuple[tuple[str, str], ...] = (
    ("accept_1", "accept via interposer, 1 client"),
    ("accept_8", "accept via interposer, 8 clients"),
    ("init", "init via interposer (client_keytab)"),
    ("kernel_8", "kernel-style, 8 in flight, 1 conn"),
)


def _median_of(
    rounds: Sequence[Round], impl: str, read: Callable[[Round], float | None]
) -> float | None:
    vals = [v for r in rounds if r["impl"] == impl and (v := read(r)) is not None]
    return statistics.median(vals) if vals else None


def cpu_table(rounds: Sequence[Round]) -> str:
    """Per workload and daemon (medians): CPU per operation of the daemon and
    of the clients, and the cores the two used together (rate x CPU per
    operation), so a reader sees whether the daemon, the clients or the
    machine's cores bound a figure."""
    lines = [
        "| workload | daemon | daemon CPU ms/op | clients CPU ms/op"
        " | cores used (daemon + clients) |",
        "|---|---|---|---|---|",
    ]
    for key, label in CPU_WORKLOADS:
        for impl in _labels(rounds) or ("c", "py"):
            rate = _median_of(rounds, impl, _w(key, "rate_per_s"))
            daemon = _median_of(rounds, impl, _w(key, "daemon_cpu_s_per_1000"))
            client = _median_of(rounds, impl, _w(key, "client_cpu_s_per_1000"))
            if rate is None:
                continue
            # s per 1000 operations is ms per operation
            d_ms = "n/a" if daemon is None else f"{daemon:.3f}"
            c_ms = "n/a" if client is None else f"{client:.3f}"
            if daemon is None or client is None:
                cores = "n/a"
            else:
                d_cores, c_cores = rate * daemon / 1000, rate * client / 1000
                cores = f"{d_cores + c_cores:.2f} ({d_cores:.2f} + {c_cores:.2f})"
            lines.append(f"| {label} | {impl} | {d_ms} | {c_ms} | {cores} |")
    return "\n".join(lines)
