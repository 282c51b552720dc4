"""Credentials for one call: acquiring, sealing, leasing pooled objects.

`Credentials` acquires credentials per `policy.CredRequest` (cred_store,
impersonate) with `credcache.AcquireCache` in front, seals them for the
client (`sealing.Sealer`), and leases credential objects to one call at a
time (`credcache.CredPool`, so no object is used by two threads at once).
For a service whose initiator key sits on a token, a cache miss first makes
sure its ccache holds a TGT (`pkinit_creds`, PKINIT).

The two steps here that may wait, an acquisition the cache cannot answer
and a handle whose object is not in the pool (importing it may read a
ccache), are each preceded by `req.steps.may_wait`: on the event loop the
call continues from there on a worker thread (see `gss.inline`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass

from gssproxy_py.config.model import Config, CredUsage, Service
from gssproxy_py.gss import api, policy
from gssproxy_py.gss.credcache import (
    AcquireCache,
    AcquireKey,
    CredPool,
    Fingerprint,
    fingerprint,
    handle_digest,
)
from gssproxy_py.gss.inline import Steps
from gssproxy_py.gss.pkinit_creds import PkinitCreds, PkinitPlan
from gssproxy_py.gss.sealing import Sealer
from gssproxy_py.gss.status import EACCES, GSS_S_FAILURE, GSS_S_NO_CRED, GssFailure
from gssproxy_py.proto.gss_proxy import GssxCred, GssxCredElement
from gssproxy_py.vocab import oids
from gssproxy_py.vocab.gssx_options import KRB5_SET_ALLOWED_ENCTYPE_VALUES, KRB5_SET_NO_CI_FLAGS

__all__ = ["CredLease", "Credentials", "Request", "handle_pool_key"]

#: Stands for the private MEMORY ccache of an acquisition until it is named.
_PRIVATE_UNNAMED = "MEMORY:gssproxy-py-unnamed"


@dataclass(frozen=True, slots=True)
class Request:
    """One call as the gss layer sees it."""

    service: Service
    uid: int
    config: Config
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger
    #: where the call may wait (`gss.inline`)
    steps: Steps


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
    #: the pool's generation when the object was checked out or made: a
    #: reload in between (`Credentials.forget`) keeps it out of the pool
    generation: int | None = None


def handle_pool_key(service: str, uid: int, blob: bytes) -> Hashable:
    """The pool's key of a sealed handle's object: per service and uid (a
    handle presented by another uid or through another service is never a
    pool hit), by the handle's digest (`Credentials.pool_key`, `gss.direct`)."""
    return (service, uid, handle_digest(blob))


