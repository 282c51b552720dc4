"""Running the workloads: client processes, tokens, one round against one daemon.

The method is the one used to measure the C gssproxy before this project
(machine-recipes §5): tokens are made in advance by a plain initiator; N
client processes each warm up once, then start together; rate = operations /
wall time, where wall time runs from the first client's start to the last
client's end (CLOCK_MONOTONIC, shared by all processes).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.env import BenchDaemon, BenchRealm
from bench.worker import read_tokens, write_tokens
from gssproxy_py.testing.interposer import interposer_env
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON

WORKER = [str(VENV_PYTHON), "-m", "bench.worker"]
#: A worker that does not answer within this many seconds is a failure.
WORKER_TIMEOUT = 120.0


class BenchError(RuntimeError):
    pass


@dataclass
class Outcome:
    """One workload's result against one daemon."""

    count: int
    errors: int
    wall_s: float
    rate: float
    p50_us: float
    p99_us: float
    cpu_s: float | None = None  # the daemon's CPU over the workload
    client_cpu_s: float = 0.0  # the clients' CPU over their timed loops
    first_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "count": self.count,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 4),
            "rate_per_s": round(self.rate, 1),
            "p50_us": round(self.p50_us, 1),
            "p99_us": round(self.p99_us, 1),
        }
        if self.cpu_s is not None:
            d["daemon_cpu_s"] = round(self.cpu_s, 3)
            d["daemon_cpu_s_per_1000"] = round(self.cpu_s / max(1, self.count) * 1000, 4)
        d["client_cpu_s_per_1000"] = round(self.client_cpu_s / max(1, self.count) * 1000, 4)
        if self.first_error:
            d["first_error"] = self.first_error
        d.update(self.extra)
        return d


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def run_workers(jobs: Sequence[tuple[list[str], Mapping[str, str]]], log_dir: Path) -> Outcome:
    """Start every job, wait until all are warm, release them together,
    collect and aggregate their reports."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs_: list[subprocess.Popen[str]] = []
    try:
        for n, (argv, env) in enumerate(jobs):
            err = open(log_dir / f"worker-{n}.err", "w")  # noqa: SIM115 - closed with the process
            procs_.append(
                subprocess.Popen(
                    argv,
                    env=dict(env),
                    cwd=str(REPO_ROOT),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    text=True,
                )
            )
            err.close()
        for n, p in enumerate(procs_):
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise BenchError(f"worker {n} did not get ready: {_tail(log_dir, n)}")
        for p in procs_:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for n, p in enumerate(procs_):
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise BenchError(f"worker {n} gave no report: {_tail(log_dir, n)}")
            reports.append(json.loads(line))
            p.wait(WORKER_TIMEOUT)
    finally:
        for p in procs_:
            if p.poll() is None:
                p.kill()
                p.wait()
    count = sum(r["count"] for r in reports)
    errors = sum(r["errors"] for r in reports)
    wall = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    lat = sorted(x for r in reports for x in r["lat_us"])
    first = next((r.get("first_error") for r in reports if r.get("first_error")), None)
    return Outcome(
        count=count,
        errors=errors,
        wall_s=wall,
        rate=count / wall if wall > 0 else float("nan"),
        p50_us=statistics.median(lat) if lat else float("nan"),
        p99_us=_quantile(lat, 0.99),
        client_cpu_s=sum(r["cpu_s"] for r in reports),
        first_error=first,
    )


def _tail(log_dir: Path, n: int) -> str:
    try:
        return (log_dir / f"worker-{n}.err").read_text()[-2000:]
    except OSError:
        return "(no stderr)"


# -- tokens ----------------------------------------------------------------------------


def make_tokens(
    realm: BenchRealm, target: str, counts: Sequence[int], out_dir: Path, *, parallel: int = 2
) -> list[Path]:
    """One token file per entry of `counts`, made by `parallel` plain initiators.

    Tokens are fresh for each round: authenticators older than the clock skew
    (5 minutes) would be refused, and each is accepted once (replay cache).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    total = sum(counts)
    env = {
        **_base_env(realm),
        "KRB5CCNAME": f"FILE:{realm.alice_ccache}",
        "KRB5_KTNAME": "FILE:/nonexistent",
    }
    shares = [total // parallel + (1 if i < total % parallel else 0) for i in range(parallel)]
    raw = [out_dir / f"raw-{i}.tok" for i in range(parallel)]
    gens = [
        subprocess.Popen(
            [*WORKER, "tokens", "--target", target, "--count", str(k), "--out", str(path)],
            env=env,
            cwd=str(REPO_ROOT),
            stderr=subprocess.PIPE,
            text=True,
        )
        for k, path in zip(shares, raw, strict=True)
        if k
    ]
    for g in gens:
        _, err = g.communicate(timeout=WORKER_TIMEOUT)
        if g.returncode != 0:
            raise BenchError(f"token generation failed: {err[-2000:]}")
    tokens = [t for path in raw if path.exists() for t in read_tokens(path)]
    for path in raw:
        path.unlink(missing_ok=True)
    if len(tokens) != total:
        raise BenchError(f"made {len(tokens)} tokens, wanted {total}")
    files = []
    pos = 0
    for i, k in enumerate(counts):
        path = out_dir / f"{target.split('@')[0]}-{i}.tok"
        write_tokens(path, tokens[pos : pos + k])
        pos += k
        files.append(path)
    return files


# -- environments ------------------------------------------------------------------------


def _base_env(realm: BenchRealm) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        **realm.env(),
    }
    return env


