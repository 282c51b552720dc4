"""``gss_localname`` through ctypes, since python-gssapi does not bind it (its issue #49).

The daemon needs gss_localname to map an authenticated principal to a local
user name through krb5's ``auth_to_local`` rules. It is used for
``linux_creds_v1`` and for the localname option of IMPORT_AND_CANON_NAME.

How the name reaches C: python-gssapi's ``Name`` keeps its ``gss_name_t`` in
a Cython ``cdef`` attribute that Python cannot reach. Reading it at a guessed
offset in the object's memory would depend on CPython's object header and
the Cython struct layout of one python-gssapi build, and would break
silently. So this module imports the name again with its own
``gss_import_name`` call, from bytes and a name-type OID, calls
``gss_localname``, and releases the name. For krb5 the display form
round-trips exactly (``krb5_unparse_name`` escapes what needs escaping).
When a caller wants the exact mechanism name, it can pass
``gss_export_name`` output with `NT_EXPORT_NAME` as the name type. Either
way only public GSSAPI calls are used.

Thread safety: nothing module-level changes after import; ctypes releases
the GIL around each C call, and MIT's mechglue is thread-safe. MIT creates a
fresh krb5 context on each call, so ``KRB5_CONFIG`` is read from the
environment at call time (verified by the integration tests). Do not change
it while calls are running.
"""

from __future__ import annotations

import ctypes
import errno
from typing import TYPE_CHECKING, SupportsBytes, cast

from gssproxy_py.errors import LocalError

if TYPE_CHECKING:
    from gssapi.raw.names import Name

__all__ = [
    "GSS_S_BAD_MECH",
    "GSS_S_BAD_NAME",
    "GSS_S_BAD_NAMETYPE",
    "GSS_S_FAILURE",
    "GSS_S_UNAVAILABLE",
    "KRB5_NT_PRINCIPAL_NAME",
    "KRB5_OID",
    "NT_EXPORT_NAME",
    "NT_HOSTBASED_SERVICE",
    "NT_USER_NAME",
    "GssCallError",
    "NoLocalMappingError",
    "is_no_mapping",
    "localname",
    "localname_of_name",
    "status_message",
]

# OIDs as DER contents (what gss_OID_desc.elements holds and gssx_name carries).
KRB5_OID = bytes.fromhex("2a864886f712010202")  # 1.2.840.113554.1.2.2
KRB5_NT_PRINCIPAL_NAME = bytes.fromhex("2a864886f71201020201")  # 1.2.840.113554.1.2.2.1
NT_USER_NAME = bytes.fromhex("2a864886f71201020101")  # 1.2.840.113554.1.2.1.1
NT_HOSTBASED_SERVICE = bytes.fromhex("2a864886f71201020104")  # 1.2.840.113554.1.2.1.4
NT_EXPORT_NAME = bytes.fromhex("2b0601050604")  # 1.3.6.1.5.6.4

_ROUTINE_MASK = 0x00FF0000
GSS_S_BAD_MECH = 1 << 16
GSS_S_BAD_NAME = 2 << 16
GSS_S_BAD_NAMETYPE = 3 << 16
GSS_S_FAILURE = 13 << 16
GSS_S_UNAVAILABLE = 16 << 16

_GSS_C_GSS_CODE = 1
_GSS_C_MECH_CODE = 2

# krb5 error codes as the unsigned minor status carries them.
_KRB5_NO_LOCALNAME = -1765328227 & 0xFFFFFFFF
_KRB5_LNAME_NOTRANS = -1765328208 & 0xFFFFFFFF
_NO_MAPPING_MINORS = frozenset({errno.ENOENT, _KRB5_NO_LOCALNAME, _KRB5_LNAME_NOTRANS})


class GssCallError(LocalError):
    """A GSSAPI call failed; `major`/`minor` go straight into a gssx_status.

    A `LocalError` because a failed mapping is a matter of local policy, not
    something the peer sent. Handlers turn it into a GSS status reply.
    """

    def __init__(self, major: int, minor: int, message: str, *, call: str = "gss_localname"):
        self.major = major
        self.minor = minor
        self.message = message
        self.call = call
        super().__init__(f"{call}: {message} (major 0x{major:08x}, minor {minor})")

    @property
    def routine_error(self) -> int:
        """The major status's routine-error field (e.g. `GSS_S_UNAVAILABLE`)."""
        return self.major & _ROUTINE_MASK

    @property
    def no_mapping(self) -> bool:
        """True when the name simply has no local account (send `UNMAPPED`, don't fail)."""
        return is_no_mapping(self.major, self.minor)


class NoLocalMappingError(GssCallError):
    """The name is valid but no auth_to_local rule maps it to a local user.

    MIT reports this as GSS_S_UNAVAILABLE (or GSS_S_FAILURE) with minor
    ENOENT; the krb5 codes KRB5_LNAME_NOTRANS/KRB5_NO_LOCALNAME are accepted
    too.
    """


def is_no_mapping(major: int, minor: int) -> bool:
    """Whether a gss_localname status means "no local user" rather than a real failure."""
    routine = major & _ROUTINE_MASK
    if routine == GSS_S_UNAVAILABLE:
        return True
    return routine == GSS_S_FAILURE and minor in _NO_MAPPING_MINORS


class _Buffer(ctypes.Structure):
    _fields_ = [("length", ctypes.c_size_t), ("value", ctypes.c_void_p)]


class _Oid(ctypes.Structure):
    _fields_ = [("length", ctypes.c_uint32), ("elements", ctypes.c_void_p)]


_OM_uint32 = ctypes.c_uint32
_PMinor = ctypes.POINTER(_OM_uint32)
_PBuffer = ctypes.POINTER(_Buffer)
_POid = ctypes.POINTER(_Oid)
_PName = ctypes.POINTER(ctypes.c_void_p)

