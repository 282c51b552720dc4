"""The direct path of an accept: the interposer's ACQUIRE_CRED and
ACCEPT_SEC_CONTEXT, and the kernel's ACCEPT_SEC_CONTEXT, from argument bytes
to result bytes (`rpc.dispatch.DirectPath`).

An application accepting through the interposer (`proxymech.so`) makes two
calls per accept: ACQUIRE_CRED for its default acceptor credential, then
ACCEPT_SEC_CONTEXT with the handle that returned; the kernel's nfsd upcall
makes one, ACCEPT_SEC_CONTEXT with its two export options and no handle.
They are served inline from caches almost every time, and the generic path
spent more on the objects around them (the decoded `gssx_cred` and call
context, the result structures with their names, a request, a coroutine)
than on its own decisions. Here:

* `parse_acquire` / `parse_accept` read the arguments of exactly the
  calls the interposer and the kernel make (ACQUIRE_CRED: no call-context
  options, no input handle or desired name, krb5 or no mechanisms;
  ACCEPT: no context handle, channel bindings or options, and either no
  call-context options and a client handle whose names carry no
  attributes and whose elements no options, or the kernel's two options
  and no handle) with the generated decoders' own `Decoder` reads, so
  they accept nothing those refuse; anything else is None, and the call
  takes the generic path;
* `DirectCalls.acquire` answers from the acquire cache: the decision and
  the cache key are computed once per (configuration, service, uid,
  usage), and the reply is the cached handle's encoding, made once per
  handle;
* `DirectCalls.accept` leases the handle's pooled credential (the
  kernel's: the default credential's, from the acquire cache), accepts,
  and writes the `gssx_res_accept_sec_context`: from MIT's results for
  the interposer; for the kernel with the generic procedures' own
  `linux_creds_v1` and lucid context, and when the initiator's local user
  is not cached (NSS may wait) the rest continues on the service's threads
  (`Pending`), from after the accept;
* the accepted context's target name is kept per (handle, the ticket's
  server principal as `krb5_token.ticket_server` reads it from the
  AP-REQ, kernel or not): that is all MIT names it from. With it known,
  the `gssx_ctx` is written without `inquire_context`, from the accept's
  own mech, flags and lifetime (MIT's answers are the same:
  tests/integration/test_gss_procedures.py), so the accept makes no
  inquiry and no target name object to export and release.

Each declines (None, before doing anything the generic path would repeat)
what the generic path would not start inline: a service not inline now
(`InlineCalls.allowed`), a user-name lookup, an acquire-cache miss, a
handle whose credential is not in the pool. The rules are the generic
procedures' (`gss.procedures`), the same functions where they are shared;
`tests/conformance/test_direct_path.py` replays the interposer's and the
kernel's calls through both paths and compares the replies byte for byte.
"""

from __future__ import annotations

import logging
import struct
from typing import Final, final

from gssproxy_py.config.model import Config, CredUsage, Service
from gssproxy_py.errors import XdrError
from gssproxy_py.gss import api, convert, krb5_token, options, policy, procedures
from gssproxy_py.gss.credcache import AcquireKey, fingerprint
from gssproxy_py.gss.credentials import CredLease, handle_pool_key
from gssproxy_py.gss.engine import GssEngine
from gssproxy_py.gss.linux_creds import LinuxCreds
from gssproxy_py.gss.procedures import PROCEDURES, shown_name
from gssproxy_py.gss.status import (
    EINVAL,
    GSS_S_COMPLETE,
    GSS_S_CONTINUE_NEEDED,
    GSS_S_FAILURE,
    GssFailure,
    ok_status,
    status_for_exception,
)
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.dispatch import CallInfo, DirectPath, DirectResult, Pending
from gssproxy_py.vocab import oids
from gssproxy_py.vocab.gssx_options import (
    EXPORTED_CONTEXT_TYPE,
    EXPORTED_CREDS_TYPE,
    LINUX_CREDS_V1,
    LINUX_LUCID_V1,
)
from gssproxy_py.xdr.runtime import Decoder, encode_bytes

__all__ = ["AcceptCall", "DirectCalls", "direct_paths", "parse_accept", "parse_acquire"]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_TRUE = _U32.pack(1)
_FALSE = _U32.pack(0)
#: An empty array (options, name attributes, extensions).
_NONE = _FALSE
#: GSS_C_DELEG_FLAG
_DELEG_FLAG = 1
#: Entries kept per memo before it starts again (services times uids).
_MAX_MEMO = 4096

