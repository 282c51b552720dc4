"""`gssproxy-py-ctl`: ask the running daemon how it is doing, check a
configuration before a reload, and explain which service a caller gets.

    gssproxy-py-ctl status [--format text|prometheus] [--output FILE]
    gssproxy-py-ctl reload | stop
    gssproxy-py-ctl check-config [-c FILE] [-C DIR] [-s SOCKET]
    gssproxy-py-ctl explain --uid U [--gid G] [--program PATH] [--socket PATH]
                            [--netns NAME] [--selinux-context CTX] [-s DEFAULT]
    gssproxy-py-ctl pin set|clear --service NAME

`status`, `reload` and `stop` speak the admin program (`idl/admin.x`) on the
daemon's admin socket: `--admin-socket`, else the configuration's
`admin_socket`, else `NAME-admin.sock` beside the default socket (`-s`;
with `-u`, the userproxy socket). `check-config` and `explain` read the
configuration with the daemon's own code (`admin.check`) and need no
running daemon. `pin` stores a token PIN in the kernel keyring
(`admin.pin`).

Exit status: 0 on success, 1 when the daemon or the configuration says no
(errors are printed), 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gssproxy_py import __version__
from gssproxy_py.admin.check import check_config, describe_service, explain
from gssproxy_py.admin.paths import admin_socket_path
from gssproxy_py.admin.render import render_prometheus, render_text
from gssproxy_py.client.errors import RpcClientError
from gssproxy_py.client.sync import RpcClient
from gssproxy_py.config.load import DEFAULT_SOCKET, load_config
from gssproxy_py.config.userproxy import userproxy_paths
from gssproxy_py.errors import ConfigError
from gssproxy_py.proto.admin import (
    ADM_RELOAD,
    ADM_STATUS,
    ADM_STOP,
    GSSPROXY_ADMIN_PROGRAM,
    GSSPROXY_ADMIN_V1,
    AdmOutcome,
    AdmResult,
    AdmStatus,
)

PROG = "gssproxy-py-ctl"
#: A status is read from counters in memory: anything slower is a stuck daemon.
CALL_TIMEOUT = 10.0


def _config_options(p: argparse.ArgumentParser, socket_flag: str = "--socket") -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="main configuration file")
    p.add_argument("-C", "--configdir", metavar="DIR", help="configuration directory")
    p.add_argument(
        "-s",
        socket_flag,
        dest="socket",
        metavar="PATH",
        help=f"the daemon's default socket (default {DEFAULT_SOCKET})",
    )


def _daemon_options(p: argparse.ArgumentParser) -> None:
    _config_options(p)
    p.add_argument("-u", "--userproxy", action="store_true", help="the userproxy daemon")
    p.add_argument("--admin-socket", metavar="PATH", help="the daemon's admin socket")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Administer a gssproxy-py daemon.")
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    status = sub.add_parser("status", help="counters and state of the running daemon")
    _daemon_options(status)
    status.add_argument("--format", choices=("text", "prometheus"), default="text")
    status.add_argument(
        "--output", metavar="FILE", help="write to FILE atomically (node_exporter textfile)"
    )
    for name, text in (("reload", "re-read the configuration"), ("stop", "stop the daemon")):
        _daemon_options(sub.add_parser(name, help=text))

    check = sub.add_parser("check-config", help="validate the configuration as the daemon would")
    _config_options(check)

    exp = sub.add_parser("explain", help="which service would serve a caller, and why not others")
    # --socket is the caller's socket here (as the issue spells it); -s stays the default one.
    _config_options(exp, socket_flag="--default-socket")
    exp.add_argument("--uid", type=int, required=True, help="the caller's uid")
    exp.add_argument("--gid", type=int, help="the caller's gid (default: the uid)")
    exp.add_argument("--program", metavar="PATH", help="the caller's executable")
    exp.add_argument(
        "--socket",
        "--connect",
        metavar="PATH",
        dest="connect",
        help="the socket it connects to (default: the default socket, -s)",
    )
    exp.add_argument("--netns", metavar="NAME", help="the caller's named network namespace")
    exp.add_argument("--selinux-context", metavar="CTX", help="the caller's SELinux context")

    from gssproxy_py.admin.pin import add_pin_parser

    add_pin_parser(sub)
    return ap


def _default_socket(args: argparse.Namespace) -> str:
    return str(args.socket or DEFAULT_SOCKET)


def admin_socket(args: argparse.Namespace) -> str:
    """Where the daemon's admin socket is, from the command line and config."""
    if args.admin_socket:
        return str(args.admin_socket)
    if args.userproxy:
        return admin_socket_path(None, userproxy_paths(args.socket, os.environ).socket)
    configured = None
    try:
        config = load_config(args.config, args.configdir, default_socket=_default_socket(args))
        configured = config.globals.admin_socket
    except ConfigError:
        pass  # a daemon may well run with a configuration we cannot read now
    return admin_socket_path(configured, _default_socket(args))


def _call(args: argparse.Namespace, procedure: int) -> object:
    with RpcClient(
        admin_socket(args), GSSPROXY_ADMIN_PROGRAM, GSSPROXY_ADMIN_V1, timeout=CALL_TIMEOUT
    ) as client:
        return client.call(procedure)


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    tmp = f"{output}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, output)


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, ADM_STATUS)
    assert isinstance(status, AdmStatus)
    render = render_prometheus if args.format == "prometheus" else render_text
    _write(render(status), args.output)
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    result = _call(args, ADM_RELOAD if args.command == "reload" else ADM_STOP)
    assert isinstance(result, AdmResult)
    message = result.message.decode("utf-8", errors="replace")
    if result.outcome is AdmOutcome.ADM_OK:
        print(message)
        return 0
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    default = _default_socket(args)
    report = check_config(args.config, args.configdir, default_socket=default)
    for error in report.errors:
        print(f"error: {error}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.config is None:
        print(f"{len(report.errors)} error(s): the daemon would not load this configuration")
        return 1
    print(f"files: {', '.join(report.config.files)}")
    for service in report.config.services:
        print()
        print("\n".join(describe_service(service, default)))
    print()
    print(f"OK: {len(report.config.services)} service(s), {len(report.warnings)} warning(s)")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    default = _default_socket(args)
    config = load_config(args.config, args.configdir, default_socket=default)
    winner, rows, who = explain(
        config,
        uid=args.uid,
        gid=args.gid if args.gid is not None else args.uid,
        program=args.program,
        socket_path=os.path.normpath(args.connect or default),
        default_socket=default,
        netns=args.netns,
        selinux_context=args.selinux_context,
    )
    print(f"caller: {who}")
    if winner is None:
        print("served by: no service (the daemon answers GSS_S_NO_CRED with this reason)")
    else:
        print(f"served by: service '{winner.name}' ({winner.file}:{winner.line})")
    for service, why in rows:
        if service is winner:
            continue
        if why is None:
            why = f"matches too, but '{winner.name if winner else '?'}' comes first"
        print(f"  not '{service.name}' ({service.file}:{service.line}): {why}")
    return 0 if winner is not None else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "status": cmd_status,
        "reload": cmd_result,
        "stop": cmd_result,
        "check-config": cmd_check,
        "explain": cmd_explain,
    }
    try:
        if args.command == "pin":
            from gssproxy_py.admin.pin import cmd_pin

            return cmd_pin(args)
        return commands[args.command](args)
    except (RpcClientError, ConfigError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
