"""The p11-kit worker's own cost per signature, at one client.

`bench.p11kit_sign` counts signatures per second through the whole chain;
this isolates the worker (`server.p11kit_zygote.run_worker`, the code each
p11-kit connection runs in its own process). It makes the bench's SoftHSM2
token, listens on a unix socket itself, starts one client process
(python-pkcs11 over `p11-kit-client.so`, ECDSA P-256 on a digest: C_SignInit,
a C_Sign size query and C_Sign per signature, as in bench.p11kit_sign),
accepts its connection and forks a worker for it exactly as the zygote
would (same `Handoff`, same PIN pipe contents, the daemon's log level 0),
without the daemon. After a warm-up of 50 signatures, modes:

* `--cpu`: the worker's and the client's utime and stime (/proc) over
  `--count` signatures, microseconds per signature (depends on the load);
* `--syscalls`: the worker under `strace -c -f` for `--count` signatures,
  system calls per signature by name;
* `--profile`: the worker under cProfile for `--count` signatures (switched
  on and off by SIGUSR1/SIGUSR2 around them), top functions by own time;
* `--perf`: the worker under `perf record -e cpu-clock -F 5000` (no
  hardware counters are needed) for `--count` signatures, microseconds per
  signature by shared object (python3.11 is the interpreter's share), and
  the `--top` functions;
* `--inproc`: the worker's request path in this process, no socket, no
  client: wall time per signature with the module, and with the module's
  call replaced by a constant (what the Python around it costs).

`python -m bench.p11kitprof --cpu --count 5000`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import procs
from bench.daemonprof import _strace_counts
from bench.p11kit_sign import CLIENT, p11kit_server
from bench.pkcs11_sign import (
    KEY_LABEL,
    MESSAGE,
    MODULE,
    PIN,
    SETUP_TIMEOUT,
    TOKEN_LABEL,
    Token,
    make_token,
)
from gssproxy_py.testing.paths import REPO_ROOT

WARM_UP = 50


# -- the client (a child process) -------------------------------------------------------


def client_main(sock_path: str, login: bool) -> None:
    """Sign on request: a line with N on stdin signs N times, then "done"."""
    import pkcs11
    from pkcs11 import KeyType, Mechanism, ObjectClass

    os.environ["P11_KIT_SERVER_ADDRESS"] = f"unix:path={sock_path}"
    lib = pkcs11.lib(CLIENT)
    session = lib.get_token(token_label=TOKEN_LABEL).open(user_pin=PIN if login else None)
    key: Any = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label=KEY_LABEL)
    digest = hashlib.sha256(MESSAGE).digest()
    print("ready", flush=True)
    for line in sys.stdin:
        for _ in range(int(line)):
            key.sign(digest, mechanism=Mechanism.ECDSA)
        print("done", flush=True)


class _Client:
    def __init__(self, sock_path: str, env: dict[str, str], login: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.p11kitprof", "client", sock_path, str(int(login))],
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def expect(self, what: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != what:
            raise RuntimeError(f"the client said {line!r}, not {what!r}")

    def sign(self, n: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        self.expect("done")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(SETUP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the worker (a forked child, as the zygote forks one) ---------------------------------


def _handoff() -> Any:
    """The zygote's hand-off for the bench's service (debug level 0)."""
    from gssproxy_py.server import p11kit_zygote as z

    return z.Handoff(
        token=1,
        number=1,
        socket_path="bench",
        who=f"uid {os.getuid()} pid 0 program bench",
        log_level=30,  # debug level 0, as deployed
        record_timeout=30.0,
        uid=os.getuid(),
        gid=os.getgid(),
        groups=tuple(os.getgroups()),
        service="bench-sign",
        pkcs11_module=MODULE,
        pkcs11_uris=(f"pkcs11:token={TOKEN_LABEL};object={KEY_LABEL}",),
        has_pin=True,
        pin_source="bench",
    )


def _serve(conn: socket.socket, token: Token, profile_to: Path | None) -> None:
    """The child: run_worker for `conn`, as the zygote hands it over."""
    from gssproxy_py.server import p11kit_zygote as z

    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    h = _handoff()
    if profile_to is not None:
        import cProfile

        prof = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

        def dump(*_: object) -> None:
            prof.disable()
            prof.dump_stats(str(profile_to))

        signal.signal(signal.SIGUSR2, dump)
    z.run_worker(conn, h, PIN)


@contextmanager
def _worker_and_client(work: Path, profile_to: Path | None = None) -> Iterator[tuple[int, _Client]]:
    token = make_token(work)
    path = str(work / "p11kit.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(SETUP_TIMEOUT)
    client = _Client(path, token.env())
    pid = 0
    try:
        conn, _ = listener.accept()
        conn.settimeout(None)
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                listener.close()
                _serve(conn, token, profile_to)
                status = 0
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(status)
        conn.close()
        client.expect("ready")
        client.sign(WARM_UP)
        yield pid, client
    finally:
        client.stop()
        listener.close()
        if pid:
            os.waitpid(pid, 0)


@contextmanager
def _remote_and_client(work: Path) -> Iterator[tuple[int, _Client]]:
    """The same client against `p11-kit server`: the pid is the
    `p11-kit-remote` it forked for the connection."""
    token = make_token(work)
    with p11kit_server(token) as path:
        client = _Client(path, token.env(), login=True)
        try:
            client.expect("ready")
            client.sign(WARM_UP)
            remote = [p for p in procs.children(os.getpid()) if _comm(p) == "p11-kit-remote"]
            if len(remote) != 1:
                raise RuntimeError(f"p11-kit-remote processes: {remote}")
            yield remote[0], client
        finally:
            client.stop()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _serving(work: Path, server: str) -> Any:
    return _worker_and_client(work) if server == "gssproxy" else _remote_and_client(work)


def _cpu(work: Path, n: int, server: str) -> None:
    with _serving(work, server) as (pid, client):
        w0, c0 = procs._stat_fields(pid), procs._stat_fields(client.proc.pid)
        s0 = _switches(pid)
        client.sign(n)
        w1, c1 = procs._stat_fields(pid), procs._stat_fields(client.proc.pid)
        s1 = _switches(pid)
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    for name, f0, f1 in ((server, w0, w1), ("client", c0, c1)):
        user = (int(f1[11]) - int(f0[11])) * tick / n
        system = (int(f1[12]) - int(f0[12])) * tick / n
        faults = (int(f1[7]) - int(f0[7])) / n
        print(
            f"{name} CPU per signature: user {user:.1f} us, system {system:.1f} us, "
            f"total {user + system:.1f} us, minor faults {faults:.2f}"
        )
    voluntary, forced = ((b - a) / n for a, b in zip(s0, s1, strict=True))
    print(f"{server} context switches per signature: {voluntary:.2f} voluntary, {forced:.2f} not")


def _switches(pid: int) -> tuple[int, int]:
    """(voluntary, nonvoluntary) context switches of `pid` so far."""
    counts = dict(
        line.split(":\t")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.endswith(tuple("0123456789")) and "ctxt_switches" in line
    )
    return int(counts["voluntary_ctxt_switches"]), int(counts["nonvoluntary_ctxt_switches"])


def _sign_under(work: Path, n: int, server: str, tool: list[str]) -> None:
    """`n` signatures with `tool` + [the server's pid] attached to the
    server's process for them (ended by SIGINT, as strace and perf are)."""
    with _serving(work, server) as (pid, client):
        attached = subprocess.Popen([*tool, str(pid)], stdout=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            client.sign(n)
        finally:
            attached.send_signal(signal.SIGINT)
            attached.wait(60)


def _strace(work: Path, n: int, server: str) -> None:
    out = work / "strace.txt"
    _sign_under(work, n, server, ["strace", "-c", "-f", "-o", str(out), "-p"])
    counts = _strace_counts(out)
    print(f"{server} system calls per signature: {sum(counts.values()) / n:.2f}")
    for name, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        if count / n >= 0.01:
            print(f"  {count / n:6.2f}  {name}")


PERF_HZ = 5000


def _perf(work: Path, n: int, server: str, top: int) -> None:
    data = work / "perf.data"
    perf = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ), "-o", str(data), "-p"]
    _sign_under(work, n, server, perf)
    per_sample = 1e6 / PERF_HZ / n
    rows = _perf_rows(data, "dso")
    total = sum(samples for samples, _ in rows)
    print(
        f"{server} CPU per signature by object (perf, {total} samples): {total * per_sample:.1f} us"
    )
    for samples, dso in rows:
        if samples * per_sample >= 0.5:
            print(f"  {samples * per_sample:7.1f} us  {dso}")
    print(f"the top {top} functions (object, symbol):")
    for samples, sym in _perf_rows(data, "dso,sym")[:top]:
        print(f"  {samples * per_sample:7.1f} us  {sym}")


