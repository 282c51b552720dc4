"""What one round measures against one daemon, and how big each workload is.

A workload is a named function (daemon, context) -> Outcome. The round runs
them in the order of `DAEMON_WORKLOADS`; each figure of the table is then
read from one workload's outcome (`bench.report.FIGURES`).

To add a workload, write its runner here (a client mode in `bench.worker` if
it needs a new client), append it to `DAEMON_WORKLOADS`, and add its
figure(s) to `bench.report.FIGURES`. Nothing else changes: rounds,
alternation, the table and results.json pick it up. The token-signing
program's SIGN is not one of them: the C daemon has no such program, so
`bench.pkcs11_sign` measures it against in-process signing, with its own
token and daemon, after the rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.env import BenchDaemon, BenchRealm
from bench.run import Outcome, accept_workload, init_workload, kernel_workload


@dataclass(frozen=True)
class Sizes:
    """Operations per workload (per client where there are several)."""

    accept1: int = 2000
    accept8_per_client: int = 500
    init_clients: int = 4
    init_per_client: int = 300
    kernel: int = 4000
    kernel_inflight: int = 8
    baseline1: int = 3000
    baseline8_per_client: int = 1000

    @classmethod
    def quick(cls) -> Sizes:
        """For a smoke run (`python -m bench --quick`): numbers are not meaningful."""
        return cls(200, 50, 2, 30, 400, 8, 300, 100)


@dataclass(frozen=True)
class Context:
    realm: BenchRealm
    workdir: Path
    sizes: Sizes


Runner = Callable[[BenchDaemon, Context], Outcome]


def accept_1(d: BenchDaemon, c: Context) -> Outcome:
    """python-gssapi acceptor through proxymech.so: ACQUIRE_CRED + ACCEPT per accept."""
    return accept_workload(c.realm, d.sockets.accept, d, 1, c.sizes.accept1, c.workdir)


def accept_8(d: BenchDaemon, c: Context) -> Outcome:
    return accept_workload(c.realm, d.sockets.accept, d, 8, c.sizes.accept8_per_client, c.workdir)


def init_n(d: BenchDaemon, c: Context) -> Outcome:
    """init_sec_context through proxymech.so, the daemon initiating with client_keytab."""
    s = c.sizes
    return init_workload(c.realm, d.sockets.init, d, s.init_clients, s.init_per_client, c.workdir)


def kernel_8(d: BenchDaemon, c: Context) -> Outcome:
    """The nfsd upcall's shape: ACCEPT with lucid + linux_creds, 8 in flight, one connection."""
    s = c.sizes
    return kernel_workload(c.realm, d.sockets.kernel, d, s.kernel, s.kernel_inflight, c.workdir)


#: In this order against each daemon, every round.
DAEMON_WORKLOADS: dict[str, Runner] = {
    "accept_1": accept_1,
    "accept_8": accept_8,
    "init": init_n,
    "kernel_8": kernel_8,
}


def baseline_1(c: Context) -> Outcome:
    """The limit: the same acceptor with the keytab itself, no daemon."""
    return accept_workload(c.realm, None, None, 1, c.sizes.baseline1, c.workdir)


def baseline_8(c: Context) -> Outcome:
    return accept_workload(c.realm, None, None, 8, c.sizes.baseline8_per_client, c.workdir)


BASELINE_WORKLOADS: dict[str, Callable[[Context], Outcome]] = {
    "baseline_1": baseline_1,
    "baseline_8": baseline_8,
}