# The same shared object python-gssapi is linked against, so both share one mechglue.
_lib = ctypes.CDLL("libgssapi_krb5.so.2")

# Prototype objects of our own, so nothing is set on attributes someone else might share.
_gss_import_name = ctypes.CFUNCTYPE(_OM_uint32, _PMinor, _PBuffer, _POid, _PName)(
    ("gss_import_name", _lib)
)
_gss_localname = ctypes.CFUNCTYPE(_OM_uint32, _PMinor, ctypes.c_void_p, _POid, _PBuffer)(
    ("gss_localname", _lib)
)
_gss_release_name = ctypes.CFUNCTYPE(_OM_uint32, _PMinor, _PName)(("gss_release_name", _lib))
_gss_release_buffer = ctypes.CFUNCTYPE(_OM_uint32, _PMinor, _PBuffer)(("gss_release_buffer", _lib))
_gss_display_status = ctypes.CFUNCTYPE(
    _OM_uint32,
    _PMinor,
    _OM_uint32,
    ctypes.c_int,
    _POid,
    ctypes.POINTER(_OM_uint32),
    _PBuffer,
)(("gss_display_status", _lib))


class _Bytes:
    """A C copy of some bytes that lives as long as this object, for buffer/OID fields."""

    __slots__ = ("_mem", "length", "pointer")

    def __init__(self, data: bytes) -> None:
        self._mem = ctypes.create_string_buffer(data, len(data))
        self.length = len(data)
        self.pointer = ctypes.cast(self._mem, ctypes.c_void_p)


def _display_one(code: int, status_type: int) -> list[str]:
    parts: list[str] = []
    context = _OM_uint32(0)
    # A well-behaved mechglue ends within a few messages; the cap guards against a loop.
    for _ in range(16):
        minor = _OM_uint32(0)
        out = _Buffer(0, None)
        major = _gss_display_status(
            ctypes.byref(minor), code, status_type, None, ctypes.byref(context), ctypes.byref(out)
        )
        if major != 0:
            break
        try:
            if out.value and out.length:
                parts.append(ctypes.string_at(out.value, out.length).decode("utf-8", "replace"))
        finally:
            _gss_release_buffer(ctypes.byref(minor), ctypes.byref(out))
        if context.value == 0:
            break
    return parts


def status_message(major: int, minor: int) -> str:
    """The mechglue's text for a major/minor pair (minor text from the krb5 mech)."""
    text = "; ".join(_display_one(major, _GSS_C_GSS_CODE)) or f"major status 0x{major:08x}"
    if minor:
        minor_text = "; ".join(_display_one(minor, _GSS_C_MECH_CODE))
        if minor_text:
            text += f": {minor_text}"
    return text


def _raise(call: str, major: int, minor: int) -> None:
    cls = NoLocalMappingError if call == "gss_localname" and is_no_mapping(major, minor) else None
    message = status_message(major, minor)
    raise (cls or GssCallError)(major, minor, message, call=call)


def localname(
    display_name: bytes, name_type_oid: bytes | None, mech_oid: bytes = KRB5_OID
) -> bytes:
    """Map a name to a local user name with the mechanism's rules (krb5: auth_to_local).

    `display_name` is the name as text (for krb5 ``user@REALM``), or a
    ``gss_export_name`` token when `name_type_oid` is `NT_EXPORT_NAME`.
    `name_type_oid` is given as DER contents; ``None`` means the mechanism's
    default name type. Raises `NoLocalMappingError` when no local user
    corresponds, and `GssCallError` for other failures, e.g. a bad name type
    (GSS_S_BAD_NAMETYPE) or an unknown mechanism.

    This is a blocking call: run it in an executor.
    """
    if not mech_oid:
        raise ValueError("mech_oid must be a non-empty OID")
    name_mem = _Bytes(display_name)
    name_buf = _Buffer(name_mem.length, name_mem.pointer)
    nt_mem = _Bytes(name_type_oid) if name_type_oid is not None else None
    nt_oid = _Oid(nt_mem.length, nt_mem.pointer) if nt_mem is not None else None
    mech_mem = _Bytes(mech_oid)
    mech = _Oid(mech_mem.length, mech_mem.pointer)

    minor = _OM_uint32(0)
    name = ctypes.c_void_p(None)
    major = _gss_import_name(
        ctypes.byref(minor),
        ctypes.byref(name_buf),
        ctypes.byref(nt_oid) if nt_oid is not None else None,
        ctypes.byref(name),
    )
    if major != 0:
        _raise("gss_import_name", major, minor.value)
    try:
        out = _Buffer(0, None)
        major = _gss_localname(ctypes.byref(minor), name, ctypes.byref(mech), ctypes.byref(out))
        if major != 0:
            _raise("gss_localname", major, minor.value)
        try:
            return ctypes.string_at(out.value, out.length) if out.length else b""
        finally:
            release_minor = _OM_uint32(0)
            _gss_release_buffer(ctypes.byref(release_minor), ctypes.byref(out))
    finally:
        release_minor = _OM_uint32(0)
        _gss_release_name(ctypes.byref(release_minor), ctypes.byref(name))


def localname_of_name(name: Name, mech_oid: bytes = KRB5_OID) -> bytes:
    """`localname` for a python-gssapi ``Name``, via its display form and name type."""
    from gssapi.raw.names import display_name

    shown = display_name(name, name_type=True)
    name_type = None
    if shown.name_type is not None:
        # OID implements __bytes__ (DER contents); python-gssapi's stub just omits it.
        name_type = bytes(cast("SupportsBytes", shown.name_type))
    return localname(shown.name, name_type, mech_oid)
