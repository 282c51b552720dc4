"""The fifteen GSS-Proxy procedures: one handler and one row each.

Each `proc_*` takes the engine, a `Request` and the decoded argument and
returns the result structure, raising `GssFailure` for GSS-level failures.
Handlers are coroutine functions driven by `gss.inline` (never by an event
loop): a step that may wait is reached only after `await
req.steps.may_wait(reason)`, which on the event loop moves the rest of the
call to a worker thread. `PROCEDURES` holds one `GssProcedure` row per
procedure: number, argument and result types, handler, whether it may be
tried inline, and how its failure result is built. The no-service rule and
the one exception-to-status mapping live in `program.py`.

Differences from gssproxy, on purpose (see also the report in the docs):

* ACCEPT imports `context_handle` when it carries an exported token (multi-
  round-trip accepts work); an empty token starts a new context as before.
* RELEASE_HANDLE answers COMPLETE for creds and contexts (nothing is held
  server-side; a cred handle's pooled objects are dropped) instead of
  GSS_S_UNAVAILABLE; other handle types are GSS_S_CALL_BAD_STRUCTURE.
* WRAP / UNWRAP process every buffer of the array, in order.
* GET_CALL_CONTEXT, EXPORT_CRED, IMPORT_CRED and STORE_CRED are real (the C
  daemon answers all-zero stubs): see their docstrings.
"""

from __future__ import annotations

import logging
from typing import Any

from gssproxy_py.config.model import CredUsage, Service
from gssproxy_py.gss import api, convert, options, policy
from gssproxy_py.gss.credentials import Credentials, CredLease, Request
from gssproxy_py.gss.engine import GssEngine, pick_mech
from gssproxy_py.gss.linux_creds import (
    UNMAPPED,
    LinuxCreds,
    LocalCredsError,
    encode_linux_creds,
    resolve_local_creds,
)
from gssproxy_py.gss.lucid import LucidFormatError, format_linux_lucid_v1
from gssproxy_py.gss.rows import GssProcedure, row
from gssproxy_py.gss.sealing import gssx_cred
from gssproxy_py.gss.status import (
    EACCES,
    EINVAL,
    ENOENT,
    GSS_S_BAD_MECH,
    GSS_S_BAD_NAME,
    GSS_S_CALL_BAD_STRUCTURE,
    GSS_S_COMPLETE,
    GSS_S_CONTINUE_NEEDED,
    GSS_S_FAILURE,
    GSS_S_NO_CONTEXT,
    GSS_S_NO_CRED,
    GssFailure,
    nul_terminated,
    ok_status,
)
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.proto.gss_proxy import GssxCred, GssxCtx, GssxOption
from gssproxy_py.vocab import oids

__all__ = ["PROCEDURES", "GssProcedure", "row"]

#: GSS_C_DELEG_FLAG
_DELEG_FLAG = 1
#: A call's log: the server's per-call adapter, or a plain logger (tests).
LogLike = logging.LoggerAdapter[logging.Logger] | logging.Logger
#: The kernel copies at most this much of the output token (GSSX_max_output_token_sz).
KERNEL_MAX_OUTPUT_TOKEN = 1024
#: Largest sync_creds value the interposer stores (GPKRB_MAX_CRED_SIZE).
MAX_SYNC_CREDS = 512 * 1024


async def _decide(
    req: Request, desired: policy.NameSpec | None, usage: CredUsage
) -> policy.CredRequest:
    if policy.needs_user_name(req.service, req.uid, desired, usage):
        await req.steps.may_wait("user name lookup (NSS)")
    return policy.decide_cred_environment(req.service, req.uid, desired, usage)


async def _default_lease(engine: GssEngine, req: Request, usage: CredUsage) -> CredLease:
    """The service's own credential for a call that brought no handle."""
    svc = req.service
    creq = await _decide(req, None, policy.narrow_usage(svc.cred_usage, int(usage)))
    with policy.explaining(svc, creq):
        return await engine.credentials.lease_acquired(req, creq, oids.KRB5)


def _imported_context(handle: GssxCtx | None) -> api.SecurityContext | None:
    """The context a multi-step init or accept continues, or None for a new one."""
    if handle is not None and handle.exported_context_token:
        return api.import_sec_context(handle.exported_context_token)
    return None


def _encode_cred(cred: GssxCred) -> bytes:
    from gssproxy_py.xdr.runtime import Encoder

    enc = Encoder()
    gp.encode_gssx_cred(enc, cred)
    return bytes(enc.get_buffer())


# -- 1 INDICATE_MECHS -----------------------------------------------------------