_USAGES = frozenset(int(u) for u in gp.GssxCredUsage)
#: The kernel's call-context options, as it sends them (gssx_option pairs).
_KERNEL_OPTIONS = (EXPORTED_CONTEXT_TYPE, LINUX_LUCID_V1, EXPORTED_CREDS_TYPE, LINUX_CREDS_V1)
_KERNEL_TYPES = options.ExportTypes(
    options.ContextExport.LINUX_LUCID_V1, options.CredsExport.LINUX_CREDS_V1
)
_EMPTY_NAME = encode_bytes(gp.encode_gssx_name, convert.EMPTY_NAME)
_ACQUIRE_FAILURE = next(p for p in PROCEDURES if p.number == gp.GSSX_ACQUIRE_CRED).failure
_ACCEPT_FAILURE = next(p for p in PROCEDURES if p.number == gp.GSSX_ACCEPT_SEC_CONTEXT).failure


def _opaque(value: bytes) -> bytes:
    n = len(value)
    return b"".join((_U32.pack(n), value, b"\0" * (-n % 4)))


# -- parsing -------------------------------------------------------------------


def _call_ctx_options(d: Decoder) -> int:
    """Read a `gssx_call_ctx` up to its options: how many it has (locale
    and server_ctx are read by no procedure)."""
    d.opaque_var(None)
    d.opaque_var(None)
    return d.array_count(None, 8)


def _empty_call_ctx(d: Decoder) -> bool:
    """Read a `gssx_call_ctx`; True if it carries no options."""
    return _call_ctx_options(d) == 0


def _kernel_call_ctx(d: Decoder) -> bool:
    """Read the rest of a call context with two options; True if they are
    the kernel's (lucid context, linux_creds_v1), in the kernel's order."""
    return tuple([d.opaque_var(None) for _ in range(4)]) == _KERNEL_OPTIONS


def _plain_name(d: Decoder) -> bool:
    """Read a `gssx_name`; True if it has no attributes and no extensions."""
    for _ in range(4):
        d.opaque_var(None)
    return d.array_count(None, 12) == 0 and d.array_count(None, 8) == 0


def _cred_reference(d: Decoder) -> bytes | None:
    """Read a `gssx_cred`: its `cred_handle_reference`, or None if a name
    has attributes or an element options (enctypes, no CI flags)."""
    if not _plain_name(d):
        return None
    for _ in range(d.array_count(None, 52)):
        if not _plain_name(d):
            return None
        d.opaque_var(None)
        d.enum(_USAGES, "gssx_cred_usage")
        d.uint64()
        d.uint64()
        if d.array_count(None, 8):
            return None
    reference = d.opaque_var(None)
    d.boolean()
    return reference


def parse_acquire(args: memoryview | bytes) -> int | None:
    """The `cred_usage` of an ACQUIRE_CRED for the caller's default
    credential of the krb5 mechanism, or None for any other call."""
    d = Decoder(args)
    try:
        if not _empty_call_ctx(d) or d.optional_flag():  # input_cred_handle
            return None
        d.boolean()  # add_cred_to_input_handle: read by no procedure
        if d.optional_flag():  # desired_name
            return None
        d.uint64()  # time_req
        mechs = [d.opaque_var(None) for _ in range(d.array_count(None, 4))]
        usage = d.enum(_USAGES, "gssx_cred_usage")
        d.uint64()
        d.uint64()
        if d.array_count(None, 8) or d.remaining():
            return None
    except XdrError:
        return None
    if mechs and not any(m in oids.KRB5_FAMILY for m in mechs):
        return None  # BAD_MECH: the generic path says so
    return usage


@final
class AcceptCall:
    """What an ACCEPT_SEC_CONTEXT of the interposer or of the kernel carries
    that an accept reads. Read-only, made per call (see
    `rpc.dispatch.CallInfo`)."""

    __slots__ = ("handle", "input_token", "kernel", "ret_deleg_cred")

    def __init__(
        self, handle: bytes, input_token: bytes, ret_deleg_cred: bool, *, kernel: bool = False
    ) -> None:
        #: the client's sealed handle (`cred_handle_reference`); b"" for the kernel
        self.handle: Final = handle
        self.input_token: Final = input_token
        self.ret_deleg_cred: Final = ret_deleg_cred
        #: the kernel's call: its export options, no handle (the default credential)
        self.kernel: Final = kernel


