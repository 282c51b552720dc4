"""One PKCS#11 module on its own thread: sessions, logins, key lookup and
signing, with recovery from lost sessions and removed tokens.

`ModuleWorker` owns one loaded module and one thread (a one-thread, batched
`executors.Executor`); every PKCS#11 call
for that module runs on that thread (python-pkcs11 initialises modules
without CKF_OS_LOCKING_OK, so calls must never overlap), and all the mutable
state below is only touched there, so it needs no locks. The async side only
queues work (`run`). The thread takes every job already queued at once and
hands the results of the whole batch back to the event loop in one wake-up:
under load (many clients signing) that saves a loop wake-up and a GIL
hand-over per call, which cost about as much as the signature itself.

Per token there is at most one session, logged in once as the user.
Services share it when they use the same token with the same PIN; a service
whose PIN differs from the one the token is logged in with is refused rather
than silently riding on the other's login. A PIN the token rejected is
remembered and never tried again until the configuration is reloaded: an
unattended retry loop is how tokens get locked. For the same reason a token
that reports CKF_USER_PIN_FINAL_TRY is not tried at all.

A key a SIGN resolved (URI to the one permitted key on a session) is
remembered for that service and URI for `RESOLVED_TTL` seconds, so repeated
signatures skip the object search and attribute reads: the entry is used
only while the same session is open and the same configuration in force,
and any failure with it falls back to the full lookup (which re-finds the
key, checks ambiguity and permission again, and recovers sessions).

Session copies. A key kept for reuse (the SIGN cache above, and the
per-key cache of `operate`, the p11-kit path) is used through a session copy
of it when the service's `pkcs11_session_keys` allows (the default): C_CopyObject
with only CKA_TOKEN set to false. SoftHSM checks its token files (open, fstat,
lock, read) before every use of a token object, not of a session object; that
was 10-20 us of each signature. The rules, in `_hold`: a key with
CKA_ALWAYS_AUTHENTICATE is never copied; the copy's CKA_TOKEN, CKA_PRIVATE,
CKA_SENSITIVE and CKA_EXTRACTABLE are read back and it is used only if it is
a session object at least as strict as the original (copies are never
weaker), else destroyed; a token that refuses or weakens copies is
remembered (`no_copy`) and signs with its token objects until a reload. A
copy is destroyed when its cache entry goes, and dies with its session.
Revocation: the token object behind a copy is re-read (one attribute) at
most every `KEY_RECHECK` seconds; once it is gone the copy is destroyed and
the key resolved again, which fails, so a key deleted from the token stops
signing within that bound.

When a call fails because the session or token went away
(SessionHandleInvalid, DeviceRemoved, TokenNotPresent, UserNotLoggedIn...),
the worker drops the session, re-enumerates the slots, finds the token again
by label/manufacturer/model/serial (its slot id may have changed), opens and
logs in again, and retries the call once.

A module that cannot be loaded, a token that is absent, a wrong or locked
PIN: each becomes a `TokenFailure` for the calls of the services concerned,
and the worker keeps serving everyone else.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gssproxy_py.executors import Executor
from gssproxy_py.pkcs11.adapter import (
    KeyOperation,
    Library,
    ObjectClass,
    ObjectView,
    RawParam,
    RawValue,
    Session,
    SlotToken,
    TokenFlag,
    TokenInfo,
)
from gssproxy_py.pkcs11.errors import (
    PIN_CKRS,
    SESSION_LOST_CKRS,
    CkrError,
    ModuleLoadError,
    Refusal,
    SignFailure,
    TokenFailure,
    failure_from_ckr,
)
from gssproxy_py.pkcs11.keys import (
    Curve,
    KeyKind,
    KeyRecord,
    PublicParts,
    TokenIdentity,
    curve_from_params,
    key_uri,
    spki_der,
)
from gssproxy_py.pkcs11.mechanisms import MechanismSpec, finish_signature, plan_signature
from gssproxy_py.pkcs11.pin import Pin
from gssproxy_py.pkcs11.uri import ObjectType, Pkcs11Uri
from gssproxy_py.proto.token_sign import TsStatus

__all__ = ["ModuleWorker", "ObjectSnapshot", "ServiceAccess", "TokenProblem", "TokenSnapshot"]

T = TypeVar("T")

#: Seconds a resolved signing key is reused before it is looked up again.
RESOLVED_TTL: Final = 5.0
_RESOLVED_MAX: Final = 256
#: Seconds a session copy is used before the token object behind it is
#: re-read: the bound on how long a key deleted from the token keeps signing.
#: The same as the p11-kit slot's snapshot TTL (which keeps listing the key as
#: long) and RESOLVED_TTL; one C_GetAttributeValue per 5 s costs nothing.
KEY_RECHECK: Final = 5.0

_CKA_CLASS: Final = 0x0
_CKA_TOKEN: Final = 0x1
_CKA_PRIVATE: Final = 0x2
_CKA_SENSITIVE: Final = 0x103
_CKA_EXTRACTABLE: Final = 0x162
_CKA_ALWAYS_AUTHENTICATE: Final = 0x202
#: What a copy must not weaken, and what is read of the original.
_STRICTNESS: Final = (_CKA_PRIVATE, _CKA_SENSITIVE, _CKA_EXTRACTABLE)

log = logging.getLogger("gssproxy_py.pkcs11")

_CKC_X_509: Final = 0


@dataclass(frozen=True, slots=True)
class ServiceAccess:
    """What one service may do with its module: the URIs that select its
    keys, and its PIN (or why there is none)."""

    service: str
    module: str
    uris: tuple[Pkcs11Uri, ...]
    pin: Pin | None
    pin_problem: str | None = None
    configured_module: str | None = None  # as written, before realpath
    session_keys: bool = True  # pkcs11_session_keys


@dataclass(frozen=True, slots=True)
class TokenProblem:
    """A token (or the whole module) a service could not use."""

    where: str  # a token URI, or the module path
    failure: SignFailure


@dataclass(frozen=True, slots=True)
class ObjectSnapshot:
    """An object a service may see, with the attributes read from it."""

    object_class: ObjectClass
    label: str
    key_id: bytes
    attributes: dict[int, RawValue]


@dataclass(frozen=True, slots=True)
class TokenSnapshot:
    """A token a service uses: its identity and mechanisms, and each key it
    may use with that key's public key and certificate, if any."""

    identity: TokenIdentity
    mechanisms: frozenset[int]
    objects: tuple[ObjectSnapshot, ...]