async def proc_indicate_mechs(
    engine: GssEngine, req: Request, arg: gp.GssxArgIndicateMechs
) -> gp.GssxResIndicateMechs:
    if not engine.mechs_known():
        await req.steps.may_wait("mechanisms not described yet")
    mechs, attrs = engine.mechs()
    return gp.GssxResIndicateMechs(
        status=ok_status(oids.KRB5),
        mechs=tuple(
            gp.GssxMechInfo(
                mech=m.mech,
                name_types=m.name_types,
                mech_attrs=m.mech_attrs,
                known_mech_attrs=m.known_mech_attrs,
                cred_options=(),
                sec_ctx_options=(),
                saslname_sasl_mech_name=m.sasl_mech_name,
                saslname_mech_name=m.mech_name,
                saslname_mech_desc=m.mech_description,
                extensions=(),
            )
            for m in mechs
        ),
        mech_attr_descs=tuple(
            gp.GssxMechAttr(
                attr=a.attr,
                name=a.name,
                short_desc=a.short_desc,
                long_desc=a.long_desc,
                extensions=(),
            )
            for a in attrs
        ),
        supported_extensions=(),
        extensions=(),
    )


# -- 2 GET_CALL_CONTEXT -----------------------------------------------------------


async def proc_get_call_context(
    engine: GssEngine, req: Request, arg: gp.GssxArgGetCallContext
) -> gp.GssxResGetCallContext:
    """Tells the caller which service it was matched to (option `service_name`).

    The protocol leaves `server_call_ctx` to the implementation; we keep no
    per-caller state, so it stays empty.
    """
    return gp.GssxResGetCallContext(
        status=ok_status(oids.KRB5),
        server_call_ctx=b"",
        options=(options.option(b"service_name\0", nul_terminated(req.service.name)),),
    )


# -- 3 IMPORT_AND_CANON_NAME -------------------------------------------------------


async def proc_import_and_canon_name(
    engine: GssEngine, req: Request, arg: gp.GssxArgImportAndCanonName
) -> gp.GssxResImportAndCanonName:
    spec = convert.name_spec(arg.input_name)
    if spec is None:
        raise GssFailure(GSS_S_FAILURE, EINVAL, "input name has neither display nor exported form")
    if options.has_option(arg.options, options.LOCALNAME):
        from gssproxy_py.gss import localname

        mech = arg.mech or oids.KRB5
        try:
            user = localname.localname(spec.value, spec.name_type or None, mech)
        except localname.GssCallError as exc:
            raise GssFailure(exc.major, exc.minor, exc.message) from None
        return gp.GssxResImportAndCanonName(
            status=ok_status(oids.KRB5),
            output_name=None,
            options=(options.option(options.LOCALNAME, user),),
        )
    name = api.import_name(spec.value, spec.name_type)
    if arg.mech:
        name = api.canonicalize(name, arg.mech)
    return gp.GssxResImportAndCanonName(
        status=ok_status(oids.KRB5), output_name=convert.gssx_name(name), options=()
    )


# -- 4 EXPORT_CRED / 5 IMPORT_CRED / 7 STORE_CRED -------------------------------------


async def _open_or_fail(engine: GssEngine, req: Request, cred: GssxCred) -> CredLease:
    lease = await engine.credentials.lease_handle(req, cred)
    if lease is None:
        raise GssFailure(
            GSS_S_NO_CRED, EACCES, "credential handle missing or not valid for this caller"
        )
    return lease


async def proc_export_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgExportCred
) -> gp.GssxResExportCred:
    """The exported form of a credential is its sealed handle, never the raw token.

    It opens only for the same uid at a service of the same handle scope
    (`sealing.handle_scope`: the same keytab) (IMPORT_CRED), so exporting
    never hands out keys or tickets in the clear.
    """
    lease = await _open_or_fail(engine, req, arg.input_cred_handle)
    try:
        info = api.inquire_cred(lease.creds)
    finally:
        engine.credentials.release(lease)
    usage = policy.narrow_usage(info.usage, int(arg.cred_usage))
    return gp.GssxResExportCred(
        status=ok_status(oids.KRB5),
        usage_exported=gp.GssxCredUsage(int(usage)),
        exported_handle=arg.input_cred_handle.cred_handle_reference,
        options=(),
    )


