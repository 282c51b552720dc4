"""The option table, and turning INI sections into `GlobalSettings` and `Service`.

Every option gssproxy-py reads is one `Option` row in `OPTIONS`: its name,
section, kind of value (`values.py`: parser, what it accepts, how a value is
written), the model field it fills, a one-line help text, an example, and how
the C gssproxy reads it when that differs. Parsing, validation, the
unknown-option warnings, the repeat check, docs/CONFIG.md (`reference.py`) and
`check-config` all derive from the rows; the default is the model field's
default (`model.py`), so it is written once. Adding an option is one row here
plus the field it fills; docs/ARCHITECTURE.md lists the steps.

Every error names the file, line and option. Differences from gssproxy, all on
purpose:

* A single-valued option repeated in one section is an error naming both
  lines. libini would accept the repeat (`INI_MV1S_ALLOW`) and gssproxy would
  silently use the first value, which hides edits made further down a file.
* Booleans must be one of `1|on|true|yes` or `0|off|false|no`. gssproxy treats
  anything that is not a true word as false, so `trusted = ture` quietly
  disables a setting the administrator wanted.
* `mechs` is a real list, and an unknown mechanism is an error (gssproxy
  compared the whole value with `krb5` and dropped services it did not
  recognise).
* Flag lists reject items gssproxy would skip (see `flags.py`).
* Unknown options are warnings, as in gssproxy (which never looks at them),
  but we report them with their location.

Rows are read in table order, so the first error reported is that of the
earliest row, and a later row overrides an earlier one that fills the same
field (`debug_level` over `debug`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gssproxy_py.config import values as v
from gssproxy_py.config.flags import DEFAULT_ENFORCE_FLAGS, DEFAULT_FILTER_FLAGS
from gssproxy_py.config.ini import GLOBAL_SECTION, IniEntry, IniSection
from gssproxy_py.config.model import (
    MAX_MAX_RECORD_SIZE,
    MAX_WORKER_PROCESSES,
    MIN_MAX_RECORD_SIZE,
    Config,
    GlobalSettings,
    OptionOrigin,
    Service,
)
from gssproxy_py.errors import ConfigError


class Section(StrEnum):
    """Which section an option belongs in (the value is how docs show it)."""

    GLOBAL = "[gssproxy]"
    SERVICE = "[service/NAME]"


class Source(StrEnum):
    """Who defines an option."""

    GSSPROXY = "gssproxy"  # the C gssproxy reads it too
    GSSPROXY_PY = "gssproxy-py"  # ours: the C gssproxy ignores it (unknown option)


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option.

    `fields` are the model attributes the value fills (default: the option's
    own name); an option filling two fields parses to a tuple of two values.
    `unset` says what leaving the option out means when the model default is
    no value. `c_reads` adds, to the kind's own note, how the C gssproxy
    reads this option differently.
    """

    name: str
    section: Section
    kind: v.Kind
    help: str
    example: str
    fields: tuple[str, ...] = ()
    multi: bool = False
    required: bool = False
    source: Source = Source.GSSPROXY
    unset: str = ""
    c_reads: str = ""

    @property
    def targets(self) -> tuple[str, ...]:
        """The model attributes this option fills."""
        return self.fields or (self.name,)

    @property
    def model(self) -> type[GlobalSettings] | type[Service]:
        return GlobalSettings if self.section is Section.GLOBAL else Service

    def default(self) -> Any:
        """The model's default for the fields this option fills."""
        by_name = {f.name: f.default for f in dataclasses.fields(self.model)}
        found = tuple(by_name[t] for t in self.targets)
        return found[0] if len(found) == 1 else found

    def default_text(self) -> str:
        """The default as it would be written in the file, or what unset means."""
        if self.required:
            return "(required)"
        value = self.default()
        shown = "" if self.multi or value is None else self.kind.show(value)
        return shown or f"({self.unset or 'unset'})"

    def c_differences(self) -> tuple[str, ...]:
        """How the C gssproxy reads this option differently, one sentence each."""
        if self.source is Source.GSSPROXY_PY:
            return ("does not know this option and ignores it",)
        notes = [n for n in (self.kind.c_reads, self.c_reads) if n]
        if not self.multi:
            notes.append(C_READS_REPEAT)
        return tuple(notes)


# How the C gssproxy reads any single-valued option given twice in a section.
C_READS_REPEAT = "uses the first value when the option is repeated in a section"