def parse_accept(args: memoryview | bytes) -> AcceptCall | None:
    """An ACCEPT_SEC_CONTEXT starting a context: the interposer's (a client
    handle, no options) or the kernel's (its two export options, no
    handle), nothing else; None for any other call."""
    d = Decoder(args)
    try:
        options = _call_ctx_options(d)
        kernel = options == 2 and _kernel_call_ctx(d)
        if (options and not kernel) or d.optional_flag():  # context_handle
            return None
        handle = b""
        if d.optional_flag():  # cred_handle
            reference = _cred_reference(d)
            if kernel or not reference:
                return None
            handle = reference
        elif not kernel:  # without a handle: the default lease
            return None
        token = d.opaque_var(None)
        if d.optional_flag():  # input_cb
            return None
        deleg = d.boolean()
        if d.array_count(None, 8) or d.remaining():
            return None
    except XdrError:
        return None
    return AcceptCall(handle, token, deleg, kernel=kernel)


# -- serving -------------------------------------------------------------------


#: What decides an accepted context's target (`_context`): the handle, the
#: ticket's server principal (`krb5_token.ticket_server`), and whether the
#: names are the kernel's (no composite export).
_Server = tuple[bytes, bytes, bool]


def _server(arg: AcceptCall, handle: bytes) -> _Server | None:
    ticket = krb5_token.ticket_server(arg.input_token)
    return None if ticket is None else (handle, ticket, arg.kernel)


def _name(parts: convert.NameParts | None) -> bytes:
    if parts is None:
        return _EMPTY_NAME
    display, name_type, exported, composite = parts
    return b"".join(
        (_opaque(display), _opaque(name_type), _opaque(exported), _opaque(composite), _NONE, _NONE)
    )