async def proc_import_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgImportCred
) -> gp.GssxResImportCred:
    """Opens an EXPORT_CRED blob (same uid and handle scope only) and describes it."""
    token = engine.credentials.open(req, arg.exported_handle)
    if token is None:
        raise GssFailure(GSS_S_NO_CRED, EACCES, "exported credential not valid for this caller")
    creds = api.import_cred(token)
    info = api.inquire_cred(creds)
    return gp.GssxResImportCred(
        status=ok_status(oids.KRB5),
        output_cred_handle=gssx_cred(info, arg.exported_handle),
        options=(),
    )


async def proc_store_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgStoreCred
) -> gp.GssxResStoreCred:
    """Stores a credential into the service's configured ccache (policy.store_cred_target)."""
    usage = CredUsage(int(arg.cred_usage)) if int(arg.cred_usage) in (1, 2, 3) else None
    if usage is None:
        raise GssFailure(GSS_S_FAILURE, EINVAL, f"invalid cred_usage {int(arg.cred_usage)}")
    mech = arg.desired_mech or oids.KRB5
    if mech not in oids.KRB5_FAMILY:
        raise GssFailure(GSS_S_BAD_MECH, ENOENT, "only krb5 credentials can be stored")
    store = policy.store_cred_target(req.service, req.uid, usage)
    lease = await _open_or_fail(engine, req, arg.input_cred_handle)
    try:
        stored, stored_usage = api.store_cred_into(
            store, lease.creds, usage, oids.KRB5, arg.overwrite_cred, arg.default_cred
        )
    finally:
        engine.credentials.release(lease)
    req.log.info("store_cred: stored into %s", store["ccache"])
    return gp.GssxResStoreCred(
        status=ok_status(oids.KRB5),
        elements_stored=stored or (oids.KRB5,),
        cred_usage_stored=gp.GssxCredUsage(int(stored_usage)),
        options=(),
    )


# -- 6 ACQUIRE_CRED ---------------------------------------------------------------


def _element_good(element: api.CredElementInfo, usage: CredUsage, min_lifetime: int) -> bool:
    """The element serves `usage` with at least `min_lifetime` (and 1 s) left."""
    if usage is CredUsage.BOTH:
        if element.usage is not CredUsage.BOTH:
            return False
    elif element.usage not in (usage, CredUsage.BOTH):
        return False
    times = []
    if usage is not CredUsage.ACCEPT:
        times.append(element.init_lifetime)
    if usage is not CredUsage.INITIATE:
        times.append(element.accept_lifetime)
    return not any(t != api.INDEFINITE and t < max(1, min_lifetime) for t in times)


def _cred_still_good(
    lease: CredLease, creq: policy.CredRequest, mech: bytes, min_lifetime: int
) -> bool:
    """gssproxy's gp_check_cred: right mech, name and usage, and enough lifetime left."""
    info = api.inquire_cred(lease.creds)
    element = next((e for e in info.elements if e.mech == mech), None)
    if element is None or not _element_good(element, creq.usage, min_lifetime):
        return False
    if creq.name is not None and info.name is not None:
        wanted = api.canonicalize(api.import_name(creq.name.value, creq.name.name_type), mech)
        if api.display_name(wanted)[0] != api.display_name(info.name)[0]:
            return False
    return True


async def proc_acquire_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgAcquireCred
) -> gp.GssxResAcquireCred:
    svc = req.service
    mech = pick_mech(arg.desired_mechs)
    usage = policy.narrow_usage(svc.cred_usage, int(arg.cred_usage))
    impersonate = arg.input_cred_handle is not None and options.parse_acquire_type(arg.options)
    if impersonate or arg.desired_name is not None:
        # S4U talks to the KDC; canonicalizing a host-based name may ask DNS.
        await req.steps.may_wait("impersonation or a desired name")
    if impersonate:
        assert arg.input_cred_handle is not None
        gcred = await _impersonate_name(engine, req, arg.input_cred_handle, arg.desired_name, mech)
        return gp.GssxResAcquireCred(
            status=ok_status(oids.KRB5), output_cred_handle=gcred, options=()
        )
    creq = await _decide(req, convert.name_spec(arg.desired_name), usage)
    if arg.input_cred_handle is not None and await _handle_still_good(
        engine, req, arg.input_cred_handle, creq, mech
    ):
        # Unchanged bytes: the interposer then keeps its stored copy.
        return gp.GssxResAcquireCred(
            status=ok_status(oids.KRB5), output_cred_handle=arg.input_cred_handle, options=()
        )
    with policy.explaining(svc, creq):
        gcred, fresh = await engine.credentials.acquire_sealed(req, creq, mech)
    engine.credentials.release(fresh)
    return gp.GssxResAcquireCred(status=ok_status(oids.KRB5), output_cred_handle=gcred, options=())


