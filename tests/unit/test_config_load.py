"""Tests for choosing and reading configuration files (config/load.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gssproxy_py.config import load as load_mod
from gssproxy_py.config.load import (
    CONF_D_PATTERN,
    DEFAULT_CONFIG_DIR,
    DEFAULT_CONFIG_FILE,
    DEFAULT_SOCKET,
    load_config,
    load_config_text,
)
from gssproxy_py.errors import ConfigError

SOCK = "/var/run/gssproxy.sock"


def service(name: str, euid: int, *extra: str) -> str:
    return f"[service/{name}]\nmechs = krb5\neuid = {euid}\n" + "".join(e + "\n" for e in extra)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.fixture
def defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Point the compiled-in defaults at a temporary /etc/gssproxy."""
    etc = tmp_path / "etc-gssproxy"
    etc.mkdir()
    main = etc / "gssproxy.conf"
    monkeypatch.setattr(load_mod, "DEFAULT_CONFIG_DIR", str(etc))
    monkeypatch.setattr(load_mod, "DEFAULT_CONFIG_FILE", str(main))
    return main, etc


def test_constants() -> None:
    assert DEFAULT_CONFIG_FILE == "/etc/gssproxy/gssproxy.conf"
    assert DEFAULT_CONFIG_DIR == "/etc/gssproxy"
    assert DEFAULT_SOCKET == "/var/lib/gssproxy/default.sock"


@pytest.mark.parametrize(
    ("name", "matches"),
    [
        ("24-nfs-server.conf", True),
        ("00-a.conf", True),
        ("99-x.y.conf", True),
        ("10-.conf", False),
        ("1-a.conf", False),
        ("100-a.conf", False),
        ("ab-c.conf", False),
        ("10-a.conf.bak", False),
        ("10-a.conf~", False),
        (".10-a.conf", False),
        ("10_a.conf", False),
        ("gssproxy.conf", False),
        ("10-a.CONF", False),
    ],
)
def test_conf_d_pattern(name: str, matches: bool) -> None:
    assert bool(CONF_D_PATTERN.match(name)) is matches


def test_file_only_reads_just_that_file(defaults: tuple[Path, Path], tmp_path: Path) -> None:
    _, etc = defaults
    write(etc / "50-extra.conf", service("extra", 7))
    main = write(tmp_path / "only.conf", service("one", 1))
    config = load_config(main, None, default_socket=SOCK)
    assert config.files == (main,)
    assert [s.name for s in config.services] == ["one"]
    assert config.notes == ()
    assert config.warnings == ()


def test_defaults_read_main_then_dir_in_sorted_order(defaults: tuple[Path, Path]) -> None:
    main, etc = defaults
    write(main, service("main", 1))
    write(etc / "50-b.conf", service("b", 3))
    write(etc / "10-a.conf", service("a", 2) + service("a2", 20))
    write(etc / "99-c.conf", service("c", 4))
    write(etc / "README", "not config")
    write(etc / "50-b.conf.rpmsave", "[garbage")
    (etc / "20-dir.conf").mkdir()
    config = load_config(None, None, default_socket=SOCK)
    assert config.files == (
        str(main),
        str(etc / "10-a.conf"),
        str(etc / "50-b.conf"),
        str(etc / "99-c.conf"),
    )
    assert [s.name for s in config.services] == ["main", "a", "a2", "b", "c"]
    assert [s.file for s in config.services] == [
        str(main),
        str(etc / "10-a.conf"),
        str(etc / "10-a.conf"),
        str(etc / "50-b.conf"),
        str(etc / "99-c.conf"),
    ]
    pattern = CONF_D_PATTERN.pattern
    assert config.notes == (
        f"{etc / '20-dir.conf'}: skipped: not a regular file",
        f"{etc / '50-b.conf.rpmsave'}: skipped: name does not match {pattern}",
        f"{etc / 'README'}: skipped: name does not match {pattern}",
    )