def _perf_rows(data: Path, sort: str) -> list[tuple[int, str]]:
    """(samples, what) of a perf.data file by `sort`, most first."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", sort, "--stdio", "-q", "-n"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in report.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[0].endswith("%") and fields[1].isdigit():
            rows.append((int(fields[1]), " ".join(fields[2:])))
    return sorted(rows, reverse=True)


def _inproc(work: Path, n: int) -> None:
    """The worker's request path in this process, without a socket: the
    three requests of a signature (`lone_frame`, `FastCalls.frame`) on a
    connection set up as the worker sets it up, with the module, then with
    the module's call replaced by a constant signature."""
    from gssproxy_py.p11kit.attributes import Attribute, Cka
    from gssproxy_py.p11kit.calls import dispatch
    from gssproxy_py.p11kit.ck import Ckf, Cko
    from gssproxy_py.p11kit.fast import FastCalls, complete
    from gssproxy_py.p11kit.session import Cryptoki
    from gssproxy_py.p11kit.wire import Mechanism, encode_frame, lone_frame
    from gssproxy_py.pkcs11.p11kit_backend import P11KitTokens
    from gssproxy_py.server import p11kit_zygote as z
    from tests.support.p11kit_client import Request, initialize, response

    token = make_token(work)
    os.environ["SOFTHSM2_CONF"] = str(token.conf)
    h = _handoff()
    service, one = z._service_access(h, PIN)
    assert service is not None and one.worker is not None
    backend = P11KitTokens(one, inline=True).view(service, h.who)
    cryptoki = Cryptoki(backend)
    fast = FastCalls(cryptoki, backend)
    setup = [
        initialize(),
        Request(4, "yfu").y(1).fu(4).body(),  # C_GetSlotList
        Request(10, "uu").u(0x11).u(Ckf.SERIAL_SESSION).body(),
        Request(26, "uaA").u(0x11).aa([Attribute(Cka.CLASS, int(Cko.PRIVATE_KEY))]).body(),
        Request(27, "ufu").u(0x11).fu(4).body(),  # C_FindObjects
    ]
    replies = [complete(dispatch(cryptoki, body)) for body in setup]
    (key,) = response(replies[-1])[2].ulong_array() or ()
    digest = hashlib.sha256(MESSAGE).digest()
    frames = [
        encode_frame(0x10, body)
        for body in (
            Request(42, "uMu").u(0x11).m(Mechanism(0x1041)).u(key).body(),
            Request(43, "uayfy").u(0x11).ay(digest).fy(0).body(),
            Request(43, "uayfy").u(0x11).ay(digest).fy(64).body(),
        )
    ]

    def per_signature() -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                for frame in frames:
                    lone = lone_frame(frame)
                    assert lone is not None
                    fast.frame(*lone)
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        return best

    with_module = per_signature()
    one.worker.operate = lambda *args: b"\x01" * 64  # type: ignore[method-assign]
    without = per_signature()
    print(f"the request path in one process, best of 3 x {n} signatures (us per signature, wall):")
    print(f"  with SoftHSM2's C_SignInit and C_Sign  {with_module:7.2f}")
    print(f"  the module's call a constant           {without:7.2f}")


