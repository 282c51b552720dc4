"""The `gssproxy-py` command: gssproxy's command line, then the daemon.

Flags are gssproxy's (`-i`, `-D`, `-c`, `-C`, `-s`, `-d`, `--debug-level`,
`--idle-timeout`, `--version`, `--syslog-status`, `-u`), so unit files and
test suites written for gssproxy start this daemon unchanged. As in gssproxy
the default is to detach (`-D`); the systemd unit and our tests pass `-i`.

`-u` (userproxy mode) serves only the invoking user, from a synthesised
configuration (`config.userproxy`); `-c`/`-C` are refused with it. Sockets
passed by socket activation (`server.activation`) are used in either mode.
`--idle-timeout` applies, as in gssproxy, only to a socket-activated
userproxy daemon: the service manager starts it again on the next
connection, which nothing would do for a system daemon the kernel's nfsd
relies on.

`--pid-file` is ours (gssproxy always uses /run/gssproxy.pid): `-D` writes
that default, `-i` only a path given; userproxy mode writes none, as in
gssproxy. Every path on the command line is made absolute first: `-D`
changes to `/`, and a reload reads `-c`/`-C` again.

Exit status: 0 after a clean stop, 1 when the configuration cannot be loaded
(the error names file, line and option) or a socket cannot be set up, 2 for
a bad command line.

The system daemon sets `GSS_USE_PROXY=NO` in its own environment first
thing, as gssproxy does: its own GSSAPI calls must never loop back into it
through the interposer plugin. A userproxy daemon does not, as in gssproxy,
so a user proxy may itself go through the system proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import pwd
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import uvloop

from gssproxy_py import __version__
from gssproxy_py.config.load import DEFAULT_SOCKET, load_config
from gssproxy_py.config.model import Config
from gssproxy_py.config.userproxy import SOCKET_DIR_MODE, userproxy_config, userproxy_paths
from gssproxy_py.errors import ConfigError, LocalError
from gssproxy_py.server.activation import ActivationError, InheritedSocket, inherited_sockets
from gssproxy_py.server.daemon import ServerOptions, serve
from gssproxy_py.server.krb5_defaults import krb5_defaults
from gssproxy_py.server.krb5trace import start_trace_bridge
from gssproxy_py.server.logs import (
    DEBUG_LEVEL_HELP,
    configure_logging,
    effective_debug_level,
    set_debug_level,
    set_status_syslog,
)
from gssproxy_py.server.pidfile import (
    DEFAULT_PID_FILE,
    PidFileError,
    check_pid_file,
    remove_pid_file,
    write_pid_file,
)
from gssproxy_py.server.privileges import PrivilegeDropError, apply_allow_core_dumps
from gssproxy_py.server.status_channel import StatusChannels, StatusGatherer
from gssproxy_py.server.workers import (
    WorkerGroup,
    WorkerSupervisor,
    bind_rpc_sockets,
    for_workers,
    release,
    start_workers,
)

_log = logging.getLogger(__name__)

PROG = "gssproxy-py"


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="GSS-Proxy daemon (ONC RPC program 400112) in Python.",
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument(
        "-D", "--daemon", action="store_true", help="detach into the background (the default)"
    )
    mode.add_argument("-i", "--interactive", action="store_true", help="stay in the foreground")
    ap.add_argument("-c", "--config", metavar="FILE", help="main configuration file")
    ap.add_argument("-C", "--configdir", metavar="DIR", help="configuration directory")
    ap.add_argument(
        "-s",
        "--socket",
        metavar="PATH",
        help=f"socket of services without their own (default {DEFAULT_SOCKET}; "
        "with -u, $XDG_RUNTIME_DIR/gssproxy/default.sock)",
    )
    ap.add_argument("-d", "--debug", action="store_true", help="debug level 1")
    ap.add_argument("--debug-level", metavar="N", type=_non_negative_int, help=DEBUG_LEVEL_HELP)
    ap.add_argument(
        "--idle-timeout",
        metavar="SECONDS",
        type=_positive_seconds,
        help="exit after SECONDS without any connection; only a socket-activated "
        "userproxy daemon (-u) does (default: never)",
    )
    ap.add_argument(
        "--syslog-status",
        action="store_true",
        help="log every GSS failure to syslog (LOG_AUTHPRIV), like `syslog_status = yes`",
    )
    ap.add_argument(
        "--pid-file",
        metavar="PATH",
        help=f"write the daemon's PID there (with -D the default is {DEFAULT_PID_FILE}; "
        "with -i none unless given)",
    )
    ap.add_argument(
        "-u",
        "--userproxy",
        action="store_true",
        help="userproxy mode: serve only the invoking user, with their own credentials",
    )
    ap.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return ap


def cli_debug_level(args: argparse.Namespace) -> int | None:
    """The level the command line asks for, or None to leave it to the config."""
    if args.debug_level is not None:
        return int(args.debug_level)
    return 1 if args.debug else None


@dataclass(frozen=True, slots=True)
class ReadySignal:
    """What a detached daemon calls once ready: a byte to the waiting parent."""

    write_end: int

    def __call__(self) -> None:
        os.write(self.write_end, b"1")
        os.close(self.write_end)

    def close(self) -> None:
        """In a forked worker: not ours to send, and the parent must see EOF
        if the first process dies before it is ready."""
        with contextlib.suppress(OSError):
            os.close(self.write_end)


def detach() -> ReadySignal:
    """Fork into the background; returns what the child calls once ready.

    The parent waits until the child is listening (so whoever started it can
    connect at once) and exits 0, or 1 if the child failed before that.
    """
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        status = os.read(read_end, 1)
        os._exit(0 if status == b"1" else 1)
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the session leader goes; the daemon can never regain a terminal
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # stderr stays: it is where the log goes
    os.close(devnull)
    return ReadySignal(write_end)


def _userproxy_config(socket: str | None) -> tuple[Config, str]:
    """The synthesised configuration and the socket; its directory made 0700."""
    paths = userproxy_paths(socket, os.environ)
    parent = os.path.dirname(paths.socket)
    if parent and not os.path.isdir(parent):
        try:
            os.makedirs(parent, mode=SOCKET_DIR_MODE)
        except OSError as exc:
            raise ConfigError(f"cannot create: {exc.strerror or exc}", file=parent) from None
    defaults = krb5_defaults()
    own = (
        ("ccache", defaults.ccache),
        ("keytab", defaults.keytab),
        ("client_keytab", defaults.client_keytab),
    )
    credentials = [(key, name) for key, name in own if name is not None]
    return userproxy_config(os.geteuid(), paths, credentials), paths.socket


def _idle_timeout(args: argparse.Namespace, activated: bool) -> float | None:
    timeout: float | None = args.idle_timeout
    if timeout is not None and not (args.userproxy and activated):
        _log.info("--idle-timeout ignored: only a socket-activated userproxy daemon idles out")
        return None
    return timeout


def _absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def absolute_paths(args: argparse.Namespace) -> None:
    """Resolve every path of the command line against the directory we were
    started in: `-D` changes to `/`, and SIGHUP reads `-c`/`-C` again."""
    args.config = _absolute(args.config)
    args.configdir = _absolute(args.configdir)
    args.socket = _absolute(args.socket)
    args.pid_file = _absolute(args.pid_file)


def _uid_of(user: str | None) -> int | None:
    if user is None:
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None  # run_as_user reports it


def _pid_file(args: argparse.Namespace) -> str | None:
    if args.userproxy:
        return None
    path: str | None = args.pid_file
    return path or (None if args.interactive else DEFAULT_PID_FILE)


class _StartupError(Exception):
    """A start-up failure: printed as `gssproxy-py: MESSAGE`, exit status 1."""


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = build_parser()
    args = ap.parse_args(argv)
    absolute_paths(args)
    if args.userproxy and (args.config or args.configdir):
        ap.error("-c/-C cannot be used with -u: userproxy mode reads no configuration")
    if not args.userproxy:
        # Before anything can load GSSAPI: our own calls must not go through
        # the interposer back to us.
        os.environ["GSS_USE_PROXY"] = "NO"
    return args


def _load(args: argparse.Namespace) -> tuple[Config, str]:
    """The configuration in force at start-up and the default socket."""
    try:
        if args.userproxy:
            return _userproxy_config(args.socket)
        default_socket = args.socket or DEFAULT_SOCKET
        config = load_config(args.config, args.configdir, default_socket=default_socket)
    except ConfigError as exc:
        raise _StartupError(str(exc)) from None
    return config, default_socket


def _core_dumps(config: Config) -> None:
    """Not dumpable before any secret is read (`allow_core_dumps`); the
    processes forked later inherit it."""
    try:
        apply_allow_core_dumps(config.globals.allow_core_dumps, _log)
    except PrivilegeDropError as exc:
        raise _StartupError(str(exc)) from None


def _inherited() -> list[InheritedSocket]:
    try:
        return inherited_sockets()
    except ActivationError as exc:
        raise _StartupError(f"socket activation: {exc}") from None


def _log_config(config: Config, args: argparse.Namespace, cli_level: int | None) -> None:
    set_debug_level(effective_debug_level(cli_level, config.globals.debug_level))
    set_status_syslog(args.syslog_status or config.globals.syslog_status)
    for warning in config.warnings:
        _log.warning("%s", warning)
    for note in config.notes:
        _log.info("%s", note)


def _detach(pid_file: str | None, interactive: bool) -> ReadySignal | None:
    """Detach unless interactive, with the PID file checked before and written
    after; the callback that tells the parent we are ready, if detached."""
    try:
        if pid_file is not None:
            # Before listening: a second daemon would take the first one's sockets.
            check_pid_file(pid_file)
        on_ready = None if interactive else detach()
        if pid_file is not None:
            write_pid_file(pid_file)  # after detach(): the daemon's own PID
    except PidFileError as exc:
        raise _StartupError(str(exc)) from None
    return on_ready


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    cli_level = cli_debug_level(args)
    configure_logging(cli_level or 0)
    pid_file = _pid_file(args)
    try:
        config, default_socket = _load(args)
        _core_dumps(config)
        inherited = _inherited()
        _log_config(config, args, cli_level)
        on_ready = _detach(pid_file, args.interactive)
    except _StartupError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    options = ServerOptions(
        config_file=args.config,
        config_dir=args.configdir,
        default_socket=default_socket,
        cli_debug_level=cli_level,
        idle_timeout=_idle_timeout(args, bool(inherited)),
        syslog_status=args.syslog_status,
        userproxy=args.userproxy,
        worker_processes=1 if args.userproxy else config.globals.worker_processes,
    )
    workers: WorkerGroup | None = None
    worker_status: StatusGatherer | None = None
    bound: list[InheritedSocket] = []
    try:
        if options.worker_processes > 1:
            bound = bind_rpc_sockets(config, default_socket, inherited)
            inherited = bound
            channels = StatusChannels.create(options.worker_processes - 1)
            workers = start_workers(
                _supervisor(config, options, bound, channels),
                in_child=_in_supervisor(on_ready, channels),
            )
            worker_status = channels.in_first_process()
        _start_trace(config, cli_level)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(
                serve(
                    config,
                    options,
                    on_ready=on_ready,
                    inherited=inherited,
                    workers=workers,
                    worker_status=worker_status,
                )
            )
    except LocalError as exc:
        _log.error("cannot start: %s", exc)
        return 1
    finally:
        if workers is not None:
            workers.wait()
        release(bound)
        if pid_file is not None:
            remove_pid_file(pid_file)


def _start_trace(config: Config, cli_level: int | None) -> None:
    if effective_debug_level(cli_level, config.globals.debug_level) >= 3:
        # After detach() and the worker forks (threads do not survive a
        # fork), before any other thread: one bridge per process.
        start_trace_bridge(_uid_of(config.globals.run_as_user))


def _unblock_sighup() -> None:
    """A worker is ready: SIGHUP, kept blocked while it started
    (`WorkerSupervisor`), now reaches its loop's handler."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def _in_supervisor(on_ready: ReadySignal | None, channels: StatusChannels) -> Callable[[], None]:
    """What the supervisor drops first: the first process's readiness pipe,
    service-manager socket and ends of the status channels are not for it
    or its workers."""

    def forget() -> None:
        os.environ.pop("NOTIFY_SOCKET", None)
        if on_ready is not None:
            on_ready.close()
        channels.in_supervisor()

    return forget


def _supervisor(
    config: Config,
    options: ServerOptions,
    bound: Sequence[InheritedSocket],
    channels: StatusChannels,
) -> WorkerSupervisor:
    """The supervisor of `options.worker_processes` - 1 workers (`server.workers`)."""
    sockets = for_workers(bound)
    worker_options = dataclasses.replace(options, first_process=False)

    def run_worker(current: Config, slot: int) -> int:
        set_debug_level(effective_debug_level(options.cli_debug_level, current.globals.debug_level))
        _start_trace(current, options.cli_debug_level)
        status_channel = (slot, channels.in_worker(slot))
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(
                serve(
                    current,
                    worker_options,
                    on_ready=_unblock_sighup,
                    inherited=sockets,
                    status_channel=status_channel,
                )
            )

    def reload_config() -> Config:
        return load_config(
            options.config_file, options.config_dir, default_socket=options.default_socket
        )

    return WorkerSupervisor(
        count=options.worker_processes,
        run_worker=run_worker,
        reload_config=reload_config,
        config=config,
        shutdown_grace=options.shutdown_grace,
    )


if __name__ == "__main__":
    sys.exit(main())
