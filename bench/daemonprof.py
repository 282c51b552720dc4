"""The whole daemon's cost per interposer accept, at one client.

`bench.inproc` counts only the program layer in one process; this runs the
real daemon (`gssproxy_py.server.cli`, or the C gssproxy) against the bench's
accept_1 client (python-gssapi through proxymech.so), so the event loop, the
transport, the system calls and the interposer's own call pattern are in the
figure. Modes:

* `--count`: the daemon under `valgrind --tool=callgrind --instr-atstart=no`;
  collection is switched on around a run of `--small` and then `--large`
  accepts (`callgrind_control -i on/off`, a dump after each), and the
  difference divided by `--large - --small` gives user-space instructions
  per accept, in total and by shared object (load-independent), and with
  `--functions N` the N functions with the most inclusive instructions per
  accept (C functions: the interpreter's, the libraries', mypyc's
  `CPyDef_module___function`; a run with `GSSPROXY_PY_NO_MYPYC=1` and
  `--profile` names the Python functions);
* `--syscalls`: the daemon under `strace -c -f`, `--small` and `--large`
  accepts, system calls per accept by name (difference of two runs);
* `--cpu`: the daemon's utime and stime (/proc) over `--large` accepts,
  microseconds per accept (depends on the machine's load);
* `--profile`: the daemon under cProfile (its loop thread), top functions
  by own time over `--large` accepts.

`python -m bench.daemonprof --count --small 50 --large 250`. The realm lives
under `--workdir` (default build/bench/daemonprof, wiped at start).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench import procs
from bench.env import BenchDaemon, BenchRealm, daemon, make_realm
from bench.run import accept_workload
from gssproxy_py.testing.paths import REPO_ROOT

_CALLGRIND_TOTAL = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def _accepts(r: BenchRealm, d: BenchDaemon, work: Path, n: int) -> None:
    out = accept_workload(r, d.sockets.accept, d, 1, n, work)
    if out.errors:
        raise SystemExit(f"{out.errors} accepts failed: {out.first_error}")


#: The daemon under valgrind runs some 50 times slower: its inline guard
#: (`gss.inline_guard`, calls over 20 ms move the service to the worker
#: threads) would move the calls to threads part-way through a count, so the
#: counted daemon never demotes (measurement only; the daemon is otherwise
#: the one `python -m gssproxy_py.server.cli` runs).
_NO_DEMOTION = (
    "import runpy\n"
    "from gssproxy_py.gss import inline_guard\n"
    "inline_guard.InlineGuard.record = lambda self, service, took: False\n"
    "runpy.run_module('gssproxy_py.server.cli', run_name='__main__', alter_sys=True)\n"
)


def _callgrind(
    r: BenchRealm, d: BenchDaemon, work: Path, small: int, large: int, functions: int
) -> None:
    out_dir = work / "callgrind"
    out_dir.mkdir()
    argv = d.argv
    if d.impl == "py":
        i = argv.index("-m")
        argv = [*argv[:i], "-c", _NO_DEMOTION, *argv[i + 2 :]]
    d.argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/cg.out",
        *argv,
    ]
    d.start(timeout=300.0)
    try:
        _accepts(r, d, work, 5)  # warm-up: credential cache, imports, rcache file
        for n in (small, large):
            subprocess.run(
                ["callgrind_control", "-i", "on", str(d.pid)], check=True, capture_output=True
            )
            _accepts(r, d, work, n)
            subprocess.run(
                ["callgrind_control", "-i", "off", str(d.pid)], check=True, capture_output=True
            )
            subprocess.run(
                ["callgrind_control", "-d", f"n{n}", str(d.pid)], check=True, capture_output=True
            )
    finally:
        d.stop(timeout=60.0)
    dumps = sorted(out_dir.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    # Dump 1 holds the `small` run, dump 2 the `large` run (zeroed after each dump);
    # the final dump at exit holds nothing (collection off).
    per_obj = [_by_object(p) for p in dumps[:2]]
    totals = [sum(o.values()) for o in per_obj]
    k = large - small
    print(f"instructions per accept (daemon, all threads): {(totals[1] - totals[0]) / k:,.0f}")
    objs = set(per_obj[0]) | set(per_obj[1])
    rows = sorted(((per_obj[1][o] - per_obj[0][o]) / k, o) for o in objs)
    for v, o in reversed(rows[-12:]):
        print(f"  {v:>12,.0f}  {o}")
    if functions:
        print(f"top {functions} functions, inclusive instructions per accept (the `large` run):")
        for v, f in _by_function(dumps[1], functions):
            print(f"  {v / large:>12,.0f}  {f}")


def _by_object(path: Path) -> collections.Counter[str]:
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s.*\[(.+)\]\s*$", line)
        if m:
            counts[os.path.basename(m.group(2))] += int(m.group(1).replace(",", ""))
    return counts


def _by_function(path: Path, top: int) -> list[tuple[int, str]]:
    """The `top` functions of a dump by inclusive instructions (C functions:
    the interpreter's, the libraries', and mypyc's `CPyDef_module___name`)."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=99.9", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows: list[tuple[int, str]] = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\([^)]*\)\s+(\S.*?)\s*$", line) or re.match(
            r"^\s*([\d,]+)\s+(\S.*?:\S.*?)\s*$", line
        )
        if m and ":" in m.group(2):
            rows.append((int(m.group(1).replace(",", "")), m.group(2)))
    return sorted(rows, reverse=True)[:top]


