"""The gss layer's shared machinery: executor, handle keys, sealed creds, acquisition.

`GssEngine` is created once per daemon (by `program.gss_proxy_service`) and
outlives configuration reloads:

* it owns the worker threads every blocking GSSAPI call runs in
  (`executors.Executor` named `gss`), sized
  from `config.globals.worker_threads` (re-created when a reload changes it);
* it loads the handle key file `<state_dir>/handle-keys` and re-reads it when
  the file changes on disk (rotation by another process) or `state_dir` moves;
* it seals credentials into `GssxCred` handles and opens them again
  (`handles.seal` / `open_handle`, bound to the peer uid and to the
  service's `handle_scope`). The plaintext is our envelope around
  `gss_export_cred`, so long-term material only ever leaves the daemon
  sealed; a handle that does not open (other uid or scope, tampered,
  unknown key, expired) is logged with the reason and treated as "no
  credential";
* it acquires credentials per `policy.CredRequest` (cred_store, impersonate)
  with `credcache` in front, and leases credential objects to one request at
  a time; for a service whose initiator key sits on a token, a cache miss
  first makes sure its ccache holds a TGT (`pkinit_creds`, PKINIT).

`Request` carries what one call knows (service, peer uid, config, log,
and whether it runs inline on the event loop).

The inline fast path (`program.py` decides when to try it): a call of a
service that `inline_safe_service` accepts runs on the event-loop thread
with `Request.inline` set. The procedures and the engine raise `WouldWaitError` at
the first step that could wait for a KDC, NSS or a credential not yet
imported (an acquire cache miss, a pool miss, a user name lookup), always
before any side effect, and the call then runs again in a worker thread as
before. A step that can only be reached after a side effect (the kernel's
linux_creds lookup after the accept consumed its token) returns `Deferred`
instead: the rest runs in a thread. `run_inline` times every inline call and
`gss.inline_guard` decides when a service goes back to the threads.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from gssproxy_py.config.model import Config, CredUsage, Service
from gssproxy_py.executors import Executor
from gssproxy_py.gss import api, convert, handles, keyfile, oids, policy
from gssproxy_py.gss.credcache import (
    AcquireCache,
    CredPool,
    Fingerprint,
    TtlCache,
    fingerprint,
    handle_digest,
)
from gssproxy_py.gss.inline_guard import InlineGuard
from gssproxy_py.gss.krb5cc import hold_profile
from gssproxy_py.gss.linux_creds import LinuxCreds
from gssproxy_py.gss.namespaced import is_namespaced
from gssproxy_py.gss.pkinit_creds import PkinitCreds, pkinit_configured
from gssproxy_py.gss.status import (
    EACCES,
    ENOENT,
    GSS_S_BAD_MECH,
    GSS_S_FAILURE,
    GSS_S_NO_CRED,
    GssFailure,
)
from gssproxy_py.proto.gss_proxy import GssxCred, GssxCredElement, GssxOIDSet

__all__ = [
    "CredLease",
    "Deferred",
    "GssEngine",
    "Request",
    "WouldWaitError",
    "handle_scope",
    "inline_safe_service",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")
_A = TypeVar("_A")

HANDLE_KEYS_FILE = "handle-keys"
#: Envelope of a sealed plaintext: version byte, then the gss_export_cred token.
_ENVELOPE_V1 = b"\x01"
#: How long a linux_creds lookup (local name, uid, gid, groups) is reused.
LOCAL_CREDS_TTL = 15.0
#: ccache types that are local files, memory or kernel keyrings (KCM, API and
#: unknown types may talk to another daemon: such services never run inline).
_LOCAL_CCACHE_TYPES = frozenset({"FILE", "MEMORY", "KEYRING", "DIR"})


class WouldWaitError(Exception):
    """An inline call reached a step that could wait; nothing has happened
    yet, so the whole call runs again in a worker thread."""


@dataclass(frozen=True, slots=True)
class Deferred:
    """The result of an inline call whose last step could wait (it runs
    `finish` in a worker thread, whose return value is the result)."""

    finish: Callable[[], object]


def inline_safe_service(service: Service) -> bool:
    """Whether this service's calls may be tried inline on the event loop.

    Not for namespaced services (their calls run in their namespace), PKINIT
    from a token (may contact the KDC even on the acquire path), `%u` in the
    cred_store (a user name lookup through NSS), or a ccache that is not a
    local file, memory or keyring (KCM talks to a daemon).
    """
    if is_namespaced(service) or pkinit_configured(service):
        return False
    for key, value in service.cred_store:
        if "%u" in value:
            return False
        if key == "ccache":
            kind, sep, _ = value.partition(":")
            if sep and kind.upper() not in _LOCAL_CCACHE_TYPES:
                return False
    return True


@dataclass(frozen=True, slots=True)
class Request:
    """One call as the gss layer sees it."""

    service: Service
    uid: int
    config: Config
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    #: Running on the event-loop thread: raise WouldWaitError before anything that could wait.
    inline: bool = False


@dataclass(slots=True)
class CredLease:
    """A credential object checked out for one request.

    `token` is the plaintext export it was made from (to detect changes for
    ccache sync); `discard` keeps a modified object out of the pool.
    """

    creds: api.Creds
    token: bytes | None
    pool_key: Hashable | None
    expires_at: float | None
    fingerprint: Fingerprint
    reference: bytes = b""
    discard: bool = False
    from_client: bool = False


@dataclass(slots=True)
class _KeyState:
    path: Path | None = None
    stamp: tuple[int, int, int] | None = None
    keys: keyfile.HandleKeys | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def handle_scope(service: Service) -> str:
    """What a sealed handle is bound to besides the uid.

    Services naming the same keytab share a scope, others are their own. The
    C gssproxy encrypts handles with the service keytab's key, so a handle
    one service issued works at every service with that keytab, for any
    uid; gssproxy's t_impersonate relies on it (S4U2Self through a
    protocol-transition-only service, S4U2Proxy with the stored result
    through a delegation-only one). We keep that, and unlike gssproxy keep
    the uid binding. The unexpanded `keytab` value is used (without a
    `FILE:` prefix), so renaming a service does not invalidate its handles.
    """
    keytabs = service.cred_store_values("keytab")
    if keytabs:
        value = keytabs[0]
        if value[:5].upper() == "FILE:":
            value = value[5:]
        return f"keytab:{value}"
    return f"service:{service.name}"


def pick_mech(desired: GssxOIDSet) -> bytes:
    """krb5 for an empty set or one naming a krb5 OID; anything else is BAD_MECH."""
    if not desired:
        return oids.KRB5
    for mech in desired:
        if mech in oids.KRB5_FAMILY:
            return oids.KRB5
    raise GssFailure(GSS_S_BAD_MECH, ENOENT, "only the krb5 mechanism is served")


class GssEngine:
    """State shared by all gss procedures (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        self._executor_lock = threading.Lock()
        self._workers = max(1, config.globals.worker_threads)
        self._executor = Executor("gss", self._workers)
        self._keys = _KeyState()
        self.acquired = AcquireCache()
        self.pool: CredPool[api.Creds] = CredPool(max_idle_per_key=max(2, self._workers))
        self._mechs: tuple[tuple[api.MechDescription, ...], tuple[api.AttrDescription, ...]] | None
        self._mechs = None
        self._closed = False
        # Keeps libkrb5 from parsing krb5.conf again in every GSSAPI call.
        hold_profile()
        #: PKINIT from a token key for services that have one (gss.pkinit_creds)
        self.pkinit = PkinitCreds(None)
        #: linux_creds per exported initiator name: (local user, creds)
        self.local_creds: TtlCache[tuple[bytes, LinuxCreds]] = TtlCache(LOCAL_CREDS_TTL)
        # Inline fast path state, touched on the event-loop thread only.
        # Keyed by name (unique in a configuration; cleared on reload):
        # hashing a Service hashes every field, on every call.
        self._inline_safe: dict[str, bool] = {}
        self.inline_guard = InlineGuard()

    # -- inline fast path -------------------------------------------------

    def inline_allowed(self, service: Service) -> bool:
        """May a call of this service be tried inline now (event loop only)?"""
        if not self.inline_guard.allowed(service.name):
            return False
        safe = self._inline_safe.get(service.name)
        if safe is None:
            safe = self._inline_safe[service.name] = inline_safe_service(service)
        return safe

    def run_inline(self, fn: Callable[[GssEngine, Request, _A], _T], req: Request, arg: _A) -> _T:
        """fn(self, req, arg) here, timed; WouldWaitError and failures propagate."""
        guard = self.inline_guard
        started = guard.clock()
        try:
            return fn(self, req, arg)
        finally:
            took = guard.clock() - started
            if guard.record(req.service.name, took):
                req.log.info(
                    "inline call took %.1f ms; service '%s' runs in threads for %gs",
                    took * 1000,
                    req.service.name,
                    guard.cooldown,
                )

    def forget_inline(self) -> None:
        """Drop the inline verdicts and cached linux_creds (configuration reloaded)."""
        self._inline_safe.clear()
        self.inline_guard.clear()
        self.local_creds.clear()

    # -- executor ---------------------------------------------------------

    def executor_for(self, config: Config) -> Executor:
        wanted = max(1, config.globals.worker_threads)
        with self._executor_lock:
            if wanted != self._workers and not self._closed:
                # Work already queued finishes on the old pool.
                self._executor.shutdown(wait=False)
                self._executor = Executor("gss", wanted)
                self._workers = wanted
                self.pool.max_idle_per_key = max(2, wanted)
            return self._executor

    async def run(
        self, config: Config, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        return await self.executor_for(config).run(functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Stop the worker threads (queued work is cancelled) and drop cached creds."""
        with self._executor_lock:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)
        self.acquired.clear()
        self.pool.clear()

    # -- mechanisms ---------------------------------------------------------

    def mechs_known(self) -> bool:
        return self._mechs is not None

    def mechs(self) -> tuple[tuple[api.MechDescription, ...], tuple[api.AttrDescription, ...]]:
        if self._mechs is None:
            self._mechs = api.describe_mechs()
        return self._mechs

    # -- handle keys ---------------------------------------------------------

    def keys(self, config: Config) -> keyfile.HandleKeys:
        path = Path(config.globals.state_dir) / HANDLE_KEYS_FILE
        state = self._keys
        with state.lock:
            try:
                st = os.stat(path)
                stamp: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
            except OSError:
                stamp = None
            if state.keys is None or state.path != path or stamp is None or stamp != state.stamp:
                state.keys = keyfile.load_or_create(path)
                state.path = path
                try:
                    st = os.stat(path)
                    state.stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
                except OSError:
                    state.stamp = None
            return state.keys

    # -- sealing ---------------------------------------------------------------

    def seal_creds(self, req: Request, creds: api.Creds) -> tuple[GssxCred, bytes, api.CredInfo]:
        """Describe, export and seal `creds` for this service's scope and uid."""
        info = api.inquire_cred(creds)
        token = api.export_cred(creds)
        expires = info.expires_at()
        blob = handles.seal(
            self.keys(req.config),
            _ENVELOPE_V1 + token,
            service=handle_scope(req.service),
            uid=req.uid,
            not_after=None if expires is None else int(expires),
        )
        return self.gssx_cred(info, blob), token, info

    @staticmethod
    def gssx_cred(info: api.CredInfo, blob: bytes) -> GssxCred:
        return GssxCred(
            desired_name=convert.gssx_name(info.name),
            elements=convert.gssx_cred_elements(info),
            cred_handle_reference=blob,
            needs_release=False,
        )

    def open_blob(self, req: Request, blob: bytes) -> bytes | None:
        """The export token in a sealed handle, or None (logged) if it does not open."""
        if not blob:
            return None
        try:
            plain = handles.open_handle(
                self.keys(req.config),
                blob,
                service=handle_scope(req.service),
                uid=req.uid,
                now=int(time.time()),
            )
        except handles.HandleRejected as exc:
            req.log.warning(
                "credential handle not honoured (%s): %s; treating as no credential",
                exc.reason,
                exc,
            )
            return None
        if not plain.startswith(_ENVELOPE_V1):
            req.log.warning("credential handle has an unknown envelope; treating as no credential")
            return None
        return plain[len(_ENVELOPE_V1) :]

    # -- leases ------------------------------------------------------------------

    def _pool_key(self, req: Request, blob: bytes) -> Hashable:
        return (req.service.name, req.uid, handle_digest(blob))

    def lease_handle(self, req: Request, cred: GssxCred | None) -> CredLease | None:
        """A credential object for a client's handle; None if absent or not honoured."""
        if cred is None or not cred.cred_handle_reference:
            return None
        blob = cred.cred_handle_reference
        key = self._pool_key(req, blob)
        fp = fingerprint(policy.keytab_files(dict(req.service.cred_store)))
        obj = self.pool.checkout(key, fp)
        if obj is None and req.inline:
            raise WouldWaitError("credential object not in the pool")
        if obj is not None:
            # The token is exported again only if a ccache sync needs it.
            lease = CredLease(obj, None, key, None, fp, reference=blob, from_client=True)
        else:
            token = self.open_blob(req, blob)
            if token is None:
                return None
            obj = api.import_cred(token)
            info = api.inquire_cred(obj)
            lease = CredLease(
                obj, token, key, info.expires_at(), fp, reference=blob, from_client=True
            )
        self._apply_element_options(lease, cred.elements)
        return lease

    def _apply_element_options(
        self, lease: CredLease, elements: tuple[GssxCredElement, ...]
    ) -> None:
        from gssproxy_py.gss.options import KRB5_SET_ALLOWED_ENCTYPE_VALUES, KRB5_SET_NO_CI_FLAGS

        for element in elements:
            if element.mech not in oids.KRB5_FAMILY:
                continue
            for opt in element.options:
                if opt.option == KRB5_SET_ALLOWED_ENCTYPE_VALUES:
                    value = opt.value
                    count = len(value) // 4
                    enctypes = [
                        int.from_bytes(value[i * 4 : i * 4 + 4], "little", signed=True)
                        for i in range(count)
                    ]
                    api.set_allowable_enctypes(lease.creds, enctypes)
                    lease.discard = True
                elif opt.option == KRB5_SET_NO_CI_FLAGS:
                    api.set_no_ci_flags(lease.creds)
                    lease.discard = True

    def release(self, lease: CredLease | None) -> None:
        """Return a leased object to the pool (unless it was modified or has no key)."""
        if lease is None or lease.discard or lease.pool_key is None:
            return
        self.pool.checkin(lease.pool_key, lease.creds, lease.expires_at, lease.fingerprint)

    # -- acquisition ---------------------------------------------------------------

    def acquire_sealed(
        self, req: Request, creq: policy.CredRequest, mech: bytes
    ) -> tuple[GssxCred, CredLease | None]:
        """Sealed creds for a request decision, from the cache when still good.

        On a miss the fresh object is returned as a lease too, so the request
        that acquired it (e.g. an init with default creds) uses it directly.
        """
        private = policy.private_ccache_name()
        store = policy.build_store(req.service, creq, private_ccache=private)
        pkinit = self.pkinit.plan(req.config, req.service, creq, store)
        if pkinit is not None:
            store["ccache"] = pkinit.ccache
        key_store = tuple(sorted((k, v) for k, v in store.items() if v != private))
        key = (req.service, req.uid, creq, mech, key_store)
        fp = fingerprint(policy.keytab_files(store))
        hit = self.acquired.get(key, fp, min_lifetime=req.service.min_lifetime)
        if hit is not None:
            req.log.debug("acquire: cached credential for %s", _describe(creq))
            return hit, None
        if req.inline:
            raise WouldWaitError("credential not in the acquire cache")
        try:
            if pkinit is not None:
                self.pkinit.ensure(pkinit, req.log)
            creds = self._acquire(req, creq, store, mech)
            # Re-import so the object owns a copy of the private ccache (MIT
            # imports MEMORY ccaches by value), then destroy the original.
            token = api.export_cred(creds)
            owned = api.import_cred(token)
        finally:
            if store.get("ccache") == private:
                from gssproxy_py.gss.krb5cc import destroy_memory_ccache

                destroy_memory_ccache(private)
        gcred, token, info = self.seal_creds(req, owned)
        expires = info.expires_at()
        if expires is not None and expires - req.service.min_lifetime <= time.time():
            raise GssFailure(
                GSS_S_NO_CRED,
                EACCES,
                f"acquired credential expires within min_lifetime ({req.service.min_lifetime}s)",
            )
        self.acquired.put(key, gcred, expires, fp)
        req.log.info("acquire: new credential for %s", _describe(creq))
        pool_key = self._pool_key(req, gcred.cred_handle_reference)
        svc_fp = fingerprint(policy.keytab_files(dict(req.service.cred_store)))
        lease = CredLease(
            owned, token, pool_key, expires, svc_fp, reference=gcred.cred_handle_reference
        )
        return gcred, lease

    def lease_acquired(self, req: Request, creq: policy.CredRequest, mech: bytes) -> CredLease:
        gcred, lease = self.acquire_sealed(req, creq, mech)
        if lease is not None:
            return lease
        got = self.lease_handle(req, gcred)
        if got is None:
            # Our own cached handle did not open: keys rotated away. Start over.
            self.acquired.clear()
            gcred, lease = self.acquire_sealed(req, creq, mech)
            if lease is None:  # pragma: no cover - cache was just cleared
                raise GssFailure(GSS_S_FAILURE, 0, "credential cache inconsistency")
            return lease
        got.from_client = False
        return got

    def _acquire(
        self, req: Request, creq: policy.CredRequest, store: dict[str, str], mech: bytes
    ) -> api.Creds:
        name = None if creq.name is None else api.import_name(creq.name.value, creq.name.name_type)
        if not creq.impersonate:
            return api.acquire_cred_from(store, name, creq.usage, mech)
        assert name is not None  # impersonation always names the user
        # Service-driven S4U2Self (behaviour notes §3.6).
        imp_name = None
        if req.service.krb5_principal:
            imp_name = api.import_name(
                req.service.krb5_principal.encode("utf-8"), oids.NT_KRB5_PRINCIPAL
            )
        impersonator = api.acquire_cred_from(store, imp_name, CredUsage.BOTH, mech)
        imp_info = api.inquire_cred(impersonator)
        user = api.canonicalize(name, mech)
        if imp_info.name is not None and _same_name(imp_info.name, user, mech):
            # MIT refuses S4U2Self to oneself; the impersonator's own creds are the answer.
            return api.acquire_cred_from(store, name, creq.usage, mech)
        s4u = api.acquire_cred_impersonate_name(impersonator, user, CredUsage.INITIATE, mech)
        if imp_info.name is None:
            return s4u
        # Turn the evidence ticket into a usable delegated cred: init to ourselves
        # with it, accept with the impersonator, keep the delegated cred (S4U2Proxy).
        step = api.init_sec_context(imp_info.name, s4u, None, mech, 1, 0, None, None)
        accepted = api.accept_sec_context(step.token, impersonator, None, None)
        if accepted.delegated is None:
            raise GssFailure(
                GSS_S_FAILURE, EACCES, "impersonation did not yield a delegated credential"
            )
        return accepted.delegated


def _same_name(a: api.Name, b: api.Name, mech: bytes) -> bool:
    try:
        return api.display_name(api.canonicalize(a, mech))[0] == api.display_name(b)[0]
    except GssFailure:
        return False


def _describe(creq: policy.CredRequest) -> str:
    name = "default" if creq.name is None else creq.name.value.decode("utf-8", "replace")
    how = "service keytab" if creq.use_service_keytab else "user"
    extra = ", impersonating" if creq.impersonate else ""
    return f"uid {creq.target_uid} ({how}{extra}), name {name}, usage {creq.usage.name.lower()}"