async def _impersonate_name(
    engine: GssEngine, req: Request, handle: GssxCred, desired: gp.GssxName | None, mech: bytes
) -> GssxCred:
    """Client-driven S4U2Self with the input cred as impersonator."""
    policy.may_impersonate_name(req.service)
    if desired is None:
        raise GssFailure(GSS_S_BAD_NAME, EINVAL, "impersonate_name needs a desired name")
    lease = await engine.credentials.lease_handle(req, handle)
    if lease is None:
        raise GssFailure(GSS_S_NO_CRED, EACCES, "no valid impersonator credential")
    try:
        target = convert.import_gssx_name(desired)
        s4u = api.acquire_cred_impersonate_name(lease.creds, target, CredUsage.INITIATE, mech)
    finally:
        engine.credentials.release(lease)
    gcred, _, _ = engine.credentials.seal(req, s4u)
    req.log.info("acquire: S4U2Self credential issued")
    return gcred


async def _handle_still_good(
    engine: GssEngine, req: Request, handle: GssxCred, creq: policy.CredRequest, mech: bytes
) -> bool:
    """Is the client's own handle still good for this request (returned as is)?"""
    lease = await engine.credentials.lease_handle(req, handle)
    if lease is None:
        return False
    try:
        good = _cred_still_good(lease, creq, mech, req.service.min_lifetime)
    finally:
        engine.credentials.release(lease)
    if good:
        req.log.info("acquire: the client's credential handle is still good; returned as is")
    else:
        req.log.info("acquire: input credential unusable or near expiry; acquiring anew")
    return good


# -- contexts: shared parts -------------------------------------------------------------


def _bindings(cb: gp.GssxCb | None) -> api.ChannelBindings | None:
    if cb is None:
        return None
    return api.channel_bindings(
        cb.initiator_addrtype,
        cb.initiator_address,
        cb.acceptor_addrtype,
        cb.acceptor_address,
        cb.application_data,
    )


def context_token(
    context: api.SecurityContext, types: options.ExportTypes, *, complete: bool
) -> bytes:
    """The `exported_context_token` of a context: the kernel's lucid
    format once it is complete, else `gss_export_sec_context`'s token.
    Either export consumes the context."""
    if types.kernel and complete:
        try:
            token = format_linux_lucid_v1(api.export_lucid(context))
        except LucidFormatError as exc:
            raise GssFailure(GSS_S_FAILURE, EINVAL, f"cannot build linux_lucid_v1: {exc}") from None
    else:
        token = api.export_sec_context(context)
    if types.kernel and len(token) > 128:
        raise GssFailure(GSS_S_FAILURE, EINVAL, "exported context exceeds the kernel's 128 bytes")
    return token


def export_context(
    context: api.SecurityContext,
    types: options.ExportTypes,
    *,
    mech: bytes,
    locally_initiated: bool,
    complete: bool,
    initiator: api.Name | None = None,
    initiator_export: bytes | None = None,
) -> GssxCtx:
    """`initiator_export`: `initiator`'s export token, when the caller made it."""
    info = api.inquire_context(context, initiator)
    token = context_token(context, types, complete=complete)
    return convert.gssx_ctx(
        token,
        info,
        mech=mech,
        locally_initiated=locally_initiated,
        kernel=types.kernel,
        src_export=initiator_export if initiator is not None else None,
    )


def _sync_option(
    engine: GssEngine, req: Request, lease: CredLease | None, wanted: bool
) -> tuple[GssxOption, ...]:
    """`sync_creds` when the credential gained tickets during this call.

    As gssproxy does for `allow_client_ccache_sync` services without a
    configured `ccache`: the ticket count before and after decides (a count,
    not a checksum), and the interposer replaces its stored blob.
    """
    svc = req.service
    if (
        not wanted
        or lease is None
        or not svc.allow_client_ccache_sync
        or svc.cred_store_values("ccache")
        or lease.token is None
    ):
        return ()
    after = api.export_cred(lease.creds)
    if after == lease.token:
        return ()
    gcred, _, _ = engine.credentials.seal(req, lease.creds)
    value = _encode_cred(gcred)
    if len(value) > MAX_SYNC_CREDS:
        req.log.warning("sync_creds of %d bytes exceeds the client's limit; not sent", len(value))
        return ()
    # The stored pool entry is keyed by the old handle; the client now holds a new one.
    lease.discard = True
    req.log.info("sync_creds: the credential gained tickets; returning it to the client")
    return (options.option(options.SYNC_CREDS, value),)


