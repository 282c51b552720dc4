"""Conversions between python-gssapi objects and the gssx wire structures.

* `name_spec` / `import_gssx_name`: a client's `gssx_name` to a name
  (display_name + type if given, else the exported name), as gssproxy's
  `gp_conv_gssx_to_name`;
* `gssx_name`: a name to the wire form (display + type, exported name if it
  is an MN, composite export unless the kernel is the client);
* `gssx_cred_elements`: the `elements` of a `gssx_cred`;
* `gssx_ctx`: an exported context plus what `inquire_context` says.

Blocking (GSSAPI calls): run in the gss executor.
"""

from __future__ import annotations

import struct

from gssproxy_py.gss import api
from gssproxy_py.gss.policy import NameSpec
from gssproxy_py.gss.status import EINVAL, GSS_S_BAD_NAME, GSS_S_FAILURE, GssFailure
from gssproxy_py.proto.gss_proxy import GssxCredElement, GssxCredUsage, GssxCtx, GssxName
from gssproxy_py.vocab import oids

__all__ = [
    "EMPTY_NAME",
    "gssx_cred_elements",
    "gssx_ctx",
    "gssx_name",
    "import_gssx_name",
    "krb5_display_of_export",
    "krb5_export_of_composite",
    "name_parts",
    "name_spec",
]

EMPTY_NAME = GssxName(
    display_name=b"",
    name_type=b"",
    exported_name=b"",
    exported_composite_name=b"",
    name_attributes=(),
    extensions=(),
)

#: The kernel copies at most this many bytes of a principal (GSSX_max_princ_sz).
KERNEL_MAX_PRINCIPAL = 256


def name_spec(name: GssxName | None) -> NameSpec | None:
    """The name a client asked for, or None for "no name" (all fields empty)."""
    if name is None:
        return None
    if name.display_name:
        return NameSpec(name.display_name, name.name_type)
    if name.exported_name:
        return NameSpec(name.exported_name, oids.NT_EXPORT_NAME)
    return None


def import_gssx_name(name: GssxName) -> api.Name:
    spec = name_spec(name)
    if spec is None:
        raise GssFailure(GSS_S_BAD_NAME, EINVAL, "name has neither display nor exported form")
    return api.import_name(spec.value, spec.name_type)


#: What follows the TOK_ID of a krb5 mechanism name's exported token (RFC
#: 2743 3.2: the DER OID's length and the OID; RFC 1964 2.1.3), then a 4-byte
#: length and the principal. TOK_ID 04 01 is `gss_export_name`'s token; 04 02
#: is `gss_export_name_composite`'s, which adds a 4-byte length and the
#: name's attributes (MIT's export_name.c).
_KRB5_MECH_PART = (len(oids.KRB5) + 2).to_bytes(2, "big") + b"\x06" + bytes([len(oids.KRB5)])
_KRB5_MECH_PART += oids.KRB5
_EXPORT_ID = b"\x04\x01"
_COMPOSITE_ID = b"\x04\x02"


_U32 = struct.Struct(">I")
_HEAD = 2 + len(_KRB5_MECH_PART)


def _krb5_principal(token: bytes, tok_id: bytes) -> bytes | None:
    """The principal in a krb5 exported-name token of `tok_id`, or None if
    the token is not one, exactly (no byte missing or left over)."""
    if len(token) < _HEAD + 4 or token[:2] != tok_id or token[2:_HEAD] != _KRB5_MECH_PART:
        return None
    end = _HEAD + 4 + _U32.unpack_from(token, _HEAD)[0]
    if tok_id == _COMPOSITE_ID:
        if len(token) < end + 4 or len(token) != end + 4 + _U32.unpack_from(token, end)[0]:
            return None
    elif len(token) != end:
        return None
    return token[_HEAD + 4 : end]


def _export_token(principal: bytes) -> bytes:
    return b"".join((_EXPORT_ID, _KRB5_MECH_PART, _U32.pack(len(principal)), principal))


def _krb5_display(principal: bytes) -> tuple[bytes, bytes] | None:
    # The anonymous principal displays as GSS_C_NT_ANONYMOUS: left to MIT.
    return None if principal.startswith(b"WELLKNOWN/") else (principal, oids.NT_KRB5_PRINCIPAL)


def krb5_export_of_composite(composite: bytes) -> bytes | None:
    """`gss_export_name`'s token for a krb5 MN, read from its composite export.

    MIT's krb5 mechanism writes both from `krb5_unparse_name` of the same
    principal, the composite token being the plain one with TOK_ID 04 02 and
    the attributes appended; each call costs a krb5 context of its own.
    None for anything else (ask `gss_export_name`).
    """
    principal = _krb5_principal(composite, _COMPOSITE_ID)
    return None if principal is None else _export_token(principal)