G, S = Section.GLOBAL, Section.SERVICE
OURS = Source.GSSPROXY_PY

# The table. Order matters: rows are read in this order (first error wins,
# later rows override earlier ones that fill the same field), and
# docs/CONFIG.md lists them in it. Add a new option at the end of its section.
OPTIONS: tuple[Option, ...] = (
    # --- [gssproxy] ---
    Option(
        "debug",
        G,
        v.DEBUG_SWITCH,
        "turn on debug logging at level 1",
        "yes",
        fields=("debug_level",),
    ),
    Option(
        "debug_level",
        G,
        v.integer(0),
        "how much to log: 1 a line per connection and call, 2 also decoded requests and "
        "policy decisions, 3 everything including secrets (test systems only); overrides debug",
        "2",
    ),
    Option("syslog_status", G, v.BOOLEAN, "log every failed GSS call's status to syslog", "yes"),
    Option(
        "run_as_user",
        G,
        v.TEXT,
        "user to switch to once the sockets exist",
        "gssproxy",
        unset="stay root",
    ),
    Option(
        "worker threads",
        G,
        v.integer(1),
        "threads for GSS work that may wait (KDC, NSS, slow credential stores)",
        "8",
        fields=("worker_threads",),
    ),
    Option(
        "worker_processes",
        G,
        v.integer(1, MAX_WORKER_PROCESSES),
        "processes serving the GSS-Proxy sockets, each with its own event loop "
        "(1: one process, as gssproxy); read at start only",
        "2",
        source=OURS,
    ),
    Option(
        "state_dir",
        G,
        v.ABSOLUTE_PATH,
        "directory of handle-keys, the root-only key file for credential handles",
        "/var/lib/gssproxy-py",
        source=OURS,
    ),
    Option(
        "max_record_size",
        G,
        v.integer(MIN_MAX_RECORD_SIZE, MAX_MAX_RECORD_SIZE),
        "largest RPC record accepted or sent, in bytes (gssproxy: fixed 1 MiB)",
        "65536",
        source=OURS,
    ),
    Option(
        "max_calls_per_connection",
        G,
        v.integer(1),
        "calls from one connection processed at the same time (gssproxy: 1)",
        "4",
        source=OURS,
    ),
    Option(
        "call_timeout",
        G,
        v.SECONDS,
        "deadline for one call, answered SYSTEM_ERR when passed "
        "(below the interposer's 15 s resend)",
        "5",
        source=OURS,
    ),
    Option(
        "use_gss_proxy_file",
        G,
        v.ABSOLUTE_PATH,
        "the kernel's upcall switch, written for services with kernel_nfsd",
        "/proc/net/rpc/use-gss-proxy",
        source=OURS,
    ),
    # Tenant isolation (docs/RELIABILITY.md).
    Option(
        "max_connections",
        G,
        v.integer(1),
        "connections of all non-root peers together; root (the kernel, rpc.gssd) is not counted",
        "4096",
        source=OURS,
    ),
    Option(
        "max_connections_per_uid",
        G,
        v.integer(1),
        "connections of one non-root uid; beyond it a connection is closed at once",
        "128",
        source=OURS,
    ),
    Option(
        "fd_reserve",
        G,
        v.integer(16),
        "descriptors non-root connections leave free for root, the kernel, keytabs and "
        "replay caches (the soft fd limit is raised to the hard one at start)",
        "256",
        source=OURS,
    ),
    Option(
        "record_timeout",
        G,
        v.SECONDS,
        "a record that has started must be complete within this, or the connection is closed",
        "5",
        source=OURS,
    ),
    Option(
        "idle_connection_timeout",
        G,
        v.SECONDS_OR_OFF,
        "close a connection with no call in flight and nothing received for this long "
        "(clients reconnect)",
        "3600",
        source=OURS,
    ),
    Option(
        "input_budget",
        G,
        v.integer(MIN_MAX_RECORD_SIZE),
        "bytes of partial records buffered across all connections; beyond it the heaviest "
        "uid's partial records are dropped first (never below max_record_size + 4)",
        "33554432",
        source=OURS,
    ),
    Option(
        "input_budget_per_uid",
        G,
        v.integer(MIN_MAX_RECORD_SIZE),
        "bytes of partial records one uid may have buffered (never below max_record_size + 4)",
        "8388608",
        source=OURS,
    ),
    Option(
        "refusal_log_interval",
        G,
        v.SECONDS,
        "at most one line per interval says a connection was refused (with uid, pid and "
        "program) and one that a partial record was dropped; how many more were is said "
        "with the next such line, or on its own once the interval ended without one",
        "60",
        source=OURS,
    ),
    Option(
        "p11kit_max_workers",
        G,
        v.integer(1),
        "p11-kit worker processes at once (one serves each p11kit_socket connection); "
        "beyond it a connection is refused, with one rate-limited line naming uid, pid "
        "and program",
        "64",
        source=OURS,
    ),
    Option(
        "p11kit_max_workers_per_uid",
        G,
        v.integer(1),
        "p11-kit worker processes one uid other than root may hold at once (within "
        "p11kit_max_workers), so one user cannot take them all; beyond it that uid's next "
        "connection is refused, with one rate-limited line naming uid, pid and program",
        "16",
        source=OURS,
    ),
    Option(
        "turn_calls_per_connection",
        G,
        v.integer(1),
        "calls one connection may start per read, or per turn once calls wait; "
        "a connection with no more waiting is served before the pipelining ones",
        "4",
        source=OURS,
    ),
    Option(
        "turn_calls_per_uid",
        G,
        v.integer(1),
        "calls the pipelining connections of one uid may start per turn of the event loop",
        "16",
        source=OURS,
    ),
    Option(
        "turn_calls",
        G,
        v.integer(1),
        "calls the pipelining connections of all uids may start per turn of the event loop",
        "32",
        source=OURS,
    ),
    Option(
        "turn_time_us",
        G,
        v.integer(10, 1_000_000),
        "microseconds the pipelining connections may run per turn of the event loop before "
        "it polls again (after one call at least): what a caller sending one call at a "
        "time waits behind a flood",
        "500",
        source=OURS,
    ),
    Option(
        "strict_modes",
        G,
        v.BOOLEAN,
        "refuse to start or reload when a configuration file, keytab or client keytab (or a "
        "directory above it) is writable by a non-root user, as sshd's StrictModes",
        "no",
        source=OURS,
    ),
    Option(
        "admin_socket",
        G,
        v.ABSOLUTE_PATH,
        "the root-only (mode 0600) socket gssproxy-py-ctl talks to; read at start only",
        "/run/gssproxy-py/admin.sock",
        source=OURS,
        unset="DIR/NAME-admin.sock beside the default socket DIR/NAME.sock",
    ),
    Option(
        "allow_core_dumps",
        G,
        v.BOOLEAN,
        "keep the daemon's processes dumpable, for debugging: a core file, or gdb or py-spy "
        "run by the daemon's uid without CAP_SYS_PTRACE (under run_as_user), then reaches "
        "its keytab keys, PINs and handle key; the p11-kit zygote and workers never are",
        "yes",
        source=OURS,
    ),
    # --- [service/NAME] ---
    Option("euid", S, v.USER, "the uid a caller must have to use this service", "0", required=True),
    Option("mechs", S, v.MECHS, "mechanisms the service offers", "krb5", required=True),
    Option(
        "cred_store",
        S,
        v.CRED_STORE,
        "where credentials come from; repeat the option for several entries",
        "keytab:/etc/krb5.keytab",
        multi=True,
        unset="none: the Kerberos library's defaults",
    ),
    Option(
        "krb5_principal",
        S,
        v.TEXT,
        "principal to use from the service keytab when the caller names none",
        "nfs/server.example.com@EXAMPLE.COM",
        unset="none",
    ),
    Option(
        "cred_usage",
        S,
        v.CRED_USAGE,
        "which credentials callers may use: to initiate, to accept, or both",
        "accept",
    ),
    Option(
        "socket",
        S,
        v.SOCKET,
        "serve this service on its own socket",
        "/run/gssproxy.sock",
        unset="the default socket (-s)",
    ),
    Option(
        "program",
        S,
        v.PROGRAM,
        "serve only callers running this executable (/proc/PID/exe)",
        "/usr/sbin/rpc.gssd",
        unset="any program",
    ),
    Option(
        "selinux_context",
        S,
        v.SELINUX_CONTEXT,
        "serve only callers with this SELinux context (deprecated in gssproxy)",
        "system_u:system_r:gssd_t:s0",
        unset="any context",
    ),
    Option("allow_any_uid", S, v.BOOLEAN, "serve callers of any uid, not only euid", "yes"),
    Option(
        "trusted",
        S,
        v.BOOLEAN,
        "callers may name another uid and use the service keytab",
        "yes",
    ),
    Option(
        "impersonate",
        S,
        v.BOOLEAN,
        "initiate for a user with the service key by S4U2Self (and S4U2Proxy)",
        "yes",
    ),
    Option(
        "allow_protocol_transition",
        S,
        v.BOOLEAN,
        "callers may ask for S4U2Self (acquire_type impersonate_name)",
        "yes",
    ),
    Option(
        "allow_constrained_delegation",
        S,
        v.BOOLEAN,
        "impersonator credentials may be used for S4U2Proxy to other targets",
        "yes",
    ),
    Option(
        "allow_client_ccache_sync",
        S,
        v.BOOLEAN,
        "send refreshed credentials back to the client (sync_creds)",
        "yes",
    ),
    Option(
        "kernel_nfsd",
        S,
        v.BOOLEAN,
        "enable the kernel's nfsd upcall (writes use_gss_proxy_file)",
        "yes",
    ),
    Option(
        "filter_flags",
        S,
        v.flags(DEFAULT_FILTER_FLAGS),
        "GSS flags removed from the flags a caller asks for when initiating",
        "-DELEGATE +ANONYMOUS",
    ),
    Option(
        "enforce_flags",
        S,
        v.flags(DEFAULT_ENFORCE_FLAGS),
        "GSS flags added to the flags a caller asks for when initiating",
        "+MUTUAL_AUTH",
        unset="none",
    ),
    Option(
        "min_lifetime",
        S,
        v.integer(0),
        "seconds a cached credential must still be valid to be used",
        "60",
    ),
    Option(
        "netns",
        S,
        v.NETNS,
        "serve only callers in these named network namespaces, and work inside them",
        "red blue",
        fields=("netns", "netns_all"),
        source=OURS,
        unset="any namespace, work in the daemon's",
    ),
    Option(
        "pkcs11_module",
        S,
        v.ABSOLUTE_PATH,
        "PKCS#11 module holding the service's token keys",
        "/usr/lib/softhsm/libsofthsm2.so",
        source=OURS,
        unset="none",
    ),
    Option(
        "pkcs11_uri",
        S,
        v.PKCS11_URI,
        "token keys callers may use; repeat the option for several",
        "pkcs11:token=nfs;object=signing-key",
        fields=("pkcs11_uris",),
        multi=True,
        source=OURS,
        unset="none",
    ),
    Option(
        "pkcs11_pin",
        S,
        v.PIN_SOURCE,
        "where the token PIN is read from (never the PIN itself)",
        "keyring:gssproxy:nfs-token",
        source=OURS,
        unset="no login",
    ),
    Option(
        "pkcs11_session_keys",
        S,
        v.BOOLEAN,
        "sign and decrypt with a session copy of each private key (CKA_TOKEN false, never "
        "weaker than the key, which is rechecked on the token every 5 s): SoftHSM then skips "
        "its per-signature token-file checks; no: use the token objects (an HSM with a quota "
        "of session objects, or an audit that must see the token object used)",
        "no",
        source=OURS,
    ),
    Option(
        "p11kit_socket",
        S,
        v.SOCKET,
        "serve the service's token keys to p11-kit-client.so (P11_KIT_SERVER_ADDRESS) here",
        "/run/gssproxy/p11kit.sock",
        source=OURS,
        unset="not served to PKCS#11 programs",
    ),
    Option(
        "p11kit_mechanisms",
        S,
        v.P11KIT_MECHANISMS,
        "the only mechanisms p11-kit consumers of the service may sign or decrypt with",
        "ECDSA, RSA_PKCS_PSS",
        source=OURS,
        unset="every mechanism served",
    ),
)

