"""Running a GSS-Proxy daemon under test: the C gssproxy or gssproxy-py.

Both implementations take gssproxy's command line (`-i -d --debug-level=N -c CONF
-C CONFDIR -s SOCKET`) and print the same two milestone lines that gssproxy's own
test suite waits for: `Initialization complete` after start-up and `New config
loaded successfully` after a SIGHUP reload.  `DaemonProcess` drives either one
through that contract only, so a test written against it runs on both.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, get_args

from gssproxy_py.testing.paths import C_GSSPROXY, REPO_ROOT, VENV_PYTHON
from gssproxy_py.testing.users import DEFAULT_PATH

Impl = Literal["c", "py"]
ALL_IMPLEMENTATIONS: tuple[Impl, ...] = get_args(Impl)

READY_LINE = "Initialization complete"
RELOADED_LINE = "New config loaded successfully"


@dataclass(frozen=True)
class DaemonPaths:
    """Where one daemon's files go (the pytest daemon_factory passes this to a
    config callable so the text can name paths.socket)."""

    workdir: Path
    config: Path
    confdir: Path
    socket: Path
    log: Path

    @classmethod
    def in_dir(cls, workdir: Path) -> DaemonPaths:
        return cls(
            workdir=workdir,
            config=workdir / "gssproxy.conf",
            confdir=workdir / "conf.d",
            socket=workdir / "gssproxy.sock",
            log=workdir / "gssproxy.log",
        )


class DaemonFactory(Protocol):
    """Type of the pytest `daemon_factory` fixture (tests/conftest.py)."""

    def __call__(
        self,
        impl: Impl,
        config: str | Callable[[DaemonPaths], str],
        *,
        debug_level: int = 1,
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> DaemonProcess: ...


def unavailable_reason(impl: Impl) -> str | None:
    """Why impl cannot run on this machine, or None if it can."""
    if impl == "c":
        if not C_GSSPROXY.exists():
            return f"C gssproxy not installed ({C_GSSPROXY})"
        if os.geteuid() != 0:
            return "the C gssproxy needs root (it writes /run/gssproxy.pid)"
    elif importlib.util.find_spec("gssproxy_py.server.cli") is None:
        return "gssproxy_py.server.cli does not exist yet"
    return None


class DaemonError(RuntimeError):
    """The daemon failed to start, reload or stop; the message ends with its log tail."""


def write_config(path: str | os.PathLike[str], text: str, mode: int = 0o600) -> Path:
    """Write a daemon config file (root-only by default, like /etc/gssproxy)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    p.chmod(mode)
    return p


def render_config(
    services: Mapping[str, Mapping[str, str | int]],
    *,
    global_options: Mapping[str, str | int] | None = None,
) -> str:
    """gssproxy.conf text: a `[gssproxy]` section and one `[service/NAME]` per entry.

    Values are written verbatim (the daemon does not expand variables, so paths
    must be absolute).  `debug_level = 1` is added unless given: the C daemon's
    config value overrides --debug-level, and at 0 it never logs the readiness
    line DaemonProcess waits for.
    """
    global_opts: dict[str, str | int] = {"debug_level": 1, **(global_options or {})}
    lines = ["[gssproxy]"]
    lines += [f"  {k} = {v}" for k, v in global_opts.items()]
    for name, options in services.items():
        lines += ["", f"[service/{name}]"]
        lines += [f"  {k} = {v}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def daemon_argv(
    impl: Impl,
    *,
    config: Path,
    confdir: Path,
    socket: Path,
    debug_level: int,
    extra_args: Sequence[str] = (),
    program: Sequence[str] = (),
) -> list[str]:
    """The command line for impl; the flags are identical for both.
    `program` replaces the executable (an installed gssproxy-py, say)."""
    if program:
        program = list(program)
    elif impl == "c":
        program = [str(C_GSSPROXY)]
    elif impl == "py":
        program = [str(VENV_PYTHON), "-m", "gssproxy_py.server.cli"]
    else:
        raise ValueError(f"unknown daemon implementation {impl!r}")
    return [
        *program,
        "-i",
        "-d",
        f"--debug-level={debug_level}",
        "-c",
        str(config),
        "-C",
        str(confdir),
        "-s",
        str(socket),
        *extra_args,
    ]


