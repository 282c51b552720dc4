"""GSS major status words (RFC 2744 §3.9.1): the codes and their names.

A major status is three fields in one u32: the calling error in bits 24-31,
the routine error in bits 16-23, and supplementary information bits in 0-15.
The daemon builds status words from the constants here (`gss/status.py`), and
the clients print them with `major_status_names`; both read one table.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CALLING_ERRORS",
    "GSS_S_BAD_BINDINGS",
    "GSS_S_BAD_MECH",
    "GSS_S_BAD_MECH_ATTR",
    "GSS_S_BAD_NAME",
    "GSS_S_BAD_NAMETYPE",
    "GSS_S_BAD_QOP",
    "GSS_S_BAD_SIG",
    "GSS_S_BAD_STATUS",
    "GSS_S_CALL_BAD_STRUCTURE",
    "GSS_S_CALL_INACCESSIBLE_READ",
    "GSS_S_CALL_INACCESSIBLE_WRITE",
    "GSS_S_COMPLETE",
    "GSS_S_CONTEXT_EXPIRED",
    "GSS_S_CONTINUE_NEEDED",
    "GSS_S_CREDENTIALS_EXPIRED",
    "GSS_S_DEFECTIVE_CREDENTIAL",
    "GSS_S_DEFECTIVE_TOKEN",
    "GSS_S_DUPLICATE_ELEMENT",
    "GSS_S_DUPLICATE_TOKEN",
    "GSS_S_FAILURE",
    "GSS_S_GAP_TOKEN",
    "GSS_S_NAME_NOT_MN",
    "GSS_S_NO_CONTEXT",
    "GSS_S_NO_CRED",
    "GSS_S_OLD_TOKEN",
    "GSS_S_UNAUTHORIZED",
    "GSS_S_UNAVAILABLE",
    "GSS_S_UNSEQ_TOKEN",
    "ROUTINE_ERRORS",
    "SUPPLEMENTARY_BITS",
    "major_status_names",
]

ROUTINE_SHIFT: Final = 16
CALLING_SHIFT: Final = 24

GSS_S_COMPLETE: Final = 0

# Calling errors (bits 24-31).
GSS_S_CALL_INACCESSIBLE_READ: Final = 1 << CALLING_SHIFT
GSS_S_CALL_INACCESSIBLE_WRITE: Final = 2 << CALLING_SHIFT
GSS_S_CALL_BAD_STRUCTURE: Final = 3 << CALLING_SHIFT

# Routine errors (bits 16-23). BAD_SIG and BAD_MIC are one code.
GSS_S_BAD_MECH: Final = 1 << ROUTINE_SHIFT
GSS_S_BAD_NAME: Final = 2 << ROUTINE_SHIFT
GSS_S_BAD_NAMETYPE: Final = 3 << ROUTINE_SHIFT
GSS_S_BAD_BINDINGS: Final = 4 << ROUTINE_SHIFT
GSS_S_BAD_STATUS: Final = 5 << ROUTINE_SHIFT
GSS_S_BAD_SIG: Final = 6 << ROUTINE_SHIFT
GSS_S_NO_CRED: Final = 7 << ROUTINE_SHIFT
GSS_S_NO_CONTEXT: Final = 8 << ROUTINE_SHIFT
GSS_S_DEFECTIVE_TOKEN: Final = 9 << ROUTINE_SHIFT
GSS_S_DEFECTIVE_CREDENTIAL: Final = 10 << ROUTINE_SHIFT
GSS_S_CREDENTIALS_EXPIRED: Final = 11 << ROUTINE_SHIFT
GSS_S_CONTEXT_EXPIRED: Final = 12 << ROUTINE_SHIFT
GSS_S_FAILURE: Final = 13 << ROUTINE_SHIFT
GSS_S_BAD_QOP: Final = 14 << ROUTINE_SHIFT
GSS_S_UNAUTHORIZED: Final = 15 << ROUTINE_SHIFT
GSS_S_UNAVAILABLE: Final = 16 << ROUTINE_SHIFT
GSS_S_DUPLICATE_ELEMENT: Final = 17 << ROUTINE_SHIFT
GSS_S_NAME_NOT_MN: Final = 18 << ROUTINE_SHIFT
GSS_S_BAD_MECH_ATTR: Final = 19 << ROUTINE_SHIFT

# Supplementary information bits (0-15).
GSS_S_CONTINUE_NEEDED: Final = 1 << 0
GSS_S_DUPLICATE_TOKEN: Final = 1 << 1
GSS_S_OLD_TOKEN: Final = 1 << 2
GSS_S_UNSEQ_TOKEN: Final = 1 << 3
GSS_S_GAP_TOKEN: Final = 1 << 4

#: The names of the codes, field by field (RFC 2744's spelling; 6 is BAD_MIC).
CALLING_ERRORS: Final[dict[int, str]] = {
    GSS_S_CALL_INACCESSIBLE_READ: "GSS_S_CALL_INACCESSIBLE_READ",
    GSS_S_CALL_INACCESSIBLE_WRITE: "GSS_S_CALL_INACCESSIBLE_WRITE",
    GSS_S_CALL_BAD_STRUCTURE: "GSS_S_CALL_BAD_STRUCTURE",
}
ROUTINE_ERRORS: Final[dict[int, str]] = {
    GSS_S_BAD_MECH: "GSS_S_BAD_MECH",
    GSS_S_BAD_NAME: "GSS_S_BAD_NAME",
    GSS_S_BAD_NAMETYPE: "GSS_S_BAD_NAMETYPE",
    GSS_S_BAD_BINDINGS: "GSS_S_BAD_BINDINGS",
    GSS_S_BAD_STATUS: "GSS_S_BAD_STATUS",
    GSS_S_BAD_SIG: "GSS_S_BAD_MIC",
    GSS_S_NO_CRED: "GSS_S_NO_CRED",
    GSS_S_NO_CONTEXT: "GSS_S_NO_CONTEXT",
    GSS_S_DEFECTIVE_TOKEN: "GSS_S_DEFECTIVE_TOKEN",
    GSS_S_DEFECTIVE_CREDENTIAL: "GSS_S_DEFECTIVE_CREDENTIAL",
    GSS_S_CREDENTIALS_EXPIRED: "GSS_S_CREDENTIALS_EXPIRED",
    GSS_S_CONTEXT_EXPIRED: "GSS_S_CONTEXT_EXPIRED",
    GSS_S_FAILURE: "GSS_S_FAILURE",
    GSS_S_BAD_QOP: "GSS_S_BAD_QOP",
    GSS_S_UNAUTHORIZED: "GSS_S_UNAUTHORIZED",
    GSS_S_UNAVAILABLE: "GSS_S_UNAVAILABLE",
    GSS_S_DUPLICATE_ELEMENT: "GSS_S_DUPLICATE_ELEMENT",
    GSS_S_NAME_NOT_MN: "GSS_S_NAME_NOT_MN",
    GSS_S_BAD_MECH_ATTR: "GSS_S_BAD_MECH_ATTR",
}
SUPPLEMENTARY_BITS: Final[tuple[tuple[int, str], ...]] = (
    (GSS_S_CONTINUE_NEEDED, "GSS_S_CONTINUE_NEEDED"),
    (GSS_S_DUPLICATE_TOKEN, "GSS_S_DUPLICATE_TOKEN"),
    (GSS_S_OLD_TOKEN, "GSS_S_OLD_TOKEN"),
    (GSS_S_UNSEQ_TOKEN, "GSS_S_UNSEQ_TOKEN"),
    (GSS_S_GAP_TOKEN, "GSS_S_GAP_TOKEN"),
)


def major_status_names(major: int) -> list[str]:
    """The RFC 2744 names in a major status word (empty for GSS_S_COMPLETE);
    a code no table names is shown by its number."""
    names: list[str] = []
    calling = major & (0xFF << CALLING_SHIFT)
    routine = major & (0xFF << ROUTINE_SHIFT)
    if calling:
        names.append(CALLING_ERRORS.get(calling, f"calling error {calling >> CALLING_SHIFT}"))
    if routine:
        names.append(ROUTINE_ERRORS.get(routine, f"routine error {routine >> ROUTINE_SHIFT}"))
    names += [name for bit, name in SUPPLEMENTARY_BITS if major & bit]
    return names