def _prepare_sync(lease: CredLease | None, wanted: bool, req: Request) -> None:
    if (
        wanted
        and lease is not None
        and lease.token is None
        and req.service.allow_client_ccache_sync
        and not req.service.cred_store_values("ccache")
    ):
        lease.token = api.export_cred(lease.creds)


# -- 8 INIT_SEC_CONTEXT --------------------------------------------------------------


async def proc_init_sec_context(
    engine: GssEngine, req: Request, arg: gp.GssxArgInitSecContext
) -> gp.GssxResInitSecContext:
    svc = req.service
    types = options.parse_call_options(arg.call_ctx.options)
    mech = arg.mech_type or oids.KRB5
    if mech not in oids.KRB5_FAMILY:
        raise GssFailure(GSS_S_BAD_MECH, ENOENT, "only the krb5 mechanism is served")
    if arg.target_name is None:
        raise GssFailure(GSS_S_BAD_NAME, EINVAL, "init_sec_context needs a target name")
    target = convert.import_gssx_name(arg.target_name)
    context = _imported_context(arg.context_handle)
    lease = await engine.credentials.lease_handle(req, arg.cred_handle)
    if lease is None:
        # Before the try: compiled with mypyc, a finally that reads a
        # variable narrowed inside its try reads it as narrowed, and raised
        # TypeError when the default acquisition failed (release(None) did
        # nothing here anyway).
        lease = await _default_lease(engine, req, CredUsage.INITIATE)
    try:
        if context is None:
            _check_delegation(svc, lease, target)
        wants_sync = options.wants_sync(arg.options)
        _prepare_sync(lease, wants_sync, req)
        step = api.init_sec_context(
            target,
            lease.creds,
            context,
            mech,
            policy.filter_req_flags(svc, arg.req_flags),
            arg.time_req,
            _bindings(arg.input_cb),
            arg.input_token,
        )
        ctx = export_context(
            step.context,
            types,
            mech=step.mech or mech,
            locally_initiated=True,
            complete=not step.continue_needed,
        )
        sync = _sync_option(engine, req, lease, wants_sync)
    finally:
        engine.credentials.release(lease)
    major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
    return gp.GssxResInitSecContext(
        status=ok_status(ctx.mech or oids.KRB5, major),
        context_handle=ctx,
        output_token=step.token or None,
        options=sync,
    )


def _check_delegation(svc: Service, lease: CredLease, target: api.Name) -> None:
    """An S4U2Self credential may only go to the targets the service may delegate to."""
    imp = api.impersonator(lease.creds)
    if imp is not None:
        shown = api.display_name(api.canonicalize(target, oids.KRB5))[0]
        policy.constrained_delegation_allowed(svc, imp, shown.decode("utf-8", errors="replace"))


# -- 9 ACCEPT_SEC_CONTEXT --------------------------------------------------------------


async def _linux_creds(
    engine: GssEngine, req: Request, name: api.Name | None, exported: bytes
) -> bytes:
    """The `linux_creds_v1` value for the initiator (UNMAPPED if no local user).

    `exported`: the name's `gss_export_name` token (b"" if none).
    The local name and the NSS answers are reused for `engine.local_creds`'s
    TTL; looking them up may wait.
    """
    if name is None:
        return unmapped_linux_creds(req.log)
    found = engine.local_creds.get(exported) if exported else None
    if found is None:
        await req.steps.may_wait("local user lookup (NSS)")
        found = look_up_linux_creds(engine, name, exported)
    return linux_creds_value(req.log, name, found)


def unmapped_linux_creds(log: LogLike) -> bytes:
    """The `linux_creds_v1` value for an accept without an initiator name."""
    log.info("linux_creds_v1 for no initiator name: unmapped")
    return encode_linux_creds(UNMAPPED.uid, UNMAPPED.gid, UNMAPPED.groups)


def look_up_linux_creds(
    engine: GssEngine, name: api.Name, exported: bytes
) -> tuple[bytes, LinuxCreds]:
    """The initiator's local user and creds, looked up (may wait on NSS) and
    kept for `engine.local_creds`'s TTL."""
    found = _local_creds(name, exported)
    if exported:
        engine.local_creds.put(exported, found)
    return found


def linux_creds_value(log: LogLike, name: api.Name, found: tuple[bytes, LinuxCreds]) -> bytes:
    """The `linux_creds_v1` value of a looked-up initiator (logged at level 1)."""
    user, creds = found
    if log.isEnabledFor(logging.INFO):
        log.info("%s", _describe_linux_creds(name, user, creds))
    return encode_linux_creds(creds.uid, creds.gid, creds.groups)


