"""StrictModes: configuration files and keytabs a non-root user could change
are refused at load (start and reload), unless strict_modes = no."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gssproxy_py.config.load import load_config
from gssproxy_py.config.strict import keytab_path, unsafe_path
from gssproxy_py.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")

NOBODY = 65534


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    """A directory only root can write (tmp_path's parents are root's, 0700)."""
    d = tmp_path / "etc"
    d.mkdir(mode=0o755)
    return d


def config_text(keytab: str, *, strict: str | None = None) -> str:
    head = "[gssproxy]\n" + (f"  strict_modes = {strict}\n" if strict else "")
    return f"{head}[service/s]\n  mechs = krb5\n  euid = 0\n  cred_store = keytab:{keytab}\n"


def load(conf: Path) -> object:
    return load_config(str(conf), None, default_socket="/run/gp-test.sock")


def test_root_owned_files_load(root_dir: Path) -> None:
    keytab = write(root_dir / "k.keytab", "")
    load(write(root_dir / "gssproxy.conf", config_text(str(keytab))))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda p: p.chmod(0o666), "is writable by every user (mode 0666)"),
        (lambda p: (os.chown(p, 0, NOBODY), p.chmod(0o620)), f"is writable by group {NOBODY}"),
        (lambda p: os.chown(p, NOBODY, 0), f"is owned by uid {NOBODY}"),
    ],
)
@pytest.mark.parametrize("which", ["config", "keytab"])
def test_writable_by_non_root_is_refused_naming_file_and_fix(
    root_dir: Path, change: object, fragment: str, which: str
) -> None:
    keytab = write(root_dir / "k.keytab", "")
    conf = write(root_dir / "gssproxy.conf", config_text(f"FILE:{keytab}"))
    target = conf if which == "config" else keytab
    change(target)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        load(conf)
    text = str(err.value)
    assert f"{target}" in text and fragment in text, text
    assert "strict_modes = no" in text
    if which == "keytab":
        assert f"(cred_store at {conf}:" in text
    # The administrator's way out.
    write(conf, config_text(f"FILE:{keytab}", strict="no"), 0o666 if which == "config" else 0o600)
    load(conf)


def test_a_directory_on_the_path_counts_unless_sticky(root_dir: Path) -> None:
    keydir = root_dir / "keys"
    keydir.mkdir()
    keytab = write(keydir / "k.keytab", "")
    conf = write(root_dir / "gssproxy.conf", config_text(str(keytab)))
    keydir.chmod(0o777)
    with pytest.raises(ConfigError, match=f"directory {keydir} is writable by every user"):
        load(conf)
    keydir.chmod(0o1777)  # sticky, like /tmp: others cannot replace root's file
    load(conf)


def test_client_keytab_templates_are_checked_from_their_fixed_directory(root_dir: Path) -> None:
    keydir = root_dir / "clients"
    keydir.mkdir(mode=0o755)
    os.chown(keydir, NOBODY, 0)
    text = config_text(str(root_dir / "none.keytab")).replace(
        "keytab:", f"client_keytab:{keydir}/%U.keytab\n  cred_store = keytab:"
    )
    with pytest.raises(ConfigError, match=f"{keydir} .cred_store at .*: is owned by uid {NOBODY}"):
        load(write(root_dir / "gssproxy.conf", text))


def test_keytab_paths() -> None:
    assert keytab_path("FILE:/etc/krb5.keytab") == "/etc/krb5.keytab"
    assert keytab_path("WRFILE:/k") == "/k"
    assert keytab_path("/var/kt/%U.keytab") == "/var/kt"
    assert keytab_path("/var/kt/%U/x.keytab") == "/var/kt"
    assert keytab_path("MEMORY:x") is None
    assert keytab_path("relative.keytab") is None


def test_missing_files_are_not_this_checks_business(tmp_path: Path) -> None:
    assert unsafe_path(str(tmp_path / "absent")) is None
