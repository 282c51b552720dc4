"""`make install` / `make uninstall`: into a temporary prefix or DESTDIR, never
the real system. The installed unit verifies, its hardening scores stay within
bounds, the installed daemon serves a real client through the interposer and
starts with Debian's stock /etc/gssproxy, and uninstall leaves nothing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gssproxy_py.testing.paths import REPO_ROOT, VENV_PYTHON
from gssproxy_py.testing.users import is_root

pytestmark = [pytest.mark.integration]

UNIT = "gssproxy-py.service"
ENTRY_POINTS = (
    "gssproxy-py",
    "gssproxy-py-ctl",
    "gssproxy-py-call",
    "gssproxy-py-sign",
    "gssproxy-py-xdrgen",
)
SBIN = ("gssproxy-py", "gssproxy-py-ctl")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze missing: make deps installs systemd"
)


def make(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def files_under(root: Path) -> set[str]:
    """Every non-directory entry under root, relative."""
    return {
        str(Path(d, f).relative_to(root))
        for d, dirs, files in os.walk(root)
        for f in files + [x for x in dirs if Path(d, x).is_symlink()]
    }


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An install under a temporary PREFIX (no DESTDIR: runnable in place)."""
    top = tmp_path_factory.mktemp("install")
    top.chmod(0o755)
    prefix = top / "usr"
    args = (f"PREFIX={prefix}",)
    make("install", *args)
    yield prefix
    make("uninstall", *args)


def security_score(*args: str) -> float:
    assert SYSTEMD_ANALYZE is not None
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    return float(match.group(1))


def test_destdir_install_has_final_paths_and_uninstall_removes_everything(
    tmp_path: Path,
) -> None:
    destdir = tmp_path / "root"
    make("install", f"DESTDIR={destdir}")
    installed = files_under(destdir)
    venv = destdir / "usr/local/lib/gssproxy-py"
    for name in ENTRY_POINTS:
        where = "sbin" if name in SBIN else "bin"
        link = destdir / "usr/local" / where / name
        assert os.readlink(link) == f"/usr/local/lib/gssproxy-py/bin/{name}"
        assert (venv / "bin" / name).read_text().startswith("#!/usr/local/lib/gssproxy-py/bin/")
    # Nothing in the venv's scripts or config still names the staging root.
    for f in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if f.is_file() and not f.is_symlink():
            assert str(destdir) not in f.read_text(errors="replace"), f
    unit = (destdir / "usr/local/lib/systemd/system" / UNIT).read_text()
    assert "ExecStart=/usr/local/sbin/gssproxy-py -i --pid-file /run/gssproxy.pid" in unit
    for page in ("man5/gssproxy-py.conf.5", "man8/gssproxy-py.8", "man8/gssproxy-py-ctl.8"):
        assert (destdir / "usr/local/share/man" / page).is_file()
    user_units = destdir / "usr/local/lib/systemd/user"
    assert (user_units / "gssproxy-py.socket").is_file()
    service = (user_units / "gssproxy-py.service").read_text()
    assert "ExecStart=/usr/local/sbin/gssproxy-py -u -i" in service
    assert (destdir / "usr/local/share/doc/gssproxy-py/INSTALL.md").is_file()
    assert (destdir / "usr/local/share/doc/gssproxy-py/examples/acceptor-only.conf").is_file()
    # The production install has no test helpers.
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "gssproxy_py/server/cli.py").is_file()
    assert not (site / "gssproxy_py/testing").exists()

    make("uninstall", f"DESTDIR={destdir}")
    assert installed and files_under(destdir) == set()
    assert not venv.exists()