def _local_creds(name: api.Name, exported: bytes) -> tuple[bytes, LinuxCreds]:
    """The initiator's local user and its uid, gid and groups (may wait on NSS)."""
    from gssproxy_py.gss import localname

    try:
        if exported:
            user = localname.localname(exported, oids.NT_EXPORT_NAME, oids.KRB5)
        else:
            user = localname.localname_of_name(name, oids.KRB5)
    except localname.NoLocalMappingError:
        user = b""
    except localname.GssCallError as exc:
        raise GssFailure(exc.major, exc.minor, exc.message) from None
    try:
        return user, resolve_local_creds(user) if user else UNMAPPED
    except LocalCredsError as exc:
        raise GssFailure(GSS_S_FAILURE, ENOENT, str(exc)) from None


def shown_name(name: api.Name | None) -> str:
    if name is None:
        return "(no initiator name)"
    try:
        return api.display_name(name)[0].decode("utf-8", "replace")
    except GssFailure:
        return "(undisplayable name)"


def _describe_linux_creds(name: api.Name, user: bytes, creds: LinuxCreds) -> str:
    """`linux_creds_v1 for PRINCIPAL (local user U): uid=N gid=N groups=[...]`."""
    shown = shown_name(name)
    local = user.decode("utf-8", "replace")
    if creds == UNMAPPED:
        why = f"local user {local} unknown" if local else "no local user"
        return f"linux_creds_v1 for {shown}: unmapped ({why}; the kernel squashes it to nobody)"
    return (
        f"linux_creds_v1 for {shown} (local user {local}): uid={creds.uid} gid={creds.gid}"
        f" groups={list(creds.groups)}"
    )


async def proc_accept_sec_context(
    engine: GssEngine, req: Request, arg: gp.GssxArgAcceptSecContext
) -> gp.GssxResAcceptSecContext:
    types = options.parse_call_options(arg.call_ctx.options)
    context = _imported_context(arg.context_handle)
    lease = await engine.credentials.lease_handle(req, arg.cred_handle)
    if lease is None:  # before the try: see proc_init_sec_context
        lease = await _default_lease(engine, req, CredUsage.ACCEPT)
    try:
        wants_sync = options.wants_sync(arg.options)
        _prepare_sync(lease, wants_sync, req)
        step = api.accept_sec_context(
            arg.input_token,
            lease.creds,
            context,
            _bindings(arg.input_cb),
        )
        complete = not step.continue_needed
        if complete and req.log.isEnabledFor(logging.INFO):
            # Debug level 1 is an audit trail: who authenticated, to which
            # service. The name is displayed (a GSSAPI call) only for a line
            # that is written.
            req.log.info(
                "accepted a context from %s for service '%s'",
                shown_name(step.initiator),
                req.service.name,
            )
        extra: list[GssxOption] = []
        # The kernel's initiator is exported once, for linux_creds_v1 and src_name.
        initiator_export: bytes | None = None
        if types.creds is options.CredsExport.LINUX_CREDS_V1 and complete:
            if step.initiator is not None:
                initiator_export = api.export_name(step.initiator)
            # After the accept consumed its token: a lookup that must wait
            # continues the call on a thread from here, it does not repeat it.
            value = await _linux_creds(engine, req, step.initiator, initiator_export or b"")
            extra.append(options.option(options.LINUX_CREDS_V1, value))
        ctx = export_context(
            step.context,
            types,
            mech=step.mech or oids.KRB5,
            locally_initiated=False,
            complete=complete,
            # The accept's src_name is the context's initiator (MIT duplicates
            # the same principal for both); a partial context asks for its own.
            initiator=step.initiator if complete else None,
            initiator_export=initiator_export,
        )
        delegated = _delegated_cred(engine, req, arg, types, step)
        extra.extend(_sync_option(engine, req, lease, wants_sync))
    finally:
        engine.credentials.release(lease)
    if types.kernel and len(step.token) > KERNEL_MAX_OUTPUT_TOKEN:
        raise GssFailure(
            GSS_S_FAILURE, EINVAL, f"output token exceeds the kernel's {KERNEL_MAX_OUTPUT_TOKEN}"
        )
    major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
    return gp.GssxResAcceptSecContext(
        status=ok_status(ctx.mech or oids.KRB5, major),
        context_handle=ctx,
        # Always present: the kernel would read 1024 bytes from NULL otherwise.
        output_token=step.token,
        delegated_cred_handle=delegated,
        options=tuple(extra),
    )