class Credentials:
    """Acquisition, sealing and leases (see the module docstring). Thread-safe."""

    def __init__(self, workers: int) -> None:
        self.sealer = Sealer()
        self.acquired = AcquireCache()
        self.pool: CredPool[api.Creds] = CredPool(max_idle_per_key=max(2, workers))
        #: PKINIT from a token key for services that have one (gss.pkinit_creds)
        self.pkinit = PkinitCreds(None)

    def resize(self, workers: int) -> None:
        """Keep as many idle objects per handle as there are threads to use them."""
        self.pool.max_idle_per_key = max(2, workers)

    def forget(self) -> None:
        """Drop cached credentials and remembered PKINIT failures (reload, close)."""
        self.acquired.clear()
        self.pool.clear()
        self.pkinit.forget()

    # -- sealing ------------------------------------------------------------------

    def seal(self, req: Request, creds: api.Creds) -> tuple[GssxCred, bytes, api.CredInfo]:
        """Describe, export and seal `creds` for this caller."""
        return self.sealer.seal_creds(req.config, req.service, req.uid, creds)

    def open(self, req: Request, blob: bytes) -> bytes | None:
        """The export token in a sealed handle of this caller, or None (logged)."""
        return self.sealer.open_blob(req.config, req.service, req.uid, blob, req.log)

    # -- leases ------------------------------------------------------------------

    @staticmethod
    def pool_key(req: Request, blob: bytes) -> Hashable:
        return handle_pool_key(req.service.name, req.uid, blob)

    async def lease_handle(self, req: Request, cred: GssxCred | None) -> CredLease | None:
        """A credential object for a client's handle; None if absent or not honoured."""
        if cred is None or not cred.cred_handle_reference:
            return None
        blob = cred.cred_handle_reference
        key = self.pool_key(req, blob)
        fp = fingerprint(policy.keytab_files(dict(req.service.cred_store)))
        generation = self.pool.generation
        obj = self.pool.checkout(key, fp)
        if obj is not None:
            # The token is exported again only if a ccache sync needs it.
            lease = CredLease(
                obj, None, key, None, fp, reference=blob, from_client=True, generation=generation
            )
        else:
            await req.steps.may_wait("credential object not in the pool")
            token = self.open(req, blob)
            if token is None:
                return None
            obj = api.import_cred(token)
            info = api.inquire_cred(obj)
            lease = CredLease(
                obj,
                token,
                key,
                info.expires_at(),
                fp,
                reference=blob,
                from_client=True,
                generation=generation,
            )
        _apply_element_options(lease, cred.elements)
        return lease

    def release(self, lease: CredLease | None) -> None:
        """Return a leased object to the pool (unless it was modified or has no key)."""
        if lease is None or lease.discard or lease.pool_key is None:
            return
        self.pool.checkin(
            lease.pool_key, lease.creds, lease.expires_at, lease.fingerprint, lease.generation
        )

    # -- acquisition ---------------------------------------------------------------

    def acquire_plan(
        self, config: Config, service: Service, uid: int, creq: policy.CredRequest, mech: bytes
    ) -> tuple[dict[str, str], PkinitPlan | None, AcquireKey]:
        """The store of an acquisition, its PKINIT plan, and its key in the
        acquire cache (the same for the same arguments under one
        configuration: `gss.direct` keeps the key and the store's keytabs)."""
        # The private ccache gets its (random) name only on a miss, when it
        # is made; a hit needs none, and the cache key leaves it out either way.
        store = policy.build_store(service, creq, private_ccache=_PRIVATE_UNNAMED)
        pkinit = self.pkinit.plan(config, service, creq, store)
        if pkinit is not None:
            store["ccache"] = pkinit.ccache
        key_store = tuple(sorted((k, v) for k, v in store.items() if v != _PRIVATE_UNNAMED))
        return store, pkinit, AcquireKey((service, uid, creq, mech, key_store))

    async def acquire_sealed(
        self, req: Request, creq: policy.CredRequest, mech: bytes
    ) -> tuple[GssxCred, CredLease | None]:
        """Sealed creds for a request decision, from the cache when still good.

        On a miss the fresh object is returned as a lease too, so the request
        that acquired it (e.g. an init with default creds) uses it directly.
        """
        store, pkinit, key = self.acquire_plan(req.config, req.service, req.uid, creq, mech)
        fp = fingerprint(policy.keytab_files(store))
        generation = self.pool.generation
        hit = self.acquired.get(key, fp, min_lifetime=req.service.min_lifetime)
        if hit is not None:
            if req.log.isEnabledFor(logging.DEBUG):  # _describe only for a line written
                req.log.debug("acquire: cached credential for %s", _describe(creq))
            return hit, None
        await req.steps.may_wait("credential not in the acquire cache")
        private = policy.private_ccache_name()
        if store.get("ccache") == _PRIVATE_UNNAMED:
            store["ccache"] = private
        try:
            if pkinit is not None:
                self.pkinit.ensure(pkinit, req.log)
            creds = _acquire(req.service, creq, store, mech)
            # Re-import so the object owns a copy of the private ccache (MIT
            # imports MEMORY ccaches by value), then destroy the original.
            owned = api.import_cred(api.export_cred(creds))
        finally:
            if store.get("ccache") == private:
                from gssproxy_py.gss.krb5cc import destroy_memory_ccache

                destroy_memory_ccache(private)
        gcred, token, info = self.seal(req, owned)
        expires = info.expires_at()
        if expires is not None and expires - req.service.min_lifetime <= time.time():
            raise GssFailure(
                GSS_S_NO_CRED,
                EACCES,
                f"acquired credential expires within min_lifetime ({req.service.min_lifetime}s)",
            )
        self.acquired.put(key, gcred, expires, fp)
        req.log.info("acquire: new credential for %s", _describe(creq))
        pool_key = self.pool_key(req, gcred.cred_handle_reference)
        svc_fp = fingerprint(policy.keytab_files(dict(req.service.cred_store)))
        lease = CredLease(
            owned,
            token,
            pool_key,
            expires,
            svc_fp,
            reference=gcred.cred_handle_reference,
            generation=generation,
        )
        return gcred, lease

    async def lease_acquired(
        self, req: Request, creq: policy.CredRequest, mech: bytes
    ) -> CredLease:
        """A leased object for a request decision (acquired now or from the cache)."""
        gcred, lease = await self.acquire_sealed(req, creq, mech)
        if lease is not None:
            return lease
        got = await self.lease_handle(req, gcred)
        if got is None:
            # Our own cached handle did not open: keys rotated away. Start over.
            self.acquired.clear()
            gcred, lease = await self.acquire_sealed(req, creq, mech)
            if lease is None:  # pragma: no cover - cache was just cleared
                raise GssFailure(GSS_S_FAILURE, 0, "credential cache inconsistency")
            return lease
        got.from_client = False
        return got


def _apply_element_options(lease: CredLease, elements: tuple[GssxCredElement, ...]) -> None:
    """The krb5 options a client set on its handle's elements (enctypes, no CI flags)."""
    for element in elements:
        if element.mech not in oids.KRB5_FAMILY:
            continue
        for opt in element.options:
            if opt.option == KRB5_SET_ALLOWED_ENCTYPE_VALUES:
                value = opt.value
                enctypes = [
                    int.from_bytes(value[i : i + 4], "little", signed=True)
                    for i in range(0, len(value) // 4 * 4, 4)
                ]
                api.set_allowable_enctypes(lease.creds, enctypes)
                lease.discard = True
            elif opt.option == KRB5_SET_NO_CI_FLAGS:
                api.set_no_ci_flags(lease.creds)
                lease.discard = True


def _acquire(
    service: Service, creq: policy.CredRequest, store: dict[str, str], mech: bytes
) -> api.Creds:
    name = None if creq.name is None else api.import_name(creq.name.value, creq.name.name_type)
    if not creq.impersonate:
        return api.acquire_cred_from(store, name, creq.usage, mech)
    assert name is not None  # impersonation always names the user
    # Service-driven S4U2Self, as gssproxy's gp_add_krb5_creds does it for a
    # service with `impersonate = yes`: the service's own credential (the
    # impersonator) obtains a ticket to itself on the user's behalf.
    imp_name = None
    if service.krb5_principal:
        imp_name = api.import_name(service.krb5_principal.encode("utf-8"), oids.NT_KRB5_PRINCIPAL)
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