class DaemonProcess:
    """One daemon subprocess with its stdout+stderr in a log file.

    The milestone lines are printed at debug level >= 1 only, so debug_level
    must be at least 1 -- and for the C daemon the config's `[gssproxy]
    debug_level` overrides the flag, so the config must say >= 1 too
    (render_config() does).  The C daemon also writes /run/gssproxy.pid (even with
    -i) and leaves it behind; that is harmless.
    """

    def __init__(
        self,
        impl: Impl,
        config: str | os.PathLike[str],
        *,
        socket: str | os.PathLike[str],
        confdir: str | os.PathLike[str] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        debug_level: int = 1,
        extra_args: Sequence[str] = (),
        program: Sequence[str] = (),
    ) -> None:
        if debug_level < 1:
            raise ValueError("debug_level must be >= 1: the readiness lines are debug output")
        self.impl: Impl = impl
        self.config = Path(config).absolute()
        self.socket = Path(socket).absolute()
        # An empty -C dir keeps /etc/gssproxy/*.conf (the NFS service) out.
        self.confdir = (
            Path(confdir).absolute() if confdir is not None else self.config.parent / "conf.d"
        )
        self.log_path = (
            Path(log_path).absolute()
            if log_path is not None
            else self.config.parent / f"gssproxy-{impl}.log"
        )
        self.debug_level = debug_level
        self.argv = daemon_argv(
            impl,
            config=self.config,
            confdir=self.confdir,
            socket=self.socket,
            debug_level=debug_level,
            extra_args=extra_args,
            program=program,
        )
        # A clean environment: the caller's KRB5CCNAME/GSS_USE_PROXY must not leak
        # into the daemon.  The realm's env() normally comes in via `env`.
        self.env: dict[str, str] = {"PATH": DEFAULT_PATH}
        if impl == "py":
            self.env["PYTHONPATH"] = str(REPO_ROOT)
            self.env["PYTHONUNBUFFERED"] = "1"  # log lines must reach the file promptly
        self.env.update(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    # -- state ---------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DaemonError("daemon not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _fail(self, what: str) -> DaemonError:
        return DaemonError(
            f"{self.impl} daemon: {what}; log {self.log_path} ends:\n{self.log_tail()}"
        )

    def wait_for_log(self, text: str, *, after: int = 0, timeout: float = 10.0) -> None:
        """Wait until `text` appears in the log past byte offset `after`.

        Raises DaemonError if the daemon exits first or the timeout passes.
        """
        needle = text.encode()
        deadline = time.monotonic() + timeout
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(after)
                if needle in f.read():
                    return
            if not self.running:
                raise self._fail(f"exited with {self.returncode} while waiting for {text!r}")
            if time.monotonic() >= deadline:
                raise self._fail(
                    f"no {text!r} within {timeout}s (note: the C gssproxy lets the config's"
                    " [gssproxy] debug_level override --debug-level; it must be >= 1)"
                )
            time.sleep(0.01)

    # -- lifecycle -------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> DaemonProcess:
        """Start the daemon and wait for `Initialization complete`."""
        if self._proc is not None:
            raise DaemonError("daemon already started")
        self.confdir.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        offset = self._log_size()  # a reused log file may hold an older run
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=str(REPO_ROOT) if self.impl == "py" else "/",
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a ^C aimed at pytest must not hit the daemon first.
                start_new_session=True,
            )
        try:
            self.wait_for_log(READY_LINE, after=offset, timeout=timeout)
        except DaemonError:
            self._terminate(timeout=2.0)
            raise
        return self

    def reload(self, timeout: float = 10.0) -> None:
        """SIGHUP, then wait for a `New config loaded successfully` logged after it."""
        if not self.running:
            raise self._fail("reload requested but the daemon is not running")
        offset = self._log_size()
        os.kill(self.pid, signal.SIGHUP)
        self.wait_for_log(RELOADED_LINE, after=offset, timeout=timeout)

    def _terminate(self, timeout: float) -> bool:
        """SIGTERM and wait; SIGKILL if needed.  True if SIGTERM sufficed."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return True
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return False

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait for exit; returns the exit status (None if never started).

        A daemon that ignores SIGTERM is killed and reported as an error.
        """
        if self._proc is None:
            return None
        if not self._terminate(timeout):
            raise self._fail(f"did not exit within {timeout}s of SIGTERM (killed)")
        return self._proc.returncode

    def __enter__(self) -> DaemonProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