@dataclass(slots=True)
class _TokenState:
    """Thread-confined state of one present token."""

    identity: TokenIdentity
    slot: SlotToken
    session: Session | None = None
    mechanisms: frozenset[int] = frozenset()
    pin: Pin | None = None
    logged_in_by: str | None = None

    @property
    def info(self) -> TokenInfo:
        return self.slot.info

    @property
    def name(self) -> str:
        return repr(self.identity.label)


def _identity(info: TokenInfo) -> TokenIdentity:
    return TokenIdentity(info.label, info.manufacturer, info.model, info.serial)


@dataclass(slots=True)
class _Rejected:
    pin: Pin
    failure: SignFailure


@dataclass(slots=True)
class _HeldKey:
    """A private key as found on a session, and what signs with it: a
    session copy of it or the token object itself (see the module
    docstring)."""

    session: Session
    key: ObjectView  # the token object
    use: ObjectView  # the session copy, or `key`
    check_at: float  # when `key` is next re-read (infinity without a copy)


@dataclass(slots=True)
class _Resolved:
    """A SIGN's key as found on one session, for the next SIGN with the same
    service and URI (see the module docstring)."""

    access: ServiceAccess
    ident: TokenIdentity
    held: _HeldKey
    kind: KeyKind
    curve: Curve
    bits: int
    what: str
    until: float


@dataclass(slots=True)
class _WorkerState:
    lib: Library | None = None
    tokens: dict[TokenIdentity, _TokenState] = field(default_factory=dict)
    rejected: dict[TokenIdentity, list[_Rejected]] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    scanned: bool = False
    resolved: dict[tuple[str, Pkcs11Uri], _Resolved] = field(default_factory=dict)
    # operate(): (service, token, label, id) -> the key on the session it was found on
    op_keys: dict[tuple[str, TokenIdentity, str, bytes], _HeldKey] = field(default_factory=dict)
    no_copy: set[TokenIdentity] = field(default_factory=set)  # tokens that refuse copies


