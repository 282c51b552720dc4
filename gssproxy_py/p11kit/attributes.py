"""PKCS#11 attributes on the wire: the value-class table and the values.

p11-kit encodes an attribute's value by a class fixed per attribute type
(bool, ulong, nested attribute array, mechanism array, date, byte array),
and both ends must use the same table or the stream desynchronises. The
table below is Debian 12's (p11-kit 0.24.1) plus CKA_DERIVE_TEMPLATE, which
later versions added as an attribute array; every type not named is a byte
array, vendor types included.

Values are held in one Python form per class: bool, int, bytes, a tuple of
`Attribute` (nested templates) or a tuple of int (mechanism lists). The
`length` of an attribute is the C ulValueLen the peer sees (8 for a
CK_ULONG on the 64-bit hosts p11-kit-client.so runs on, 1 for a CK_BBOOL).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = [
    "AttrValue",
    "Attribute",
    "Cka",
    "ValueClass",
    "value_class",
    "value_length",
]

#: sizeof(CK_ULONG) on the client (LP64).
ULONG_SIZE: Final = 8


class Cka(IntEnum):
    """CKA_* types the virtual token serves or policy names."""

    CLASS = 0x0
    TOKEN = 0x1
    PRIVATE = 0x2
    LABEL = 0x3
    VALUE = 0x11
    CERTIFICATE_TYPE = 0x80
    ISSUER = 0x81
    SERIAL_NUMBER = 0x82
    TRUSTED = 0x86
    CERTIFICATE_CATEGORY = 0x87
    CHECK_VALUE = 0x90
    KEY_TYPE = 0x100
    SUBJECT = 0x101
    ID = 0x102
    SENSITIVE = 0x103
    ENCRYPT = 0x104
    DECRYPT = 0x105
    WRAP = 0x106
    UNWRAP = 0x107
    SIGN = 0x108
    SIGN_RECOVER = 0x109
    VERIFY = 0x10A
    VERIFY_RECOVER = 0x10B
    DERIVE = 0x10C
    START_DATE = 0x110
    END_DATE = 0x111
    MODULUS = 0x120
    MODULUS_BITS = 0x121
    PUBLIC_EXPONENT = 0x122
    PRIVATE_EXPONENT = 0x123
    PRIME_1 = 0x124
    PRIME_2 = 0x125
    EXPONENT_1 = 0x126
    EXPONENT_2 = 0x127
    COEFFICIENT = 0x128
    PUBLIC_KEY_INFO = 0x129
    PRIME = 0x130
    SUBPRIME = 0x131
    BASE = 0x132
    EXTRACTABLE = 0x162
    LOCAL = 0x163
    NEVER_EXTRACTABLE = 0x164
    ALWAYS_SENSITIVE = 0x165
    KEY_GEN_MECHANISM = 0x166
    MODIFIABLE = 0x170
    COPYABLE = 0x171
    DESTROYABLE = 0x172
    EC_PARAMS = 0x180
    EC_POINT = 0x181
    ALWAYS_AUTHENTICATE = 0x202
    WRAP_WITH_TRUSTED = 0x210
    WRAP_TEMPLATE = 0x40000211
    UNWRAP_TEMPLATE = 0x40000212
    DERIVE_TEMPLATE = 0x40000213
    ALLOWED_MECHANISMS = 0x40000600


class ValueClass(IntEnum):
    BOOL = 1
    ULONG = 2
    ATTRIBUTES = 3
    MECHANISMS = 4
    DATE = 5
    BYTES = 6


_BOOL_TYPES: Final = frozenset(
    {
        0x1, 0x2, 0x86, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109, 0x10A, 0x10B,
        0x10C, 0x162, 0x163, 0x164, 0x165, 0x170, 0x171, 0x200, 0x202, 0x210, 0x301,
        0x302, 0x405,
    }
)  # fmt: skip
# TOKEN PRIVATE TRUSTED SENSITIVE ENCRYPT DECRYPT WRAP UNWRAP SIGN SIGN_RECOVER
# VERIFY VERIFY_RECOVER DERIVE EXTRACTABLE LOCAL NEVER_EXTRACTABLE
# ALWAYS_SENSITIVE MODIFIABLE COPYABLE SECONDARY_AUTH ALWAYS_AUTHENTICATE
# WRAP_WITH_TRUSTED RESET_ON_INIT HAS_RESET COLOR

_ULONG_TYPES: Final = frozenset(
    {
        0x0, 0x80, 0x87, 0x88, 0x100, 0x121, 0x133, 0x134, 0x160, 0x161, 0x166, 0x201,
        0x300, 0x400, 0x401, 0x402, 0x403, 0x404, 0x406, 0x500,
    }
)  # fmt: skip
# CLASS CERTIFICATE_TYPE CERTIFICATE_CATEGORY JAVA_MIDP_SECURITY_DOMAIN
# KEY_TYPE MODULUS_BITS PRIME_BITS SUB_PRIME_BITS VALUE_BITS VALUE_LEN
# KEY_GEN_MECHANISM AUTH_PIN_FLAGS HW_FEATURE_TYPE PIXEL_X PIXEL_Y RESOLUTION
# CHAR_ROWS CHAR_COLUMNS BITS_PER_PIXEL MECHANISM_TYPE

_ATTRIBUTE_ARRAY_TYPES: Final = frozenset({0x40000211, 0x40000212, 0x40000213})
_MECHANISM_ARRAY_TYPES: Final = frozenset({0x40000600})
_DATE_TYPES: Final = frozenset({0x110, 0x111})


def value_class(attr_type: int) -> ValueClass:
    """How values of `attr_type` travel (byte array for every type not listed)."""
    if attr_type in _BOOL_TYPES:
        return ValueClass.BOOL
    if attr_type in _ULONG_TYPES:
        return ValueClass.ULONG
    if attr_type in _ATTRIBUTE_ARRAY_TYPES:
        return ValueClass.ATTRIBUTES
    if attr_type in _MECHANISM_ARRAY_TYPES:
        return ValueClass.MECHANISMS
    if attr_type in _DATE_TYPES:
        return ValueClass.DATE
    return ValueClass.BYTES


@dataclass(frozen=True, slots=True)
class Attribute:
    """One CK_ATTRIBUTE: its type and value (None: unavailable, the C
    length (CK_ULONG)-1)."""

    type: int
    value: AttrValue | None


AttrValue = bool | int | bytes | tuple[Attribute, ...] | tuple[int, ...]

#: The size of one CK_ATTRIBUTE in C (type, pointer, length) on LP64.
_C_ATTRIBUTE_SIZE: Final = 24


def value_length(attr_type: int, value: AttrValue) -> int:
    """The C ulValueLen of `value` for `attr_type`."""
    cls = value_class(attr_type)
    if cls is ValueClass.BOOL:
        return 1
    if cls is ValueClass.ULONG:
        return ULONG_SIZE
    if cls is ValueClass.ATTRIBUTES:
        assert isinstance(value, tuple)
        return _C_ATTRIBUTE_SIZE * len(value)
    if cls is ValueClass.MECHANISMS:
        assert isinstance(value, tuple)
        return ULONG_SIZE * len(value)
    assert isinstance(value, bytes)
    return len(value)
