"""Command line of the IDL compiler (`gssproxy-py-xdrgen`)."""

from __future__ import annotations

import argparse
import os
import sys

from gssproxy_py.xdrgen import XdrgenError, compile_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="gssproxy-py-xdrgen",
        description="Compile an XDR (RFC 4506) / ONC RPC (RFC 5531) .x file into typed Python.",
    )
    ap.add_argument("source", help="the .x file")
    ap.add_argument("-o", "--output", help="write here instead of standard output")
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if OUTPUT differs from what would be generated (for CI)",
    )
    args = ap.parse_args(argv)
    try:
        code = compile_file(args.source)
    except XdrgenError as e:
        print(e, file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{args.source}: {e.strerror}", file=sys.stderr)
        return 1
    if args.check:
        if not args.output:
            ap.error("--check needs -o OUTPUT")
        try:
            with open(args.output, encoding="utf-8") as f:
                same = f.read() == code
        except FileNotFoundError:
            same = False
        if not same:
            print(f"{args.output} is out of date with {args.source}", file=sys.stderr)
            return 1
        return 0
    if args.output:
        tmp = args.output + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(code)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(code)
    return 0
