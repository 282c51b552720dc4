"""GSS request flags and the `filter_flags` / `enforce_flags` syntax.

A value is a list of `+NAME` / `-NAME` items separated by commas and/or
whitespace. NAME is one of the `GssFlag` names (case-insensitive, as in
gssproxy's `strcasecmp`), gssproxy's misspelling `INTEGRITIY`, or a number in
decimal or `0x` hex. Items apply left to right to a starting mask: `+X` sets
bits, `-X` clears them.

gssproxy logs and skips an item without `+`/`-` or with an unknown name; we
reject both, since a silently ignored `filter_flags` item can leave delegation
enabled when the administrator meant to disable it.
"""

from __future__ import annotations

import re
from enum import IntEnum

from gssproxy_py.errors import ConfigError


class GssFlag(IntEnum):
    """The RFC 2744 `GSS_C_*_FLAG` bits that the flag options may name."""

    DELEGATE = 1
    MUTUAL_AUTH = 2
    REPLAY_DETECT = 4
    SEQUENCE = 8
    CONFIDENTIALITY = 16
    INTEGRITY = 32
    ANONYMOUS = 64


DEFAULT_FILTER_FLAGS = int(GssFlag.DELEGATE)
DEFAULT_ENFORCE_FLAGS = 0

# Flags travel as 32-bit OM_uint32 inside the C daemon and its clients.
_MAX_FLAG_VALUE = 0xFFFFFFFF

_NAMES: dict[str, int] = {f.name: int(f) for f in GssFlag}
# gssproxy's table only knows this spelling, so existing configs use it.
_NAMES["INTEGRITIY"] = int(GssFlag.INTEGRITY)

_SPLIT = re.compile(r"[,\s]+")
_DECIMAL = re.compile(r"[1-9][0-9]*")
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")


def _flag_value(token: str, item: str) -> int:
    known = _NAMES.get(token.upper())
    if known is not None:
        return known
    if _DECIMAL.fullmatch(token) or _HEX.fullmatch(token):
        number = int(token, 0)
        if 0 < number <= _MAX_FLAG_VALUE:
            return number
        raise ConfigError(f"flag value in {item!r} must be between 1 and 0xffffffff")
    if token.isdigit():
        # "0" sets or clears nothing, and strtoul(..., 0) would read "010" as
        # octal; refuse both rather than guess what was meant.
        raise ConfigError(
            f"numeric flag in {item!r} must be non-zero decimal without a leading 0, or 0x hex"
        )
    names = ", ".join(f.name for f in GssFlag)
    raise ConfigError(f"unknown flag {item!r}; known flags: {names}, or a number")


def parse_flags(text: str, initial: int) -> int:
    """Apply a `+X -Y ...` list to `initial` and return the resulting mask.

    Raises ConfigError (without a location; the caller adds it) on an empty
    list, an item without `+`/`-`, or an unknown name.
    """
    items = [item for item in _SPLIT.split(text.strip()) if item]
    if not items:
        raise ConfigError("empty flag list")
    mask = initial
    for item in items:
        sign, token = item[0], item[1:]
        if sign not in "+-":
            raise ConfigError(f"flag {item!r} must start with '+' or '-'")
        if not token:
            raise ConfigError(f"flag item {item!r} has no name")
        value = _flag_value(token, item)
        mask = mask | value if sign == "+" else mask & ~value
    return mask


def format_flags(mask: int) -> str:
    """Render a mask as `NAME|NAME|0x...` for logs and messages."""
    parts = [f.name for f in GssFlag if mask & f]
    rest = mask & ~sum(GssFlag)
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) if parts else "0"
