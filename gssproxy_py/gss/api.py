"""Typed adapters over python-gssapi (MIT krb5), the only module that calls it directly.

Every function here blocks (python-gssapi releases the GIL around the C
calls) and must run in the gss executor, never on the event loop. Every
`GSSError` is converted to a `GssFailure` right where it happened, because
MIT keeps the extended krb5 message text per thread.

Objects (`Creds`, `SecurityContext`, `Name`) are python-gssapi's; callers
never use one object from two threads at once (see `credcache.CredPool`).
Our own value types use gssx conventions: OIDs as DER contents bytes,
usages as `CredUsage`, lifetimes in seconds with `INDEFINITE` for "forever".
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

import gssapi.raw as graw
from gssapi.raw import ext_krb5
from gssapi.raw.misc import GSSError

from gssproxy_py.config.model import CredUsage
from gssproxy_py.gss.lucid import LucidContextV1Like
from gssproxy_py.gss.status import (
    EINVAL,
    GSS_S_BAD_NAME,
    GSS_S_FAILURE,
    GssFailure,
    failure_from_gsserror,
)
from gssproxy_py.vocab import oids

__all__ = [
    "INDEFINITE",
    "ContextInfo",
    "CredElementInfo",
    "CredInfo",
    "Creds",
    "Name",
    "SecurityContext",
]

ChannelBindings = graw.ChannelBindings
Creds = graw.Creds
Name = graw.Name
SecurityContext = graw.SecurityContext

#: GSS_C_INDEFINITE as a gssx_time.
INDEFINITE = 0xFFFFFFFF
#: python-gssapi passes flags, lifetimes, QOPs and address types as
#: OM_uint32; gssx carries them as u64.
U32_MAX = 0xFFFFFFFF

_P = ParamSpec("_P")
_T = TypeVar("_T")

_USAGE_TEXT = {CredUsage.INITIATE: "initiate", CredUsage.ACCEPT: "accept", CredUsage.BOTH: "both"}
_TEXT_USAGE = {v: k for k, v in _USAGE_TEXT.items()}
#: RFC 2744 GSS_C_TRANS_FLAG: output only; the krb5 mech ignores it in req_flags.
GSS_C_TRANS_FLAG = 0x100


def gss_call(fn: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run fn, turning a GSSError into a GssFailure carrying the krb5 text."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return fn(*args, **kwargs)
        except GSSError as exc:
            raise failure_from_gsserror(exc) from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def u32(what: str, value: int) -> int:
    """`value` for an OM_uint32 argument of python-gssapi, or a GSS error
    naming the argument (python-gssapi would raise OverflowError)."""
    if 0 <= value <= U32_MAX:
        return value
    raise GssFailure(GSS_S_FAILURE, EINVAL, f"{what} {value} does not fit in 32 bits")


def oid(der: bytes) -> graw.OID:
    return graw.OID(elements=der)


def oid_bytes(value: graw.OID | None) -> bytes:
    return b"" if value is None else bytes(value)  # type: ignore[call-overload]


def lifetime(value: int | None) -> int:
    return INDEFINITE if value is None else max(0, int(value))


# -- names -----------------------------------------------------------------


@gss_call
def import_name(value: bytes, name_type: bytes) -> Name:
    """gss_import_name; an empty name type is GSS_C_NO_OID."""
    if not value:
        raise GssFailure(GSS_S_BAD_NAME, EINVAL, "empty name")
    return graw.import_name(value, oid(name_type) if name_type else None)


@gss_call
def canonicalize(name: Name, mech: bytes) -> Name:
    return graw.canonicalize_name(name, oid(mech))


@gss_call
def display_name(name: Name) -> tuple[bytes, bytes]:
    shown = graw.display_name(name, name_type=True)
    return shown.name, oid_bytes(shown.name_type)


def export_name(name: Name) -> bytes:
    """gss_export_name, or b"" when the name is not an MN (as gssproxy skips it)."""
    try:
        return graw.export_name(name)
    except GSSError:
        return b""


def export_name_composite(name: Name) -> bytes:
    try:
        return graw.export_name_composite(name)
    except (GSSError, AttributeError):
        return b""


# -- credentials -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredElementInfo:
    mech: bytes
    name: Name | None
    usage: CredUsage
    init_lifetime: int
    accept_lifetime: int


@dataclass(frozen=True, slots=True)
class CredInfo:
    name: Name | None
    lifetime: int
    usage: CredUsage
    elements: tuple[CredElementInfo, ...]

    def expires_at(self, now: float | None = None) -> float | None:
        """Wall-clock expiry of the shortest-lived element, None if indefinite."""
        times = [
            t
            for e in self.elements
            for t, used in (
                (e.init_lifetime, e.usage is not CredUsage.ACCEPT),
                (e.accept_lifetime, e.usage is not CredUsage.INITIATE),
            )
            if used and t != INDEFINITE
        ]
        if not times:
            return None
        return (time.time() if now is None else now) + min(times)


@gss_call
def acquire_cred_from(
    store: Mapping[str, str], name: Name | None, usage: CredUsage, mech: bytes
) -> Creds:
    encoded: dict[bytes | str, bytes | str] = {
        k.encode("utf-8"): v.encode("utf-8") for k, v in store.items() if v
    }
    result = graw.acquire_cred_from(encoded, name=name, mechs=[oid(mech)], usage=_USAGE_TEXT[usage])
    return result.creds


@gss_call
def acquire_cred_impersonate_name(
    impersonator: Creds, name: Name, usage: CredUsage, mech: bytes
) -> Creds:
    result = graw.acquire_cred_impersonate_name(
        impersonator, name, mechs=[oid(mech)], usage=_USAGE_TEXT[usage]
    )
    return result.creds


@gss_call
def export_cred(creds: Creds) -> bytes:
    return graw.export_cred(creds)


@gss_call
def import_cred(token: bytes) -> Creds:
    return graw.import_cred(token)


@gss_call
def store_cred_into(
    store: Mapping[str, str],
    creds: Creds,
    usage: CredUsage,
    mech: bytes,
    overwrite: bool,
    default: bool,
) -> tuple[tuple[bytes, ...], CredUsage]:
    encoded: dict[bytes | str, bytes | str] = {
        k.encode("utf-8"): v.encode("utf-8") for k, v in store.items()
    }
    result = graw.store_cred_into(
        encoded,
        creds,
        usage=_USAGE_TEXT[usage],
        mech=oid(mech),
        overwrite=overwrite,
        set_default=default,
    )
    mechs = tuple(oid_bytes(m) for m in (result.mechs or ()))
    return mechs, _TEXT_USAGE.get(result.usage or "", usage)


@gss_call
def inquire_cred(creds: Creds) -> CredInfo:
    info = graw.inquire_cred(creds)
    elements: list[CredElementInfo] = []
    for mech in sorted(info.mechs or (), key=lambda m: oid_bytes(m) != oids.KRB5):
        by_mech = graw.inquire_cred_by_mech(creds, mech)
        elements.append(
            CredElementInfo(
                mech=oid_bytes(mech),
                name=by_mech.name,
                usage=_TEXT_USAGE.get(by_mech.usage or "", CredUsage.BOTH),
                init_lifetime=lifetime(by_mech.init_lifetime),
                accept_lifetime=lifetime(by_mech.accept_lifetime),
            )
        )
    return CredInfo(
        name=info.name,
        lifetime=lifetime(info.lifetime),
        usage=_TEXT_USAGE.get(info.usage or "", CredUsage.BOTH),
        elements=tuple(elements),
    )


def impersonator(creds: Creds) -> str | None:
    """The principal that obtained this cred by S4U2Self, if any (MIT >= 1.20)."""
    try:
        values = graw.inquire_cred_by_oid(creds, oid(oids.KRB5_GET_CRED_IMPERSONATOR))
    except (GSSError, AttributeError):
        return None
    for value in values:
        if value:
            return value.rstrip(b"\0").decode("utf-8", errors="replace")
    return None


@gss_call
def set_allowable_enctypes(creds: Creds, enctypes: list[int]) -> None:
    ext_krb5.krb5_set_allowable_enctypes(creds, enctypes)


@gss_call
def set_no_ci_flags(creds: Creds) -> None:
    # GSS_KRB5_CRED_NO_CI_FLAGS_X: 1.2.752.43.13.29
    graw.set_cred_option(oid(oids.encode_oid("1.2.752.43.13.29")), creds)


# -- contexts ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextInfo:
    initiator: Name | None
    target: Name | None
    lifetime: int
    mech: bytes
    flags: int
    locally_initiated: bool
    complete: bool


def _flags_int(flags: object) -> int:
    if flags is None:
        return 0
    # An int, or python-gssapi's IntEnumFlagSet, which keeps the raw mask
    # (unknown bits included). Asked of the type: isinstance() against int
    # would go through the flag set's ABC machinery on every call.
    if hasattr(type(flags), "__int__"):
        return int(flags)  # type: ignore[call-overload,no-any-return]
    total = 0
    for f in flags:  # type: ignore[attr-defined]
        total |= int(f)
    return total


@dataclass(frozen=True, slots=True)
class StepResult:
    context: SecurityContext
    token: bytes
    mech: bytes
    flags: int
    continue_needed: bool
    delegated: Creds | None = None
    initiator: Name | None = None
    #: an accept's time_rec (`lifetime`; what `inquire_context` says of the context)
    lifetime: int = 0


def channel_bindings(
    initiator_addrtype: int,
    initiator_address: bytes,
    acceptor_addrtype: int,
    acceptor_address: bytes,
    application_data: bytes,
) -> graw.ChannelBindings:
    return graw.ChannelBindings(
        initiator_address_type=u32("initiator_addrtype", initiator_addrtype),
        initiator_address=initiator_address or None,
        acceptor_address_type=u32("acceptor_addrtype", acceptor_addrtype),
        acceptor_address=acceptor_address or None,
        application_data=application_data or None,
    )


@gss_call
def init_sec_context(
    target: Name,
    creds: Creds | None,
    context: SecurityContext | None,
    mech: bytes,
    flags: int,
    time_req: int,
    bindings: graw.ChannelBindings | None,
    token: bytes | None,
) -> StepResult:
    req_flags = u32("req_flags", flags)
    time_req = u32("time_req", time_req)
    if not req_flags:
        # python-gssapi turns falsy flags into its defaults (mutual auth,
        # sequence), so a request for none (cifs.upcall's) became a mutual
        # exchange that is not complete after one step. TRANS is an output
        # flag the krb5 mech ignores on input: the same request as 0.
        req_flags = GSS_C_TRANS_FLAG
    result = graw.init_sec_context(
        target,
        creds=creds,
        context=context,
        mech=oid(mech),
        flags=req_flags,
        lifetime=time_req or None,
        channel_bindings=bindings,
        input_token=token or None,
    )
    return StepResult(
        context=result.context,
        token=result.token or b"",
        mech=oid_bytes(result.mech) or mech,
        flags=_flags_int(result.flags),
        continue_needed=bool(result.more_steps),
    )


@gss_call
def accept_sec_context(
    token: bytes,
    creds: Creds | None,
    context: SecurityContext | None,
    bindings: graw.ChannelBindings | None,
) -> StepResult:
    result = graw.accept_sec_context(
        token, acceptor_creds=creds, context=context, channel_bindings=bindings
    )
    return StepResult(
        context=result.context,
        token=result.token or b"",
        mech=oid_bytes(result.mech),
        flags=_flags_int(result.flags),
        continue_needed=bool(result.more_steps),
        delegated=result.delegated_creds,
        initiator=result.initiator_name,
        lifetime=lifetime(result.lifetime),
    )


def inquire_context(context: SecurityContext, initiator: Name | None = None) -> ContextInfo | None:
    """Names, lifetime, flags of a context; None when the mech cannot say (partial).

    `initiator`: the initiator's name the caller already holds (the src_name
    of the accept that completed this context), used instead of asking for a
    second copy: in MIT each name object costs a krb5 context to release.
    """
    try:
        info = graw.inquire_context(context, initiator_name=initiator is None)
    except GSSError:
        return None
    return ContextInfo(
        initiator=info.initiator_name if initiator is None else initiator,
        target=info.target_name,
        lifetime=lifetime(info.lifetime),
        mech=oid_bytes(info.mech),
        flags=_flags_int(info.flags),
        locally_initiated=bool(info.locally_init),
        complete=bool(info.complete),
    )


@gss_call
def export_sec_context(context: SecurityContext) -> bytes:
    """gss_export_sec_context; the context object is unusable afterwards."""
    return graw.export_sec_context(context)


@gss_call
def import_sec_context(token: bytes) -> SecurityContext:
    if not token:
        raise GssFailure(GSS_S_FAILURE, EINVAL, "empty exported context token")
    return graw.import_sec_context(token)


@gss_call
def export_lucid(context: SecurityContext) -> LucidContextV1Like:
    """gss_krb5_export_lucid_sec_context v1; consumes the context."""
    # python-gssapi's stub types the result as the version-less base class.
    return cast(LucidContextV1Like, ext_krb5.krb5_export_lucid_sec_context(context, 1))


# -- per-message -------------------------------------------------------------


def _msg_ctx(context: SecurityContext) -> Any:
    # The message stubs name the high-level class; the raw one is what they take.
    return context


@gss_call
def get_mic(context: SecurityContext, message: bytes, qop: int) -> bytes:
    return graw.get_mic(_msg_ctx(context), message, u32("qop_req", qop) or None)


@gss_call
def verify_mic(context: SecurityContext, message: bytes, token: bytes) -> int:
    return int(graw.verify_mic(_msg_ctx(context), message, token))


@gss_call
def wrap(context: SecurityContext, message: bytes, conf: bool, qop: int) -> tuple[bytes, bool]:
    result = graw.wrap(_msg_ctx(context), message, conf, u32("qop_state", qop) or None)
    return result.message, bool(result.encrypted)


@gss_call
def unwrap(context: SecurityContext, token: bytes) -> tuple[bytes, bool, int]:
    result = graw.unwrap(_msg_ctx(context), token)
    return result.message, bool(result.encrypted), int(result.qop)


@gss_call
def wrap_size_limit(context: SecurityContext, output_size: int, conf: bool, qop: int) -> int:
    return int(
        graw.wrap_size_limit(
            _msg_ctx(context),
            u32("req_output_size", output_size),
            conf,
            u32("qop_state", qop) or None,
        )
    )


# -- mechanisms ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MechDescription:
    mech: bytes
    name_types: tuple[bytes, ...]
    mech_attrs: tuple[bytes, ...]
    known_mech_attrs: tuple[bytes, ...]
    sasl_mech_name: bytes
    mech_name: bytes
    mech_description: bytes


@dataclass(frozen=True, slots=True)
class AttrDescription:
    attr: bytes
    name: bytes
    short_desc: bytes
    long_desc: bytes


def _sorted_oids(values: object) -> tuple[bytes, ...]:
    if not values:
        return ()
    return tuple(sorted(oid_bytes(v) for v in values))  # type: ignore[attr-defined]


def _describe_mech(mech: bytes) -> MechDescription:
    """Name types, attributes and SASL names of one mechanism (each optional)."""
    name_types: tuple[bytes, ...] = ()
    attrs: tuple[bytes, ...] = ()
    known: tuple[bytes, ...] = ()
    sasl = (b"", b"", b"")
    with contextlib.suppress(GSSError):
        name_types = _sorted_oids(graw.inquire_names_for_mech(oid(mech)))
    try:
        res = graw.inquire_attrs_for_mech(oid(mech))
        attrs, known = _sorted_oids(res.mech_attrs), _sorted_oids(res.known_mech_attrs)
    except (GSSError, AttributeError):
        pass
    try:
        s = graw.inquire_saslname_for_mech(oid(mech))
        sasl = (s.sasl_mech_name or b"", s.mech_name or b"", s.mech_description or b"")
    except (GSSError, AttributeError):
        pass
    return MechDescription(mech, name_types, attrs, known, *sasl)


def describe_mechs() -> tuple[tuple[MechDescription, ...], tuple[AttrDescription, ...]]:
    """All mechanisms of our libgssapi, krb5 first; plus descriptions of their attributes."""
    try:
        mechs = [oid_bytes(m) for m in graw.indicate_mechs()]
    except GSSError as exc:
        raise failure_from_gsserror(exc) from None
    interposer = oids.encode_oid("2.16.840.1.113730.3.8.15.1")
    mechs = [m for m in mechs if not m.startswith(interposer)]
    mechs.sort(key=lambda m: (m != oids.KRB5, m))
    out = [_describe_mech(mech) for mech in mechs]
    all_attrs = {a for m in out for a in (*m.mech_attrs, *m.known_mech_attrs)}
    descs: list[AttrDescription] = []
    for attr in sorted(all_attrs):
        try:
            d = graw.display_mech_attr(oid(attr))
        except (GSSError, AttributeError):
            continue
        descs.append(AttrDescription(attr, d.name or b"", d.short_desc or b"", d.long_desc or b""))
    return tuple(out), tuple(descs)
