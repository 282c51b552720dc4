"""StrictModes for the files the daemon trusts: the configuration files and
the keytabs and client keytabs services name.

A file that a user other than root can write (or replace, through a
directory on its path) lets that user change what the daemon does as root,
or hand it keys of their choosing. As sshd's StrictModes, the daemon then
refuses to start or to reload, naming the file and the fix, unless
`[gssproxy] strict_modes = no`.

"Writable by a non-root user" means: owned by a uid other than 0 (the owner
can always chmod), group-writable with a group other than 0, or
world-writable. The file and every directory above it are checked; a
directory with the sticky bit (such as /tmp) may be writable by all, as only
an entry's owner can then rename or remove it. Missing files are not this
check's business (using them fails with its own error), and keytab names
with `%` escapes are checked from their first fixed directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from gssproxy_py.config.model import Config, OptionOrigin

#: cred_store keys whose value is a keytab the daemon reads as root.
KEYTAB_KEYS = ("keytab", "client_keytab")
#: Keytab name prefixes that mean a file (`FILE:` is the default type).
_FILE_TYPES = ("FILE:", "WRFILE:")


def _non_root_can_write(st: os.stat_result, *, directory: bool) -> str | None:
    mode = stat.S_IMODE(st.st_mode)
    if directory and mode & stat.S_ISVTX:
        # Sticky: others may add entries, not replace those of root.
        return None if st.st_uid == 0 else f"is owned by uid {st.st_uid}"
    if st.st_uid != 0:
        return f"is owned by uid {st.st_uid}"
    if mode & stat.S_IWOTH:
        return f"is writable by every user (mode {mode:04o})"
    if mode & stat.S_IWGRP and st.st_gid != 0:
        return f"is writable by group {st.st_gid} (mode {mode:04o})"
    return None


def unsafe_path(path: str) -> str | None:
    """Why `path` (a file, or a directory to trust) could be changed by a
    non-root user, or None. Follows symlinks as opening it would."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        return None
    why = _non_root_can_write(st, directory=stat.S_ISDIR(st.st_mode))
    if why is not None:
        # Name the file a symlink leads to; the path itself is named already.
        return why if real == os.path.abspath(path) else f"(through a symlink, {real}) {why}"
    parent = os.path.dirname(real)
    while True:
        try:
            dst = os.stat(parent)
        except OSError:
            return None
        why = _non_root_can_write(dst, directory=True)
        if why is not None:
            return f"directory {parent} {why}"
        if parent == "/":
            return None
        parent = os.path.dirname(parent)


def keytab_path(value: str) -> str | None:
    """The file path in a keytab name, or None if it names no file (MEMORY:,
    a relative name); a template is cut at its first directory with `%`."""
    for prefix in _FILE_TYPES:
        if value.startswith(prefix):
            value = value[len(prefix) :]
            break
    else:
        if ":" in value.split("/", 1)[0]:
            return None  # another keytab type
    if not value.startswith("/"):
        return None
    if "%" in value:
        value = value[: value.index("%")].rsplit("/", 1)[0] or "/"
    return value


def trusted_files(config: Config) -> Iterator[tuple[str, OptionOrigin | None]]:
    """Every configuration file, keytab and client keytab, with where a
    service names it."""
    for path in config.files:
        yield path, None
    for service in config.services:
        for key, value in service.cred_store:
            keytab = keytab_path(value) if key in KEYTAB_KEYS else None
            if keytab is not None:
                yield keytab, service.origin("cred_store")


def strict_mode_problems(config: Config) -> list[str]:
    """One message per trusted file a non-root user could change, naming
    the file, where it is named, and the fix."""
    problems = []
    seen: set[str] = set()
    for path, origin in trusted_files(config):
        if path in seen:
            continue
        seen.add(path)
        why = unsafe_path(path)
        if why is None:
            continue
        named = f" (cred_store at {origin.file}:{origin.line})" if origin else ""
        problems.append(
            f"{path}{named}: {why}; make it and its directories owned by root and "
            "writable only by root, or set strict_modes = no in [gssproxy]"
        )
    return problems