class DirectCalls:
    """The direct path of one engine (see the module docstring). Event-loop
    thread only, but for `_KernelRest.finish`'s `_kernel_reply` on a
    service thread, which leaves `_targets` alone and touches only the
    `_statuses` memo (a race there stores equal values)."""

    def __init__(self, engine: GssEngine) -> None:
        self.engine = engine
        self._config: Config | None = None
        #: (service, uid, usage) → the acquire cache's key and the store's keytabs
        self._plans: dict[tuple[str, int, int], tuple[AcquireKey, tuple[str, ...]]] = {}
        #: service → the keytab files of its cred_store (pooled objects' fingerprint)
        self._keytabs: dict[str, tuple[str, ...]] = {}
        #: sealed handle → its `gssx_cred` encoding (an ACQUIRE_CRED reply's body)
        self._creds: dict[bytes, bytes] = {}
        self._statuses: dict[tuple[bytes, int], bytes] = {}
        #: (handle, ticket server, kernel) → the target's wire fields (`_context`)
        self._targets: dict[_Server, convert.NameParts] = {}

    def _same_config(self, config: Config) -> None:
        """Forget what was worked out under another configuration, and
        the targets MIT named (an administrator who changes krb5.conf, e.g.
        `ignore_acceptor_hostname`, reloads: MIT may name them otherwise)."""
        if config is not self._config:
            self._config = config
            self._plans.clear()
            self._keytabs.clear()
            self._targets.clear()

    def _status(self, mech: bytes, major: int) -> bytes:
        key = (mech, major)
        encoded = self._statuses.get(key)
        if encoded is None:
            encoded = encode_bytes(gp.encode_gssx_status, ok_status(mech, major))
            if len(self._statuses) < _MAX_MEMO:
                self._statuses[key] = encoded
        return encoded

    # -- ACQUIRE_CRED -------------------------------------------------------------

    def acquire(self, call: CallInfo, usage: int) -> DirectResult | None:
        """`proc_acquire_cred` for the caller's default credential, from the cache."""
        service = call.service
        assert service is not None  # the server runs a direct path for a matched call only
        if not self.engine.inline.allowed(service):
            return None
        self._same_config(call.config)
        gcred = self._cached(call, service, usage)
        if gcred is None:
            return None
        reference = gcred.cred_handle_reference
        encoded = self._creds.get(reference)
        if encoded is None:
            encoded = encode_bytes(gp.encode_gssx_cred, gcred)
            if len(self._creds) >= _MAX_MEMO:
                self._creds.clear()
            self._creds[reference] = encoded
        status = self._status(oids.KRB5, GSS_S_COMPLETE)
        return DirectResult(b"".join((status, _TRUE, encoded, _NONE)), GSS_S_COMPLETE)

    def _cached(self, call: CallInfo, service: Service, usage: int) -> gp.GssxCred | None:
        """The acquire cache's handle for the caller's default credential
        of `usage` (`acquire_sealed` on a hit), or None."""
        plan = self._plan(call, service, usage)
        if plan is None:
            return None
        key, keytabs = plan
        return self.engine.credentials.acquired.get(
            key, fingerprint(keytabs), min_lifetime=service.min_lifetime
        )

    def _plan(
        self, call: CallInfo, service: Service, usage: int
    ) -> tuple[AcquireKey, tuple[str, ...]] | None:
        """The acquire cache's key for this caller's default credential and
        the keytabs to fingerprint; None when the generic path must decide
        (a usage the service refuses, a user name to look up)."""
        uid = call.peer.uid
        memo = (service.name, uid, usage)
        plan = self._plans.get(memo)
        if plan is not None:
            return plan
        try:
            narrowed = policy.narrow_usage(service.cred_usage, usage)
            if policy.needs_user_name(service, uid, None, narrowed):
                return None
            creq = policy.decide_cred_environment(service, uid, None, narrowed)
            store, _, key = self.engine.credentials.acquire_plan(
                call.config, service, uid, creq, oids.KRB5
            )
        except GssFailure:
            return None  # the generic path fails the same way, and says why
        plan = (key, policy.keytab_files(store))
        if len(self._plans) >= _MAX_MEMO:
            self._plans.clear()
        self._plans[memo] = plan
        return plan

    # -- ACCEPT_SEC_CONTEXT ---------------------------------------------------------

    def accept(self, call: CallInfo, arg: AcceptCall) -> DirectResult | Pending | None:
        """`proc_accept_sec_context` of the interposer (its handle's pooled
        credential) or of the kernel (the default credential, from the
        acquire cache and the pool)."""
        service = call.service
        assert service is not None
        inline = self.engine.inline
        if not inline.allowed(service):
            return None
        self._same_config(call.config)
        handle = arg.handle
        if arg.kernel:
            gcred = self._cached(call, service, int(CredUsage.ACCEPT))
            if gcred is None:
                return None
            handle = gcred.cred_handle_reference
        lease = self._lease(call, service, handle, from_client=not arg.kernel)
        if lease is None:
            return None  # importing it may read a ccache: the generic path's thread
        started = inline.guard.clock()
        try:
            return self._accept(call, service, arg, lease)
        except Exception as exc:
            return self._failure(call, exc)
        finally:
            inline.timed(service, started, call.log)

    def _lease(
        self, call: CallInfo, service: Service, handle: bytes, *, from_client: bool
    ) -> CredLease | None:
        """`Credentials.lease_handle` when the handle's object is in the pool."""
        keytabs = self._keytabs.get(service.name)
        if keytabs is None:
            keytabs = self._keytabs[service.name] = policy.keytab_files(dict(service.cred_store))
        key = handle_pool_key(service.name, call.peer.uid, handle)
        fp = fingerprint(keytabs)
        pool = self.engine.credentials.pool
        generation = pool.generation
        creds = pool.checkout(key, fp)
        if creds is None:
            return None
        return CredLease(
            creds,
            None,
            key,
            None,
            fp,
            reference=handle,
            from_client=from_client,
            generation=generation,
        )

    def _failure(self, call: CallInfo, exc: Exception) -> DirectResult:
        """The failure reply, as the generic path's one catch-all (gss.program)."""
        status = status_for_exception(exc, oids.KRB5, call.log, call=call)
        failure = encode_bytes(gp.encode_gssx_res_accept_sec_context, _ACCEPT_FAILURE(status))
        return DirectResult(failure, status.major_status)

    def _accept(
        self, call: CallInfo, service: Service, arg: AcceptCall, lease: CredLease
    ) -> DirectResult | Pending:
        """Accept, then the reply; the lease is released when it is written."""
        handed_on = False
        try:
            step = api.accept_sec_context(arg.input_token, lease.creds, None, None)
            complete = not step.continue_needed
            if complete and call.log.isEnabledFor(logging.INFO):
                call.log.info(
                    "accepted a context from %s for service '%s'",
                    shown_name(step.initiator),
                    service.name,
                )
            if not arg.kernel:
                return self._reply(call, service, arg, step)
            exported: bytes | None = None
            found = None
            if complete and step.initiator is not None:
                # Exported once, for linux_creds_v1 and src_name (as the generic path).
                exported = api.export_name(step.initiator)
                found = self.engine.local_creds.get(exported) if exported else None
                if found is None:
                    # NSS may wait: the rest goes on on the service's threads.
                    handed_on = True
                    rest = _KernelRest(self, call, service, step, lease, exported)
                    return Pending(rest.on_thread)
            return self._kernel_reply(call, step, exported, found, _server(arg, lease.reference))
        finally:
            if not handed_on:
                self.engine.credentials.release(lease)

    def _reply(
        self, call: CallInfo, service: Service, arg: AcceptCall, step: api.StepResult
    ) -> DirectResult:
        """The interposer's reply, written from MIT's results."""
        mech = step.mech or oids.KRB5
        context = self._context(step, mech, not step.continue_needed, _server(arg, arg.handle))
        delegated = _FALSE
        if arg.ret_deleg_cred and step.delegated is not None and step.flags & _DELEG_FLAG:
            sealed, _, _ = self.engine.credentials.sealer.seal_creds(
                call.config, service, call.peer.uid, step.delegated
            )
            delegated = _TRUE + encode_bytes(gp.encode_gssx_cred, sealed)
        major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
        status = self._status(context[0] or oids.KRB5, major)
        encoded = b"".join(
            (status, _TRUE, context[1], _TRUE, _opaque(step.token), delegated, _NONE)
        )
        return DirectResult(encoded, major)

    def _kernel_reply(
        self,
        call: CallInfo,
        step: api.StepResult,
        exported: bytes | None,
        found: tuple[bytes, LinuxCreds] | None,
        server: _Server | None,
    ) -> DirectResult:
        """The kernel's reply: linux_creds_v1, the lucid context (both as
        `proc_accept_sec_context` makes them), no delegated credential."""
        complete = not step.continue_needed
        extra = _NONE
        if complete:
            initiator = step.initiator
            if initiator is None:
                value = procedures.unmapped_linux_creds(call.log)
            else:
                if found is None:
                    found = procedures.look_up_linux_creds(self.engine, initiator, exported or b"")
                value = procedures.linux_creds_value(call.log, initiator, found)
            extra = b"".join((_TRUE, _opaque(LINUX_CREDS_V1), _opaque(value)))
        ctx_mech, ctx = self._kernel_context(step, complete, exported, server)
        if len(step.token) > procedures.KERNEL_MAX_OUTPUT_TOKEN:
            raise GssFailure(
                GSS_S_FAILURE,
                EINVAL,
                f"output token exceeds the kernel's {procedures.KERNEL_MAX_OUTPUT_TOKEN}",
            )
        major = GSS_S_CONTINUE_NEEDED if step.continue_needed else GSS_S_COMPLETE
        status = self._status(ctx_mech, major)
        encoded = b"".join(
            (
                status,
                _TRUE,
                ctx,
                _TRUE,
                _opaque(step.token),
                _FALSE,
                extra,
            )
        )
        return DirectResult(encoded, major)

    def _kernel_context(
        self, step: api.StepResult, complete: bool, exported: bytes | None, server: _Server | None
    ) -> tuple[bytes, bytes]:
        """The kernel's `gssx_ctx` (the lucid context, names without their
        composite exports), as `procedures.export_context` makes it: its
        mech and its encoding; the target kept as in `_context`."""
        mech = step.mech or oids.KRB5
        target = self._targets.get(server) if complete and server is not None else None
        if target is not None:
            token = procedures.context_token(step.context, _KERNEL_TYPES, complete=True)
            initiator = convert.name_parts(step.initiator, kernel=True, exported=exported)
            return mech, self._gssx_ctx(token, mech, (initiator, target), step.lifetime, step.flags)
        ctx = procedures.export_context(
            step.context,
            _KERNEL_TYPES,
            mech=mech,
            locally_initiated=False,
            complete=complete,
            initiator=step.initiator if complete else None,
            initiator_export=exported,
        )
        name = ctx.targ_name
        if server is not None and ctx.open and name.display_name:
            parts = (name.display_name, name.name_type, name.exported_name)
            self._keep(server, (*parts, name.exported_composite_name))
        return ctx.mech or oids.KRB5, encode_bytes(gp.encode_gssx_ctx, ctx)

    def _keep(self, server: _Server, target: convert.NameParts) -> None:
        if len(self._targets) >= _MAX_MEMO:
            self._targets.clear()
        self._targets[server] = target

    def _context(
        self, step: api.StepResult, mech: bytes, complete: bool, server: _Server | None
    ) -> tuple[bytes, bytes]:
        """The `gssx_ctx` of an accepted (or partial) context, as
        `procedures._export_context` and `convert.gssx_ctx` make it for an
        application: its mech and its encoding. `server`: the handle and
        the ticket's server principal (`krb5_token.ticket_server`), which
        decide the target's name; when its wire form is known, the rest of
        what `inquire_context` would say is the accept's own results (MIT's
        same answers: tests/integration/test_gss_procedures.py)."""
        initiator = step.initiator if complete else None
        target = self._targets.get(server) if complete and server is not None else None
        if target is not None:
            token = api.export_sec_context(step.context)
            known = (convert.name_parts(initiator), target)
            return mech, self._gssx_ctx(token, mech, known, step.lifetime, step.flags)
        info = api.inquire_context(step.context, initiator)
        token = api.export_sec_context(step.context)
        if info is None:
            tail = (_EMPTY_NAME, _EMPTY_NAME, _U64.pack(0), _U64.pack(0), _FALSE, _FALSE, _NONE)
            head = b"".join((_opaque(token), _opaque(b""), _FALSE))
            return mech, b"".join((head, _opaque(mech), *tail))
        ctx_mech = info.mech or mech
        target = convert.name_parts(info.target)
        if server is not None and target is not None and info.complete:
            self._keep(server, target)
        names = (convert.name_parts(info.initiator), target)
        return ctx_mech, self._gssx_ctx(
            token,
            ctx_mech,
            names,
            info.lifetime,
            info.flags,
            locally_initiated=info.locally_initiated,
            complete=info.complete,
        )

    @staticmethod
    def _gssx_ctx(
        token: bytes,
        mech: bytes,
        names: tuple[convert.NameParts | None, convert.NameParts | None],
        lifetime: int,
        flags: int,
        *,
        locally_initiated: bool = False,
        complete: bool = True,
    ) -> bytes:
        return b"".join(
            (
                _opaque(token),
                _opaque(b""),
                _FALSE,
                _opaque(mech),
                _name(names[0]),
                _name(names[1]),
                _U64.pack(lifetime),
                _U64.pack(flags),
                _TRUE if locally_initiated else _FALSE,
                _TRUE if complete else _FALSE,
                _NONE,
            )
        )


