"""`python -m bench` (`make bench`): Debian's C gssproxy and gssproxy-py, side by side.

One run sets up its own realm under build/bench/work, then alternates rounds
(C, py, no-daemon baseline, C, py, ...; 3 of each by default). A round starts
a fresh daemon, runs every workload of `bench.workloads` against it, reads
its RSS and stops it. The table gives min / median / max per figure and the
ratio of the medians; build/bench/results.json has every round. The method
and the latest table are in docs/PERFORMANCE.md. Nothing here asserts.

Options: --rounds N, --quick (tiny sizes, for a smoke test), --py-args
"--workers=2" (extra command-line flags for gssproxy-py only), --no-sign
(skip the PKCS#11 SIGN and p11-kit C_Sign sections). Environment: BENCH_PY_TREE (gssproxy-py
from another checkout), BENCH_PY_BEFORE_TREE (a second checkout measured in
the same rounds, "py-before", with a before/after table), BENCH_PY_WORKERS=N
(gssproxy-py with `worker_processes = N` too, "py-wN", against py), BENCH_ONLY
(comma-separated workload names, e.g. accept_8,kernel_8; default all).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import codec, env, procs, report
from bench.workloads import BASELINE_WORKLOADS, DAEMON_WORKLOADS, Context, Sizes
from gssproxy_py.testing.daemon import Impl, unavailable_reason
from gssproxy_py.testing.paths import REPO_ROOT

OUT_DIR = REPO_ROOT / "build" / "bench"


def _c_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "gssproxy"],
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _selected(names: Any) -> list[str]:
    only = os.environ.get("BENCH_ONLY", "").strip()
    if not only:
        return list(names)
    wanted = {n.strip() for n in only.split(",")}
    return [n for n in names if n in wanted]


def daemon_round(
    impl: Impl, n: int, ctx: Context, py_args: tuple[str, ...], label: str | None = None
) -> dict[str, Any]:
    tree = env.PY_BEFORE_TREE if label == "py-before" and env.PY_BEFORE_TREE else env.PY_TREE
    workers = env.PY_WORKERS if label == workers_label() else 1
    d = env.daemon(impl, ctx.realm, ctx.workdir, py_args, tree, worker_processes=workers)
    t0 = time.monotonic()
    d.start()
    started = time.monotonic() - t0
    result: dict[str, Any] = {"impl": label or impl, "round": n, "startup_s": round(started, 3)}
    workloads: dict[str, Any] = {}
    try:
        for name in _selected(DAEMON_WORKLOADS):
            run = DAEMON_WORKLOADS[name]
            try:
                workloads[name] = run(d, ctx).as_dict()
            except Exception as exc:  # reported in the table as n/a, never fatal
                workloads[name] = {"failed": f"{type(exc).__name__}: {exc}"[:2000], "errors": 1}
        result["rss_bytes"] = procs.rss_bytes(d.pid)
        result["pss_bytes"] = procs.pss_bytes(d.pid)
        result["processes"] = len(procs.children(d.pid))
        result["memory_by_process"] = procs.memory_by_process(d.pid)
    finally:
        d.stop()
    result["workloads"] = workloads
    return result


def workers_label() -> str | None:
    """The label of the gssproxy-py rounds with `worker_processes` > 1, if any."""
    return f"py-w{env.PY_WORKERS}" if env.PY_WORKERS > 1 else None


def baseline_round(n: int, ctx: Context) -> dict[str, Any]:
    workloads: dict[str, Any] = {}
    for name in _selected(BASELINE_WORKLOADS):
        run = BASELINE_WORKLOADS[name]
        try:
            workloads[name] = run(ctx).as_dict()
        except Exception as exc:
            workloads[name] = {"failed": f"{type(exc).__name__}: {exc}"[:2000], "errors": 1}
    return {"impl": "baseline", "round": n, "workloads": workloads}


def _progress(r: dict[str, Any]) -> str:
    parts = []
    for name, w in r["workloads"].items():
        if "rate_per_s" in w:
            parts.append(f"{name} {w['rate_per_s']:.0f}/s")
        else:
            parts.append(f"{name} FAILED")
    if "rss_bytes" in r:
        parts.append(f"rss {r['rss_bytes'] / 1e6:.0f} MB")
    return f"  round {r['round'] + 1} {r['impl']:8s} " + ", ".join(parts)


def token_section(name: str, skip: bool, **kwargs: Any) -> dict[str, Any]:
    """One token benchmark module's `measure()` (bench.pkcs11_sign: the
    TOKEN_SIGN program against in-process signing; bench.p11kit_sign: C_Sign
    through p11-kit-client.so against `p11-kit server`), when present."""
    if skip:
        return {"skipped": "--no-sign"}
    try:
        module = importlib.import_module(f"bench.{name}")
    except ImportError as exc:
        return {"skipped": f"bench.{name} not available: {exc}"}
    try:
        return {"results": module.measure(**kwargs)}
    except Exception as exc:
        return {"skipped": f"{type(exc).__name__}: {exc}"[:500]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not numbers")
    ap.add_argument("--py-args", default=os.environ.get("BENCH_PY_ARGS", ""))
    ap.add_argument("--no-sign", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT_DIR / "results.json")
    args = ap.parse_args(argv)

    impls: tuple[Impl, ...] = ("c", "py")
    for impl in impls:
        why = unavailable_reason(impl)
        if why:
            print(f"cannot run the bench: {why}", file=sys.stderr)
            return 1
    py_args = tuple(shlex.split(args.py_args))
    plan: list[tuple[Impl, str | None]] = [("c", None), ("py", None)]
    if env.PY_BEFORE_TREE is not None:
        plan.insert(1, ("py", "py-before"))
    if (label := workers_label()) is not None:
        plan.append(("py", label))
    sizes = Sizes.quick() if args.quick else Sizes()
    workdir = OUT_DIR / "work"
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.monotonic()

    results: dict[str, Any] = {
        "machine": {
            "arch": platform.machine(),
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "c_gssproxy": _c_version(),
        },
        "when": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "rounds": args.rounds,
        "sizes": vars(sizes),
        "py_args": list(py_args),
        "debug_level": env.DEBUG_LEVEL,
    }
    print("codec (GSSX_ACCEPT_SEC_CONTEXT, 1 KiB token), microseconds per message")
    c = codec.measure()
    for k, v in c.items():
        print(f"  {k:24s} {v:8.1f}")
    results["codec"] = c

    print(f"realm and keytabs in {workdir}")
    realm = env.make_realm(workdir)
    rounds: list[dict[str, Any]] = []
    try:
        ctx = Context(realm=realm, workdir=workdir, sizes=sizes)
        for n in range(args.rounds):
            for impl, label in plan:
                r = daemon_round(impl, n, ctx, py_args, label)
                rounds.append(r)
                print(_progress(r), flush=True)
            if _selected(BASELINE_WORKLOADS):
                r = baseline_round(n, ctx)
                rounds.append(r)
                print(_progress(r), flush=True)
    finally:
        realm.realm.stop()
    results["runs"] = rounds
    summary = report.summarize(rounds)
    results["summary"] = summary

    sign = token_section("pkcs11_sign", args.no_sign)
    results["pkcs11_sign"] = sign
    # Rounds as many as the accept bench's: each is ~15 s (both servers, 1 and 8 clients).
    p11kit = token_section("p11kit_sign", args.no_sign, rounds=max(1, args.rounds))
    results["p11kit_sign"] = p11kit
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    print()
    print(report.table(summary, c))
    print()
    print(report.cpu_table(rounds))
    if env.PY_BEFORE_TREE is not None:
        results["before_after"] = report.before_after(rounds)
        print(f"\nbefore = {env.PY_BEFORE_TREE}, after = {env.PY_TREE} (medians)\n")
        print(report.before_after_table(results["before_after"]))
    if (label := workers_label()) is not None:
        results["workers"] = report.before_after(rounds, before="py", after=label)
        print(f"\nworker_processes = 1 (py) against {env.PY_WORKERS} ({label}), medians\n")
        print(report.before_after_table(results["workers"], before="py", after=label))
        print()
        print(report.memory_table(rounds))
    if "results" in sign:
        print()
        print("PKCS#11 SIGN (bench.pkcs11_sign), signatures/s")
        for k, v in sign["results"].items():
            print(f"  {k:24s} {v:10.2f}")
    else:
        print(f"\nPKCS#11 SIGN: {sign.get('skipped')}")
    if "results" in p11kit:
        print()
        print("C_Sign through p11-kit-client.so (bench.p11kit_sign), signatures/s")
        for k, v in p11kit["results"].items():
            print(f"  {k:24s} {v:10.2f}")
    else:
        print(f"\np11-kit C_Sign: {p11kit.get('skipped')}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out} ({results['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
