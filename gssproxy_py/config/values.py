"""The kinds of value an option takes: how each is parsed, checked and shown.

A `Kind` is one value syntax (a boolean, an integer in a range, an absolute
path, a `cred_store` pair...). It parses one `key = value` line into the typed
value the model holds, raising a located `ConfigError` when the value is
refused, and it knows how to describe what it accepts and how to write a value
back in configuration syntax; the option table (`options.py`) and the option
reference (`reference.py`) use those two texts, so they cannot drift from the
parser.

`c_reads` says how the C gssproxy reads the same text when it differs from us
(for the later `check-config` warnings and for docs/CONFIG.md); it is empty
when both read it alike.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gssproxy_py.config.expand import check_template
from gssproxy_py.config.flags import GssFlag, parse_flags
from gssproxy_py.config.ini import IniEntry
from gssproxy_py.config.model import CredUsage, Mech, PinSource, PinSourceKind, SelinuxContext
from gssproxy_py.errors import ConfigError

# One parser: the entry to read and the section's warning list (for values
# that are accepted but probably not what was meant).
Parse = Callable[[IniEntry, list[str]], Any]

TRUE_WORDS = frozenset({"1", "on", "true", "yes"})
FALSE_WORDS = frozenset({"0", "off", "false", "no"})
_UINT = re.compile(r"[0-9]+")
_UDECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_LIST_SPLIT = re.compile(r"[,\s]+")
_CRED_STORE_KEY = re.compile(r"[A-Za-z0-9_.-]+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}")
# uid_t is 32 bits and (uid_t)-1 means "no uid".
_MAX_UID = 2**32 - 2
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
_NETNS_ALL = "all"


def _show(value: Any) -> str:
    return str(value)


@dataclass(frozen=True, slots=True)
class Kind:
    """One value syntax.

    `name` is the type as the reference shows it, `accepts` one line on what
    is valid, `parse` turns an entry into the model's value (raising a
    located ConfigError), `show` writes a model value back as it would be
    written in a file, and `c_reads` says how the C gssproxy reads such a
    value when it differs.
    """

    name: str
    accepts: str
    parse: Parse
    show: Callable[[Any], str] = _show
    c_reads: str = ""


def error(entry: IniEntry, message: str) -> ConfigError:
    """A ConfigError located at `entry`'s file, line and option."""
    return ConfigError(message, file=entry.file, line=entry.line, option=entry.key)


def _located(entry: IniEntry, check: Callable[[], Any]) -> Any:
    # Helpers outside this module (flags, templates) raise unlocated errors.
    try:
        return check()
    except ConfigError as exc:
        raise error(entry, exc.message) from None


def parse_bool(entry: IniEntry) -> bool:
    """A boolean word, in any case; anything else is an error."""
    word = entry.value.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise error(entry, f"expected a boolean (yes/no, true/false, on/off, 1/0), got {entry.value!r}")


def _parse_int(entry: IniEntry, minimum: int, maximum: int | None) -> int:
    if not _UINT.fullmatch(entry.value):
        raise error(entry, f"expected a non-negative integer, got {entry.value!r}")
    number = int(entry.value)
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise error(entry, f"must be {bound}, got {number}")
    return number


def _parse_seconds(entry: IniEntry, _warnings: list[str]) -> float:
    if not _UDECIMAL.fullmatch(entry.value):
        raise error(entry, f"expected a number of seconds, got {entry.value!r}")
    seconds = float(entry.value)
    if seconds <= 0:
        raise error(entry, "must be greater than 0")
    return seconds


def _parse_abs_path(entry: IniEntry, _warnings: list[str] | None = None) -> str:
    if not entry.value.startswith("/"):
        raise error(entry, f"must be an absolute path, got {entry.value!r}")
    return entry.value


def _parse_list(entry: IniEntry) -> list[str]:
    return [item for item in _LIST_SPLIT.split(entry.value) if item]


def _parse_euid(entry: IniEntry, _warnings: list[str]) -> int:
    if _UINT.fullmatch(entry.value):
        uid = int(entry.value)
        if uid > _MAX_UID:
            raise error(entry, f"uid {uid} is out of range")
        return uid
    try:
        return pwd.getpwnam(entry.value).pw_uid
    except KeyError:
        raise error(entry, f"unknown user {entry.value!r}") from None


def _parse_mechs(entry: IniEntry, _warnings: list[str]) -> tuple[Mech, ...]:
    mechs: list[Mech] = []
    for name in _parse_list(entry):
        try:
            mech = Mech(name)
        except ValueError:
            known = ", ".join(m.value for m in Mech)
            raise error(entry, f"unknown mechanism {name!r}; known: {known}") from None
        if mech not in mechs:
            mechs.append(mech)
    return tuple(mechs)