def test_installed_package_runs_the_trees_build(prefix: Path) -> None:
    # make install copies the tree's mypyc build (make deps) when there is
    # one; the installed daemon's guard finds it fresh against the installed
    # sources, or, without a build, runs the .py files.
    probe = (
        "import gssproxy_py.gss.program, gssproxy_py.compiled as c, sys; "
        "print(c.STATE); print(sys.modules[c.MODULES[0]].__file__)"
    )
    proc = subprocess.run(
        [str(prefix / "lib/gssproxy-py/bin/python"), "-c", probe],
        env={k: v for k, v in os.environ.items() if k != "GSSPROXY_PY_NO_MYPYC"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    state, module_file = proc.stdout.splitlines()
    assert module_file.startswith(str(prefix / "lib/gssproxy-py/lib")), module_file
    if (REPO_ROOT / "gssproxy_py/compiled.sha256").is_file():
        assert state.startswith("compiled with mypyc") and module_file.endswith(".so")
    else:
        assert state == "pure Python (no mypyc build)" and module_file.endswith(".py")


@needs_systemd_analyze
def test_installed_unit_verifies(prefix: Path) -> None:
    unit = prefix / "lib/systemd/system" / UNIT
    assert f"ExecStart={prefix}/sbin/gssproxy-py -i" in unit.read_text()
    proc = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", str(unit)],
        # Documentation= names man pages: they must be found where install put them.
        env={**os.environ, "MANPATH": f"{prefix}/share/man:"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Only complaints about this unit count (the host's other units are not ours).
    ours = [line for line in proc.stderr.splitlines() if line.startswith(UNIT)]
    assert ours == [], proc.stderr


@needs_systemd_analyze
def test_installed_user_units_verify(prefix: Path, tmp_path: Path) -> None:
    """The userproxy pair, as `systemctl --user` would load it."""
    units = prefix / "lib/systemd/user"
    assert (
        f"ExecStart={prefix}/sbin/gssproxy-py -u -i" in (units / "gssproxy-py.service").read_text()
    )
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    proc = subprocess.run(
        [
            str(SYSTEMD_ANALYZE),
            "verify",
            "--user",
            str(units / "gssproxy-py.socket"),
            str(units / "gssproxy-py.service"),
        ],
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("gssproxy-py.")]
    assert ours == [], proc.stderr


@needs_systemd_analyze
def test_hardening_scores(tmp_path: Path) -> None:
    """The default unit keeps the network and scores at most 4.0; with the
    acceptor-only drop-in, at most upstream gssproxy's 1.7."""
    unit = REPO_ROOT / "contrib" / UNIT
    default = security_score(str(unit))
    assert default <= 4.0
    root = tmp_path / "root"
    dropins = root / "etc/systemd/system" / f"{UNIT}.d"
    dropins.mkdir(parents=True)
    shutil.copy(unit, root / "etc/systemd/system" / UNIT)
    shutil.copy(REPO_ROOT / "contrib/acceptor-only.conf", dropins)
    acceptor = security_score(f"--root={root}", UNIT)
    assert acceptor <= 1.7
    assert security_score(f"--root={root}", UNIT) < default
    text = unit.read_text()
    # What the default unit must keep: KDC traffic, /proc/PID/exe, namespaces.
    assert "AF_INET AF_INET6" in text and "PrivateNetwork" not in text
    assert "ProtectProc=default" in text and "CAP_SYS_PTRACE" in text
    assert "RestrictNamespaces=net" in text and "CAP_SYS_ADMIN" in text


def test_unit_and_readme_agree_on_the_socket_directory_mode() -> None:
    """/var/lib/gssproxy stays 0755 (callers that switch user reach
    default.sock); what holds secrets is made 0700 before every start."""
    unit = (REPO_ROOT / "contrib" / UNIT).read_text()
    assert "StateDirectoryMode=0755" in unit
    pre = re.search(r"^ExecStartPre=/usr/bin/install -d -m 0700 (.*)$", unit, re.M)
    assert pre and set(pre.group(1).split()) == {
        "/var/lib/gssproxy/clients",
        "/var/lib/gssproxy/rcache",
        "/var/lib/gssproxy-py",
    }
    assert "Keep `/var/lib/gssproxy` at 0755" in (REPO_ROOT / "README.md").read_text()


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="needs root (test users, KDC)")
def test_installed_daemon_serves_gss_server_through_the_interposer(prefix: Path) -> None:
    r = subprocess.run(
        [
            *(str(VENV_PYTHON), "-m", "gssproxy_py.testing.demo", "--once"),
            *("--daemon", str(prefix / "sbin/gssproxy-py")),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Signature verified." in r.stdout
    assert "RESULT: the token was accepted through gssproxy-py" in r.stdout


@pytest.mark.root
@pytest.mark.skipif(not is_root(), reason="needs root (namespaces)")
@pytest.mark.skipif(
    not Path("/etc/gssproxy/24-nfs-server.conf").exists(), reason="Debian's gssproxy not installed"
)
def test_installed_daemon_starts_with_debians_stock_config(prefix: Path, tmp_path: Path) -> None:
    """The installed daemon, no -c/-C: it reads /etc/gssproxy unchanged. In a
    private mount and network namespace with /run and the state directories
    on tmpfs, so the host's sockets, PID file and kernel switch are untouched.
    The daemon creates /var/lib/gssproxy itself, searchable by every user."""
    log = tmp_path / "daemon.log"
    script = f"""
set -e
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /var/lib
{prefix}/sbin/gssproxy-py -D -d 2>{log}
pid=$(cat /run/gssproxy.pid)
test -S /run/gssproxy.sock
test -S /var/lib/gssproxy/default.sock
stat -c %a /var/lib/gssproxy
{prefix}/bin/gssproxy-py-call --socket /run/gssproxy.sock GSSX_INDICATE_MECHS
kill $pid
while kill -0 $pid 2>/dev/null; do sleep 0.1; done
test ! -e /run/gssproxy.pid
"""
    proc = subprocess.run(
        ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "KRB5RCACHEDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + text
    assert "Initialization complete" in text
    assert proc.stdout.splitlines()[0] == "755"
    assert "krb5" in proc.stdout.lower()


def test_man_pages_render_without_warnings() -> None:
    for page in ("gssproxy-py.8", "gssproxy-py.conf.5", "gssproxy-py-ctl.8"):
        proc = subprocess.run(
            ["man", "--warnings", "-l", str(REPO_ROOT / "man" / page)],
            env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "gssproxy-py" in proc.stdout
    daemon = (REPO_ROOT / "man/gssproxy-py.8").read_text()
    for flag in ("interactive", "daemon", "config", "configdir", "socket", "pid\\-file"):
        assert f"\\-\\-{flag}" in daemon


def test_sdist_carries_the_sources_and_tests(tmp_path: Path) -> None:
    """Built from a copy: setuptools writes *.egg-info next to the sources."""
    src = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT,
        src,
        ignore=shutil.ignore_patterns(".venv", "build", ".git", "*.egg-info", "__pycache__", ".*"),
    )
    proc = subprocess.run(
        [
            str(VENV_PYTHON),
            "-c",
            "from setuptools import build_meta as b; print(b.build_sdist('dist'))",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    listing = subprocess.run(
        ["tar", "tzf", str(src / "dist" / name)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    top = listing[0].split("/")[0]
    members = {m.removeprefix(top + "/") for m in listing}
    for wanted in (
        "LICENSE",
        "CHANGELOG.md",
        "idl/gss_proxy.x",
        "conf/24-nfs-server.conf",
        "contrib/gssproxy-py.service",
        "contrib/acceptor-only.conf",
        "docs/INSTALL.md",
        "man/gssproxy-py.8",
        "tests/conftest.py",
        "gssproxy_py/testing/realm.py",
        "mk/install.mk",
    ):
        assert wanted in members, wanted


SYSTEMCTL = shutil.which("systemctl")


@pytest.mark.skipif(
    SYSTEMCTL is None or not Path("/lib/systemd/system/gssproxy.service").exists(),
    reason="needs systemctl and Debian's gssproxy.service",
)
def test_switch_over_and_roll_back_as_install_md_says(tmp_path: Path) -> None:
    """In an offline root holding Debian's enabled gssproxy.service: the steps
    of docs/INSTALL.md make gssproxy.service an alias of ours (what
    auth-rpcgss-module's Wants= then starts), and the rollback restores it."""
    assert SYSTEMCTL is not None
    root = tmp_path / "root"
    lib = root / "lib/systemd/system"
    lib.mkdir(parents=True)
    for unit in ("gssproxy.service", "auth-rpcgss-module.service", "multi-user.target"):
        if Path("/lib/systemd/system", unit).exists():
            shutil.copy(Path("/lib/systemd/system", unit), lib)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "gssproxy.service").symlink_to("/lib/systemd/system/gssproxy.service")
    ours = root / "usr/local/lib/systemd/system"
    ours.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "contrib" / UNIT, ours)

    def systemctl(*args: str) -> str:
        proc = subprocess.run(
            [SYSTEMCTL, f"--root={root}", *args], capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    systemctl("disable", "gssproxy.service")
    systemctl("enable", UNIT)
    alias = root / "etc/systemd/system/gssproxy.service"
    assert os.readlink(alias) == f"/usr/local/lib/systemd/system/{UNIT}"
    assert systemctl("is-enabled", "gssproxy.service", UNIT).split() == ["alias", "enabled"]

    systemctl("disable", UNIT)
    systemctl("enable", "gssproxy.service")
    assert not alias.exists() and not alias.is_symlink()
    assert systemctl("is-enabled", "gssproxy.service", UNIT).split() == ["enabled", "disabled"]
