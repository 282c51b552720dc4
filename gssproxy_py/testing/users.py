"""Local test users and running programs as them.

GSS-Proxy matches clients to services by the peer's euid, so the interesting
tests run their clients as ordinary uids.  This module creates system users
(`gpytest1`, `gpytest2`) on demand and runs commands as them with `setpriv`
and a scrubbed environment.  Needs root for both.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gssproxy_py.testing.paths import VENV_PYTHON

DEFAULT_TEST_USERS = ("gpytest1", "gpytest2")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class LocalUser:
    """A local account the harness can switch to."""

    name: str
    uid: int
    gid: int

    @classmethod
    def lookup(cls, name: str) -> LocalUser:
        pw = pwd.getpwnam(name)
        return cls(name=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid)


class UserSetupError(RuntimeError):
    """A test user could not be created or cannot run what it must."""


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_user(name: str, attempts: int = 5) -> LocalUser:
    """Return the user `name`, creating a no-login system user if missing.

    Several test runs may race to create the same user; useradd then fails with
    "already exists" or on the /etc/passwd lock, so re-check and retry.
    """
    last = ""
    for _ in range(attempts):
        try:
            return LocalUser.lookup(name)
        except KeyError:
            pass
        proc = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode == 0:
            return LocalUser.lookup(name)
        last = proc.stderr.strip()
        time.sleep(0.2)
    try:
        return LocalUser.lookup(name)
    except KeyError:
        raise UserSetupError(f"cannot create user {name}: {last}") from None


def ensure_test_users(names: Sequence[str] = DEFAULT_TEST_USERS) -> tuple[LocalUser, ...]:
    return tuple(ensure_user(n) for n in names)


def as_user_argv(user: LocalUser, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command line that runs argv as user with exactly env (plus a PATH).

    `env -i` drops everything root's environment had (KRB5CCNAME, GSS_*, ...),
    so a client only sees what the test gave it.
    """
    full_env = {"PATH": DEFAULT_PATH, **env}
    return [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "env",
        "-i",
        *(f"{k}={v}" for k, v in full_env.items()),
        *argv,
    ]


def run_as(
    user: LocalUser,
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    timeout: float = 30.0,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run argv as user (see as_user_argv); text output captured unless overridden.

    cwd defaults to "/" because the caller's cwd may not be accessible to user.
    """
    kw.setdefault("cwd", "/")
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("check", False)
    return subprocess.run(as_user_argv(user, argv, env), timeout=timeout, **kw)


def popen_as(
    user: LocalUser, argv: Sequence[str], env: Mapping[str, str], **kw: Any
) -> subprocess.Popen[Any]:
    """Popen variant of run_as(); the caller owns the process."""
    kw.setdefault("cwd", "/")
    return subprocess.Popen(as_user_argv(user, argv, env), **kw)


def check_can_run_python(user: LocalUser, python: Path = VENV_PYTHON) -> None:
    """Raise UserSetupError unless user can run the venv python and import the
    packages the client programs and the daemon need."""
    proc = run_as(
        user,
        [str(python), "-c", "import gssapi, gssproxy_py; print('ok')"],
        {},
        timeout=30,
    )
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        raise UserSetupError(
            f"user {user.name} cannot run {python} with gssapi/gssproxy_py "
            f"(is every directory on the way traversable?): {proc.stderr.strip()}"
        )