def _parse_cred_store(entry: IniEntry, _warnings: list[str]) -> tuple[str, str]:
    key, sep, value = entry.value.partition(":")
    key, value = key.strip(), value.strip()
    if not sep:
        raise error(entry, f"expected KEY:VALUE, no ':' in {entry.value!r}")
    if not key or not value:
        raise error(entry, f"expected KEY:VALUE with both parts non-empty, got {entry.value!r}")
    if not _CRED_STORE_KEY.fullmatch(key):
        raise error(entry, f"invalid cred_store key {key!r}")
    _located(entry, lambda: check_template(value))
    return key, value


def _parse_cred_usage(entry: IniEntry, _warnings: list[str]) -> CredUsage:
    try:
        return CredUsage[entry.value.upper()]
    except KeyError:
        raise error(entry, f"expected initiate, accept or both, got {entry.value!r}") from None


def _parse_socket(entry: IniEntry, _warnings: list[str]) -> str:
    path = os.path.normpath(_parse_abs_path(entry))
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise error(entry, f"socket path is longer than {MAX_SOCKET_PATH} bytes")
    return path


def _parse_program(entry: IniEntry, warnings: list[str]) -> str:
    path = _parse_abs_path(entry)
    if "|" in path:
        raise error(entry, "must not contain '|'")
    if os.path.normpath(path) != path:
        warnings.append(
            f"{entry.where}: option 'program': {path!r} is not in canonical form; it is "
            "compared with the resolved path of the client executable and may never match"
        )
    return path


def _parse_selinux(entry: IniEntry, _warnings: list[str]) -> SelinuxContext:
    ctx = SelinuxContext.parse(entry.value)
    if ctx is None:
        raise error(entry, f"expected user:role:type[:range], got {entry.value!r}")
    return ctx


def _parse_netns(entry: IniEntry, _warnings: list[str]) -> tuple[tuple[str, ...], bool]:
    names = _parse_list(entry)
    if _NETNS_ALL in names:
        if len(names) > 1:
            raise error(entry, "'all' cannot be combined with namespace names")
        return (), True
    for name in names:
        if "/" in name or name in (".", "..") or len(name.encode()) > 255:
            raise error(entry, f"invalid network namespace name {name!r}")
    return tuple(dict.fromkeys(names)), False


def _show_netns(value: tuple[tuple[str, ...], bool]) -> str:
    names, every = value
    return _NETNS_ALL if every else " ".join(names)


def _parse_pkcs11_uri(entry: IniEntry, _warnings: list[str]) -> str:
    if not entry.value.startswith("pkcs11:"):
        raise error(entry, "must be a PKCS#11 URI starting with 'pkcs11:'")
    return entry.value


def _parse_pin_source(entry: IniEntry, _warnings: list[str]) -> PinSource:
    # The value might be a PIN typed in by mistake: never echo it back,
    # only a scheme-looking prefix.
    scheme, sep, location = entry.value.partition(":")
    expected = "expected keyring:DESCRIPTION or file:PATH"
    if not sep:
        raise error(entry, f"{expected} (no scheme given)")
    try:
        kind = PinSourceKind(scheme)
    except ValueError:
        shown = f"'{scheme}'" if _SCHEME.fullmatch(scheme) else "not recognised"
        raise error(entry, f"{expected} (scheme {shown})") from None
    if not location:
        raise error(entry, f"{expected} ({kind.value}: needs a value)")
    if kind is PinSourceKind.FILE and not location.startswith("/"):
        raise error(entry, "file: PIN source must be an absolute path")
    return PinSource(kind, location)


def _show_flags(mask: int) -> str:
    if not mask:
        return ""
    return " ".join(f"+{f.name}" for f in GssFlag if mask & f)


# --- the kinds ------------------------------------------------------------------

BOOLEAN = Kind(
    "boolean",
    "yes/no, true/false, on/off or 1/0, in any case",
    lambda entry, _warnings: parse_bool(entry),
    lambda value: "yes" if value else "no",
    c_reads="reads any word other than 1/on/true/yes as false, so a typo disables the option",
)

# `debug` fills the model's debug_level: true is level 1.
DEBUG_SWITCH = Kind(
    "boolean",
    BOOLEAN.accepts + "; true means debug level 1",
    lambda entry, _warnings: int(parse_bool(entry)),
    lambda level: "yes" if level else "no",
    c_reads=BOOLEAN.c_reads,
)


def integer(minimum: int, maximum: int | None = None) -> Kind:
    """A decimal integer in [minimum, maximum] (no upper bound if None)."""
    accepts = (
        f"a decimal integer, at least {minimum}"
        if maximum is None
        else f"a decimal integer from {minimum} to {maximum}"
    )
    return Kind("integer", accepts, lambda entry, _warnings: _parse_int(entry, minimum, maximum))