def _delegated_cred(
    engine: GssEngine,
    req: Request,
    arg: gp.GssxArgAcceptSecContext,
    types: options.ExportTypes,
    step: api.StepResult,
) -> GssxCred | None:
    """The initiator's delegated credential, sealed, when asked for and given."""
    if (
        arg.ret_deleg_cred
        and not types.kernel  # the kernel refuses any delegated cred
        and step.delegated is not None
        and step.flags & _DELEG_FLAG
    ):
        delegated, _, _ = engine.credentials.seal(req, step.delegated)
        return delegated
    return None


# -- 10 RELEASE_HANDLE ---------------------------------------------------------------


async def proc_release_handle(
    engine: GssEngine, req: Request, arg: gp.GssxArgReleaseHandle
) -> gp.GssxResReleaseHandle:
    handle = arg.cred_handle
    if isinstance(handle, gp.GssxHandleCredInfo):
        blob = handle.cred_info.cred_handle_reference
        if blob:
            engine.credentials.pool.drop(Credentials.pool_key(req, blob))
        return gp.GssxResReleaseHandle(status=ok_status(oids.KRB5))
    if isinstance(handle, gp.GssxHandleSecCtxInfo):
        return gp.GssxResReleaseHandle(status=ok_status(oids.KRB5))
    raise GssFailure(GSS_S_CALL_BAD_STRUCTURE, EINVAL, "unknown handle type")


# -- 11..15 per-message --------------------------------------------------------------


def _import_ctx(handle: GssxCtx) -> api.SecurityContext:
    if not handle.exported_context_token:
        raise GssFailure(GSS_S_NO_CONTEXT, EINVAL, "no exported context token")
    return api.import_sec_context(handle.exported_context_token)


def _reexport(context: api.SecurityContext, handle: GssxCtx, call_ctx: gp.GssxCallCtx) -> GssxCtx:
    types = options.parse_call_options(call_ctx.options)
    return export_context(
        context,
        types,
        mech=handle.mech or oids.KRB5,
        locally_initiated=handle.locally_initiated,
        complete=True,
    )


async def proc_get_mic(engine: GssEngine, req: Request, arg: gp.GssxArgGetMic) -> gp.GssxResGetMic:
    ctx = _import_ctx(arg.context_handle)
    mic = api.get_mic(ctx, arg.message_buffer, arg.qop_req)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResGetMic(
        status=ok_status(out.mech or oids.KRB5),
        context_handle=out,
        token_buffer=mic,
        qop_state=arg.qop_req,
    )


async def proc_verify_mic(
    engine: GssEngine, req: Request, arg: gp.GssxArgVerifyMic
) -> gp.GssxResVerifyMic:
    ctx = _import_ctx(arg.context_handle)
    qop = api.verify_mic(ctx, arg.message_buffer, arg.token_buffer)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResVerifyMic(
        status=ok_status(out.mech or oids.KRB5), context_handle=out, qop_state=qop
    )


async def proc_wrap(engine: GssEngine, req: Request, arg: gp.GssxArgWrap) -> gp.GssxResWrap:
    ctx = _import_ctx(arg.context_handle)
    tokens: list[bytes] = []
    encrypted = arg.conf_req
    for message in arg.message_buffer:
        token, encrypted = api.wrap(ctx, message, arg.conf_req, arg.qop_state)
        tokens.append(token)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResWrap(
        status=ok_status(out.mech or oids.KRB5),
        context_handle=out,
        token_buffer=tuple(tokens),
        conf_state=encrypted,
        qop_state=arg.qop_state,
    )


async def proc_unwrap(engine: GssEngine, req: Request, arg: gp.GssxArgUnwrap) -> gp.GssxResUnwrap:
    ctx = _import_ctx(arg.context_handle)
    messages: list[bytes] = []
    encrypted = False
    qop = arg.qop_state
    for token in arg.token_buffer:
        message, encrypted, qop = api.unwrap(ctx, token)
        messages.append(message)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResUnwrap(
        status=ok_status(out.mech or oids.KRB5),
        context_handle=out,
        message_buffer=tuple(messages),
        conf_state=encrypted,
        qop_state=qop,
    )


async def proc_wrap_size_limit(
    engine: GssEngine, req: Request, arg: gp.GssxArgWrapSizeLimit
) -> gp.GssxResWrapSizeLimit:
    ctx = _import_ctx(arg.context_handle)
    size = api.wrap_size_limit(
        ctx, min(arg.req_output_size, 0xFFFFFFFF), arg.conf_req, arg.qop_state
    )
    return gp.GssxResWrapSizeLimit(status=ok_status(oids.KRB5), max_input_size=size)


