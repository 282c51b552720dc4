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


#: The head of a krb5 mechanism name's `gss_export_name` token (RFC 2743
#: 3.2: TOK_ID 04 01, the DER OID's length and the OID; RFC 1964 2.1.3).
_KRB5_EXPORT_HEAD = b"\x04\x01" + (len(oids.KRB5) + 2).to_bytes(2, "big") + b"\x06"
_KRB5_EXPORT_HEAD += bytes([len(oids.KRB5)]) + oids.KRB5


def krb5_display_of_export(exported: bytes) -> tuple[bytes, bytes] | None:
    """`gss_display_name`'s answer for a krb5 MN, read from its exported name.

    MIT's krb5 mechanism makes both from `krb5_unparse_name` of the same
    principal, so the exported token's name is the display form, of type
    GSS_KRB5_NT_PRINCIPAL_NAME; a display_name call costs a krb5 context of
    its own. None (ask `gss_display_name`) for anything else: another
    mechanism, a malformed token, or a WELLKNOWN principal (the anonymous
    one displays as GSS_C_NT_ANONYMOUS).
    """
    head = _KRB5_EXPORT_HEAD
    if not exported.startswith(head) or len(exported) < len(head) + 4:
        return None
    size = int.from_bytes(exported[len(head) : len(head) + 4], "big")
    shown = exported[len(head) + 4 :]
    if len(shown) != size or shown.startswith(b"WELLKNOWN/"):
        return None
    return shown, oids.NT_KRB5_PRINCIPAL


def gssx_name(name: api.Name | None, *, kernel: bool = False) -> GssxName:
    """Wire form of a name; for the kernel, no composite export and a length check."""
    if name is None:
        return EMPTY_NAME
    exported = api.export_name(name)
    shown = krb5_display_of_export(exported)
    if shown is None:
        try:
            shown = api.display_name(name)
        except GssFailure:
            # inquire_context on a partial context hands back empty name objects.
            return EMPTY_NAME
    display, name_type = shown
    if kernel and len(display) > KERNEL_MAX_PRINCIPAL:
        raise GssFailure(
            GSS_S_FAILURE,
            EINVAL,
            f"principal of {len(display)} bytes exceeds the kernel's {KERNEL_MAX_PRINCIPAL}",
        )
    return GssxName(
        display_name=display,
        name_type=name_type,
        exported_name=exported,
        # The kernel does not want PAC-carrying composite names (gssproxy clears them).
        exported_composite_name=b"" if kernel else api.export_name_composite(name),
        name_attributes=(),
        extensions=(),
    )


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
) -> GssxCtx:
    """The `gssx_ctx` for an exported (or partial) context.

    `info` comes from `inquire_context` before the export consumed the
    context; None (a partial context the mech cannot describe) gives empty
    names, as gssproxy tolerates.
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
        src_name=gssx_name(info.initiator, kernel=kernel),
        targ_name=gssx_name(info.target, kernel=kernel),
        # The interposer reads this as the remaining lifetime (gssproxy fills it
        # from gss_inquire_context's lifetime_rec), not as an absolute time.
        lifetime=info.lifetime,
        ctx_flags=info.flags,
        locally_initiated=info.locally_initiated,
        open=info.complete,
        options=(),
    )