GLOBAL_OPTIONS = frozenset(o.name for o in OPTIONS if o.section is Section.GLOBAL)
SERVICE_OPTIONS = frozenset(o.name for o in OPTIONS if o.section is Section.SERVICE)
_SERVICE_MULTI = frozenset(o.name for o in OPTIONS if o.section is Section.SERVICE and o.multi)

# Options gssproxy removed; it refuses to start when it sees them.
REMOVED_OPTIONS: dict[str, str] = {
    "krb5_keytab": "keytab",
    "krb5_ccache": "ccache",
    "krb5_client_keytab": "client_keytab",
}


class _SectionReader:
    """Reads one section's options, noting where each was set, and collects warnings."""

    __slots__ = ("known", "origins", "section", "warnings")

    def __init__(
        self, section: IniSection, known: frozenset[str], multi: frozenset[str] = frozenset()
    ) -> None:
        self.section = section
        self.known = known
        self.warnings: list[str] = []
        self.origins: list[OptionOrigin] = []
        # Report the first repeat in file order, before any value is looked at.
        first_seen: dict[str, IniEntry] = {}
        for entry in section.entries:
            if entry.key not in known or entry.key in multi:
                continue
            first = first_seen.setdefault(entry.key, entry)
            if first is not entry:
                raise v.error(
                    entry,
                    f"set again in [{section.name}]; first set at {first.where} "
                    "(this option takes one value per section)",
                )

    def single(self, key: str) -> IniEntry | None:
        entries = self.section.get(key)
        if not entries:
            return None
        assert len(entries) == 1, "repeats are rejected in __init__"
        self._check_nonempty(entries[0])
        self.origins.append(OptionOrigin(key, entries[0].file, entries[0].line))
        return entries[0]

    def many(self, key: str) -> tuple[IniEntry, ...]:
        entries = self.section.get(key)
        for entry in entries:
            self._check_nonempty(entry)
        if entries:
            self.origins.append(OptionOrigin(key, entries[0].file, entries[0].line))
        return entries

    def required(self, key: str) -> IniEntry:
        entry = self.single(key)
        if entry is None:
            raise ConfigError(
                f"required option is missing from [{self.section.name}]",
                file=self.section.file,
                line=self.section.line,
                option=key,
            )
        return entry

    def read(self, option: Option) -> tuple[bool, Any]:
        """Whether `option` is set here, and its parsed value."""
        if option.multi:
            entries = self.many(option.name)
            parsed = tuple(option.kind.parse(e, self.warnings) for e in entries)
            return bool(entries), parsed
        entry = self.required(option.name) if option.required else self.single(option.name)
        if entry is None:
            return False, None
        return True, option.kind.parse(entry, self.warnings)

    def read_all(self, options: Iterable[Option]) -> dict[str, Any]:
        """Model keyword arguments for every option set in the section."""
        fields: dict[str, Any] = {}
        for option in options:
            present, value = self.read(option)
            if not present:
                continue
            if len(option.targets) == 1:
                fields[option.targets[0]] = value
            else:
                fields.update(zip(option.targets, value, strict=True))
        return fields

    def warn_unknown(self, other_scope: frozenset[str], other_name: str) -> None:
        for key in self.section.option_names():
            if key in self.known:
                continue
            entry = self.section.get(key)[0]
            if key in other_scope:
                hint = f"; it is a {other_name} option and has no effect here"
            else:
                close = difflib.get_close_matches(key, sorted(self.known), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
            self.warnings.append(
                f"{entry.where}: option '{key}': unknown in [{self.section.name}], ignored{hint}"
            )

    @staticmethod
    def _check_nonempty(entry: IniEntry) -> None:
        if not entry.value:
            raise v.error(entry, "empty value")


def options_of(section: Section) -> tuple[Option, ...]:
    """The rows of one section, in table order."""
    return tuple(o for o in OPTIONS if o.section is section)


def parse_global_section(section: IniSection) -> tuple[GlobalSettings, list[str]]:
    """Build `GlobalSettings` from the `[gssproxy]` section."""
    r = _SectionReader(section, GLOBAL_OPTIONS)
    r.warn_unknown(SERVICE_OPTIONS | frozenset(REMOVED_OPTIONS), "service")
    fields = r.read_all(options_of(Section.GLOBAL))
    return GlobalSettings(**fields, origins=tuple(r.origins)), r.warnings


def _refuse_removed(section: IniSection) -> None:
    for removed, store_key in REMOVED_OPTIONS.items():
        if entries := section.get(removed):
            path = entries[0].value or "PATH"
            raise v.error(
                entries[0], f"{removed} has been removed; use cred_store = {store_key}:{path}"
            )


def parse_service_section(section: IniSection) -> tuple[Service, list[str]]:
    """Build a `Service` from one `[service/NAME]` section."""
    name = section.service_name
    assert name is not None
    _refuse_removed(section)
    r = _SectionReader(section, SERVICE_OPTIONS, _SERVICE_MULTI)
    r.warn_unknown(GLOBAL_OPTIONS, f"[{GLOBAL_SECTION}]")
    fields = r.read_all(options_of(Section.SERVICE))
    service = Service(
        name=name,
        file=section.file,
        line=section.line,
        **fields,
        origins=tuple(sorted(r.origins, key=lambda o: o.line)),
    )
    return service, r.warnings


def section_errors(section: IniSection) -> list[ConfigError]:
    """Every error of one section, not only the first: each row is read on
    its own, with the same reader and kinds as parsing (for `gssproxy-py-ctl
    check-config`, which reports them all)."""
    scope = Section.GLOBAL if section.is_global else Section.SERVICE
    known = GLOBAL_OPTIONS if section.is_global else SERVICE_OPTIONS
    multi = frozenset() if section.is_global else _SERVICE_MULTI
    errors: list[ConfigError] = []
    if not section.is_global:
        try:
            _refuse_removed(section)
        except ConfigError as exc:
            errors.append(exc)
    for option in options_of(scope):
        only = dataclasses.replace(
            section, entries=tuple(e for e in section.entries if e.key == option.name)
        )
        try:
            _SectionReader(only, known, multi).read(option)
        except ConfigError as exc:
            errors.append(exc)
    return errors


def _netns_overlap(a: Service, b: Service) -> bool:
    if not a.netns or not b.netns:
        return True
    return not set(a.netns).isdisjoint(b.netns)


def check_services(services: Sequence[Service], default_socket: str) -> None:
    """Reject services that gssproxy's `check_services` would reject.

    Two services clash when they share the socket (a service without
    `socket` uses `default_socket`), `program` and `selinux_context`, and
    the earlier one has `allow_any_uid` or both have the same `euid`: the
    later one could then never be chosen, or only by accident of order. As
    our extension, services whose `netns` restrictions cannot overlap do not
    clash. The error is located at the later service's section header.
    """
    default = os.path.normpath(default_socket)
    for i, later in enumerate(services):
        for earlier in services[:i]:
            _check_p11kit_clash(earlier, later)
            if (
                (later.socket or default) != (earlier.socket or default)
                or later.program != earlier.program
                or later.selinux_context != earlier.selinux_context
                or not _netns_overlap(earlier, later)
            ):
                continue
            if earlier.allow_any_uid:
                reason = f"'{earlier.name}' sets allow_any_uid"
            elif earlier.euid == later.euid:
                reason = f"both have euid {later.euid}"
            else:
                continue
            raise ConfigError(
                f"service '{later.name}' clashes with service '{earlier.name}' "
                f"({earlier.file}:{earlier.line}): same socket, program and "
                f"selinux_context, and {reason}",
                file=later.file,
                line=later.line,
            )


def _check_p11kit_clash(earlier: Service, later: Service) -> None:
    """The same rule for `p11kit_socket`: a later service the earlier one
    always wins over on that socket is a mistake."""
    if (
        later.p11kit_socket is None
        or later.p11kit_socket != earlier.p11kit_socket
        or later.program != earlier.program
        or later.selinux_context != earlier.selinux_context
        or not (earlier.allow_any_uid or earlier.euid == later.euid)
    ):
        return
    why = (
        "'" + earlier.name + "' sets allow_any_uid"
        if earlier.allow_any_uid
        else (f"both have euid {later.euid}")
    )
    raise ConfigError(
        f"service '{later.name}' clashes with service '{earlier.name}' "
        f"({earlier.file}:{earlier.line}): same p11kit_socket, program and selinux_context, "
        f"and {why}",
        file=later.file,
        line=later.line,
    )


def build_config(
    sections: Iterable[IniSection],
    *,
    default_socket: str,
    files: Sequence[str] = (),
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> Config:
    """Validate merged sections and assemble a `Config`.

    Raises ConfigError on the first invalid option, on a missing required
    option, when no service is configured, or when `check_services` fails.
    """
    all_warnings = list(warnings)
    settings = GlobalSettings()
    services: list[Service] = []
    for section in sections:
        if section.is_global:
            # merge_files leaves at most one [gssproxy] section.
            settings, section_warnings = parse_global_section(section)
        else:
            service, section_warnings = parse_service_section(section)
            services.append(service)
        all_warnings.extend(section_warnings)
    if not services:
        where = ", ".join(files) if files else "the configuration"
        raise ConfigError(f"no [service/NAME] sections configured in {where}")
    check_services(services, default_socket)
    return Config(
        globals=settings,
        services=tuple(services),
        files=tuple(files),
        warnings=tuple(all_warnings),
        notes=tuple(notes),
    )