def proxied_env(realm: BenchRealm, socket: Path, workdir: Path) -> dict[str, str]:
    return {**_base_env(realm), **interposer_env(socket, workdir, "REMOTE_ONLY")}


def local_env(realm: BenchRealm, keytab: Path) -> dict[str, str]:
    """A client with the keytab itself (the in-process baseline: no daemon)."""
    return {
        **_base_env(realm),
        "GSS_USE_PROXY": "no",
        "KRB5_KTNAME": f"FILE:{keytab}",
        "KRB5CCNAME": "MEMORY:bench-local",
    }


# -- workloads ---------------------------------------------------------------------------


def _cpu_around(daemon: BenchDaemon | None, fn: Any) -> tuple[Outcome, float | None]:
    before = procs.cpu_seconds(daemon.pid) if daemon is not None else None
    out: Outcome = fn()
    if daemon is None or before is None:
        return out, None
    return out, procs.cpu_seconds(daemon.pid) - before


def accept_workload(
    realm: BenchRealm,
    socket: Path | None,
    daemon: BenchDaemon | None,
    clients: int,
    per_client: int,
    workdir: Path,
) -> Outcome:
    """Accept through the interposer (socket given) or locally (socket None)."""
    files = make_tokens(realm, realm.host_target, [per_client + 1] * clients, workdir / "tokens")
    env = (
        local_env(realm, realm.host_keytab)
        if socket is None
        else proxied_env(realm, socket, workdir)
    )
    jobs = [
        ([*WORKER, "accept", "--tokens", str(f), "--count", str(per_client)], env) for f in files
    ]
    out, cpu = _cpu_around(daemon, lambda: run_workers(jobs, workdir / "logs"))
    out.cpu_s = cpu
    for f in files:
        f.unlink(missing_ok=True)
    return out


def init_workload(
    realm: BenchRealm,
    socket: Path,
    daemon: BenchDaemon,
    clients: int,
    per_client: int,
    workdir: Path,
) -> Outcome:
    env = proxied_env(realm, socket, workdir)
    jobs = [
        ([*WORKER, "init", "--target", realm.host_target, "--count", str(per_client)], env)
        for _ in range(clients)
    ]
    out, cpu = _cpu_around(daemon, lambda: run_workers(jobs, workdir / "logs"))
    out.cpu_s = cpu
    return out


def kernel_workload(
    realm: BenchRealm,
    socket: Path,
    daemon: BenchDaemon,
    count: int,
    inflight: int,
    workdir: Path,
) -> Outcome:
    (f,) = make_tokens(realm, realm.nfs_target, [count + 1], workdir / "tokens")
    env = _base_env(realm)
    argv = [
        *WORKER,
        "kernel",
        "--socket",
        str(socket),
        "--tokens",
        str(f),
        "--count",
        str(count),
        "--inflight",
        str(inflight),
    ]
    out, cpu = _cpu_around(daemon, lambda: run_workers([(argv, env)], workdir / "logs"))
    out.cpu_s = cpu
    f.unlink(missing_ok=True)
    return out
