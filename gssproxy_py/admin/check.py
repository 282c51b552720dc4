"""`check-config` and `explain`: the daemon's own configuration and matching
code, answering an administrator.

`check_config` loads the configuration exactly as the daemon does
(`config.load.load_config`, the option rows of `config.options`). When that
fails it reads every file and every option row again one by one
(`config.options.section_errors`), so the report lists every error, not only
the first the daemon stops at. On success it lists the warnings the daemon
would log, plus one for every option the C gssproxy would read differently
from the value written (`c_differences`).

`explain` builds the `Peer` the daemon would see for a caller and runs
`config.match` over it: the service `match_service` picks, and for every
other service the first rule that excludes the caller.

Where we and the C gssproxy read a written value the same way, nothing is
said: every boolean we accept (`1/on/true/yes/0/off/false/no`, any case) is
read alike by C's `gp_boolean_is_true`, so booleans never warn; a value we
reject is an error, not a warning.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from gssproxy_py.config import values as v
from gssproxy_py.config.ini import IniSection, merge_files
from gssproxy_py.config.load import config_paths, load_config, read_sections
from gssproxy_py.config.match import first_failures
from gssproxy_py.config.model import Config, Service
from gssproxy_py.config.options import OPTIONS, Option, Section, Source, section_errors
from gssproxy_py.config.peer import Peer
from gssproxy_py.errors import ConfigError
from gssproxy_py.netns.errors import NetnsError
from gssproxy_py.netns.named import NETNS_DIR, configured_names, inode_map

_ROWS = {(o.section, o.name): o for o in OPTIONS}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `check-config` found; `config` is None when there are errors."""

    config: Config | None
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    notes: tuple[str, ...]


def check_config(
    config_file: str | None, config_dir: str | None, *, default_socket: str
) -> CheckReport:
    """Load as the daemon would; every error, or the config and its warnings."""
    try:
        config = load_config(config_file, config_dir, default_socket=default_socket)
    except ConfigError as first:
        return CheckReport(None, tuple(_every_error(first, config_file, config_dir)), (), ())
    sections, _ = read_sections(list(config.files))
    warnings = (*config.warnings, *c_differences(sections))
    return CheckReport(config, (), warnings, config.notes)


def _every_error(first: ConfigError, config_file: str | None, config_dir: str | None) -> list[str]:
    """Every error, in file order then line order (the first the daemon met included)."""
    found: dict[str, ConfigError] = {str(first): first}
    try:
        paths, _ = config_paths(config_file, config_dir)
    except ConfigError:
        return [str(first)]
    parsed: list[Sequence[IniSection]] = []
    for path in paths:
        # One file at a time, so a syntax error in one hides nothing in another.
        try:
            parsed.append(read_sections([path])[0])
        except ConfigError as exc:
            found.setdefault(str(exc), exc)
    sections, _ = merge_files(parsed)
    for section in sections:
        for error in section_errors(section):
            found.setdefault(str(error), error)
    order = {path: i for i, path in enumerate(paths)}

    def where(e: ConfigError) -> tuple[int, int]:
        return order.get(e.file or "", len(order)), e.line or 0

    return [str(e) for e in sorted(found.values(), key=where)]


def _c_note(row: Option, value: str) -> str | None:
    """How the C gssproxy reads this written value differently, if it does."""
    if row.source is Source.GSSPROXY_PY:
        return row.c_differences()[0]
    if row.kind is v.MECHS and value.strip() != "krb5":
        return row.kind.c_reads
    if row.name in ("filter_flags", "enforce_flags"):
        items = value.replace(",", " ").split()
        if any(item.lstrip("+-").upper() == "INTEGRITY" for item in items):
            return row.kind.c_reads
    return None


def c_differences(sections: Sequence[IniSection]) -> list[str]:
    """A warning for every option set whose value the C gssproxy reads differently."""
    out = []
    for section in sections:
        scope = Section.GLOBAL if section.is_global else Section.SERVICE
        for entry in section.entries:
            row = _ROWS.get((scope, entry.key))
            if row is None:
                continue  # unknown options are already warned about
            note = _c_note(row, entry.value)
            if note is not None:
                out.append(f"{entry.where}: option '{entry.key}': the C gssproxy {note}")
    return out


def _service_rows() -> list[Option]:
    return [o for o in OPTIONS if o.section is Section.SERVICE]


def describe_service(service: Service, default_socket: str) -> list[str]:
    """The effective settings of a service, one `option = value` per line,
    written as a file would; options left at their default are left out."""
    lines = [f"[service/{service.name}]  ({service.file}:{service.line})"]
    socket = service.socket if service.socket is not None else default_socket
    lines.append(f"  socket = {socket}" + ("" if service.socket else "  (the default socket)"))
    for row in _service_rows():
        if row.name == "socket":
            continue
        values = [getattr(service, t) for t in row.targets]
        value = values[0] if len(values) == 1 else tuple(values)
        if row.multi:
            lines.extend(f"  {row.name} = {row.kind.show(item)}" for item in value)
            continue
        if value == row.default() and not row.required:
            continue
        lines.append(f"  {row.name} = {row.kind.show(value)}")
    return lines


def explain(
    config: Config,
    *,
    uid: int,
    gid: int,
    program: str | None,
    socket_path: str,
    default_socket: str,
    netns: str | None = None,
    selinux_context: str | None = None,
    netns_dir: str = NETNS_DIR,
) -> tuple[Service | None, list[tuple[Service, str | None]], str]:
    """(the service that serves this caller or None, every service with the
    first rule excluding the caller, a description of the caller)."""
    names = set(configured_names(config.services))
    if netns is not None:
        names.add(netns)
    try:
        inodes = inode_map(sorted(names), netns_dir)
    except NetnsError:
        inodes = {}
    if netns is not None:
        peer_ns = inodes.get(netns)
        if peer_ns is None:
            raise ConfigError(f"no network namespace named {netns!r} in {netns_dir}")
    else:
        peer_ns = os.stat("/proc/self/ns/net").st_ino
    peer = Peer(
        pid=0,
        uid=uid,
        gid=gid,
        program=program,
        selinux_context=selinux_context,
        netns_inode=peer_ns,
    )
    rows = first_failures(
        config,
        peer,
        socket_path,
        default_socket=default_socket,
        selinux_enabled=selinux_context is not None,
        netns_inodes=inodes,
    )
    winner = next((svc for svc, why in rows if why is None), None)
    who = (
        f"uid {uid} gid {gid}, program {program or '(unknown)'}, on {socket_path}, "
        f"network namespace {netns or '(the current one)'}"
    )
    return winner, rows, who