class ModuleWorker:
    """One module, one thread. Other methods than `run`, `call`, `submit`,
    `sessions`, `retire` and `join` must only be called on the worker thread
    (through one of the first three)."""

    def __init__(self, path: str, loader: Callable[[str], Library]) -> None:
        self.path = path
        self._loader = loader
        name = path.rsplit("/", 1)[-1]
        self._s = _WorkerState()
        # One thread, batched: the module's calls never overlap, and the
        # results of everything queued at once go back in one wake-up.
        self._executor = Executor(f"pkcs11-{name}", 1, batch=True)
        self._retired = False

    # -- ways in (any thread) ------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._retired:
            raise RuntimeError(f"the worker of {self.path} is retired")
        return await self._executor.run(functools.partial(fn, *args))

    def call(self, fn: Callable[..., T], *args: object, timeout: float) -> T:
        """fn(*args) on the worker thread, waited for by the calling thread,
        which must not be an event loop's (a GSS executor thread asking for
        PKINIT's login check). TimeoutError after `timeout` s; the call is
        then cancelled if it has not started."""
        if self._retired:
            raise RuntimeError(f"the worker of {self.path} is retired")
        future = self._executor.submit(fn, *args)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def submit(self, fn: Callable[..., object], *args: object) -> None:
        """Queue work without waiting (startup warm-up, reload, shutdown)."""
        if self._retired:
            raise RuntimeError(f"the worker of {self.path} is retired")
        self._executor.post(fn, *args)

    def sessions(self) -> list[tuple[str, bool]]:
        """(token, whether a session is open) per token found, for
        `gssproxy-py-ctl status`. Read from the loop thread: a snapshot that
        may be one call old, never a view into the session."""
        return [
            (str(st.identity.label), st.session is not None) for st in list(self._s.tokens.values())
        ]

    def retire(self) -> None:
        """Close sessions and unload after queued work, then end the thread."""
        if self._retired:
            return
        self.submit(self.shutdown)
        self._retired = True
        self._executor.shutdown(wait=False)

    def join(self) -> None:
        """Wait for the thread after retire()."""
        self._executor.join()

    # -- lifecycle (worker thread) -----------------------------------------

    def _library(self) -> Library:
        s = self._s
        if s.lib is None:
            try:
                s.lib = self._loader(self.path)
            except ModuleLoadError as e:
                # Retried on the next call: the module may be installed later.
                raise TokenFailure(TsStatus.TS_TOKEN_UNAVAILABLE, str(e)) from e
            except CkrError as e:
                raise failure_from_ckr(e, f"initialising PKCS#11 module {self.path}") from e
            info = s.lib.info
            log.info(
                "pkcs11: loaded %s (%s %s %s)",
                self.path,
                info.manufacturer,
                info.description,
                info.version,
            )
        return s.lib

    def reset(self) -> None:
        """Log out everywhere and forget rejected PINs (a reload re-read the
        PIN sources; the next call logs in afresh)."""
        s = self._s
        self._release_all((*s.op_keys.values(), *(r.held for r in s.resolved.values())))
        s.op_keys.clear()
        s.resolved.clear()
        for st in self._s.tokens.values():
            self._drop_session(st)
        self._s.rejected.clear()
        self._s.no_copy.clear()

    def shutdown(self) -> None:
        self.reset()
        s = self._s
        s.tokens.clear()
        if s.lib is not None:
            s.lib.close()
            s.lib = None
            log.info("pkcs11: unloaded %s", self.path)

    def warm(self, accesses: tuple[ServiceAccess, ...]) -> None:
        """Log in and list keys for each service now, so that problems show
        in the log at startup rather than at the first call."""
        for access in accesses:
            try:
                keys, problems = self.list_keys(access)
            except SignFailure as f:
                log.error("pkcs11: service %s: %s", access.service, f)
                continue
            for p in problems:
                log.error("pkcs11: service %s: %s: %s", access.service, p.where, p.failure)
            log.info(
                "pkcs11: service %s: %d usable key(s) in %s", access.service, len(keys), self.path
            )

    # -- tokens and sessions (worker thread) -------------------------------

    def _rescan(self) -> None:
        s = self._s
        lib = self._library()
        try:
            present = lib.tokens()
        except CkrError as e:
            raise failure_from_ckr(e, f"listing tokens of {self.path}") from e
        fresh: dict[TokenIdentity, _TokenState] = {}
        for slot in present:
            if not slot.info.flags & TokenFlag.TOKEN_INITIALIZED:
                # An uninitialised token (SoftHSM always offers one) has no
                # keys; trying to log in to it would only add noise.
                continue
            ident = _identity(slot.info)
            if ident in fresh:
                log.warning(
                    "pkcs11: two tokens in %s share label/serial %s; using slot %d",
                    self.path,
                    ident.uri(),
                    fresh[ident].info.slot_id,
                )
                continue
            old = s.tokens.get(ident)
            if old is not None and old.info.slot_id == slot.info.slot_id:
                old.slot = slot  # fresh flags
                fresh[ident] = old
            else:
                if old is not None:
                    self._drop_session(old)
                fresh[ident] = _TokenState(ident, slot)
        for ident, old in s.tokens.items():
            if ident not in fresh:
                log.warning("pkcs11: token %s is no longer present", ident.uri())
                self._drop_session(old)
        s.tokens = fresh
        s.scanned = True

    @staticmethod
    def _drop_session(st: _TokenState) -> None:
        if st.session is not None:
            st.session.close()
        st.session = None
        st.pin = None
        st.logged_in_by = None

    def _selects_token(self, uris: tuple[Pkcs11Uri, ...], st: _TokenState) -> bool:
        lib = self._library().info
        info = st.info
        return any(
            u.matches_library(lib.manufacturer, lib.description, lib.version)
            and u.matches_token(
                label=info.label,
                manufacturer=info.manufacturer,
                serial=info.serial,
                model=info.model,
                slot_id=info.slot_id,
                slot_description=info.slot_description,
                slot_manufacturer=info.slot_manufacturer,
            )
            for u in uris
        )

    def _ensure_session(self, st: _TokenState, access: ServiceAccess) -> Session:
        flags = st.info.flags
        pin = access.pin
        what = f"token {st.name}"
        if pin is None and flags & TokenFlag.LOGIN_REQUIRED:
            why = access.pin_problem or f"service {access.service} has no pkcs11_pin"
            raise TokenFailure(TsStatus.TS_PIN_ERROR, f"{what} needs a login: {why}")
        if st.session is not None:
            return self._shared_session(st, st.session, access)
        if pin is not None:
            self._refuse_rejected(st, pin)
            self._check_pin_flags(st, flags)
        session = self._log_in(st, pin)
        try:
            mechanisms = st.slot.mechanisms()
        except CkrError as e:
            session.close()
            raise failure_from_ckr(e, f"reading the mechanisms of {what}") from e
        st.session = session
        st.mechanisms = mechanisms
        st.pin = pin
        st.logged_in_by = access.service if pin is not None else None
        log.info(
            "pkcs11: opened a session on %s%s",
            st.identity.uri(),
            f" (logged in with the PIN from {pin.source})" if pin is not None else "",
        )
        return session

    @staticmethod
    def _shared_session(st: _TokenState, session: Session, access: ServiceAccess) -> Session:
        """The token's open session, if this service may use it: the same
        login (or none for both), never another service's."""
        pin = access.pin
        what = f"token {st.name}"
        if st.pin is None and pin is None:
            return session
        if st.pin is not None and pin is not None and pin.same_as(st.pin):
            return session
        if st.pin is not None and pin is None:
            # Not logged in ourselves, but the token's shared login would
            # let us see private objects: refuse rather than borrow it.
            raise TokenFailure(
                TsStatus.TS_PIN_ERROR,
                f"{what} is logged in for service {st.logged_in_by}; "
                f"service {access.service} has no pkcs11_pin",
            )
        raise TokenFailure(
            TsStatus.TS_PIN_ERROR,
            f"{what} is logged in with the PIN of service {st.logged_in_by}; "
            f"the PIN of service {access.service} ({pin.source if pin else ''}) "
            "differs",
        )

    def _refuse_rejected(self, st: _TokenState, pin: Pin) -> None:
        """A PIN the token rejected before is not tried again until a reload."""
        for r in self._s.rejected.get(st.identity, ()):
            if r.pin.same_as(pin):
                raise TokenFailure(
                    r.failure.status,
                    f"{r.failure.message} (not retried until the configuration is reloaded)",
                    r.failure.ckr,
                )

    def _log_in(self, st: _TokenState, pin: Pin | None) -> Session:
        """A new session on the token, logged in with `pin` when there is one."""
        try:
            return st.slot.open(pin.reveal() if pin is not None else None)
        except CkrError as e:
            if e.ckr == "CKR_USER_ALREADY_LOGGED_IN":
                # A session of ours we lost track of is still logged in; the
                # login state is per application and token, so use it.
                return self._open_plain(st)
            failure = failure_from_ckr(e, f"logging in to token {st.name}")
            if e.ckr in PIN_CKRS and pin is not None:
                self._s.rejected.setdefault(st.identity, []).append(_Rejected(pin, failure))
            log.error("pkcs11: %s (PIN from %s)", failure, pin.source if pin else "none")
            raise failure from e

    @staticmethod
    def _open_plain(st: _TokenState) -> Session:
        try:
            return st.slot.open(None)
        except CkrError as e:
            raise failure_from_ckr(e, f"opening a session on token {st.name}") from e

    @staticmethod
    def _check_pin_flags(st: _TokenState, flags: TokenFlag) -> None:
        what = f"token {st.name}"
        if flags & TokenFlag.USER_PIN_LOCKED:
            raise TokenFailure(
                TsStatus.TS_PIN_ERROR,
                f"{what}: the user PIN is locked; unlock it with the SO PIN",
                "CKR_PIN_LOCKED",
            )
        if flags & TokenFlag.TOKEN_INITIALIZED and not flags & TokenFlag.USER_PIN_INITIALIZED:
            raise TokenFailure(
                TsStatus.TS_PIN_ERROR,
                f"{what}: the token has no user PIN set",
                "CKR_USER_PIN_NOT_INITIALIZED",
            )
        if flags & TokenFlag.USER_PIN_FINAL_TRY:
            raise TokenFailure(
                TsStatus.TS_PIN_ERROR,
                f"{what}: one more wrong PIN would lock the token, so the daemon will not "
                "try; log in once by hand to reset the retry counter",
            )

    def _with_session(
        self,
        ident: TokenIdentity,
        access: ServiceAccess,
        op: Callable[[Session, bool], T],
    ) -> T:
        """Run op(session, retried) on the token, recovering once from a lost
        session or a token that went away and came back."""
        s = self._s
        retried = False
        while True:
            st = s.tokens.get(ident)
            if st is None:
                raise TokenFailure(
                    TsStatus.TS_TOKEN_UNAVAILABLE, f"token {ident.label!r} is not present"
                )
            session = self._ensure_session(st, access)
            try:
                return op(session, retried)
            except CkrError as e:
                if e.ckr not in SESSION_LOST_CKRS or retried:
                    raise
                log.warning(
                    "pkcs11: session on %s lost (%s during %s); reopening",
                    ident.uri(),
                    e.ckr,
                    e.call,
                )
                self._drop_session(st)
                if e.ckr == "CKR_CRYPTOKI_NOT_INITIALIZED" and s.lib is not None:
                    s.lib.close()
                    s.lib = None
                self._rescan()
                retried = True

    def _service_tokens(
        self, access: ServiceAccess, *, rescan: bool
    ) -> tuple[list[TokenIdentity], list[TokenProblem]]:
        """The present tokens the service's URIs select (with a usable
        session), and the problems with the others."""
        try:
            if rescan or not self._s.scanned:
                self._rescan()
        except SignFailure as f:
            return [], [TokenProblem(self.path, f)]
        usable: list[TokenIdentity] = []
        problems: list[TokenProblem] = []
        for ident, st in list(self._s.tokens.items()):
            if not self._selects_token(access.uris, st):
                continue
            try:
                self._with_session(ident, access, lambda _s, _r: None)
            except SignFailure as f:
                problems.append(TokenProblem(ident.uri(), f))
                continue
            except CkrError as e:
                problems.append(TokenProblem(ident.uri(), failure_from_ckr(e, ident.uri())))
                continue
            usable.append(ident)
        if not usable and not problems:
            problems.append(
                TokenProblem(
                    self.path,
                    TokenFailure(
                        TsStatus.TS_TOKEN_UNAVAILABLE,
                        f"no present token in {self.path} matches the pkcs11_uri of service "
                        f"{access.service}",
                    ),
                )
            )
        return usable, problems

    def check_login(self, access: ServiceAccess) -> None:
        """Raise the first problem unless some token of the service is
        usable (open session, logged in if the token needs it)."""
        idents, problems = self._service_tokens(access, rescan=False)
        if not idents:
            raise problems[0].failure

    # -- keys (worker thread) ----------------------------------------------

    def _permitted(self, access: ServiceAccess, st: _TokenState, key: ObjectView) -> bool:
        return any(
            self._selects_token((u,), st)
            and u.matches_object(label=key.label, key_id=key.key_id, object_type=ObjectType.PRIVATE)
            for u in access.uris
        )

    @staticmethod
    def _facts(key: ObjectView) -> tuple[KeyKind, Curve, int]:
        try:
            kind = KeyKind(key.key_type) if key.key_type is not None else KeyKind.OTHER
        except ValueError:
            kind = KeyKind.OTHER
        if kind is KeyKind.RSA:
            bits = int.from_bytes(key.modulus, "big").bit_length() if key.modulus else 0
            return kind, Curve.NONE, bits
        if kind in (KeyKind.EC, KeyKind.EC_EDWARDS):
            curve = curve_from_params(key.ec_params)
            return kind, curve, max(curve.value, 0)
        return kind, Curve.NONE, 0

    def _warn_extractable(self, st: _TokenState, key: ObjectView) -> None:
        if not key.extractable:
            return
        uri = key_uri(st.identity, key.label, key.key_id)
        if uri in self._s.warned:
            return
        self._s.warned.add(uri)
        extra = "" if key.sensitive else " and not sensitive (its value can be read in clear)"
        log.warning(
            "pkcs11: key %s is extractable (CKA_EXTRACTABLE=TRUE)%s: its private part can "
            "leave the token",
            uri,
            extra,
        )

    def _record(self, st: _TokenState, session: Session, key: ObjectView) -> KeyRecord:
        kind, curve, bits = self._facts(key)
        self._warn_extractable(st, key)
        # Public keys pair with private ones by CKA_ID, or by label without one.
        if key.key_id:
            candidates = session.objects(ObjectClass.PUBLIC_KEY, key_id=key.key_id)
        else:
            candidates = session.objects(ObjectClass.PUBLIC_KEY, label=key.label)
        pubs = [p for p in candidates if p.key_type == key.key_type]
        pub = pubs[0] if pubs else None
        parts = PublicParts(
            kind=kind,
            modulus=key.modulus or (pub.modulus if pub else None),
            public_exponent=key.public_exponent or (pub.public_exponent if pub else None),
            ec_params=key.ec_params or (pub.ec_params if pub else None),
            ec_point=pub.ec_point if pub else None,
        )
        spki = spki_der(parts)
        cert = self._certificate(session, key, spki)
        if spki is None and cert is not None:
            spki = _cert_spki(cert)
        return KeyRecord(
            token=st.identity,
            label=key.label,
            key_id=key.key_id,
            kind=kind,
            curve=curve,
            bits=bits,
            spki=spki,
            certificate=cert,
            extractable=bool(key.extractable),
            sensitive=key.sensitive is not False,
        )

    @staticmethod
    def _certificate(session: Session, key: ObjectView, spki: bytes | None) -> bytes | None:
        if not key.key_id:
            return None  # certificates pair with keys by CKA_ID only
        for c in session.objects(ObjectClass.CERTIFICATE, key_id=key.key_id):
            if c.value is None or c.certificate_type not in (None, _CKC_X_509):
                continue
            # A certificate with the same id but another key is a token
            # mix-up; do not hand it out as this key's.
            if spki is not None and _cert_spki(c.value) not in (None, spki):
                continue
            return c.value
        return None

    def _listing(
        self,
        ident: TokenIdentity,
        access: ServiceAccess,
        op: Callable[[Session, bool], T],
        problems: list[TokenProblem],
    ) -> T | None:
        """op's result on one token of a listing, or None with the token's
        problem added to `problems` (the other tokens are still listed)."""
        try:
            return self._with_session(ident, access, op)
        except SignFailure as f:
            problems.append(TokenProblem(ident.uri(), f))
        except CkrError as e:
            problems.append(
                TokenProblem(ident.uri(), failure_from_ckr(e, f"listing keys on {ident.uri()}"))
            )
        return None

    def list_keys(self, access: ServiceAccess) -> tuple[list[KeyRecord], list[TokenProblem]]:
        """The keys the service may use, on every token it selects."""
        idents, problems = self._service_tokens(access, rescan=True)
        records: list[KeyRecord] = []
        for ident in idents:

            def op(
                session: Session, _retried: bool, ident: TokenIdentity = ident
            ) -> list[KeyRecord]:
                st = self._s.tokens[ident]
                return [
                    self._record(st, session, k)
                    for k in session.objects(ObjectClass.PRIVATE_KEY)
                    if self._permitted(access, st, k)
                ]

            records += self._listing(ident, access, op, problems) or []
        return records, problems

    def sign(
        self,
        access: ServiceAccess,
        uri: Pkcs11Uri,
        spec: MechanismSpec,
        data: bytes,
        is_digest: bool,
    ) -> bytes:
        """Sign with the one permitted key `uri` selects; SignFailure if none."""
        cache_key = (access.service, uri)
        cached = self._s.resolved.get(cache_key)
        if cached is not None:
            signature = self._sign_resolved(cache_key, cached, access, spec, data, is_digest)
            if signature is not None:
                return signature
        found, problems = self._candidates(access, uri, rescan=False)
        if not found:
            # Perhaps a token was inserted since the last scan.
            found, problems = self._candidates(access, uri, rescan=True)
        if not found:
            if problems:
                raise problems[0].failure
            raise Refusal(
                TsStatus.TS_UNKNOWN_KEY,
                f"no private key on the tokens of service {access.service} matches "
                f"{uri.to_string()}",
            )
        permitted = [(i, k) for i, k in found if self._permitted(access, self._s.tokens[i], k)]
        if not permitted:
            raise Refusal(
                TsStatus.TS_KEY_NOT_PERMITTED,
                f"service {access.service} may not use {uri.to_string()}",
            )
        if len(permitted) > 1:
            raise Refusal(
                TsStatus.TS_AMBIGUOUS_KEY,
                f"{uri.to_string()} matches {len(permitted)} keys; add id= or token= to choose one",
            )
        ident, key = permitted[0]
        kind, curve, bits = self._facts(key)
        self._warn_extractable(self._s.tokens[ident], key)
        what = f"signing with {key_uri(ident, key.label, key.key_id)}"

        def op(session: Session, retried: bool) -> bytes:
            st = self._s.tokens[ident]
            plan = plan_signature(
                spec,
                kind=kind,
                curve=curve,
                bits=bits,
                data=data,
                is_digest=is_digest,
                token_mechanisms=st.mechanisms,
            )
            target = key
            if retried:
                # The old handle died with the old session: find it again.
                target = _private_key(session, key.label, key.key_id, what)
            held = self._hold(access, ident, session, target)
            try:
                raw = session.sign(held.use, plan.mechanism, plan.param, plan.data)
                signature = finish_signature(plan, raw)
            except ValueError as e:
                self._release(held)
                raise TokenFailure(TsStatus.TS_TOKEN_ERROR, f"{what}: {e}") from None
            except BaseException:
                self._release(held)
                raise
            until = time.monotonic() + RESOLVED_TTL
            self._remember(
                cache_key, _Resolved(access, ident, held, kind, curve, bits, what, until)
            )
            return signature

        try:
            return self._with_session(ident, access, op)
        except CkrError as e:
            raise failure_from_ckr(e, what) from e

    def snapshot(
        self, access: ServiceAccess, attribute_types: dict[ObjectClass, tuple[int, ...]]
    ) -> tuple[list[TokenSnapshot], list[TokenProblem]]:
        """Every key the service may use, per token, with its public key and
        certificate (paired by CKA_ID, or by label without one), each object
        with the attributes of `attribute_types` for its class that it has."""
        idents, problems = self._service_tokens(access, rescan=True)
        tokens: list[TokenSnapshot] = []
        for ident in idents:

            def op(session: Session, _retried: bool, ident: TokenIdentity = ident) -> TokenSnapshot:
                st = self._s.tokens[ident]
                objects: list[ObjectSnapshot] = []
                seen: set[tuple[ObjectClass, str, bytes]] = set()

                def add(view: ObjectView) -> None:
                    mark = (view.object_class, view.label, view.key_id)
                    if mark in seen:
                        return
                    seen.add(mark)
                    types = attribute_types[view.object_class]
                    attrs = session.read_attributes(view, types)
                    objects.append(
                        ObjectSnapshot(view.object_class, view.label, view.key_id, attrs)
                    )

                for key in session.objects(ObjectClass.PRIVATE_KEY):
                    if not self._permitted(access, st, key):
                        continue
                    self._warn_extractable(st, key)
                    add(key)
                    if key.key_id:
                        pubs = session.objects(ObjectClass.PUBLIC_KEY, key_id=key.key_id)
                        certs = session.objects(ObjectClass.CERTIFICATE, key_id=key.key_id)
                    else:
                        pubs = session.objects(ObjectClass.PUBLIC_KEY, label=key.label)
                        certs = []
                    for other in (*pubs, *certs):
                        if other.object_class is ObjectClass.PUBLIC_KEY and (
                            other.key_type != key.key_type
                        ):
                            continue
                        add(other)
                return TokenSnapshot(ident, st.mechanisms, tuple(objects))

            snapshot = self._listing(ident, access, op, problems)
            if snapshot is not None:
                tokens.append(snapshot)
        return tokens, problems

    def operate(
        self,
        access: ServiceAccess,
        ident: TokenIdentity,
        label: str,
        key_id: bytes,
        operation: KeyOperation,
        mechanism: int,
        param: RawParam,
        data: bytes,
    ) -> bytes:
        """Sign or decrypt with the private key (label, id) on token `ident`,
        if the service may use it; CkrError with the token's CKR, SignFailure
        when the token or the login is unusable, Refusal if the key is gone
        or not permitted."""
        cache_key = (access.service, ident, label, key_id)
        op_keys = self._s.op_keys
        held = op_keys.get(cache_key)
        st = self._s.tokens.get(ident)
        if held is not None:
            if st is not None and st.session is held.session and self._current(held):
                try:
                    return held.session.operate(held.use, operation, mechanism, param, data)
                except CkrError as e:
                    if e.ckr not in SESSION_LOST_CKRS:
                        raise
            del op_keys[cache_key]
            self._release(held)
        if st is None:
            self._rescan()

        def op(session: Session, _retried: bool) -> bytes:
            key = _private_key(session, label, key_id, f"using {label!r}")
            if not self._permitted(access, self._s.tokens[ident], key):
                raise Refusal(TsStatus.TS_KEY_NOT_PERMITTED, f"the key {label!r} is not permitted")
            if len(op_keys) >= _RESOLVED_MAX:
                self._release_all(op_keys.values())
                op_keys.clear()
            held = op_keys[cache_key] = self._hold(access, ident, session, key)
            return session.operate(held.use, operation, mechanism, param, data)

        return self._with_session(ident, access, op)

    def _remember(self, cache_key: tuple[str, Pkcs11Uri], entry: _Resolved) -> None:
        resolved = self._s.resolved
        if len(resolved) >= _RESOLVED_MAX and cache_key not in resolved:
            # clients choose URIs: keep the map bounded
            self._release_all(r.held for r in resolved.values())
            resolved.clear()
        old = resolved.get(cache_key)
        resolved[cache_key] = entry
        if old is not None and old.held is not entry.held:
            self._release(old.held)

    # -- session copies of keys (worker thread) ----------------------------

    def _hold(
        self, access: ServiceAccess, ident: TokenIdentity, session: Session, key: ObjectView
    ) -> _HeldKey:
        """`key` as kept for reuse: through a session copy when the service
        allows one and the token makes one at least as strict."""
        copy = None
        if access.session_keys and ident not in self._s.no_copy:
            copy = self._session_copy(ident, session, key)
        if copy is None:
            return _HeldKey(session, key, key, math.inf)
        return _HeldKey(session, key, copy, time.monotonic() + KEY_RECHECK)

    def _session_copy(
        self, ident: TokenIdentity, session: Session, key: ObjectView
    ) -> ObjectView | None:
        """A session copy of `key` never weaker than it, or None (and the
        token remembered when it refuses or weakens copies)."""
        uri = key_uri(ident, key.label, key.key_id)
        try:
            original = session.read_attributes(key, (*_STRICTNESS, _CKA_ALWAYS_AUTHENTICATE))
            if original.get(_CKA_ALWAYS_AUTHENTICATE) is True:
                return None  # each use needs its own C_Login(CKU_CONTEXT_SPECIFIC)
            copy = session.session_copy(key)
        except CkrError as e:
            if e.ckr in SESSION_LOST_CKRS:
                raise
            self._s.no_copy.add(ident)
            log.info(
                "pkcs11: token %s does not copy %s (%s); using its token objects",
                ident.uri(),
                uri,
                e.ckr or e.detail,
            )
            return None
        try:
            got = session.read_attributes(copy, (*_STRICTNESS, _CKA_TOKEN))
        except CkrError:
            got = {}
        if _as_strict(original, got):
            return copy
        with contextlib.suppress(CkrError):
            session.destroy(copy)
        self._s.no_copy.add(ident)
        log.warning(
            "pkcs11: the session copy of %s on token %s is not a session object at least as "
            "strict as the key (CKA_TOKEN/PRIVATE/SENSITIVE/EXTRACTABLE); destroyed, and the "
            "token's keys are used directly",
            uri,
            ident.uri(),
        )
        return None

    def _current(self, held: _HeldKey) -> bool:
        """Whether the token object behind a copy is still there (re-read
        at most every KEY_RECHECK seconds); False: resolve it again."""
        now = time.monotonic()
        if now < held.check_at:
            return True
        try:
            still = held.session.read_attributes(held.key, (_CKA_CLASS,))
        except CkrError:
            return False
        if not still:
            return False
        held.check_at = now + KEY_RECHECK
        return True

    def _release(self, held: _HeldKey) -> None:
        """Destroy `held`'s copy, if it has one and its session is still
        open (a closed session took its copies with it, and its handle
        numbers may name another session's objects now)."""
        if held.use is held.key:
            return
        if any(st.session is held.session for st in self._s.tokens.values()):
            with contextlib.suppress(CkrError):
                held.session.destroy(held.use)

    def _release_all(self, helds: Iterable[_HeldKey]) -> None:
        for held in list(helds):
            self._release(held)

    def _sign_resolved(
        self,
        cache_key: tuple[str, Pkcs11Uri],
        r: _Resolved,
        access: ServiceAccess,
        spec: MechanismSpec,
        data: bytes,
        is_digest: bool,
    ) -> bytes | None:
        """Sign with a remembered key; None (and forgotten) when it is stale
        or the token says no, so that the full lookup runs instead."""
        st = self._s.tokens.get(r.ident)
        held = r.held
        if (
            r.access is not access
            or st is None
            or st.session is not held.session
            or time.monotonic() > r.until
            or not self._current(held)
        ):
            del self._s.resolved[cache_key]
            self._release(held)
            return None
        plan = plan_signature(
            spec,
            kind=r.kind,
            curve=r.curve,
            bits=r.bits,
            data=data,
            is_digest=is_digest,
            token_mechanisms=st.mechanisms,
        )
        try:
            raw = held.session.sign(held.use, plan.mechanism, plan.param, plan.data)
        except CkrError:
            del self._s.resolved[cache_key]
            self._release(held)
            return None
        try:
            return finish_signature(plan, raw)
        except ValueError as e:
            raise TokenFailure(TsStatus.TS_TOKEN_ERROR, f"{r.what}: {e}") from None

    def _candidates(
        self, access: ServiceAccess, uri: Pkcs11Uri, *, rescan: bool
    ) -> tuple[list[tuple[TokenIdentity, ObjectView]], list[TokenProblem]]:
        idents, problems = self._service_tokens(access, rescan=rescan)
        found: list[tuple[TokenIdentity, ObjectView]] = []
        for ident in idents:
            if not self._selects_token((uri,), self._s.tokens[ident]):
                continue

            def op(session: Session, _retried: bool) -> list[ObjectView]:
                return [
                    k
                    for k in session.objects(
                        ObjectClass.PRIVATE_KEY, label=uri.object, key_id=uri.id
                    )
                    if uri.matches_object(
                        label=k.label, key_id=k.key_id, object_type=ObjectType.PRIVATE
                    )
                ]

            try:
                found += [(ident, k) for k in self._with_session(ident, access, op)]
            except SignFailure as f:
                problems.append(TokenProblem(ident.uri(), f))
            except CkrError as e:
                problems.append(TokenProblem(ident.uri(), failure_from_ckr(e, ident.uri())))
        return found, problems


def _as_strict(original: dict[int, RawValue], copy: dict[int, RawValue]) -> bool:
    """Whether a copy's attributes are a session object's and at least as
    strict as the original's (an attribute the original does not reveal
    counts as the strict value)."""
    return (
        copy.get(_CKA_TOKEN) is False
        and (original.get(_CKA_PRIVATE) is False or copy.get(_CKA_PRIVATE) is True)
        and (original.get(_CKA_SENSITIVE) is False or copy.get(_CKA_SENSITIVE) is True)
        and (original.get(_CKA_EXTRACTABLE) is True or copy.get(_CKA_EXTRACTABLE) is False)
    )


def _private_key(session: Session, label: str, key_id: bytes, what: str) -> ObjectView:
    """The one private key with exactly this label and id on `session`."""
    found = [
        k
        for k in session.objects(
            ObjectClass.PRIVATE_KEY, label=label or None, key_id=key_id or None
        )
        if k.label == label and k.key_id == key_id
    ]
    if len(found) != 1:
        raise Refusal(TsStatus.TS_UNKNOWN_KEY, f"{what}: the key is gone")
    return found[0]


def _cert_spki(der: bytes) -> bytes | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError):
        return None