def test_default_main_missing_is_fine_when_dir_has_config(defaults: tuple[Path, Path]) -> None:
    main, etc = defaults
    write(etc / "24-nfs.conf", service("nfs", 0))
    config = load_config(None, None, default_socket=SOCK)
    assert config.files == (str(etc / "24-nfs.conf"),)
    assert config.notes == (f"{main}: not found; using only {etc}",)


def test_default_dir_missing_is_fine_when_main_exists(
    defaults: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    main = write(tmp_path / "main.conf", service("m", 0))
    monkeypatch.setattr(load_mod, "DEFAULT_CONFIG_FILE", main)
    monkeypatch.setattr(load_mod, "DEFAULT_CONFIG_DIR", str(tmp_path / "absent"))
    config = load_config(None, None, default_socket=SOCK)
    assert config.files == (main,)


def test_nothing_found_with_defaults(defaults: tuple[Path, Path]) -> None:
    main, etc = defaults
    with pytest.raises(ConfigError) as info:
        load_config(None, None, default_socket=SOCK)
    assert str(info.value) == f"no configuration found in {main} or {etc}"


def test_dir_option_adds_dir_to_default_main(defaults: tuple[Path, Path], tmp_path: Path) -> None:
    main, etc = defaults
    write(main, service("main", 1))
    write(etc / "10-ignored.conf", service("ignored", 9))
    other = tmp_path / "other.d"
    other.mkdir()
    write(other / "10-x.conf", service("x", 2))
    config = load_config(None, str(other), default_socket=SOCK)
    assert config.files == (str(main), str(other / "10-x.conf"))
    assert [s.name for s in config.services] == ["main", "x"]


def test_file_and_dir(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("main", 1))
    confd = tmp_path / "conf.d"
    confd.mkdir()
    write(confd / "10-x.conf", service("x", 2))
    config = load_config(main, str(confd), default_socket=SOCK)
    assert config.files == (main, str(confd / "10-x.conf"))


def test_main_file_inside_dir_is_read_once_without_note(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    main = write(etc / "gssproxy.conf", service("main", 1))
    numbered = write(etc / "10-main.conf", service("numbered", 2))
    config = load_config(main, str(etc), default_socket=SOCK)
    assert config.files == (main, numbered)
    assert config.notes == ()
    # Naming a conf.d file as the main file must not read it twice.
    config = load_config(numbered, str(etc), default_socket=SOCK)
    assert config.files == (numbered,)
    assert config.warnings == ()
    assert config.notes == (f"{main}: skipped: name does not match {CONF_D_PATTERN.pattern}",)


def test_dir_symlink_to_conf_is_followed(tmp_path: Path) -> None:
    real = write(tmp_path / "real.conf", service("linked", 3))
    main = write(tmp_path / "main.conf", service("main", 1))
    confd = tmp_path / "d"
    confd.mkdir()
    os.symlink(real, confd / "30-link.conf")
    config = load_config(main, str(confd), default_socket=SOCK)
    assert [s.name for s in config.services] == ["main", "linked"]


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "missing.conf")
    with pytest.raises(ConfigError) as info:
        load_config(path, None, default_socket=SOCK)
    assert str(info.value) == f"{path}: configuration file does not exist"


def test_explicit_missing_dir_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("main", 1))
    path = str(tmp_path / "missing.d")
    with pytest.raises(ConfigError) as info:
        load_config(main, path, default_socket=SOCK)
    assert str(info.value) == f"{path}: configuration directory does not exist"
    with pytest.raises(ConfigError):
        load_config(None, path, default_socket=SOCK)


def test_dir_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("main", 1))
    with pytest.raises(ConfigError, match="configuration directory does not exist"):
        load_config(main, main, default_socket=SOCK)


