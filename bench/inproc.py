"""In-process cost of one accept through the daemon's real program layer, as a
count that does not depend on the machine's load.

`python -m bench.inproc` makes a throwaway realm (`bench.env.make_realm`),
then runs a child process that feeds prebuilt RPC call records to what the
daemon runs for each record it reads -- `rpc.messages.route`, then
`server.calls.CallStarter.start_call` with the GSS program built by
`gss.program.gss_proxy_service` from the bench's own configuration -- and
keeps the reply bytes. No sockets, no event loop turns for calls that finish
inline (a call that returns a coroutine is run to its end on a loop, and
counted as a hop). Two workloads, as in `make bench`:

* `accept`: ACQUIRE_CRED + ACCEPT_SEC_CONTEXT, the interposer's pair, on the
  `bench-accept` service (the accept uses the handle the acquire returned);
* `kernel`: ACCEPT_SEC_CONTEXT with the lucid context and linux_creds options
  (the nfsd upcall), on `bench-kernel`.

Modes:

* `--count` (default): the child runs under `valgrind --tool=callgrind`
  twice, with `--small` and `--large` accepts after the same warm-up; the
  figure is (instructions(large) - instructions(small)) / (large - small),
  so start-up, imports and warm-up cancel out (the heap is collected and
  frozen before the loop, so no full collection of the start-up's objects
  falls into one run and not the other; one PYTHONHASHSEED). Instructions,
  not time: the number is the same on a busy machine, within about ±1.5%
  between runs of the same tree with `--small 10 --large 60` (tokens,
  MIT's random confounders and the replay cache differ a little; use
  larger runs to resolve smaller differences). Only user-space instructions are
  counted: system calls count their user-side wrappers, not the kernel's work;
* `--syscalls`: the same two runs under `strace -c`, system calls per
  accept by name (what `--count` cannot see: the kernel's side);
* `--cpu`: the child runs natively and prints CPU time per accept (depends
  on the load; for a quick look);
* `--profile`: cProfile of the timed loop, top functions by own time.

Each child gets a fresh `KRB5RCACHEDIR`. Its tokens (each accepted once, as
the replay cache requires) and the call records carrying them are made by a
helper process it starts after its own start-up (so they are fresh even when
valgrind takes minutes, and making them is not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.env import config_text, make_realm, sockets_in
from bench.worker import read_tokens, write_tokens

WORKLOADS = ("accept", "kernel")
#: Accepts run before anything is counted: the first acquire misses the
#: credential cache and hops to a thread; later ones hit it.
WARMUP = 5


# -- the child: one process, N accepts ---------------------------------------------


class _Harness:
    """The daemon's per-record path, minus the socket: route, start, reply."""

    def __init__(self, config_path: Path, workload: str) -> None:
        # The inline guard times calls by the wall clock; under valgrind every
        # call is ~50x slower and would send the service to the threads, so
        # the harness's guard never demotes (the path measured is the inline
        # one the daemon takes on a healthy machine).
        import gssproxy_py.gss.inline as inline_module
        from gssproxy_py.config.load import load_config
        from gssproxy_py.config.peer import Peer
        from gssproxy_py.gss.inline_guard import InlineGuard
        from gssproxy_py.gss.program import gss_proxy_service
        from gssproxy_py.proto.gss_proxy import GSSPROXY
        from gssproxy_py.server.calls import CallStarter
        from gssproxy_py.server.connection import ConnectionInfo
        from gssproxy_py.server.logs import configure_logging

        never = float("inf")
        vars(inline_module)["InlineGuard"] = lambda: InlineGuard(limit=never, blocked=never)

        config = load_config(str(config_path), None, default_socket=str(config_path) + ".sock")
        configure_logging(config.globals.debug_level)
        self.service = gss_proxy_service(config)
        self.services = {GSSPROXY: self.service}
        self.starter = CallStarter(config, default_socket="", selinux_enabled=False)
        name = "bench-accept" if workload == "accept" else "bench-kernel"
        service = config.service(name)
        assert service is not None and service.socket is not None
        socket_path = service.socket
        peer = Peer(pid=os.getpid(), uid=0, gid=0, program=sys.executable)
        self.conn = ConnectionInfo(number=1, peer=peer, socket_path=socket_path)
        self.loop = asyncio.new_event_loop()
        self.hops = 0

    def call(self, record: bytes) -> bytes:
        from gssproxy_py.rpc.messages import route

        routed = route(record, self.services)
        if isinstance(routed, bytes):
            return routed
        reply = self.starter.start_call(self.conn, routed)
        if isinstance(reply, bytes):
            return reply
        self.hops += 1
        return self.loop.run_until_complete(reply)

    def close(self) -> None:
        if self.service.close is not None:
            self.service.close()
        self.loop.close()