def _profile(work: Path, n: int, top: int) -> None:
    stats = work / "worker.pstats"
    with _worker_and_client(work, stats) as (pid, client):
        os.kill(pid, signal.SIGUSR1)
        client.sign(n)
        os.kill(pid, signal.SIGUSR2)
        time.sleep(0.5)
    import pstats

    print(f"worker profile over {n} signatures (tottime; divide by {n} for per signature)")
    pstats.Stats(str(stats)).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["client"]:
        client_main(args_in[1], args_in[2] == "1")
        return
    p = argparse.ArgumentParser(
        prog="python -m bench.p11kitprof", description=__doc__.split("\n\n")[0]
    )
    mode = p.add_mutually_exclusive_group(required=True)
    for m in ("cpu", "syscalls", "profile", "perf", "inproc"):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m)
    p.add_argument(
        "--server",
        choices=("gssproxy", "p11kit"),
        default="gssproxy",
        help="whose connection process to measure (p11kit: p11-kit server's p11-kit-remote)",
    )
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args(args_in)
    with tempfile.TemporaryDirectory(prefix="gpy-bench-p11kitprof-") as tmp:
        work = Path(tmp)
        if args.mode == "cpu":
            _cpu(work, args.count, args.server)
        elif args.mode == "syscalls":
            _strace(work, args.count, args.server)
        elif args.mode == "perf":
            _perf(work, args.count, args.server, args.top)
        elif args.mode == "inproc":
            _inproc(work, args.count)
        elif args.server != "gssproxy":
            raise SystemExit("--profile profiles gssproxy-py's worker only")
        else:
            _profile(work, args.count, args.top)


if __name__ == "__main__":
    main()
