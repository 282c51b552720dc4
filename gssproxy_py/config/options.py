"""Turning INI sections into `GlobalSettings` and `Service` values.

Every option is validated here, and every error names the file, line and
option. Differences from gssproxy, all on purpose:

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
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
from collections.abc import Iterable, Sequence

from gssproxy_py.config.expand import check_template
from gssproxy_py.config.flags import (
    DEFAULT_ENFORCE_FLAGS,
    DEFAULT_FILTER_FLAGS,
    parse_flags,
)
from gssproxy_py.config.ini import IniEntry, IniSection
from gssproxy_py.config.model import (
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_MAX_CALLS_PER_CONNECTION,
    DEFAULT_MAX_RECORD_SIZE,
    DEFAULT_MIN_LIFETIME,
    DEFAULT_STATE_DIR,
    DEFAULT_USE_GSS_PROXY_FILE,
    DEFAULT_WORKER_THREADS,
    MAX_MAX_RECORD_SIZE,
    MIN_MAX_RECORD_SIZE,
    Config,
    CredUsage,
    GlobalSettings,
    Mech,
    OptionOrigin,
    PinSource,
    PinSourceKind,
    SelinuxContext,
    Service,
)
from gssproxy_py.errors import ConfigError

GLOBAL_OPTIONS = frozenset(
    {
        "debug",
        "debug_level",
        "syslog_status",
        "run_as_user",
        "worker threads",
        "state_dir",
        "max_record_size",
        "max_calls_per_connection",
        "call_timeout",
        "use_gss_proxy_file",
    }
)

SERVICE_BOOL_OPTIONS = (
    "allow_any_uid",
    "trusted",
    "impersonate",
    "allow_protocol_transition",
    "allow_constrained_delegation",
    "allow_client_ccache_sync",
    "kernel_nfsd",
)

SERVICE_MULTI_OPTIONS = frozenset({"cred_store", "pkcs11_uri"})

SERVICE_OPTIONS = frozenset(
    {
        "euid",
        "mechs",
        "cred_store",
        "krb5_principal",
        "cred_usage",
        "socket",
        "program",
        "selinux_context",
        *SERVICE_BOOL_OPTIONS,
        "filter_flags",
        "enforce_flags",
        "min_lifetime",
        "netns",
        "pkcs11_module",
        "pkcs11_uri",
        "pkcs11_pin",
    }
)

# Options gssproxy removed; it refuses to start when it sees them.
REMOVED_OPTIONS: dict[str, str] = {
    "krb5_keytab": "keytab",
    "krb5_ccache": "ccache",
    "krb5_client_keytab": "client_keytab",
}

_TRUE_WORDS = frozenset({"1", "on", "true", "yes"})
_FALSE_WORDS = frozenset({"0", "off", "false", "no"})
_UINT = re.compile(r"[0-9]+")
_UDECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_LIST_SPLIT = re.compile(r"[,\s]+")
_CRED_STORE_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
# uid_t is 32 bits and (uid_t)-1 means "no uid".
_MAX_UID = 2**32 - 2
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_NETNS_ALL = "all"


def _error(entry: IniEntry, message: str) -> ConfigError:
    return ConfigError(message, file=entry.file, line=entry.line, option=entry.key)


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
                raise _error(
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
            raise _error(entry, "empty value")


def parse_bool(entry: IniEntry) -> bool:
    word = entry.value.lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise _error(
        entry, f"expected a boolean (yes/no, true/false, on/off, 1/0), got {entry.value!r}"
    )


def _parse_int(entry: IniEntry, minimum: int, maximum: int | None = None) -> int:
    if not _UINT.fullmatch(entry.value):
        raise _error(entry, f"expected a non-negative integer, got {entry.value!r}")
    number = int(entry.value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise _error(entry, f"must be {bound}, got {number}")
    return number


def _parse_seconds(entry: IniEntry) -> float:
    if not _UDECIMAL.fullmatch(entry.value):
        raise _error(entry, f"expected a number of seconds, got {entry.value!r}")
    seconds = float(entry.value)
    if seconds <= 0:
        raise _error(entry, "must be greater than 0")
    return seconds


def _parse_abs_path(entry: IniEntry) -> str:
    if not entry.value.startswith("/"):
        raise _error(entry, f"must be an absolute path, got {entry.value!r}")
    return entry.value


def _parse_list(entry: IniEntry) -> list[str]:
    return [item for item in _LIST_SPLIT.split(entry.value) if item]


def parse_global_section(section: IniSection) -> tuple[GlobalSettings, list[str]]:
    """Build `GlobalSettings` from the `[gssproxy]` section."""
    r = _SectionReader(section, GLOBAL_OPTIONS)
    r.warn_unknown(SERVICE_OPTIONS | frozenset(REMOVED_OPTIONS), "service")

    debug_level = 0
    if (e := r.single("debug")) is not None and parse_bool(e):
        debug_level = 1
    # As in gssproxy, an explicit debug_level overrides `debug`.
    if (e := r.single("debug_level")) is not None:
        debug_level = _parse_int(e, 0)
    syslog_status = (e := r.single("syslog_status")) is not None and parse_bool(e)
    run_as_user = e.value if (e := r.single("run_as_user")) is not None else None
    worker_threads = DEFAULT_WORKER_THREADS
    if (e := r.single("worker threads")) is not None:
        worker_threads = _parse_int(e, 1)
    state_dir = DEFAULT_STATE_DIR
    if (e := r.single("state_dir")) is not None:
        state_dir = _parse_abs_path(e)
    max_record_size = DEFAULT_MAX_RECORD_SIZE
    if (e := r.single("max_record_size")) is not None:
        max_record_size = _parse_int(e, MIN_MAX_RECORD_SIZE, MAX_MAX_RECORD_SIZE)
    max_calls = DEFAULT_MAX_CALLS_PER_CONNECTION
    if (e := r.single("max_calls_per_connection")) is not None:
        max_calls = _parse_int(e, 1)
    call_timeout = DEFAULT_CALL_TIMEOUT
    if (e := r.single("call_timeout")) is not None:
        call_timeout = _parse_seconds(e)
    use_file = DEFAULT_USE_GSS_PROXY_FILE
    if (e := r.single("use_gss_proxy_file")) is not None:
        use_file = _parse_abs_path(e)

    settings = GlobalSettings(
        debug_level=debug_level,
        syslog_status=syslog_status,
        run_as_user=run_as_user,
        worker_threads=worker_threads,
        state_dir=state_dir,
        max_record_size=max_record_size,
        max_calls_per_connection=max_calls,
        call_timeout=call_timeout,
        use_gss_proxy_file=use_file,
        origins=tuple(r.origins),
    )
    return settings, r.warnings


def _parse_euid(entry: IniEntry) -> int:
    if _UINT.fullmatch(entry.value):
        uid = int(entry.value)
        if uid > _MAX_UID:
            raise _error(entry, f"uid {uid} is out of range")
        return uid
    try:
        return pwd.getpwnam(entry.value).pw_uid
    except KeyError:
        raise _error(entry, f"unknown user {entry.value!r}") from None


def _parse_mechs(entry: IniEntry) -> tuple[Mech, ...]:
    mechs: list[Mech] = []
    for name in _parse_list(entry):
        try:
            mech = Mech(name)
        except ValueError:
            known = ", ".join(m.value for m in Mech)
            raise _error(entry, f"unknown mechanism {name!r}; known: {known}") from None
        if mech not in mechs:
            mechs.append(mech)
    return tuple(mechs)


def _parse_cred_store(entry: IniEntry) -> tuple[str, str]:
    key, sep, value = entry.value.partition(":")
    key, value = key.strip(), value.strip()
    if not sep:
        raise _error(entry, f"expected KEY:VALUE, no ':' in {entry.value!r}")
    if not key or not value:
        raise _error(entry, f"expected KEY:VALUE with both parts non-empty, got {entry.value!r}")
    if not _CRED_STORE_KEY.fullmatch(key):
        raise _error(entry, f"invalid cred_store key {key!r}")
    try:
        check_template(value)
    except ConfigError as exc:
        raise _error(entry, exc.message) from None
    return key, value


def _parse_cred_usage(entry: IniEntry) -> CredUsage:
    try:
        return CredUsage[entry.value.upper()]
    except KeyError:
        raise _error(entry, f"expected initiate, accept or both, got {entry.value!r}") from None


def _parse_socket(entry: IniEntry) -> str:
    path = os.path.normpath(_parse_abs_path(entry))
    if len(path.encode()) > _MAX_SOCKET_PATH:
        raise _error(entry, f"socket path is longer than {_MAX_SOCKET_PATH} bytes")
    return path


def _parse_program(entry: IniEntry, warnings: list[str]) -> str:
    path = _parse_abs_path(entry)
    if "|" in path:
        raise _error(entry, "must not contain '|'")
    if os.path.normpath(path) != path:
        warnings.append(
            f"{entry.where}: option 'program': {path!r} is not in canonical form; it is "
            "compared with the resolved path of the client executable and may never match"
        )
    return path


def _parse_selinux(entry: IniEntry) -> SelinuxContext:
    ctx = SelinuxContext.parse(entry.value)
    if ctx is None:
        raise _error(entry, f"expected user:role:type[:range], got {entry.value!r}")
    return ctx


def _parse_flag_option(entry: IniEntry, initial: int) -> int:
    try:
        return parse_flags(entry.value, initial)
    except ConfigError as exc:
        raise _error(entry, exc.message) from None


def _parse_netns(entry: IniEntry) -> tuple[tuple[str, ...], bool]:
    names = _parse_list(entry)
    if _NETNS_ALL in names:
        if len(names) > 1:
            raise _error(entry, "'all' cannot be combined with namespace names")
        return (), True
    for name in names:
        if "/" in name or name in (".", "..") or len(name.encode()) > 255:
            raise _error(entry, f"invalid network namespace name {name!r}")
    return tuple(dict.fromkeys(names)), False


def _parse_pkcs11_uri(entry: IniEntry) -> str:
    if not entry.value.startswith("pkcs11:"):
        raise _error(entry, "must be a PKCS#11 URI starting with 'pkcs11:'")
    return entry.value


def _parse_pin_source(entry: IniEntry) -> PinSource:
    # The value might be a PIN typed in by mistake: never echo it back,
    # only a scheme-looking prefix.
    scheme, sep, location = entry.value.partition(":")
    expected = "expected keyring:DESCRIPTION or file:PATH"
    if not sep:
        raise _error(entry, f"{expected} (no scheme given)")
    try:
        kind = PinSourceKind(scheme)
    except ValueError:
        shown = f"'{scheme}'" if _SCHEME.fullmatch(scheme) else "not recognised"
        raise _error(entry, f"{expected} (scheme {shown})") from None
    if not location:
        raise _error(entry, f"{expected} ({kind.value}: needs a value)")
    if kind is PinSourceKind.FILE and not location.startswith("/"):
        raise _error(entry, "file: PIN source must be an absolute path")
    return PinSource(kind, location)


def parse_service_section(section: IniSection) -> tuple[Service, list[str]]:
    """Build a `Service` from one `[service/NAME]` section."""
    name = section.service_name
    assert name is not None
    for removed, store_key in REMOVED_OPTIONS.items():
        if entries := section.get(removed):
            path = entries[0].value or "PATH"
            raise _error(
                entries[0], f"{removed} has been removed; use cred_store = {store_key}:{path}"
            )
    r = _SectionReader(section, SERVICE_OPTIONS, SERVICE_MULTI_OPTIONS)
    r.warn_unknown(GLOBAL_OPTIONS, "[gssproxy]")

    euid = _parse_euid(r.required("euid"))
    mechs = _parse_mechs(r.required("mechs"))
    cred_store = tuple(_parse_cred_store(e) for e in r.many("cred_store"))
    principal = e.value if (e := r.single("krb5_principal")) is not None else None
    cred_usage = CredUsage.BOTH
    if (e := r.single("cred_usage")) is not None:
        cred_usage = _parse_cred_usage(e)
    socket = _parse_socket(e) if (e := r.single("socket")) is not None else None
    program = _parse_program(e, r.warnings) if (e := r.single("program")) is not None else None
    selinux = _parse_selinux(e) if (e := r.single("selinux_context")) is not None else None
    bools = {
        opt: (e := r.single(opt)) is not None and parse_bool(e) for opt in SERVICE_BOOL_OPTIONS
    }
    filter_flags = DEFAULT_FILTER_FLAGS
    if (e := r.single("filter_flags")) is not None:
        filter_flags = _parse_flag_option(e, DEFAULT_FILTER_FLAGS)
    enforce_flags = DEFAULT_ENFORCE_FLAGS
    if (e := r.single("enforce_flags")) is not None:
        enforce_flags = _parse_flag_option(e, DEFAULT_ENFORCE_FLAGS)
    min_lifetime = DEFAULT_MIN_LIFETIME
    if (e := r.single("min_lifetime")) is not None:
        min_lifetime = _parse_int(e, 0)
    netns: tuple[str, ...] = ()
    netns_all = False
    if (e := r.single("netns")) is not None:
        netns, netns_all = _parse_netns(e)
    module = _parse_abs_path(e) if (e := r.single("pkcs11_module")) is not None else None
    uris = tuple(_parse_pkcs11_uri(e) for e in r.many("pkcs11_uri"))
    pin = _parse_pin_source(e) if (e := r.single("pkcs11_pin")) is not None else None

    service = Service(
        name=name,
        euid=euid,
        mechs=mechs,
        file=section.file,
        line=section.line,
        cred_store=cred_store,
        krb5_principal=principal,
        cred_usage=cred_usage,
        socket=socket,
        program=program,
        selinux_context=selinux,
        allow_any_uid=bools["allow_any_uid"],
        trusted=bools["trusted"],
        impersonate=bools["impersonate"],
        allow_protocol_transition=bools["allow_protocol_transition"],
        allow_constrained_delegation=bools["allow_constrained_delegation"],
        allow_client_ccache_sync=bools["allow_client_ccache_sync"],
        kernel_nfsd=bools["kernel_nfsd"],
        filter_flags=filter_flags,
        enforce_flags=enforce_flags,
        min_lifetime=min_lifetime,
        netns=netns,
        netns_all=netns_all,
        pkcs11_module=module,
        pkcs11_uris=uris,
        pkcs11_pin=pin,
        origins=tuple(sorted(r.origins, key=lambda o: o.line)),
    )
    return service, r.warnings


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