def _record(xid: int, proc_number: int, arg: object) -> bytes:
    from gssproxy_py.client.wire import build_call
    from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS

    version = GSSPROXY_PROGRAM.versions[GSSPROXYVERS]
    return build_call(xid, GSSPROXY_PROGRAM, GSSPROXYVERS, version.procedures[proc_number], arg)


def _result(reply: bytes, proc_number: int) -> object:
    from gssproxy_py.client.wire import parse_reply, reply_xid
    from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS

    proc = GSSPROXY_PROGRAM.versions[GSSPROXYVERS].procedures[proc_number]
    xid = reply_xid(reply)
    return parse_reply(reply, xid=xid, program=GSSPROXY_PROGRAM, version=GSSPROXYVERS, proc=proc)


def _check(res: object) -> None:
    major = res.status.major_status  # type: ignore[attr-defined]
    if major != 0:
        raise SystemExit(f"call failed: {res.status}")  # type: ignore[attr-defined]


def _acquire_record() -> bytes:
    """What proxymech.so sends for an acceptor without credentials: an
    ACQUIRE_CRED for no name, krb5, ACCEPT usage."""
    from gssproxy_py.proto import gss_proxy as gp
    from gssproxy_py.vocab import oids

    arg = gp.GssxArgAcquireCred(
        gp.GssxCallCtx(b"", b"", ()),
        None,
        False,
        None,
        0xFFFFFFFF,
        (oids.KRB5,),
        gp.GssxCredUsage.GSSX_C_ACCEPT,
        0xFFFFFFFF,
        0xFFFFFFFF,
        (),
    )
    return _record(1, gp.GSSX_ACQUIRE_CRED, arg)


def _records(workload: str, tokens: list[bytes], cred: object) -> list[bytes]:
    """The records of one run: per accept, the acquire (interposer only) and
    the accept of one token with the handle an acquire returned (`cred`),
    asking for delegated credentials as python-gssapi does."""
    from gssproxy_py.proto import gss_proxy as gp
    from gssproxy_py.vocab.gssx_options import (
        EXPORTED_CONTEXT_TYPE,
        EXPORTED_CREDS_TYPE,
        LINUX_CREDS_V1,
        LINUX_LUCID_V1,
    )

    if workload == "kernel":
        ctx = gp.GssxCallCtx(
            b"",
            b"",
            (
                gp.GssxOption(EXPORTED_CONTEXT_TYPE, LINUX_LUCID_V1),
                gp.GssxOption(EXPORTED_CREDS_TYPE, LINUX_CREDS_V1),
            ),
        )
        return [
            _record(
                i + 1,
                gp.GSSX_ACCEPT_SEC_CONTEXT,
                gp.GssxArgAcceptSecContext(ctx, None, None, t, None, False, ()),
            )
            for i, t in enumerate(tokens)
        ]
    assert isinstance(cred, gp.GssxCred)
    ctx = gp.GssxCallCtx(b"", b"", ())
    acquire = _acquire_record()
    out: list[bytes] = []
    for i, t in enumerate(tokens):
        out.append(acquire)
        arg = gp.GssxArgAcceptSecContext(ctx, None, cred, t, None, True, ())
        out.append(_record(i + 2, gp.GSSX_ACCEPT_SEC_CONTEXT, arg))
    return out


def make_records(args: argparse.Namespace) -> None:
    """The helper: fresh tokens and the records that carry them, written to
    `--out` (run natively, so neither counts in the child's figure)."""
    from gssproxy_py.proto import gss_proxy as gp
    from gssproxy_py.xdr import decode_bytes

    cred = decode_bytes(gp.decode_gssx_cred, Path(args.cred).read_bytes()) if args.cred else None
    target = "host@localhost" if args.workload == "accept" else "nfs@localhost"
    write_tokens(Path(args.out), _records(args.workload, _tokens(target, args.n), cred))


