"""RFC 7512 PKCS#11 URIs: parsing, formatting and matching tokens and objects.

No maintained Python parser exists, and the snippets in the wild
percent-decode the whole URI before splitting it, which breaks on an escaped
`;` (`%3B`) inside a label. The order here is the RFC's: take the scheme,
split the path from the query at the first `?`, split the path on `;` and the
query on `&`, split each attribute at its first `=`, and only then
percent-decode the value. Duplicate attributes are rejected (RFC 7512 §2.3),
and so are attributes this module does not know, except vendor `x-` ones:
silently ignoring a misspelt `tokne=` would widen what a URI selects.

`pin-value` is kept (a client may send it, and we must refuse it knowingly)
but never shown: `repr()` and `str()` redact it.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from gssproxy_py.errors import PeerError

__all__ = [
    "ObjectType",
    "Pkcs11Uri",
    "UriError",
    "format_value",
    "parse_uri",
]

SCHEME: Final = "pkcs11"

# RFC 7512 §2.3, the ABNF character classes.
_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")
_RES_AVAIL: Final = frozenset(":[]@!$'()*+,=")
_PATH_CHARS: Final = _UNRESERVED | _RES_AVAIL | {"&", "%"}
_QUERY_CHARS: Final = _UNRESERVED | _RES_AVAIL | {"/", "?", "|", "%"}
_HEX: Final = frozenset(string.hexdigits)

_PATH_ATTRS: Final = frozenset(
    {
        "token",
        "manufacturer",
        "serial",
        "model",
        "library-manufacturer",
        "library-description",
        "library-version",
        "object",
        "type",
        "id",
        "slot-description",
        "slot-manufacturer",
        "slot-id",
    }
)
_QUERY_ATTRS: Final = frozenset({"pin-source", "pin-value", "module-name", "module-path"})
_VENDOR_PREFIX: Final = "x-"


class UriError(PeerError):
    """A string is not a PKCS#11 URI we accept. The message never repeats a
    `pin-value`."""


class ObjectType(StrEnum):
    """The `type` path attribute (RFC 7512 §2.3)."""

    PUBLIC = "public"
    PRIVATE = "private"
    CERT = "cert"
    SECRET_KEY = "secret-key"  # noqa: S105 -- an object class name, not a secret
    DATA = "data"


@dataclass(frozen=True, slots=True, repr=False)
class Pkcs11Uri:
    """A parsed PKCS#11 URI. Absent attributes are None; `id` is raw bytes.

    Everything is kept as decoded text except `id`. `vendor` holds `x-`
    attributes as (name, value, in_query) in URI order; this module does not
    interpret them, so callers that match must refuse URIs that carry any.
    """

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    object: str | None = None
    type: ObjectType | None = None
    id: bytes | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    slot_id: int | None = None
    pin_source: str | None = None
    pin_value: str | None = field(default=None, compare=False)
    module_name: str | None = None
    module_path: str | None = None
    vendor: tuple[tuple[str, str, bool], ...] = ()

    def __repr__(self) -> str:
        parts = []
        for name in _FIELD_ORDER:
            value = getattr(self, name)
            if value is None:
                continue
            shown = "<redacted>" if name == "pin_value" else repr(value)
            parts.append(f"{name}={shown}")
        if self.vendor:
            parts.append(f"vendor={self.vendor!r}")
        return f"Pkcs11Uri({', '.join(parts)})"

    def __str__(self) -> str:
        return self.to_string()

    def to_string(self) -> str:
        """The URI in canonical form (attributes in RFC order, everything
        outside the unreserved set percent-encoded), `pin-value` redacted."""
        path = []
        for attr, name in _PATH_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "id":
                path.append(f"{attr}={format_value(value, every_byte=True)}")
            elif name == "slot_id":
                path.append(f"{attr}={value}")
            else:
                path.append(f"{attr}={format_value(str(value))}")
        path += [f"{n}={format_value(v)}" for n, v, q in self.vendor if not q]
        query = []
        for attr, name in _QUERY_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            shown = "REDACTED" if name == "pin_value" else format_value(value, query=True)
            query.append(f"{attr}={shown}")
        query += [f"{n}={format_value(v, query=True)}" for n, v, q in self.vendor if q]
        text = f"{SCHEME}:{';'.join(path)}"
        return f"{text}?{'&'.join(query)}" if query else text

    # -- what a URI selects ------------------------------------------------

    @property
    def selects_token(self) -> bool:
        """Whether any token or slot attribute narrows the token choice."""
        return any(getattr(self, n) is not None for n in _TOKEN_FIELDS)

    def matches_library(self, manufacturer: str, description: str, version: str) -> bool:
        """Library attributes, compared as given (RFC 7512: exact match)."""
        return (
            _eq(self.library_manufacturer, manufacturer)
            and _eq(self.library_description, description)
            and (self.library_version is None or _version_eq(self.library_version, version))
        )

    def matches_token(
        self,
        *,
        label: str,
        manufacturer: str,
        serial: str,
        model: str,
        slot_id: int,
        slot_description: str,
        slot_manufacturer: str,
    ) -> bool:
        """Token and slot attributes; an absent attribute matches anything."""
        return (
            _eq(self.token, label)
            and _eq(self.manufacturer, manufacturer)
            and _eq(self.serial, serial)
            and _eq(self.model, model)
            and (self.slot_id is None or self.slot_id == slot_id)
            and _eq(self.slot_description, slot_description)
            and _eq(self.slot_manufacturer, slot_manufacturer)
        )

    def matches_object(self, *, label: str, key_id: bytes, object_type: ObjectType) -> bool:
        """Object attributes (`object`, `id`, `type`)."""
        return (
            _eq(self.object, label)
            and (self.id is None or self.id == key_id)
            and (self.type is None or self.type is object_type)
        )


_FIELD_ORDER: Final = tuple(f for f in Pkcs11Uri.__dataclass_fields__ if f != "vendor")
# Canonical order: library, slot, token, then object (the order p11-kit
# prints token attributes in, roughly); parsing accepts any order.
_PATH_ORDER: Final = (
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
    "slot-id",
    "model",
    "manufacturer",
    "serial",
    "token",
    "id",
    "object",
    "type",
)
_QUERY_ORDER: Final = ("module-name", "module-path", "pin-source", "pin-value")
assert frozenset(_PATH_ORDER) == _PATH_ATTRS and frozenset(_QUERY_ORDER) == _QUERY_ATTRS
_PATH_FIELDS: Final = tuple((a, a.replace("-", "_")) for a in _PATH_ORDER)
_QUERY_FIELDS: Final = tuple((a, a.replace("-", "_")) for a in _QUERY_ORDER)
_TOKEN_FIELDS: Final = (
    "token",
    "manufacturer",
    "serial",
    "model",
    "slot_description",
    "slot_manufacturer",
    "slot_id",
)


def _eq(wanted: str | None, actual: str) -> bool:
    # PKCS#11 info fields are blank-padded; python-pkcs11 strips them, and so
    # do we, on both sides, so that "token=a" matches a label of "a   ...".
    return wanted is None or wanted.rstrip(" ") == actual.rstrip(" ")


def _version_eq(wanted: str, actual: str) -> bool:
    # "library-version=2" means 2.0 (RFC 7512 §2.3).
    def norm(v: str) -> tuple[int, int]:
        major, _, minor = v.partition(".")
        return int(major), int(minor or "0")

    try:
        return norm(wanted) == norm(actual)
    except ValueError:
        return False


def format_value(value: str | bytes, *, query: bool = False, every_byte: bool = False) -> str:
    """Percent-encode a value: everything outside the unreserved set, or
    every byte (`every_byte`, the customary form for `id`).

    Over-encoding is always valid (RFC 7512 §2.4); `/` stays literal in query
    values for readable module paths.
    """
    data = value.encode("utf-8") if isinstance(value, str) else value
    keep = _UNRESERVED | ({"/"} if query else set())
    out = []
    for b in data:
        c = chr(b)
        out.append(c if not every_byte and b < 0x80 and c in keep else f"%{b:02X}")
    return "".join(out)


def _pct_decode(raw: str, what: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "%":
            hexpart = raw[i + 1 : i + 3]
            if len(hexpart) != 2 or not all(h in _HEX for h in hexpart):
                raise UriError(f"{what}: bad percent-escape at offset {i}")
            out.append(int(hexpart, 16))
            i += 3
        else:
            out.append(ord(c))
            i += 1
    return bytes(out)


def _split_attrs(part: str, sep: str, where: str) -> list[tuple[str, str]]:
    if part == "":
        return []
    attrs = []
    for n, item in enumerate(part.split(sep)):
        if item == "":
            raise UriError(f"empty {where} attribute (component {n + 1})")
        name, eq, raw = item.partition("=")
        if not eq:
            raise UriError(f"{where} attribute {name[:40]!r} has no '='")
        if not name:
            raise UriError(f"{where} attribute with an empty name")
        attrs.append((name.lower(), raw))
    return attrs


def _check_chars(name: str, raw: str, in_query: bool) -> None:
    # Checked before decoding: a literal delimiter in a value means the URI
    # was built without escaping, and guessing what was meant is unsafe.
    allowed = _QUERY_CHARS if in_query else _PATH_CHARS
    bad = next((c for c in raw if c not in allowed), None)
    if bad is not None:
        shown = "a character" if name == "pin-value" else repr(bad)
        where = "query" if in_query else "path"
        raise UriError(f"{where} attribute {name!r}: {shown} must be percent-encoded")


def _text(name: str, raw: str) -> str:
    data = _pct_decode(raw, "pin-value" if name == "pin-value" else name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UriError(f"attribute {name!r} is not UTF-8 after percent-decoding") from None


def parse_uri(text: str) -> Pkcs11Uri:
    """Parse `text` as an RFC 7512 URI; raises UriError."""
    scheme, colon, rest = text.partition(":")
    if not colon or scheme.lower() != SCHEME:
        raise UriError("not a PKCS#11 URI: it must start with 'pkcs11:'")
    path, _, query = rest.partition("?")
    values: dict[str, object] = {}
    vendor: list[tuple[str, str, bool]] = []
    seen: set[tuple[str, bool]] = set()
    items = [(n, r, False) for n, r in _split_attrs(path, ";", "path")]
    items += [(n, r, True) for n, r in _split_attrs(query, "&", "query")]
    for name, raw, in_query in items:
        if (name, in_query) in seen:
            raise UriError(f"attribute {name!r} appears more than once")
        seen.add((name, in_query))
        known = _QUERY_ATTRS if in_query else _PATH_ATTRS
        vendor_attr = name.startswith(_VENDOR_PREFIX)
        if not vendor_attr and name not in known:
            other = _PATH_ATTRS if in_query else _QUERY_ATTRS
            hint = " (it belongs in the " + ("path" if in_query else "query") + ")"
            raise UriError(f"unknown attribute {name!r}" + (hint if name in other else ""))
        _check_chars(name, raw, in_query)
        if vendor_attr:
            vendor.append((name, _text(name, raw), in_query))
            continue
        values[name.replace("-", "_")] = _convert(name, raw)
    return Pkcs11Uri(vendor=tuple(vendor), **values)  # type: ignore[arg-type]


def _convert(name: str, raw: str) -> object:
    if name == "id":
        return _pct_decode(raw, name)
    value = _text(name, raw)
    if name == "type":
        try:
            return ObjectType(value)
        except ValueError:
            allowed = ", ".join(t.value for t in ObjectType)
            raise UriError(f"type={value[:40]!r} is not one of {allowed}") from None
    if name == "slot-id":
        if not value.isdigit() or not value.isascii():
            raise UriError("slot-id must be a decimal number")
        return int(value)
    if name == "library-version":
        major, dot, minor = value.partition(".")
        if not (major.isdigit() and major.isascii() and (not dot or minor.isdigit())):
            raise UriError("library-version must be MAJOR or MAJOR.MINOR")
    return value


def redacted(uris: Iterable[Pkcs11Uri]) -> str:
    """The URIs for a log line (PIN values redacted)."""
    return ", ".join(u.to_string() for u in uris)
