"""One bench client process: `python -m bench.worker MODE ...`.

Modes:

* `tokens`   make AP-REQ tokens in advance, as a plain initiator (no proxy);
* `accept`   accept tokens with python-gssapi; through the interposer when the
             environment says so (GSS_USE_PROXY=yes), or locally with a keytab
             (the in-process baseline): the same code either way;
* `init`     init_sec_context to a target, through the interposer;
* `kernel`   the nfsd upcall's shape: GSSX_ACCEPT_SEC_CONTEXT with the lucid
             and linux_creds options, `--inflight` calls outstanding on ONE
             connection (gssproxy_py.client.AsyncGssProxyClient on uvloop).

Protocol with the parent (bench.run): the worker does one warm-up operation
(connection made, credentials and libraries loaded), prints `ready`, waits
for a line on stdin, runs, and prints one JSON line: count, errors, start and
end (CLOCK_MONOTONIC, comparable across processes) and per-operation
latencies in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_LEN = struct.Struct(">I")


def write_tokens(path: Path, tokens: list[bytes]) -> None:
    with open(path, "wb") as f:
        for t in tokens:
            f.write(_LEN.pack(len(t)))
            f.write(t)


def read_tokens(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _handshake() -> None:
    print("ready", flush=True)
    if not sys.stdin.readline():
        raise SystemExit("parent went away")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _report(
    count: int, errors: int, start: float, end: float, lat: list[float], cpu: float, **kw: object
) -> None:
    out = {
        "count": count,
        "errors": errors,
        "start": start,
        "end": end,
        "lat_us": lat,
        "cpu_s": cpu,
        **kw,
    }
    print(json.dumps(out), flush=True)


def _timed_loop(op: Callable[[bytes], None], items: Iterator[bytes], n: int) -> None:
    errors = 0
    first: str | None = None
    lat: list[float] = []
    clock = time.perf_counter
    cpu0 = _cpu()
    start = time.monotonic()
    for _ in range(n):
        item = next(items)
        t0 = clock()
        try:
            op(item)
        except Exception as exc:  # counted and shown once; the bench goes on
            errors += 1
            first = first or repr(exc)
        lat.append((clock() - t0) * 1e6)
    end = time.monotonic()
    _report(n, errors, start, end, lat, _cpu() - cpu0, first_error=first)


# -- modes --------------------------------------------------------------------------


def mode_tokens(args: argparse.Namespace) -> None:
    import gssapi

    target = gssapi.Name(args.target, gssapi.NameType.hostbased_service)
    flags = gssapi.RequirementFlag.mutual_authentication
    tokens = []
    for _ in range(args.count):
        ctx = gssapi.SecurityContext(name=target, usage="initiate", flags=flags)
        tokens.append(ctx.step())
    write_tokens(Path(args.out), tokens)


def mode_accept(args: argparse.Namespace) -> None:
    import gssapi

    tokens = iter(read_tokens(Path(args.tokens)))

    def accept(token: bytes) -> None:
        ctx = gssapi.SecurityContext(usage="accept")
        ctx.step(token)
        if not ctx.complete:
            raise RuntimeError("accept did not complete")

    accept(next(tokens))  # warm-up: connection, mechs, creds
    _handshake()
    _timed_loop(accept, tokens, args.count)


def mode_init(args: argparse.Namespace) -> None:
    import gssapi

    target = gssapi.Name(args.target, gssapi.NameType.hostbased_service)
    flags = gssapi.RequirementFlag.mutual_authentication

    def init(_: bytes) -> None:
        ctx = gssapi.SecurityContext(name=target, usage="initiate", flags=flags)
        if not ctx.step():
            raise RuntimeError("init gave no token")

    def forever() -> Iterator[bytes]:
        while True:
            yield b""

    init(b"")
    _handshake()
    _timed_loop(init, forever(), args.count)


def mode_kernel(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.run(_kernel(args))


async def _kernel(args: argparse.Namespace) -> None:
    from gssproxy_py.client import AsyncGssProxyClient, call_ctx, find_option, option
    from gssproxy_py.proto.gss_proxy import GssxArgAcceptSecContext
    from gssproxy_py.vocab.gssx_options import (
        EXPORTED_CONTEXT_TYPE,
        EXPORTED_CREDS_TYPE,
        LINUX_CREDS_V1,
        LINUX_LUCID_V1,
    )

    tokens = read_tokens(Path(args.tokens))
    ctx = call_ctx(
        option(EXPORTED_CONTEXT_TYPE, LINUX_LUCID_V1),
        option(EXPORTED_CREDS_TYPE, LINUX_CREDS_V1),
    )

    def arg(token: bytes) -> GssxArgAcceptSecContext:
        return GssxArgAcceptSecContext(
            call_ctx=ctx,
            context_handle=None,
            cred_handle=None,
            input_token=token,
            input_cb=None,
            ret_deleg_cred=False,
            options=(),
        )

    client = AsyncGssProxyClient(args.socket, timeout=60)
    res = await client.accept_sec_context(arg(tokens[0]))  # warm-up, and a sanity check
    if res.status.major_status != 0 or find_option(res.options, LINUX_CREDS_V1) is None:
        raise SystemExit(f"kernel-style accept failed: {res.status}")
    if res.context_handle is None or len(res.context_handle.exported_context_token) > 128:
        raise SystemExit("kernel-style accept: no lucid context")
    await asyncio.get_running_loop().run_in_executor(None, _handshake)

    todo = iter(tokens[1 : 1 + args.count])
    lat: list[float] = []
    errors = 0
    clock = time.perf_counter

    async def lane() -> None:
        nonlocal errors
        for token in todo:
            t0 = clock()
            r = await client.accept_sec_context(arg(token))
            lat.append((clock() - t0) * 1e6)
            if r.status.major_status != 0:
                errors += 1

    cpu0 = _cpu()
    start = time.monotonic()
    await asyncio.gather(*(lane() for _ in range(args.inflight)))
    end = time.monotonic()
    cpu = _cpu() - cpu0
    await client.close()
    _report(len(lat), errors, start, end, lat, cpu)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = ap.add_subparsers(dest="mode", required=True)
    t = sub.add_parser("tokens")
    t.add_argument("--target", required=True)
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--out", required=True)
    a = sub.add_parser("accept")
    a.add_argument("--tokens", required=True)
    a.add_argument("--count", type=int, required=True)
    i = sub.add_parser("init")
    i.add_argument("--target", required=True)
    i.add_argument("--count", type=int, required=True)
    k = sub.add_parser("kernel")
    k.add_argument("--socket", required=True)
    k.add_argument("--tokens", required=True)
    k.add_argument("--count", type=int, required=True)
    k.add_argument("--inflight", type=int, default=8)
    args = ap.parse_args(argv)
    {
        "tokens": mode_tokens,
        "accept": mode_accept,
        "init": mode_init,
        "kernel": mode_kernel,
    }[args.mode](args)


if __name__ == "__main__":
    main()
