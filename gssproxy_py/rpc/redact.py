"""Decoded arguments and results as text for debug level 2, secrets left out.

Generated types are frozen dataclasses, IntEnums, tuples, ints and bytes.
`describe` shows the structure, every number and enum, and the bytes of
fields known to be public (names, OIDs, status texts, option names);
every other byte string is shown only by its length, since tokens,
exported contexts, credential handles, messages, keys and option values
may carry secrets. Level 3 dumps whole records instead
(`server/connection`). Pure; no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

__all__ = ["PUBLIC_BYTES_FIELDS", "describe"]

#: Fields whose bytes are public: what a name or mechanism is, status texts,
#: and option names (not their values).
PUBLIC_BYTES_FIELDS: Final = frozenset(
    {
        "display_name",
        "name_type",
        "mech",
        "mechs",
        "major_status_string",
        "minor_status_string",
        "locale",
        "option",
        "uri",
        "mechanism",
    }
)

_MAX_SHOWN = 96
_MAX_DEPTH = 12


def _public_bytes(data: bytes) -> str:
    text = data.rstrip(b"\0")
    if all(32 <= b < 127 for b in text):
        shown = text.decode("ascii")
        return repr(shown if len(shown) <= _MAX_SHOWN else shown[:_MAX_SHOWN] + "...")
    hexed = data.hex()
    return "0x" + (hexed if len(hexed) <= _MAX_SHOWN else hexed[:_MAX_SHOWN] + "...")


def describe(value: Any, *, public: bool = False, depth: int = 0) -> str:
    """`value` as one line; bytes shown only where `public` (see the module)."""
    if depth > _MAX_DEPTH:
        return "..."
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        if not data:
            return "b''"
        return _public_bytes(data) if public else f"<{len(data)} bytes>"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list):
        items = ", ".join(describe(v, public=public, depth=depth + 1) for v in value)
        return f"[{items}]"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        parts = []
        for field in dataclasses.fields(value):
            shown = describe(
                getattr(value, field.name),
                public=field.name in PUBLIC_BYTES_FIELDS,
                depth=depth + 1,
            )
            parts.append(f"{field.name}={shown}")
        return f"{type(value).__name__}({', '.join(parts)})"
    return f"<{type(value).__name__}>"
