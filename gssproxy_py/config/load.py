"""Finding and reading the configuration files, as gssproxy does.

* No `-c`/`-C`: the main file `/etc/gssproxy/gssproxy.conf` (may be missing)
  plus the directory `/etc/gssproxy` (may be missing).
* `-c FILE` alone: only FILE, which must exist.
* `-C DIR` (with or without `-c`): the main file (FILE if given, which must
  then exist; else the default one, which may be missing) plus DIR, which must
  exist.

In the directory only names matching `^[0-9]{2}-.+\\.conf$` are read, in sorted
order, after the main file; other entries are skipped with a note. Some file
must have been read, and it must configure at least one service.

`load_config` is the only place that touches the file system, and it only
reads. With `strict_modes` (the default) it refuses files a non-root user
could change (`strict.py`). Call it again to reload; on ConfigError keep the old `Config`.
"""

from __future__ import annotations

import os
import re

from gssproxy_py.config.ini import IniSection, merge_files, parse_ini
from gssproxy_py.config.model import Config
from gssproxy_py.config.options import build_config
from gssproxy_py.config.strict import strict_mode_problems
from gssproxy_py.errors import ConfigError

DEFAULT_CONFIG_DIR = "/etc/gssproxy"
DEFAULT_CONFIG_FILE = "/etc/gssproxy/gssproxy.conf"
# gssproxy's compiled-in GP_SOCKET_NAME, also the interposer's default. (The kernel dials
# /var/run/gssproxy.sock, which NFS server configs name with `socket =`.)
DEFAULT_SOCKET = "/var/lib/gssproxy/default.sock"
CONF_D_PATTERN = re.compile(r"^[0-9]{2}-.+\.conf$")


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"not valid UTF-8 (byte offset {exc.start})", file=path, line=line
        ) from None


def _same_file(a: os.stat_result | None, b: os.stat_result) -> bool:
    return a is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _dir_files(config_dir: str, main_stat: os.stat_result | None, notes: list[str]) -> list[str]:
    """The conf.d files to read, in order; skipped entries go to `notes`."""
    try:
        names = sorted(os.listdir(config_dir))
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration directory: {exc.strerror or exc}", file=config_dir
        ) from None
    chosen: list[str] = []
    for name in names:
        path = os.path.join(config_dir, name)
        try:
            st = os.stat(path)
        except OSError as exc:
            notes.append(f"{path}: skipped: {exc.strerror or exc}")
            continue
        if _same_file(main_stat, st):
            # The main file usually lives in the directory; it was read already.
            continue
        if not CONF_D_PATTERN.match(name):
            notes.append(f"{path}: skipped: name does not match {CONF_D_PATTERN.pattern}")
            continue
        if not os.path.isfile(path):
            notes.append(f"{path}: skipped: not a regular file")
            continue
        chosen.append(path)
    return chosen


def config_paths(config_file: str | None, config_dir: str | None) -> tuple[list[str], list[str]]:
    """The files `-c` / `-C` select, in reading order, and notes on skipped
    ones. Raises ConfigError as `load_config` does for missing files."""
    directory: str | None
    if config_file is None:
        main, main_required = DEFAULT_CONFIG_FILE, False
        directory, dir_required = config_dir or DEFAULT_CONFIG_DIR, config_dir is not None
    else:
        main, main_required = config_file, True
        directory, dir_required = config_dir, True

    notes: list[str] = []
    paths: list[str] = []
    main_stat: os.stat_result | None = None
    try:
        main_stat = os.stat(main)
    except FileNotFoundError:
        if main_required:
            raise ConfigError("configuration file does not exist", file=main) from None
        notes.append(f"{main}: not found; using only {directory}")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=main) from None
    if main_stat is not None:
        paths.append(main)

    if directory is not None:
        if os.path.isdir(directory):
            paths.extend(_dir_files(directory, main_stat, notes))
        elif dir_required or os.path.exists(directory):
            raise ConfigError("configuration directory does not exist", file=directory)

    if not paths:
        where = main if directory is None else f"{main} or {directory}"
        raise ConfigError(f"no configuration found in {where}")
    return paths, notes


def read_sections(paths: list[str]) -> tuple[list[IniSection], list[str]]:
    """Parse and merge the files, in order: the sections and merge warnings."""
    parsed: list[tuple[IniSection, ...]] = [parse_ini(_read(p), p) for p in paths]
    sections, warnings = merge_files(parsed)
    return list(sections), list(warnings)


def load_config(config_file: str | None, config_dir: str | None, *, default_socket: str) -> Config:
    """Read the configuration selected by `-c` / `-C` (None when not given).

    `default_socket` (from `-s` or `DEFAULT_SOCKET`) is the socket of services
    without `socket`; it is needed to check services against each other.
    Raises ConfigError for a missing explicitly named file or directory, any
    parse or validation error, or when nothing was found at all.
    """
    paths, notes = config_paths(config_file, config_dir)
    sections, warnings = read_sections(paths)
    config = build_config(
        sections, default_socket=default_socket, files=paths, warnings=warnings, notes=notes
    )
    if config.globals.strict_modes and (problems := strict_mode_problems(config)):
        raise ConfigError("; ".join(problems))
    return config


def load_config_text(
    text: str, name: str = "<string>", *, default_socket: str = DEFAULT_SOCKET
) -> Config:
    """Build a `Config` from one file's text (for tests and tools)."""
    sections, warnings = merge_files([parse_ini(text, name)])
    return build_config(sections, default_socket=default_socket, files=[name], warnings=warnings)
