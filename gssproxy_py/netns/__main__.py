"""`python -m gssproxy_py.netns`: look at or set the kernel's use-gss-proxy switch.

    python -m gssproxy_py.netns status [--netns NAME ... | --all] [--path FILE]
    python -m gssproxy_py.netns enable [--netns NAME ... | --all] [--path FILE]

`status` prints what the switch reads in each namespace; `enable` makes one
attempt per namespace, as the daemon does at start-up (a daemon must already
listen on /run/gssproxy.sock). Without --netns, the current namespace.
Exit status: 0 all enabled (or readable for status), 1 a namespace latched
legacy mode, 2 anything else.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gssproxy_py.config.model import DEFAULT_USE_GSS_PROXY_FILE
from gssproxy_py.netns.errors import NetnsError, UpcallError
from gssproxy_py.netns.executors import NetnsExecutors
from gssproxy_py.netns.named import NETNS_DIR, describe, list_named
from gssproxy_py.netns.nsfs import thread_proc_path
from gssproxy_py.netns.upcall import Outcome, ProcFileIO, attempt_enable, parse_state


def _parser() -> argparse.ArgumentParser:
    summary = (__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m gssproxy_py.netns", description=summary)
    p.add_argument("action", choices=("status", "enable"))
    where = p.add_mutually_exclusive_group()
    where.add_argument("--netns", action="append", metavar="NAME", help="a /run/netns name")
    where.add_argument("--all", action="store_true", help="this namespace and every named one")
    p.add_argument("--path", default=DEFAULT_USE_GSS_PROXY_FILE)
    p.add_argument("--netns-dir", default=NETNS_DIR)
    return p


def _status(path: str) -> tuple[bool, str]:
    try:
        return True, parse_state(ProcFileIO().read(thread_proc_path(path))).describe()
    except FileNotFoundError:
        return False, "absent (auth_rpcgss not loaded?)"
    except (OSError, UpcallError) as exc:
        return False, f"unreadable: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    targets: list[str | None]
    if args.all:
        targets = [None, *list_named(args.netns_dir)]
    else:
        targets = list(args.netns) if args.netns else [None]
    executors = NetnsExecutors(netns_dir=args.netns_dir)
    worst = 0
    try:
        for ns in targets:
            try:
                pool = executors.executor_for(ns)
            except NetnsError as exc:
                print(f"{describe(ns)}: {exc}")
                worst = max(worst, 2)
                continue
            if args.action == "status":
                ok, text = pool.submit(_status, args.path).result()
                print(f"{describe(ns)}: {text}")
                worst = worst if ok else 2
                continue
            res = pool.submit(attempt_enable, args.path, netns=ns).result()
            print(f"{res.outcome}: {res.detail}")
            if res.outcome is Outcome.LATCHED:
                worst = max(worst, 1)
            elif res.outcome is not Outcome.ENABLED:
                worst = 2
    finally:
        executors.shutdown()
    return worst


if __name__ == "__main__":
    sys.exit(main())
