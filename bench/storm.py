"""Fairness under a call storm (issue 14, item 5), gssproxy-py next to the C
gssproxy in the same storm.

    python -m bench.storm [--seconds 15] [--connections 24] [--py-before TREE]
                          [--py-variant 'LABEL:option=value,option=value' ...]

For each daemon (C, optionally a second gssproxy-py tree, gssproxy-py), with
the bench's realm and configuration (`bench.env`): `--connections`
connections in three storm processes pipeline NULL and INDICATE_MECHS (16
in flight each) on the socket of `bench-accept` (a service that serves
root: gssproxy closes the connection of a caller no service serves) for
the whole round; meanwhile a
second client sends INDICATE_MECHS one at a time on its own connection
(latency p50/p99), and a kernel-style client sends serial
ACCEPT_SEC_CONTEXT calls with real AP-REQs for nfs@localhost on the kernel
socket (calls completed, and per second: the probe stops when its 6,000
tokens run out, so the rate is the figure that compares). Every client is
a separate process; all run as root, as in the issue. Prints one table row
per daemon. `--py-variant` measures gssproxy-py once more with the
`[gssproxy]` options given (e.g. `short:turn_time_us=100`), in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from bench.env import PY_TREE, daemon, make_realm
from bench.run import make_tokens
from bench.worker import read_tokens
from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON

ME = [str(VENV_PYTHON), "-m", "bench.storm"]
IN_FLIGHT = 16


def _record(body: bytes) -> bytes:
    return struct.pack(">I", 0x80000000 | len(body)) + body


def null_call(xid: int) -> bytes:
    return _record(struct.pack(">10I", xid, 0, 2, 400112, 1, 0, 0, 0, 0, 0))


def indicate_mechs_call(xid: int) -> bytes:
    # procedure 1 and an empty gssx_call_ctx (three empty arrays)
    return _record(struct.pack(">13I", xid, 0, 2, 400112, 1, 1, 0, 0, 0, 0, 0, 0, 0))


def _replies(buf: bytearray) -> int:
    """Remove whole records from `buf`; how many there were."""
    n = 0
    while len(buf) >= 4:
        (mark,) = struct.unpack_from(">I", buf)
        size = 4 + (mark & 0x7FFFFFFF)
        if len(buf) < size:
            break
        del buf[:size]
        n += 1
    return n


def storm(path: str, connections: int, seconds: float) -> None:
    """Pipeline NULL and INDICATE_MECHS on `connections` connections."""
    sel = selectors.DefaultSelector()
    burst = b"".join(null_call(i) if i % 2 else indicate_mechs_call(i) for i in range(IN_FLIGHT))
    answered = 0
    for _ in range(connections):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.sendall(burst)
        sel.register(s, selectors.EVENT_READ, [bytearray(), 0])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            sock, state = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            data = sock.recv(65536)
            if not data:
                sel.unregister(sock)
                continue
            state[0] += data
            state[1] += _replies(state[0])
            if state[1] >= IN_FLIGHT:
                answered += state[1]
                state[1] = 0
                sock.sendall(burst)
    print(json.dumps({"storm_answered": answered}), flush=True)


def latency(path: str, seconds: float) -> None:
    """Serial INDICATE_MECHS on one connection: latencies in ms."""
    lat: list[float] = []
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        end = time.monotonic() + seconds
        xid = 0
        while time.monotonic() < end:
            xid += 1
            buf = bytearray()
            t0 = time.perf_counter()
            s.sendall(indicate_mechs_call(xid))
            while not _replies(buf):
                chunk = s.recv(65536)
                if not chunk:
                    raise SystemExit(f"the daemon closed the connection after {len(lat)} calls")
                buf += chunk
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.005)  # an interactive client, not a second flooder
    q = statistics.quantiles(lat, n=100)
    print(json.dumps({"calls": len(lat), "p50_ms": q[49], "p99_ms": q[98]}), flush=True)


def kernel(path: str, tokens: str, seconds: float) -> None:
    """Serial kernel-style ACCEPTs until `seconds` or the tokens run out."""
    sys.path.insert(0, str(REPO_ROOT))
    from tests.conformance.kernel_client import KernelConnection, nfsd_checks_complete

    done = 0
    with KernelConnection(path, timeout=60) as conn:
        start = time.monotonic()
        end = start + seconds
        for token in read_tokens(Path(tokens)):
            if time.monotonic() >= end:
                break
            nfsd_checks_complete(conn.accept(0x4B000000 + done, token))
            done += 1
        elapsed = time.monotonic() - start
    print(json.dumps({"kernel_calls": done, "kernel_rate": done / elapsed}), flush=True)


def _json(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args!r}: {err}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def with_globals(config: Path, options: str) -> None:
    """Add `option=value,option=value` to the `[gssproxy]` section of `config`."""
    lines = "".join(
        f"  {o.split('=', 1)[0].strip()} = {o.split('=', 1)[1].strip()}\n"
        for o in options.split(",")
        if o
    )
    text = config.read_text()
    if "[gssproxy]\n" not in text:
        raise SystemExit(f"{config}: no [gssproxy] section to add {options!r} to")
    config.write_text(text.replace("[gssproxy]\n", "[gssproxy]\n" + lines, 1))


def round_for(label: str, d: object, realm: object, work: Path, args: argparse.Namespace) -> str:
    from bench.env import BenchDaemon, BenchRealm

    assert isinstance(d, BenchDaemon) and isinstance(realm, BenchRealm)
    (tokens,) = make_tokens(realm, realm.nfs_target, [6000], work / f"tokens-{label}")
    env = {**os.environ, **realm.env(), "PYTHONPATH": str(REPO_ROOT)}
    d.start()
    try:
        per = [args.connections // 3 + (1 if i < args.connections % 3 else 0) for i in range(3)]
        storms = [
            subprocess.Popen(
                [*ME, "storm", str(d.sockets.accept), str(n), str(args.seconds + 3)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in per
        ]
        time.sleep(1.0)  # the storm is on
        probes = [
            subprocess.Popen(
                [*ME, "latency", str(d.sockets.accept), str(args.seconds)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            subprocess.Popen(
                [*ME, "kernel", str(d.sockets.kernel), str(tokens), str(args.seconds)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        ]
        lat, kern = (_json(p) for p in probes)
        answered = sum(_json(p)["storm_answered"] for p in storms)
    finally:
        d.stop()
    return (
        f"| {label} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.1f} | {int(lat['calls'])} "
        f"| {int(kern['kernel_calls'])} | {kern['kernel_rate']:.0f} | {int(answered)} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storm")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--connections", type=int, default=24)
    ap.add_argument("--py-before", type=Path, help="a second gssproxy-py tree, measured too")
    ap.add_argument(
        "--py-variant",
        action="append",
        default=[],
        help="LABEL:option=value,...: gssproxy-py again with these [gssproxy] options",
    )
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "build" / "bench" / "storm")
    args = ap.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    realm = make_realm(args.work)
    rows = []
    try:
        plan: list[tuple[str, str, Path, str]] = [("C gssproxy", "c", PY_TREE, "")]
        if args.py_before is not None:
            plan.append(("gssproxy-py (before)", "py", args.py_before, ""))
        plan.append(("gssproxy-py", "py", PY_TREE, ""))
        for variant in args.py_variant:
            name, _, options = variant.partition(":")
            plan.append((f"gssproxy-py {name}", "py", PY_TREE, options))
        for label, impl, tree, options in plan:
            d = daemon(impl, realm, args.work / label.replace(" ", "-"), tree=tree)  # type: ignore[arg-type]
            if options:
                with_globals(d.config, options)
            rows.append(round_for(label.replace(" ", "-"), d, realm, args.work, args))
            print(rows[-1], flush=True)
    finally:
        realm.realm.stop()
    print(
        f"\nstorm: {args.connections} connections pipelining NULL/INDICATE_MECHS, "
        f"{args.seconds:g} s per daemon\n"
        "| daemon | 2nd client INDICATE_MECHS p50 ms | p99 ms | its calls "
        "| kernel-style ACCEPTs | per s | storm calls answered |\n|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("storm", "latency", "kernel"):
        mode, rest = sys.argv[1], sys.argv[2:]
        if mode == "storm":
            storm(rest[0], int(rest[1]), float(rest[2]))
        elif mode == "latency":
            latency(rest[0], float(rest[1]))
        else:
            kernel(rest[0], rest[1], float(rest[2]))
        sys.exit(0)
    sys.exit(main())
