"""Shared pytest fixtures: a throwaway realm, test users, and daemon processes.

Session-scoped: `harness_dir` (a world-traversable scratch dir), `realm` (a
running KDC with alice, host/localhost and nfs/localhost), `test_users`
(gpytest1, gpytest2; needs root).  Function-scoped: `daemon_factory`, which
starts GSS-Proxy daemons (C or Python) and stops all of them at teardown.

Set GPYTEST_KEEP=1 to keep the scratch dir (its path is printed) for debugging.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import settings

from gssproxy_py.testing.daemon import (
    DaemonFactory,
    DaemonPaths,
    DaemonProcess,
    Impl,
    unavailable_reason,
    write_config,
)
from gssproxy_py.testing.paths import PROXYMECH_SO
from gssproxy_py.testing.realm import StandardRealm, standard_realm
from gssproxy_py.testing.users import (
    LocalUser,
    UserSetupError,
    check_can_run_python,
    ensure_test_users,
    is_root,
)

# No test asserts on elapsed time, and Hypothesis's per-example deadline is
# one: on a shared 2-core machine an example can take 10x its usual time.
settings.register_profile("gssproxy-py", deadline=None)
settings.load_profile("gssproxy-py")

ROOT_REASON = "needs root (runs clients as other uids via setpriv, creates users)"


def _missing_programs(*names: str) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


@pytest.fixture(scope="session")
def harness_dir() -> Iterator[Path]:
    """Scratch dir for the whole session, mode 0755.

    pytest's own tmp_path lives under /tmp/pytest-of-root (mode 0700), which
    clients running as other uids cannot traverse to reach krb5.conf or the
    daemon socket, so we make our own.
    """
    path = Path(tempfile.mkdtemp(prefix="gpytest-"))
    path.chmod(0o755)
    yield path
    if os.environ.get("GPYTEST_KEEP"):
        print(f"GPYTEST_KEEP: harness dir kept at {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def realm(harness_dir: Path) -> Iterator[StandardRealm]:
    """A running KDC for EXAMPLE.TEST: alice (password, TGT in alice_ccache),
    host/localhost in service_keytab, nfs/localhost in nfs_keytab."""
    missing = _missing_programs("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
    if missing:
        pytest.skip(f"MIT krb5 KDC tools missing: {', '.join(missing)}")
    std = standard_realm(harness_dir / "realm")
    yield std
    std.realm.stop()


@pytest.fixture
def initiator_env(realm: StandardRealm, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process GSSAPI as alice (her TGT in alice_ccache), without the
    interposer: the test's own initiator talks to the KDC directly."""
    for k, v in realm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{realm.alice_ccache}")
    monkeypatch.setenv("GSS_USE_PROXY", "no")


@pytest.fixture(scope="session")
def test_users() -> tuple[LocalUser, ...]:
    """(gpytest1, gpytest2), created if missing; skips unless root."""
    if not is_root():
        pytest.skip(ROOT_REASON)
    users = ensure_test_users()
    try:
        check_can_run_python(users[0])
    except UserSetupError as exc:
        pytest.skip(str(exc))
    return users


@pytest.fixture
def daemon_factory(harness_dir: Path, realm: StandardRealm) -> Iterator[DaemonFactory]:
    """Factory: `daemon_factory(impl, config, *, debug_level=1, env=None, start=True)`.

    `config` is the gssproxy.conf text, or a callable taking DaemonPaths and
    returning it (so the text can name paths.socket).  The daemon gets the
    realm's env (plus `env`), its own world-traversable workdir, and `-s
    paths.socket`.  Every daemon is stopped at teardown; their log tails are
    printed so a failing test shows them.
    """
    started: list[DaemonProcess] = []

    def factory(
        impl: Impl,
        config: str | Callable[[DaemonPaths], str],
        *,
        debug_level: int = 1,
        env: Mapping[str, str] | None = None,
        start: bool = True,
    ) -> DaemonProcess:
        reason = unavailable_reason(impl)
        if reason is not None:
            pytest.skip(reason)
        if not PROXYMECH_SO.exists():
            pytest.skip(f"interposer plugin missing ({PROXYMECH_SO})")
        workdir = Path(tempfile.mkdtemp(prefix=f"gp-{impl}-", dir=harness_dir))
        workdir.chmod(0o755)  # clients as other uids must reach the socket
        paths = DaemonPaths.in_dir(workdir)
        write_config(paths.config, config(paths) if callable(config) else config)
        daemon = DaemonProcess(
            impl,
            paths.config,
            socket=paths.socket,
            confdir=paths.confdir,
            log_path=paths.log,
            env={**realm.env(), **(env or {})},
            debug_level=debug_level,
        )
        started.append(daemon)
        if start:
            daemon.start()
        return daemon

    typed: DaemonFactory = factory
    yield typed

    errors = []
    for daemon in started:
        try:
            daemon.stop()
        except Exception as exc:
            errors.append(exc)
        print(f"--- {daemon.impl} daemon log {daemon.log_path} (tail) ---\n{daemon.log_tail()}")
    if errors:
        raise errors[0]
