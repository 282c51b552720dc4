"""The fifteen GSS-Proxy procedures, as blocking functions run in the gss executor.

Each `proc_*` takes the engine, a `Request` and the decoded argument and
returns the result structure, raising `GssFailure` for GSS-level failures;
`failure_result` builds the matching empty result around a status. The
async glue, the no-service rule and the one exception-to-status mapping live
in `program.py`.

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

import dataclasses
import logging

from gssproxy_py.config.model import CredUsage
from gssproxy_py.gss import api, convert, oids, options, policy
from gssproxy_py.gss.engine import (
    CredLease,
    Deferred,
    GssEngine,
    Request,
    WouldWaitError,
    pick_mech,
)
from gssproxy_py.gss.linux_creds import (
    UNMAPPED,
    LinuxCreds,
    LocalCredsError,
    encode_linux_creds,
    resolve_local_creds,
)
from gssproxy_py.gss.lucid import LucidFormatError, format_linux_lucid_v1
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
from gssproxy_py.proto.gss_proxy import GssxCred, GssxCtx, GssxOption, GssxStatus

__all__ = ["INLINE_PROCEDURES", "PROCEDURES", "failure_result"]

#: GSS_C_DELEG_FLAG
_DELEG_FLAG = 1
#: The kernel copies at most this much of the output token (GSSX_max_output_token_sz).
KERNEL_MAX_OUTPUT_TOKEN = 1024
#: Largest sync_creds value the interposer stores (GPKRB_MAX_CRED_SIZE).
MAX_SYNC_CREDS = 512 * 1024


def _no_nss(uid: int) -> str:
    """`decide_cred_environment`'s user name lookup when running inline."""
    raise WouldWaitError("user name lookup (NSS)")


def _decide(req: Request, desired: policy.NameSpec | None, usage: CredUsage) -> policy.CredRequest:
    if req.inline:
        return policy.decide_cred_environment(
            req.service, req.uid, desired, usage, user_name=_no_nss
        )
    return policy.decide_cred_environment(req.service, req.uid, desired, usage)


def _encode_cred(cred: GssxCred) -> bytes:
    from gssproxy_py.xdr.runtime import Encoder

    enc = Encoder()
    gp.encode_gssx_cred(enc, cred)
    return bytes(enc.get_buffer())


# -- 1 INDICATE_MECHS -----------------------------------------------------------


def proc_indicate_mechs(
    engine: GssEngine, req: Request, arg: gp.GssxArgIndicateMechs
) -> gp.GssxResIndicateMechs:
    if req.inline and not engine.mechs_known():
        raise WouldWaitError("mechanisms not described yet")
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


def proc_get_call_context(
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


def proc_import_and_canon_name(
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


def _open_or_fail(engine: GssEngine, req: Request, cred: GssxCred) -> CredLease:
    lease = engine.lease_handle(req, cred)
    if lease is None:
        raise GssFailure(
            GSS_S_NO_CRED, EACCES, "credential handle missing or not valid for this caller"
        )
    return lease


def proc_export_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgExportCred
) -> gp.GssxResExportCred:
    """The exported form of a credential is its sealed handle, never the raw token.

    It opens only for the same uid at a service of the same handle scope
    (`engine.handle_scope`: the same keytab) (IMPORT_CRED), so exporting
    never hands out keys or tickets in the clear.
    """
    lease = _open_or_fail(engine, req, arg.input_cred_handle)
    try:
        info = api.inquire_cred(lease.creds)
    finally:
        engine.release(lease)
    usage = policy.narrow_usage(info.usage, int(arg.cred_usage))
    return gp.GssxResExportCred(
        status=ok_status(oids.KRB5),
        usage_exported=gp.GssxCredUsage(int(usage)),
        exported_handle=arg.input_cred_handle.cred_handle_reference,
        options=(),
    )


def proc_import_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgImportCred
) -> gp.GssxResImportCred:
    """Opens an EXPORT_CRED blob (same uid and handle scope only) and describes it."""
    token = engine.open_blob(req, arg.exported_handle)
    if token is None:
        raise GssFailure(GSS_S_NO_CRED, EACCES, "exported credential not valid for this caller")
    creds = api.import_cred(token)
    info = api.inquire_cred(creds)
    return gp.GssxResImportCred(
        status=ok_status(oids.KRB5),
        output_cred_handle=engine.gssx_cred(info, arg.exported_handle),
        options=(),
    )