# -- the rows (their type: gss/rows.py) ---------------------------------------------

_BOTH = gp.GssxCredUsage.GSSX_C_BOTH

#: Every procedure of program 400112 v1 but NULL, in number order.
PROCEDURES: tuple[GssProcedure[Any, Any], ...] = (
    row(
        gp.GSSX_INDICATE_MECHS,
        gp.GssxArgIndicateMechs,
        gp.GssxResIndicateMechs,
        proc_indicate_mechs,
        inline=True,
        failure=lambda s: gp.GssxResIndicateMechs(s, (), (), (), ()),
    ),
    row(
        gp.GSSX_GET_CALL_CONTEXT,
        gp.GssxArgGetCallContext,
        gp.GssxResGetCallContext,
        proc_get_call_context,
        inline=True,
        failure=lambda s: gp.GssxResGetCallContext(s, b"", ()),
    ),
    row(
        gp.GSSX_IMPORT_AND_CANON_NAME,
        gp.GssxArgImportAndCanonName,
        gp.GssxResImportAndCanonName,
        proc_import_and_canon_name,
        inline=False,
        failure=lambda s: gp.GssxResImportAndCanonName(s, None, ()),
    ),
    row(
        gp.GSSX_EXPORT_CRED,
        gp.GssxArgExportCred,
        gp.GssxResExportCred,
        proc_export_cred,
        inline=False,
        failure=lambda s: gp.GssxResExportCred(s, _BOTH, None, ()),
    ),
    row(
        gp.GSSX_IMPORT_CRED,
        gp.GssxArgImportCred,
        gp.GssxResImportCred,
        proc_import_cred,
        inline=False,
        failure=lambda s: gp.GssxResImportCred(s, None, ()),
    ),
    row(
        gp.GSSX_ACQUIRE_CRED,
        gp.GssxArgAcquireCred,
        gp.GssxResAcquireCred,
        proc_acquire_cred,
        inline=True,
        failure=lambda s: gp.GssxResAcquireCred(s, None, ()),
    ),
    row(
        gp.GSSX_STORE_CRED,
        gp.GssxArgStoreCred,
        gp.GssxResStoreCred,
        proc_store_cred,
        inline=False,
        failure=lambda s: gp.GssxResStoreCred(s, (), _BOTH, ()),
    ),
    row(
        gp.GSSX_INIT_SEC_CONTEXT,
        gp.GssxArgInitSecContext,
        gp.GssxResInitSecContext,
        proc_init_sec_context,
        inline=False,
        failure=lambda s: gp.GssxResInitSecContext(s, None, None, ()),
    ),
    row(
        gp.GSSX_ACCEPT_SEC_CONTEXT,
        gp.GssxArgAcceptSecContext,
        gp.GssxResAcceptSecContext,
        proc_accept_sec_context,
        inline=True,
        # output_token stays present even on failure: the kernel reads it regardless.
        failure=lambda s: gp.GssxResAcceptSecContext(s, None, b"", None, ()),
    ),
    row(
        gp.GSSX_RELEASE_HANDLE,
        gp.GssxArgReleaseHandle,
        gp.GssxResReleaseHandle,
        proc_release_handle,
        inline=True,
        failure=gp.GssxResReleaseHandle,
    ),
    row(
        gp.GSSX_GET_MIC,
        gp.GssxArgGetMic,
        gp.GssxResGetMic,
        proc_get_mic,
        inline=True,
        failure=lambda s: gp.GssxResGetMic(s, None, b"", None),
    ),
    row(
        gp.GSSX_VERIFY,
        gp.GssxArgVerifyMic,
        gp.GssxResVerifyMic,
        proc_verify_mic,
        inline=True,
        failure=lambda s: gp.GssxResVerifyMic(s, None, None),
    ),
    row(
        gp.GSSX_WRAP,
        gp.GssxArgWrap,
        gp.GssxResWrap,
        proc_wrap,
        inline=True,
        failure=lambda s: gp.GssxResWrap(s, None, (), None, None),
    ),
    row(
        gp.GSSX_UNWRAP,
        gp.GssxArgUnwrap,
        gp.GssxResUnwrap,
        proc_unwrap,
        inline=True,
        failure=lambda s: gp.GssxResUnwrap(s, None, (), None, None),
    ),
    row(
        gp.GSSX_WRAP_SIZE_LIMIT,
        gp.GssxArgWrapSizeLimit,
        gp.GssxResWrapSizeLimit,
        proc_wrap_size_limit,
        inline=True,
        failure=lambda s: gp.GssxResWrapSizeLimit(s, 0),
    ),
)