def krb5_display_of_export(exported: bytes) -> tuple[bytes, bytes] | None:
    """`gss_display_name`'s answer for a krb5 MN, read from its exported name.

    MIT's krb5 mechanism makes both from `krb5_unparse_name` of the same
    principal, so the exported token's name is the display form, of type
    GSS_KRB5_NT_PRINCIPAL_NAME; a display_name call costs a krb5 context of
    its own. None (ask `gss_display_name`) for anything else: another
    mechanism, a malformed token, or a WELLKNOWN principal (the anonymous
    one displays as GSS_C_NT_ANONYMOUS). This is MIT's rule (disp_name.c and
    export_name.c), the library gssproxy and this daemon are built on;
    Heimdal displays without escapes, and tests/unit/test_gss_convert_names.py
    would fail against it.
    """
    principal = _krb5_principal(exported, _EXPORT_ID)
    return None if principal is None else _krb5_display(principal)


#: A name's wire fields: display_name, name_type, exported_name,
#: exported_composite_name (its attribute and extension arrays are empty).
NameParts = tuple[bytes, bytes, bytes, bytes]


def gssx_name(
    name: api.Name | None, *, kernel: bool = False, exported: bytes | None = None
) -> GssxName:
    """Wire form of a name; for the kernel, no composite export and a length check.

    Of MIT's three calls for a krb5 MN (composite export, export, display)
    only the composite export is made (the export, for the kernel); the
    others' answers are read from its token. `exported`: the name's
    `gss_export_name` token when the caller already made it (the kernel's
    initiator, exported for linux_creds_v1).
    """
    parts = name_parts(name, kernel=kernel, exported=exported)
    if parts is None:
        return EMPTY_NAME
    display, name_type, exported_name, composite = parts
    return GssxName(
        display_name=display,
        name_type=name_type,
        exported_name=exported_name,
        exported_composite_name=composite,
        name_attributes=(),
        extensions=(),
    )


def name_parts(
    name: api.Name | None, *, kernel: bool = False, exported: bytes | None = None
) -> NameParts | None:
    """The fields of `gssx_name(name)` (None: `EMPTY_NAME`), for the direct
    path (`gss.direct`), which writes them without the `GssxName`."""
    if name is None:
        return None
    # The kernel does not want PAC-carrying composite names (gssproxy clears them).
    composite = b"" if kernel else api.export_name_composite(name)
    principal = _krb5_principal(composite, _COMPOSITE_ID) if composite else None
    if principal is not None:
        exported = _export_token(principal)
        shown = _krb5_display(principal)
    else:
        if exported is None:
            exported = api.export_name(name)
        shown = krb5_display_of_export(exported)
    if shown is None:
        try:
            shown = api.display_name(name)
        except GssFailure:
            # inquire_context on a partial context hands back empty name objects.
            return None
    display, name_type = shown
    if kernel and len(display) > KERNEL_MAX_PRINCIPAL:
        raise GssFailure(
            GSS_S_FAILURE,
            EINVAL,
            f"principal of {len(display)} bytes exceeds the kernel's {KERNEL_MAX_PRINCIPAL}",
        )
    return display, name_type, exported, composite


def gssx_cred_elements(info: api.CredInfo) -> tuple[GssxCredElement, ...]:
    return tuple(
        GssxCredElement(
            MN=gssx_name(e.name),
            mech=e.mech,
            cred_usage=GssxCredUsage(int(e.usage)),
            initiator_time_rec=e.init_lifetime,
            acceptor_time_rec=e.accept_lifetime,
            options=(),
        )
        for e in info.elements
    )


def gssx_ctx(
    token: bytes,
    info: api.ContextInfo | None,
    *,
    mech: bytes,
    locally_initiated: bool,
    kernel: bool = False,
    src_export: bytes | None = None,
) -> GssxCtx:
    """The `gssx_ctx` for an exported (or partial) context.

    `info` comes from `inquire_context` before the export consumed the
    context; None (a partial context the mech cannot describe) gives empty
    names, as gssproxy tolerates. `src_export`: the initiator's export
    token, when the caller already made it.
    """
    if info is None:
        return GssxCtx(
            exported_context_token=token,
            state=b"",
            needs_release=False,
            mech=mech,
            src_name=EMPTY_NAME,
            targ_name=EMPTY_NAME,
            lifetime=0,
            ctx_flags=0,
            locally_initiated=locally_initiated,
            open=False,
            options=(),
        )
    return GssxCtx(
        exported_context_token=token,
        state=b"",
        needs_release=False,
        mech=info.mech or mech,
        src_name=gssx_name(info.initiator, kernel=kernel, exported=src_export),
        targ_name=gssx_name(info.target, kernel=kernel),
        # The interposer reads this as the remaining lifetime (gssproxy fills it
        # from gss_inquire_context's lifetime_rec), not as an absolute time.
        lifetime=info.lifetime,
        ctx_flags=info.flags,
        locally_initiated=info.locally_initiated,
        open=info.complete,
        options=(),
    )
