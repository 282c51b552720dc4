"""`gssproxy-py-call`: call one procedure of a GSS-Proxy daemon from the shell.

    gssproxy-py-call [--socket PATH] PROCEDURE [--arg-json JSON | --arg-file F]

PROCEDURE is a number or a name, case-insensitive, with or without the GSSX_
prefix (`1`, `GSSX_INDICATE_MECHS`, `indicate_mechs`, `NULL`). The argument is
built from JSON by walking the generated dataclass (see client/values.py for
the shapes); fields left out take their all-zero defaults, so no argument at
all sends the empty argument, which is what INDICATE_MECHS wants. The decoded
reply is printed as JSON in the same shapes, so it can be edited and sent back.

Exit status: 0 when the call succeeded at the RPC level (a nonzero GSS status
is printed on stderr but is still a successful call), 2 when the server
refused the call (PROC_UNAVAIL, GARBAGE_ARGS, AUTH_ERROR...), 1 when the
daemon could not be reached or answered wrongly (no socket, timeout, closed
connection, malformed reply), 64 for a bad command line or argument.

The command is generic over program tables: `run()` takes the program and
version, so another program's CLI is a three-line wrapper.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final, NoReturn, TextIO

from gssproxy_py.client.errors import RpcClientError, RpcRejected
from gssproxy_py.client.gssproxy import status_summary
from gssproxy_py.client.sync import RpcClient
from gssproxy_py.client.values import (
    JsonValueError,
    default_of,
    type_name,
    value_from_json,
    value_to_json,
)
from gssproxy_py.client.wire import (
    DEFAULT_TIMEOUT,
    MAX_RECORD_SIZE,
    default_socket_path,
    lookup_version,
    resolve_procedure,
)
from gssproxy_py.errors import XdrEncodeError
from gssproxy_py.proto.gss_proxy import GSSPROXY_PROGRAM, GSSPROXYVERS, GssxStatus
from gssproxy_py.xdr import Procedure, Program

EXIT_OK: Final = 0
EXIT_TRANSPORT: Final = 1
EXIT_REJECTED: Final = 2
EXIT_USAGE: Final = 64  # sysexits EX_USAGE; 2 already means "the server refused"


class _UsageError(Exception):
    """A bad command line or argument; reported in one line with EXIT_USAGE."""


class _Parser(argparse.ArgumentParser):
    # argparse exits with 2 on usage errors, which this command reserves for
    # RPC refusals; route them through our own exit code instead.
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(message)


def _parser(prog: str, program: Program) -> _Parser:
    p = _Parser(
        prog=prog,
        description=f"Call one procedure of the {program.name} RPC program "
        f"({program.number}) and print the decoded reply as JSON.",
    )
    p.add_argument(
        "--socket",
        metavar="PATH",
        help="daemon socket (default: $GSSPROXY_SOCKET, else /var/lib/gssproxy/default.sock)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"time allowed for the whole call (default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument(
        "--max-reply-size",
        type=int,
        default=MAX_RECORD_SIZE,
        metavar="BYTES",
        help=f"refuse replies larger than this (default {MAX_RECORD_SIZE})",
    )
    p.add_argument("--list", action="store_true", help="list the procedures and exit")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the argument that would be sent, as JSON, and exit",
    )
    p.add_argument("procedure", nargs="?", metavar="PROCEDURE", help="number or name")
    arg = p.add_mutually_exclusive_group()
    arg.add_argument("--arg-json", metavar="JSON", help="the argument as JSON text")
    arg.add_argument(
        "--arg-file", metavar="FILE", help="read the argument JSON from FILE (- for stdin)"
    )
    return p


def _load_json(ns: argparse.Namespace, stdin: TextIO) -> Any:
    if ns.arg_json is not None:
        text, origin = ns.arg_json, "--arg-json"
    elif ns.arg_file is not None:
        origin = ns.arg_file
        try:
            if ns.arg_file == "-":
                text = stdin.read()
            else:
                with open(ns.arg_file, encoding="utf-8") as f:
                    text = f.read()
        except OSError as e:
            raise _UsageError(f"cannot read {ns.arg_file}: {e.strerror or e}") from e
    else:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise _UsageError(f"{origin}: not valid JSON: {e}") from e


def build_argument(proc: Procedure, data: Any) -> Any:
    """The argument of proc from parsed JSON (None: the all-default argument)."""
    if proc.arg_type is None:
        if data is not None:
            raise _UsageError(f"{proc.name} takes no argument")
        return None
    if data is None:
        return default_of(proc.arg_type)
    try:
        return value_from_json(data, proc.arg_type)
    except JsonValueError as e:
        raise _UsageError(f"{proc.name} argument: {e}") from e


def format_value(value: Any) -> str:
    """A decoded value as indented JSON (non-ASCII text kept readable)."""
    return json.dumps(value_to_json(value), indent=2, ensure_ascii=False)


def _list(program: Program, version: int, out: TextIO) -> None:
    for number, proc in sorted(lookup_version(program, version).procedures.items()):
        arg = type_name(proc.arg_type) if proc.arg_type else "void"
        res = type_name(proc.res_type) if proc.res_type else "void"
        out.write(f"{number:3d}  {proc.name:<28} {arg} -> {res}\n")


def run(
    argv: Sequence[str] | None = None,
    *,
    program: Program = GSSPROXY_PROGRAM,
    version: int = GSSPROXYVERS,
    prog: str = "gssproxy-py-call",
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The whole command; returns its exit status."""
    stdin = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        ns = _parser(prog, program).parse_args(argv)
        if ns.list:
            _list(program, version, out)
            return EXIT_OK
        proc, arg = _request(ns, program, version, stdin)
        if ns.dry_run:
            out.write(format_value(arg) + "\n")
            return EXIT_OK
    except _UsageError as e:
        err.write(f"{prog}: {e}\n")
        return EXIT_USAGE
    return _call(ns, program, version, proc, arg, prog=prog, out=out, err=err)


def _request(
    ns: argparse.Namespace, program: Program, version: int, stdin: TextIO
) -> tuple[Procedure, Any]:
    """The procedure named on the command line and its argument; _UsageError if none."""
    if ns.procedure is None:
        raise _UsageError("PROCEDURE is required (see --list)")
    try:
        proc = resolve_procedure(lookup_version(program, version), ns.procedure)
    except KeyError as e:
        raise _UsageError(str(e.args[0])) from e
    return proc, build_argument(proc, _load_json(ns, stdin))


def _call(
    ns: argparse.Namespace,
    program: Program,
    version: int,
    proc: Procedure,
    arg: Any,
    *,
    prog: str,
    out: TextIO,
    err: TextIO,
) -> int:
    """Send the call, print the result; the exit status."""
    path = ns.socket or default_socket_path()
    try:
        with RpcClient(
            path, program, version, ns.timeout, max_reply_size=ns.max_reply_size
        ) as client:
            res = client.call(proc, arg)
    except XdrEncodeError as e:  # a number out of its field's range, say
        err.write(f"{prog}: {e}\n")
        return EXIT_USAGE
    except RpcRejected as e:
        err.write(f"{prog}: {path} refused {proc.name}: {e}\n")
        return EXIT_REJECTED
    except RpcClientError as e:
        err.write(f"{prog}: {proc.name}: {e}\n")
        return EXIT_TRANSPORT
    out.write(format_value(res) + "\n")
    status = getattr(res, "status", None)
    if isinstance(status, GssxStatus) and (status.major_status or status.minor_status):
        err.write(f"{prog}: {status_summary(status)}\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: `gssproxy-py-call = gssproxy_py.client.call_cli:main`."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