def _strace(r: BenchRealm, d: BenchDaemon, work: Path, small: int, large: int) -> None:
    results: list[dict[str, int]] = []
    for n in (small, large):
        d.start()
        out = work / f"strace-{n}.txt"
        tracer = subprocess.Popen(["strace", "-c", "-f", "-o", str(out), "-p", str(d.pid)])
        time.sleep(1.0)
        try:
            _accepts(r, d, work, n)
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
            d.stop()
        results.append(_strace_counts(out))
    k = large - small
    names = set(results[0]) | set(results[1])
    rows = sorted(((results[1].get(s, 0) - results[0].get(s, 0)) / k, s) for s in names)
    print(f"system calls per accept: {sum(v for v, _ in rows):.1f}")
    for v, s in reversed(rows):
        if v >= 0.05:
            print(f"  {v:6.2f}  {s}")


def _strace_counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            counts[f[-1]] = int(f[3])
    return counts


def _cpu(r: BenchRealm, d: BenchDaemon, work: Path, n: int) -> None:
    d.start()
    try:
        _accepts(r, d, work, 5)
        f0 = procs._stat_fields(d.pid)
        _accepts(r, d, work, n)
        f1 = procs._stat_fields(d.pid)
    finally:
        d.stop()
    tick = 1e6 / os.sysconf("SC_CLK_TCK")
    user = (int(f1[11]) - int(f0[11])) * tick / (n + 1)
    system = (int(f1[12]) - int(f0[12])) * tick / (n + 1)
    faults = (int(f1[7]) - int(f0[7])) / (n + 1)
    print(
        f"daemon CPU per accept: user {user:.0f} us, system {system:.0f} us, "
        f"minor page faults {faults:.1f}"
    )


def _profile(r: BenchRealm, d: BenchDaemon, work: Path, n: int, top: int) -> None:
    stats = work / "daemon.pstats"
    i = d.argv.index("-m")
    d.argv[i:i] = ["-m", "cProfile", "-o", str(stats)]
    d.start()
    try:
        _accepts(r, d, work, n)
    finally:
        d.stop()
    import pstats

    pstats.Stats(str(stats)).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.daemonprof", description=__doc__.split("\n\n")[0]
    )
    mode = p.add_mutually_exclusive_group(required=True)
    for m in ("count", "syscalls", "cpu", "profile"):
        mode.add_argument(f"--{m}", dest="mode", action="store_const", const=m)
    p.add_argument("--impl", choices=("py", "c"), default="py")
    p.add_argument("--small", type=int, default=50)
    p.add_argument("--large", type=int, default=250)
    p.add_argument("--top", type=int, default=40)
    p.add_argument(
        "--functions",
        type=int,
        default=0,
        metavar="N",
        help="with --count: also the N functions with the most inclusive instructions",
    )
    p.add_argument("--workdir", default=str(REPO_ROOT / "build" / "bench" / "daemonprof"))
    args = p.parse_args(argv)
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    r = make_realm(work)
    try:
        d = daemon(args.impl, r, work)
        if args.mode == "count":
            _callgrind(r, d, work, args.small, args.large, args.functions)
        elif args.mode == "syscalls":
            _strace(r, d, work, args.small, args.large)
        elif args.mode == "cpu":
            _cpu(r, d, work, args.large)
        else:
            _profile(r, d, work, args.large, args.top)
    finally:
        r.realm.stop()


if __name__ == "__main__":
    main()