def proc_store_cred(
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
    lease = _open_or_fail(engine, req, arg.input_cred_handle)
    try:
        stored, stored_usage = api.store_cred_into(
            store, lease.creds, usage, oids.KRB5, arg.overwrite_cred, arg.default_cred
        )
    finally:
        engine.release(lease)
    req.log.info("store_cred: stored into %s", store["ccache"])
    return gp.GssxResStoreCred(
        status=ok_status(oids.KRB5),
        elements_stored=stored or (oids.KRB5,),
        cred_usage_stored=gp.GssxCredUsage(int(stored_usage)),
        options=(),
    )


# -- 6 ACQUIRE_CRED ---------------------------------------------------------------


def _cred_still_good(
    lease: CredLease, creq: policy.CredRequest, mech: bytes, min_lifetime: int
) -> bool:
    """gssproxy's gp_check_cred: right mech, name and usage, and enough lifetime left."""
    info = api.inquire_cred(lease.creds)
    element = next((e for e in info.elements if e.mech == mech), None)
    if element is None:
        return False
    if creq.usage is not CredUsage.BOTH and element.usage not in (creq.usage, CredUsage.BOTH):
        return False
    if creq.usage is CredUsage.BOTH and element.usage is not CredUsage.BOTH:
        return False
    times = []
    if creq.usage is not CredUsage.ACCEPT:
        times.append(element.init_lifetime)
    if creq.usage is not CredUsage.INITIATE:
        times.append(element.accept_lifetime)
    if any(t != api.INDEFINITE and t < max(1, min_lifetime) for t in times):
        return False
    if creq.name is not None and info.name is not None:
        wanted = api.canonicalize(api.import_name(creq.name.value, creq.name.name_type), mech)
        if api.display_name(wanted)[0] != api.display_name(info.name)[0]:
            return False
    return True


def proc_acquire_cred(
    engine: GssEngine, req: Request, arg: gp.GssxArgAcquireCred
) -> gp.GssxResAcquireCred:
    svc = req.service
    mech = pick_mech(arg.desired_mechs)
    usage = policy.narrow_usage(svc.cred_usage, int(arg.cred_usage))
    impersonate = arg.input_cred_handle is not None and options.parse_acquire_type(arg.options)
    if req.inline and (impersonate or arg.desired_name is not None):
        # S4U talks to the KDC; canonicalizing a host-based name may ask DNS.
        raise WouldWaitError("impersonation or a desired name")
    if impersonate:
        # Client-driven S4U2Self with the input cred as impersonator.
        policy.may_impersonate_name(svc)
        if arg.desired_name is None:
            raise GssFailure(GSS_S_BAD_NAME, EINVAL, "impersonate_name needs a desired name")
        lease = engine.lease_handle(req, arg.input_cred_handle)
        if lease is None:
            raise GssFailure(GSS_S_NO_CRED, EACCES, "no valid impersonator credential")
        try:
            target = convert.import_gssx_name(arg.desired_name)
            s4u = api.acquire_cred_impersonate_name(lease.creds, target, CredUsage.INITIATE, mech)
        finally:
            engine.release(lease)
        gcred, _, _ = engine.seal_creds(req, s4u)
        req.log.info("acquire: S4U2Self credential issued")
        return gp.GssxResAcquireCred(
            status=ok_status(oids.KRB5), output_cred_handle=gcred, options=()
        )
    creq = _decide(req, convert.name_spec(arg.desired_name), usage)
    if arg.input_cred_handle is not None:
        lease = engine.lease_handle(req, arg.input_cred_handle)
        if lease is not None:
            try:
                good = _cred_still_good(lease, creq, mech, svc.min_lifetime)
            finally:
                engine.release(lease)
            if good:
                req.log.info(
                    "acquire: the client's credential handle is still good; returned as is"
                )
                # Unchanged bytes: the interposer then keeps its stored copy.
                return gp.GssxResAcquireCred(
                    status=ok_status(oids.KRB5),
                    output_cred_handle=arg.input_cred_handle,
                    options=(),
                )
            if req.inline:
                raise WouldWaitError("acquiring anew")  # before the log line the thread repeats
            req.log.info("acquire: input credential unusable or near expiry; acquiring anew")
    with policy.explaining(svc, creq):
        gcred, fresh = engine.acquire_sealed(req, creq, mech)
    engine.release(fresh)
    return gp.GssxResAcquireCred(status=ok_status(oids.KRB5), output_cred_handle=gcred, options=())


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


def _export_context(
    context: api.SecurityContext,
    types: options.ExportTypes,
    *,
    mech: bytes,
    locally_initiated: bool,
    complete: bool,
) -> GssxCtx:
    info = api.inquire_context(context)
    kernel = types.kernel and complete
    if kernel:
        try:
            token = format_linux_lucid_v1(api.export_lucid(context))
        except LucidFormatError as exc:
            raise GssFailure(GSS_S_FAILURE, EINVAL, f"cannot build linux_lucid_v1: {exc}") from None
    else:
        token = api.export_sec_context(context)
    if types.kernel and len(token) > 128:
        raise GssFailure(GSS_S_FAILURE, EINVAL, "exported context exceeds the kernel's 128 bytes")
    return convert.gssx_ctx(
        token, info, mech=mech, locally_initiated=locally_initiated, kernel=types.kernel
    )


def _sync_option(
    engine: GssEngine, req: Request, lease: CredLease | None, wanted: bool
) -> tuple[GssxOption, ...]:
    """`sync_creds` when the credential gained tickets during this call (§3.7)."""
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
    gcred, _, _ = engine.seal_creds(req, lease.creds)
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


def proc_init_sec_context(
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
    context = None
    if arg.context_handle is not None and arg.context_handle.exported_context_token:
        context = api.import_sec_context(arg.context_handle.exported_context_token)
    lease = engine.lease_handle(req, arg.cred_handle)
    try:
        if lease is None:
            usage = policy.narrow_usage(svc.cred_usage, int(CredUsage.INITIATE))
            creq = _decide(req, None, usage)
            with policy.explaining(svc, creq):
                lease = engine.lease_acquired(req, creq, oids.KRB5)
        if context is None:
            imp = api.impersonator(lease.creds)
            if imp is not None:
                shown = api.display_name(api.canonicalize(target, oids.KRB5))[0]
                policy.constrained_delegation_allowed(
                    svc, imp, shown.decode("utf-8", errors="replace")
                )
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
        ctx = _export_context(
            step.context,
            types,
            mech=step.mech or mech,
            locally_initiated=True,
            complete=not step.continue_needed,
        )
        sync = _sync_option(engine, req, lease, wants_sync)
    finally:
        engine.release(lease)
    major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
    return gp.GssxResInitSecContext(
        status=ok_status(ctx.mech or oids.KRB5, major),
        context_handle=ctx,
        output_token=step.token or None,
        options=sync,
    )


# -- 9 ACCEPT_SEC_CONTEXT --------------------------------------------------------------


def _linux_creds(engine: GssEngine, req: Request, name: api.Name | None) -> bytes | None:
    """The `linux_creds_v1` value for the initiator (UNMAPPED if no local user).

    The local name and the NSS answers are reused for `engine.local_creds`'s
    TTL; None when running inline and they are not at hand (the caller
    finishes in a thread, where the lookup may wait).
    """
    from gssproxy_py.gss import localname

    creds: LinuxCreds = UNMAPPED
    if name is not None:
        exported = api.export_name(name)
        cached = engine.local_creds.get(exported) if exported else None
        if cached is not None:
            user, creds = cached
        elif req.inline:
            return None
        else:
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
                creds = resolve_local_creds(user) if user else UNMAPPED
            except LocalCredsError as exc:
                raise GssFailure(GSS_S_FAILURE, ENOENT, str(exc)) from None
            if exported:
                engine.local_creds.put(exported, (user, creds))
        if req.log.isEnabledFor(logging.INFO):
            req.log.info("%s", _describe_linux_creds(name, user, creds))
    else:
        req.log.info("linux_creds_v1 for no initiator name: unmapped")
    return encode_linux_creds(creds.uid, creds.gid, creds.groups)


def _describe_linux_creds(name: api.Name, user: bytes, creds: LinuxCreds) -> str:
    """`linux_creds_v1 for PRINCIPAL (local user U): uid=N gid=N groups=[...]`."""
    try:
        shown = api.display_name(name)[0].decode("utf-8", "replace")
    except GssFailure:
        shown = "(undisplayable name)"
    local = user.decode("utf-8", "replace")
    if creds == UNMAPPED:
        why = f"local user {local} unknown" if local else "no local user"
        return f"linux_creds_v1 for {shown}: unmapped ({why}; the kernel squashes it to nobody)"
    return (
        f"linux_creds_v1 for {shown} (local user {local}): uid={creds.uid} gid={creds.gid}"
        f" groups={list(creds.groups)}"
    )


def proc_accept_sec_context(
    engine: GssEngine, req: Request, arg: gp.GssxArgAcceptSecContext
) -> gp.GssxResAcceptSecContext | Deferred:
    svc = req.service
    types = options.parse_call_options(arg.call_ctx.options)
    context = None
    if arg.context_handle is not None and arg.context_handle.exported_context_token:
        context = api.import_sec_context(arg.context_handle.exported_context_token)
    lease = engine.lease_handle(req, arg.cred_handle)
    delegated: GssxCred | None = None
    try:
        if lease is None:
            usage = policy.narrow_usage(svc.cred_usage, int(CredUsage.ACCEPT))
            creq = _decide(req, None, usage)
            with policy.explaining(svc, creq):
                lease = engine.lease_acquired(req, creq, oids.KRB5)
        wants_sync = options.wants_sync(arg.options)
        _prepare_sync(lease, wants_sync, req)
        step = api.accept_sec_context(
            arg.input_token,
            lease.creds,
            context,
            _bindings(arg.input_cb),
        )
        complete = not step.continue_needed
        extra: list[GssxOption] = []
        pending = False
        if types.creds is options.CredsExport.LINUX_CREDS_V1 and complete:
            value = _linux_creds(engine, req, step.initiator)
            # None: inline and not known yet; filled in below, in a thread.
            pending = value is None
            extra.append(options.option(options.LINUX_CREDS_V1, value or b""))
        ctx = _export_context(
            step.context,
            types,
            mech=step.mech or oids.KRB5,
            locally_initiated=False,
            complete=complete,
        )
        if (
            arg.ret_deleg_cred
            and not types.kernel  # the kernel refuses any delegated cred
            and step.delegated is not None
            and step.flags & _DELEG_FLAG
        ):
            delegated, _, _ = engine.seal_creds(req, step.delegated)
        extra.extend(_sync_option(engine, req, lease, wants_sync))
    finally:
        engine.release(lease)
    if types.kernel and len(step.token) > KERNEL_MAX_OUTPUT_TOKEN:
        raise GssFailure(
            GSS_S_FAILURE, EINVAL, f"output token exceeds the kernel's {KERNEL_MAX_OUTPUT_TOKEN}"
        )
    major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
    result = gp.GssxResAcceptSecContext(
        status=ok_status(ctx.mech or oids.KRB5, major),
        context_handle=ctx,
        # Always present: the kernel would read 1024 bytes from NULL otherwise.
        output_token=step.token,
        delegated_cred_handle=delegated,
        options=tuple(extra),
    )
    if not pending:
        return result
    initiator = step.initiator
    threaded = dataclasses.replace(req, inline=False)

    def finish() -> gp.GssxResAcceptSecContext:
        value = _linux_creds(engine, threaded, initiator)
        assert value is not None
        first = options.option(options.LINUX_CREDS_V1, value)
        return dataclasses.replace(result, options=(first, *result.options[1:]))

    return Deferred(finish)


# -- 10 RELEASE_HANDLE ---------------------------------------------------------------


def proc_release_handle(
    engine: GssEngine, req: Request, arg: gp.GssxArgReleaseHandle
) -> gp.GssxResReleaseHandle:
    handle = arg.cred_handle
    if isinstance(handle, gp.GssxHandleCredInfo):
        blob = handle.cred_info.cred_handle_reference
        if blob:
            from gssproxy_py.gss.credcache import handle_digest

            engine.pool.drop((req.service.name, req.uid, handle_digest(blob)))
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
    return _export_context(
        context,
        types,
        mech=handle.mech or oids.KRB5,
        locally_initiated=handle.locally_initiated,
        complete=True,
    )


def proc_get_mic(engine: GssEngine, req: Request, arg: gp.GssxArgGetMic) -> gp.GssxResGetMic:
    ctx = _import_ctx(arg.context_handle)
    mic = api.get_mic(ctx, arg.message_buffer, arg.qop_req)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResGetMic(
        status=ok_status(out.mech or oids.KRB5),
        context_handle=out,
        token_buffer=mic,
        qop_state=arg.qop_req,
    )


def proc_verify_mic(
    engine: GssEngine, req: Request, arg: gp.GssxArgVerifyMic
) -> gp.GssxResVerifyMic:
    ctx = _import_ctx(arg.context_handle)
    qop = api.verify_mic(ctx, arg.message_buffer, arg.token_buffer)
    out = _reexport(ctx, arg.context_handle, arg.call_ctx)
    return gp.GssxResVerifyMic(
        status=ok_status(out.mech or oids.KRB5), context_handle=out, qop_state=qop
    )


def proc_wrap(engine: GssEngine, req: Request, arg: gp.GssxArgWrap) -> gp.GssxResWrap:
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


def proc_unwrap(engine: GssEngine, req: Request, arg: gp.GssxArgUnwrap) -> gp.GssxResUnwrap:
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


def proc_wrap_size_limit(
    engine: GssEngine, req: Request, arg: gp.GssxArgWrapSizeLimit
) -> gp.GssxResWrapSizeLimit:
    ctx = _import_ctx(arg.context_handle)
    size = api.wrap_size_limit(
        ctx, min(arg.req_output_size, 0xFFFFFFFF), arg.conf_req, arg.qop_state
    )
    return gp.GssxResWrapSizeLimit(status=ok_status(oids.KRB5), max_input_size=size)


# -- failure results -------------------------------------------------------------------


def failure_result(procedure: int, status: GssxStatus) -> object:
    """The result of `procedure` carrying only `status` (everything else empty)."""
    usage = gp.GssxCredUsage.GSSX_C_BOTH
    builders: dict[int, object] = {
        gp.GSSX_INDICATE_MECHS: gp.GssxResIndicateMechs(status, (), (), (), ()),
        gp.GSSX_GET_CALL_CONTEXT: gp.GssxResGetCallContext(status, b"", ()),
        gp.GSSX_IMPORT_AND_CANON_NAME: gp.GssxResImportAndCanonName(status, None, ()),
        gp.GSSX_EXPORT_CRED: gp.GssxResExportCred(status, usage, None, ()),
        gp.GSSX_IMPORT_CRED: gp.GssxResImportCred(status, None, ()),
        gp.GSSX_ACQUIRE_CRED: gp.GssxResAcquireCred(status, None, ()),
        gp.GSSX_STORE_CRED: gp.GssxResStoreCred(status, (), usage, ()),
        gp.GSSX_INIT_SEC_CONTEXT: gp.GssxResInitSecContext(status, None, None, ()),
        # output_token stays present even on failure: the kernel reads it regardless.
        gp.GSSX_ACCEPT_SEC_CONTEXT: gp.GssxResAcceptSecContext(status, None, b"", None, ()),
        gp.GSSX_RELEASE_HANDLE: gp.GssxResReleaseHandle(status),
        gp.GSSX_GET_MIC: gp.GssxResGetMic(status, None, b"", None),
        gp.GSSX_VERIFY: gp.GssxResVerifyMic(status, None, None),
        gp.GSSX_WRAP: gp.GssxResWrap(status, None, (), None, None),
        gp.GSSX_UNWRAP: gp.GssxResUnwrap(status, None, (), None, None),
        gp.GSSX_WRAP_SIZE_LIMIT: gp.GssxResWrapSizeLimit(status, 0),
    }
    return builders[procedure]


#: Procedures that may be tried inline on the event loop (see `engine`): the
#: rest (names, cred import/export/store, init) may wait for DNS, a KDC or a
#: ccache daemon, and always run in a thread.
INLINE_PROCEDURES = frozenset(
    {
        gp.GSSX_INDICATE_MECHS,
        gp.GSSX_GET_CALL_CONTEXT,
        gp.GSSX_ACQUIRE_CRED,
        gp.GSSX_ACCEPT_SEC_CONTEXT,
        gp.GSSX_RELEASE_HANDLE,
        gp.GSSX_GET_MIC,
        gp.GSSX_VERIFY,
        gp.GSSX_WRAP,
        gp.GSSX_UNWRAP,
        gp.GSSX_WRAP_SIZE_LIMIT,
    }
)

PROCEDURES: dict[int, object] = {
    gp.GSSX_INDICATE_MECHS: proc_indicate_mechs,
    gp.GSSX_GET_CALL_CONTEXT: proc_get_call_context,
    gp.GSSX_IMPORT_AND_CANON_NAME: proc_import_and_canon_name,
    gp.GSSX_EXPORT_CRED: proc_export_cred,
    gp.GSSX_IMPORT_CRED: proc_import_cred,
    gp.GSSX_ACQUIRE_CRED: proc_acquire_cred,
    gp.GSSX_STORE_CRED: proc_store_cred,
    gp.GSSX_INIT_SEC_CONTEXT: proc_init_sec_context,
    gp.GSSX_ACCEPT_SEC_CONTEXT: proc_accept_sec_context,
    gp.GSSX_RELEASE_HANDLE: proc_release_handle,
    gp.GSSX_GET_MIC: proc_get_mic,
    gp.GSSX_VERIFY: proc_verify_mic,
    gp.GSSX_WRAP: proc_wrap,
    gp.GSSX_UNWRAP: proc_unwrap,
    gp.GSSX_WRAP_SIZE_LIMIT: proc_wrap_size_limit,
}