class _KernelRest:
    """The rest of a kernel accept whose initiator's local user is not
    cached: the NSS lookup and the reply, on the service's threads."""

    def __init__(
        self,
        calls: DirectCalls,
        call: CallInfo,
        service: Service,
        step: api.StepResult,
        lease: CredLease,
        exported: bytes,
    ) -> None:
        self.calls = calls
        self.call = call
        self.service = service
        self.step = step
        self.lease = lease
        self.exported = exported
        #: `finish` began (it releases the lease itself)
        self.started = False

    def finish(self) -> DirectResult:
        """On a worker thread."""
        self.started = True
        try:
            # On a worker thread: the targets kept belong to the loop's thread.
            return self.calls._kernel_reply(self.call, self.step, self.exported, None, None)
        except Exception as exc:
            return self.calls._failure(self.call, exc)
        finally:
            self.calls.engine.credentials.release(self.lease)

    async def on_thread(self) -> DirectResult:
        """The `Pending` run: `finish` on the service's threads."""
        try:
            return await self.calls.engine.run(self.call.config, self.service, self.finish)
        except Exception as exc:  # the executor refused the work: finish never ran
            if not self.started:
                self.calls.engine.credentials.release(self.lease)
            return self.calls._failure(self.call, exc)


def direct_paths(engine: GssEngine, version: int) -> dict[tuple[int, int], DirectPath]:
    """The direct paths of program 400112 (`ProgramService.direct`)."""
    calls = DirectCalls(engine)
    return {
        (version, gp.GSSX_ACQUIRE_CRED): DirectPath(parse_acquire, calls.acquire),
        (version, gp.GSSX_ACCEPT_SEC_CONTEXT): DirectPath(parse_accept, calls.accept),
    }