def _fresh_records(workload: str, count: int, cred: object, work: Path) -> list[bytes]:
    """Records with tokens made now by the helper process: the child may
    take minutes under valgrind, longer than a token's 5 minutes of skew."""
    from gssproxy_py.proto import gss_proxy as gp
    from gssproxy_py.xdr import encode_bytes

    out = work / f"records-{workload}-{os.getpid()}"
    argv = [sys.executable, "-m", "bench.inproc", "--make-records", "--workload", workload]
    argv += ["-n", str(count), "--out", str(out)]
    if isinstance(cred, gp.GssxCred):
        (work / f"cred-{os.getpid()}").write_bytes(encode_bytes(gp.encode_gssx_cred, cred))
        argv += ["--cred", str(work / f"cred-{os.getpid()}")]
    # Not under valgrind: its preload libraries stay out of the helper.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    subprocess.run(argv, env=env, check=True)
    return read_tokens(out)


def child(args: argparse.Namespace) -> None:
    from gssproxy_py.proto import gss_proxy as gp

    h = _Harness(Path(args.config), args.workload)
    per = 1 if args.workload == "kernel" else 2
    cred: object = None
    if args.workload == "accept":
        res = _result(h.call(_acquire_record()), gp.GSSX_ACQUIRE_CRED)
        _check(res)
        cred = res.output_cred_handle  # type: ignore[attr-defined]
    records = _fresh_records(args.workload, WARMUP + args.n, cred, Path(args.config).parent)
    for i, rec in enumerate(records[: WARMUP * per]):  # warm-up, checked
        if i % per == per - 1:
            _check(_result(h.call(rec), gp.GSSX_ACCEPT_SEC_CONTEXT))
        else:
            h.call(rec)
    hops = h.hops
    timed = records[WARMUP * per :]
    call = h.call
    prof = cProfile.Profile() if args.profile else None
    # The same heap for every run: without this, a full collection that falls
    # in one run's loop and not in the other's moves the difference by more
    # than a cut is worth. Collections of the loop's own objects still count.
    gc.collect()
    gc.freeze()
    t0 = time.process_time()
    if prof is not None:
        prof.enable()
    replies = [call(rec) for rec in timed]
    if prof is not None:
        prof.disable()
    cpu = time.process_time() - t0
    last = _result(replies[-1], gp.GSSX_ACCEPT_SEC_CONTEXT)
    _check(last)
    h.close()
    per = cpu / max(args.n, 1) * 1e6
    print(f"accepts {args.n} hops {h.hops - hops} cpu_us_per_accept {per:.1f}")
    if prof is not None:
        if args.profile_out:
            prof.dump_stats(args.profile_out)
        stats = pstats.Stats(prof)
        stats.sort_stats(args.sort).print_stats(args.top)


# -- the parent: realm, tokens, children --------------------------------------------


def _tokens(target: str, count: int) -> list[bytes]:
    """`count` fresh AP-REQs from alice (KRB5CCNAME) to `target`."""
    import gssapi

    name = gssapi.Name(target, gssapi.NameType.hostbased_service)
    out: list[bytes] = []
    for _ in range(count):
        ctx = gssapi.SecurityContext(name=name, usage="initiate")
        token = ctx.step()
        assert token is not None
        out.append(token)
    return out


_TOTALS = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.MULTILINE)
#: A row of `strace -c`: % time, seconds, usecs/call, calls, [errors,] syscall.
_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", re.MULTILINE)

#: How a counted child runs: under callgrind (instructions) or strace (system calls).
WRAPPERS = {
    "count": ["valgrind", "--tool=callgrind", "--callgrind-out-file={out}"],
    # Not -f: the helper that makes the tokens is a child process. Calls
    # that run inline (the child prints "hops 0") stay on the main thread.
    "syscalls": ["strace", "-c", "-o", "{out}"],
}