SECONDS = Kind(
    "seconds",
    "a decimal number of seconds greater than 0, e.g. 2.5",
    _parse_seconds,
    lambda seconds: f"{seconds:g}",
)


def _parse_seconds_or_off(entry: IniEntry, warnings: list[str]) -> float:
    if _UINT.fullmatch(entry.value) and int(entry.value) == 0:
        return 0.0
    return _parse_seconds(entry, warnings)


# A timeout that 0 turns off.
SECONDS_OR_OFF = Kind(
    "seconds",
    "a decimal number of seconds, e.g. 2.5; 0 turns it off",
    _parse_seconds_or_off,
    lambda seconds: f"{seconds:g}",
)
ABSOLUTE_PATH = Kind("path", "an absolute path", _parse_abs_path)
TEXT = Kind("string", "any non-empty text", lambda entry, _warnings: entry.value)
USER = Kind(
    "user",
    "a user name or a uid (0 to 4294967294)",
    _parse_euid,
)
MECHS = Kind(
    "list",
    "mechanism names separated by commas or spaces; known: " + ", ".join(m.value for m in Mech),
    _parse_mechs,
    lambda mechs: ", ".join(m.value for m in mechs),
    c_reads="compares the whole value with 'krb5' and silently drops a service it does not "
    "recognise, so a list is not understood",
)
CRED_STORE = Kind(
    "key:value",
    "KEY:VALUE for gss_acquire_cred_from (keytab, client_keytab, ccache, ...); "
    "%U is the uid, %u the user name, %% a '%'",
    _parse_cred_store,
    lambda pair: f"{pair[0]}:{pair[1]}",
)
CRED_USAGE = Kind(
    "enum",
    "initiate, accept or both, in any case",
    _parse_cred_usage,
    lambda usage: usage.name.lower(),
)
SOCKET = Kind(
    "path",
    f"an absolute path of at most {MAX_SOCKET_PATH} bytes; normalised (no symlinks resolved)",
    _parse_socket,
)
PROGRAM = Kind(
    "path",
    "the absolute, canonical path of the client's executable, without '|'",
    _parse_program,
)
SELINUX_CONTEXT = Kind(
    "context",
    "user:role:type[:range]; the range is compared only when given",
    _parse_selinux,
)


def flags(initial: int) -> Kind:
    """A `+FLAG -FLAG` list applied to `initial` (see flags.py)."""
    names = ", ".join(f.name for f in GssFlag)
    return Kind(
        "flags",
        f"+NAME/-NAME items applied to the default, NAME one of {names} "
        "(or INTEGRITIY, gssproxy's spelling) or a number",
        lambda entry, _warnings: _located(entry, lambda: parse_flags(entry.value, initial)),
        _show_flags,
        c_reads="logs and skips an item without +/- or with an unknown name, "
        "and knows INTEGRITY only as INTEGRITIY",
    )


NETNS = Kind(
    "list",
    "network namespace names (/run/netns/NAME) separated by commas or spaces, or 'all'",
    _parse_netns,
    _show_netns,
)
#: What `p11kit_mechanisms` may name: the mechanisms the p11-kit token
#: serves (gssproxy_py.pkcs11.p11kit_backend.SERVED_MECHANISMS, kept equal by a test).
P11KIT_MECHANISM_NAMES = frozenset(
    {
        "RSA_PKCS",
        "RSA_PKCS_OAEP",
        "RSA_PKCS_PSS",
        "SHA1_RSA_PKCS",
        "SHA256_RSA_PKCS",
        "SHA384_RSA_PKCS",
        "SHA512_RSA_PKCS",
        "ECDSA",
        "ECDSA_SHA1",
    }
)


def _parse_p11kit_mechanisms(entry: IniEntry, _warnings: list[str]) -> tuple[str, ...]:
    names: list[str] = []
    for word in _parse_list(entry):
        name = word.upper().removeprefix("CKM_")
        if name not in P11KIT_MECHANISM_NAMES:
            known = ", ".join(sorted(P11KIT_MECHANISM_NAMES))
            raise error(entry, f"unknown or unserved mechanism {word!r} (known: {known})")
        if name not in names:
            names.append(name)
    return tuple(names)


P11KIT_MECHANISMS = Kind(
    "list",
    "PKCS#11 mechanism names (CKM_ prefix optional) separated by commas or spaces; known: "
    + ", ".join(sorted(P11KIT_MECHANISM_NAMES)),
    _parse_p11kit_mechanisms,
    lambda names: ", ".join(names),
)
PKCS11_URI = Kind("uri", "an RFC 7512 URI starting with 'pkcs11:'", _parse_pkcs11_uri)
PIN_SOURCE = Kind(
    "pin source",
    "keyring:DESCRIPTION (a user key in the daemon's keyring) or file:/ABSOLUTE/PATH",
    _parse_pin_source,
    lambda pin: f"{pin.kind.value}:{pin.location}",
)