def test_unreadable_main_is_an_error(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory.conf"
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(str(directory), None, default_socket=SOCK)
    assert info.value.file == str(directory)
    assert "cannot read" in info.value.message


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_bytes(b"[service/x]\nprogram = /usr/bin/\xff\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path), None, default_socket=SOCK)
    assert str(info.value) == f"{path}:2: not valid UTF-8 (byte offset 31)"


def test_cross_file_first_wins_with_warning(tmp_path: Path) -> None:
    main = write(
        tmp_path / "main.conf",
        "[gssproxy]\nworker threads = 2\n" + service("nfs", 0, "kernel_nfsd = yes"),
    )
    confd = tmp_path / "d"
    confd.mkdir()
    later = write(
        confd / "50-dup.conf",
        "# override attempt\n"
        + service("nfs", 5, "kernel_nfsd = no")
        + "[gssproxy]\nworker threads = 9\n"
        + service("other", 6),
    )
    config = load_config(main, str(confd), default_socket=SOCK)
    assert [(s.name, s.euid, s.kernel_nfsd, s.file) for s in config.services] == [
        ("nfs", 0, True, main),
        ("other", 6, False, later),
    ]
    assert config.globals.worker_threads == 2
    assert config.warnings == (
        f"{later}:2: section [service/nfs] is already defined at {main}:3; "
        "ignoring this definition (the first file wins)",
        f"{later}:6: section [gssproxy] is already defined at {main}:1; "
        "ignoring this definition (the first file wins)",
    )


def test_ignored_section_is_still_syntax_checked_but_not_validated(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("nfs", 0))
    confd = tmp_path / "d"
    confd.mkdir()
    # The dropped duplicate has an invalid value; it is never validated.
    write(confd / "10-dup.conf", "[service/nfs]\ntrusted = maybe\n")
    config = load_config(main, str(confd), default_socket=SOCK)
    assert config.services[0].trusted is False
    assert len(config.warnings) == 1


def test_error_in_conf_d_file_names_that_file(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("main", 1))
    confd = tmp_path / "d"
    confd.mkdir()
    bad = write(confd / "10-bad.conf", "\n" + service("bad", 2, "trusted = maybe"))
    with pytest.raises(ConfigError) as info:
        load_config(main, str(confd), default_socket=SOCK)
    assert str(info.value) == (
        f"{bad}:5: option 'trusted': expected a boolean (yes/no, true/false, on/off, 1/0), "
        "got 'maybe'"
    )


def test_syntax_error_in_conf_d_file(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", service("main", 1))
    confd = tmp_path / "d"
    confd.mkdir()
    bad = write(confd / "10-bad.conf", "[sssd]\n")
    with pytest.raises(ConfigError) as info:
        load_config(main, str(confd), default_socket=SOCK)
    assert (info.value.file, info.value.line) == (bad, 1)


def test_only_global_sections_across_files_is_an_error(tmp_path: Path) -> None:
    main = write(tmp_path / "main.conf", "[gssproxy]\ndebug = yes\n")
    with pytest.raises(ConfigError, match=r"no \[service/NAME\] sections configured"):
        load_config(main, None, default_socket=SOCK)


def test_check_services_uses_default_socket(tmp_path: Path) -> None:
    text = service("a", 0) + service("b", 0, "socket = /run/custom.sock")
    main = write(tmp_path / "main.conf", text)
    assert len(load_config(main, None, default_socket=SOCK).services) == 2
    with pytest.raises(ConfigError, match="clashes"):
        load_config(main, None, default_socket="/run/custom.sock")


def test_load_config_text_defaults() -> None:
    config = load_config_text(service("x", 0))
    assert config.files == ("<string>",)
    assert config.services[0].file == "<string>"
    assert config.notes == ()
    with pytest.raises(ConfigError) as info:
        load_config_text("[service/x]\nmechs = krb5\neuid = 0\ntrusted = 2\n")
    assert str(info.value).startswith("<string>:4: option 'trusted': ")