def _run_child(
    work: Path, env: dict[str, str], workload: str, n: int, extra: list[str], mode: str
) -> tuple[str, Counter[str]]:
    """Output of one child run, and what its wrapper counted (instructions
    under the key "Ir", or calls per system call)."""
    rcache = Path(tempfile.mkdtemp(prefix="rcache-", dir=work))
    # One hash seed for every run: str hashes decide dict collisions, and
    # so a few thousand instructions per accept.
    child_env = {**env, "KRB5RCACHEDIR": str(rcache), "PYTHONHASHSEED": "0"}
    argv = [
        sys.executable,
        "-m",
        "bench.inproc",
        "--child",
        "--workload",
        workload,
        "--config",
        str(work / "gssproxy.conf"),
        "-n",
        str(n),
        *extra,
    ]
    out_file = work / f"{mode}-{workload}-{n}.out"
    wrapper = [w.format(out=out_file) for w in WRAPPERS.get(mode, [])]
    proc = subprocess.run([*wrapper, *argv], env=child_env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stdout.decode()}\n{proc.stderr.decode()[-3000:]}")
    counted: Counter[str] = Counter()
    if mode == "count":
        m = _TOTALS.search(out_file.read_bytes())
        if m is None:
            raise SystemExit(f"no totals in {out_file}")
        counted["Ir"] = int(m.group(1))
    elif mode == "syscalls":
        for calls, name in _STRACE_ROW.findall(out_file.read_text()):
            if name != "total":
                counted[name] += int(calls)
    return proc.stdout.decode(), counted


def parent(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="inproc-", dir=args.workdir) as tmp:
        work = Path(tmp)
        realm = make_realm(work)
        try:
            env = {**os.environ, **realm.env(), "KRB5CCNAME": f"FILE:{realm.alice_ccache}"}
            os.environ.update(env)
            state = work / "state"
            state.mkdir(mode=0o700)
            text = config_text(realm, sockets_in(work), state)
            (work / "gssproxy.conf").write_text(text)
            for workload in args.workloads:
                _measure(work, env, workload, args)
        finally:
            realm.realm.stop()


def _measure(work: Path, env: dict[str, str], workload: str, args: argparse.Namespace) -> None:
    if args.mode in WRAPPERS:
        _, small = _run_child(work, env, workload, args.small, [], args.mode)
        out_large, large = _run_child(work, env, workload, args.large, [], args.mode)
        accepts = args.large - args.small
        done = out_large.split(" cpu")[0]
        if args.mode == "count":
            per = (large["Ir"] - small["Ir"]) / accepts
            print(
                f"{workload}: {per:,.0f} instructions per accept "
                f"({args.small}: {small['Ir']:,}, {args.large}: {large['Ir']:,}; {done})"
            )
            return
        diff = {k: (large[k] - small[k]) / accepts for k in large}
        rows = sorted(diff.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{k} {v:.2f}" for k, v in rows if v >= 0.01)
        print(f"{workload}: {sum(diff.values()):.2f} system calls per accept: {shown} ({done})")
        return
    extra = []
    if args.mode == "profile":
        extra = ["--profile", "--sort", args.sort, "--top", str(args.top)]
        if args.profile_out:
            extra += ["--profile-out", f"{args.profile_out}.{workload}"]
    out, _ = _run_child(work, env, workload, args.n, extra, args.mode)
    print(f"{workload}: {out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--count", dest="mode", action="store_const", const="count")
    mode.add_argument("--syscalls", dest="mode", action="store_const", const="syscalls")
    mode.add_argument("--cpu", dest="mode", action="store_const", const="cpu")
    mode.add_argument("--profile", dest="mode", action="store_const", const="profile")
    p.set_defaults(mode="count")
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--small", type=int, default=20, help="accepts in the first counted run")
    p.add_argument("--large", type=int, default=120, help="accepts in the second counted run")
    p.add_argument("-n", type=int, default=2000, help="accepts for --cpu and --profile")
    p.add_argument("--sort", default="tottime", help="pstats sort key for --profile")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--profile-out", default=None, help="also write the pstats file here")
    p.add_argument("--workdir", default=None, help="where the realm lives (default: $TMPDIR)")
    # the child's own options
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--make-records", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cred", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.make_records:
        make_records(args)
    elif args.child:
        args.profile = args.mode == "profile"
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
