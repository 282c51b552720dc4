"""The p11-kit virtual token of a service, on the token layer: what each
service's consumers see through `p11-kit-client.so`, and the policy.

`P11KitTokens.view(service, who)` gives one connection its `Backend`
(`gssproxy_py.p11kit.model`). The token's objects come from the module's
worker (`ModuleWorker.snapshot`): each private key the service's
`pkcs11_uri` permits, its public key and its certificate, with their real
labels, ids and public attributes. Policy applied here:

* private keys read as CKA_SENSITIVE, not CKA_EXTRACTABLE, never
  CKA_ALWAYS_AUTHENTICATE (the daemon holds the login), and their private
  components are never read from the token: asking for them is answered
  CKR_ATTRIBUTE_SENSITIVE; no object can be modified, copied or destroyed;
* only the mechanisms in `SERVED_MECHANISMS` that the token offers, and
  of those only the ones the service's `p11kit_mechanisms` lists (if set);
* one log line per signature or decryption (INFO, debug level 1): uid,
  pid, program, service, key URI, mechanism, input length, outcome.

Verification uses the public key in the daemon (`cryptography`), so it
needs neither the token nor a login. The snapshot of a service's tokens
is kept `SNAPSHOT_TTL` seconds (consumers connect per command).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

from gssproxy_py.config.model import Service
from gssproxy_py.p11kit.attributes import AttrValue, Cka
from gssproxy_py.p11kit.ck import Ckf, Cko, Ckr
from gssproxy_py.p11kit.model import CkError, MechanismInfo, VirtualObject, VirtualToken
from gssproxy_py.p11kit.wire import Mechanism, OaepParams, PssParams
from gssproxy_py.pkcs11.adapter import KeyOperation, ObjectClass, RawParam
from gssproxy_py.pkcs11.errors import CkrError, SignFailure
from gssproxy_py.pkcs11.function_list import CKR_NAMES
from gssproxy_py.pkcs11.keys import (
    Curve,
    KeyKind,
    PublicParts,
    TokenIdentity,
    curve_from_params,
    key_uri,
    spki_der,
)
from gssproxy_py.pkcs11.token import ModuleWorker, ServiceAccess, TokenSnapshot

__all__ = ["SERVED_MECHANISMS", "P11KitTokens", "ServiceTokens", "ServiceWorkers"]

log = logging.getLogger("gssproxy_py.pkcs11.p11kit")

SNAPSHOT_TTL: Final = 5.0


@dataclass(frozen=True, slots=True)
class ServedMechanism:
    name: str
    key_kind: KeyKind
    flags: Ckf
    hash: hashes.HashAlgorithm | None  # hashed by the token (verify needs it)


_SV = Ckf.SIGN | Ckf.VERIFY
SERVED_MECHANISMS: Final[Mapping[int, ServedMechanism]] = {
    0x1: ServedMechanism("RSA_PKCS", KeyKind.RSA, _SV | Ckf.DECRYPT, None),
    0x6: ServedMechanism("SHA1_RSA_PKCS", KeyKind.RSA, _SV, hashes.SHA1()),  # noqa: S303 -- consumers still ask; the token hashes
    0x9: ServedMechanism("RSA_PKCS_OAEP", KeyKind.RSA, Ckf.DECRYPT, None),
    0xD: ServedMechanism("RSA_PKCS_PSS", KeyKind.RSA, _SV, None),
    0x40: ServedMechanism("SHA256_RSA_PKCS", KeyKind.RSA, _SV, hashes.SHA256()),
    0x41: ServedMechanism("SHA384_RSA_PKCS", KeyKind.RSA, _SV, hashes.SHA384()),
    0x42: ServedMechanism("SHA512_RSA_PKCS", KeyKind.RSA, _SV, hashes.SHA512()),
    0x1041: ServedMechanism("ECDSA", KeyKind.EC, _SV, None),
    0x1042: ServedMechanism("ECDSA_SHA1", KeyKind.EC, _SV, hashes.SHA1()),  # noqa: S303 -- consumers still ask; the token hashes
}
_KEY_SIZES: Final = {KeyKind.RSA: (1024, 8192), KeyKind.EC: (256, 521)}

_COMMON: Final = (Cka.CLASS, Cka.TOKEN, Cka.PRIVATE, Cka.LABEL, Cka.ID)
_KEY: Final = (
    Cka.KEY_TYPE,
    Cka.SUBJECT,
    Cka.LOCAL,
    Cka.KEY_GEN_MECHANISM,
    Cka.MODULUS,
    Cka.MODULUS_BITS,
    Cka.PUBLIC_EXPONENT,
    Cka.EC_PARAMS,
    Cka.PUBLIC_KEY_INFO,
)
#: What is read from the token per class: public values only.
ATTRIBUTES_READ: Final[dict[ObjectClass, tuple[int, ...]]] = {
    ObjectClass.PRIVATE_KEY: (*_COMMON, *_KEY, Cka.SIGN, Cka.DECRYPT, Cka.SIGN_RECOVER),
    ObjectClass.PUBLIC_KEY: (
        *_COMMON,
        *_KEY,
        Cka.EC_POINT,
        Cka.VERIFY,
        Cka.ENCRYPT,
        Cka.WRAP,
        Cka.DERIVE,
        Cka.TRUSTED,
    ),
    ObjectClass.CERTIFICATE: (
        *_COMMON,
        Cka.CERTIFICATE_TYPE,
        Cka.CERTIFICATE_CATEGORY,
        Cka.TRUSTED,
        Cka.SUBJECT,
        Cka.ISSUER,
        Cka.SERIAL_NUMBER,
        Cka.VALUE,
        Cka.CHECK_VALUE,
    ),
}
#: What policy says of every private key, whatever the token has.
_PRIVATE_FORCED: Final[dict[int, AttrValue]] = {
    Cka.SENSITIVE: True,
    Cka.ALWAYS_SENSITIVE: True,
    Cka.EXTRACTABLE: False,
    Cka.NEVER_EXTRACTABLE: True,
    Cka.ALWAYS_AUTHENTICATE: False,
    Cka.WRAP_WITH_TRUSTED: False,
    Cka.UNWRAP: False,
    Cka.DERIVE: False,
}
_READ_ONLY: Final[dict[int, AttrValue]] = {
    Cka.MODIFIABLE: False,
    Cka.COPYABLE: False,
    Cka.DESTROYABLE: False,
}
#: Answered CKR_ATTRIBUTE_SENSITIVE on a private key.
PRIVATE_COMPONENTS: Final = frozenset(
    {
        Cka.VALUE,
        Cka.PRIVATE_EXPONENT,
        Cka.PRIME_1,
        Cka.PRIME_2,
        Cka.EXPONENT_1,
        Cka.EXPONENT_2,
        Cka.COEFFICIENT,
        Cka.PRIME,
        Cka.SUBPRIME,
        Cka.BASE,
    }
)
_CLASSES: Final = {
    ObjectClass.PRIVATE_KEY: Cko.PRIVATE_KEY,
    ObjectClass.PUBLIC_KEY: Cko.PUBLIC_KEY,
    ObjectClass.CERTIFICATE: Cko.CERTIFICATE,
}
_HASH_BY_CKM: Final = {
    0x220: hashes.SHA1(),  # noqa: S303 -- consumers still ask; the token hashes
    0x255: hashes.SHA224(),
    0x250: hashes.SHA256(),
    0x260: hashes.SHA384(),
    0x270: hashes.SHA512(),
}
_HASH_BY_LENGTH: Final = {h.digest_size: h for h in _HASH_BY_CKM.values()}
#: CKR_* names (as the token layer reports them, from the one table of
#: names) to values, for the CK_RVs a consumer gets as the token gave them:
#: those we answer ourselves, and these five; any other is CKR_FUNCTION_FAILED.
_CKR_VALUES: Final = {
    CKR_NAMES[v]: v
    for v in (
        *map(int, Ckr),
        0xC0,  # SIGNATURE_INVALID
        0xC1,  # SIGNATURE_LEN_RANGE
        0x62,  # KEY_SIZE_RANGE
        0xA0,  # PIN_INCORRECT
        0x101,  # USER_NOT_LOGGED_IN
    )
}


@dataclass(frozen=True, slots=True)
class _KeyRef:
    """How a private key is named to the worker, with what each signature
    needs of it worked out once per snapshot: its URI (for the log line)
    and the length of its signatures (for size queries)."""

    token: TokenIdentity
    label: str
    key_id: bytes
    uri: str
    kind: KeyKind | None
    output_length: int | None  # None: the key's size is unreadable


def _key_ref(
    ident: TokenIdentity, label: str, key_id: bytes, attrs: Mapping[int, AttrValue]
) -> _KeyRef:
    kind = attrs.get(Cka.KEY_TYPE)
    key_kind = (
        KeyKind(kind) if isinstance(kind, int) and kind in (KeyKind.RSA, KeyKind.EC) else None
    )
    length: int | None = None
    if key_kind is KeyKind.RSA:
        modulus = attrs.get(Cka.MODULUS)
        bits = attrs.get(Cka.MODULUS_BITS)
        if isinstance(modulus, bytes) and modulus:
            length = (int.from_bytes(modulus, "big").bit_length() + 7) // 8
        elif isinstance(bits, int) and bits:
            length = (bits + 7) // 8
    elif key_kind is KeyKind.EC:
        params = attrs.get(Cka.EC_PARAMS)
        curve = curve_from_params(params if isinstance(params, bytes) else None)
        if curve not in (Curve.UNKNOWN, Curve.NONE, Curve.ED25519, Curve.ED448):
            length = 2 * curve.order_bytes
    return _KeyRef(ident, label, key_id, key_uri(ident, label, key_id), key_kind, length)


@dataclass(slots=True)
class _Cached:
    access: ServiceAccess
    until: float
    tokens: tuple[VirtualToken, ...]


class ServiceWorkers(Protocol):
    """Where a service's token access and module worker come from: the
    TOKEN_SIGN backend in the daemon (`pkcs11.program.TokenSignBackend`),
    or a p11-kit worker process's one service (`server.p11kit_zygote`)."""

    def service_worker(self, service: Service) -> tuple[ServiceAccess, ModuleWorker]: ...


class P11KitTokens:
    """The virtual tokens of every service, over the TOKEN_SIGN backend's
    workers (one per module: same sessions, same login, same recovery)."""

    def __init__(self, backend: ServiceWorkers, *, inline: bool = False) -> None:
        self._backend = backend
        self._cache: dict[str, _Cached] = {}
        # The workers' calls run on the caller's thread (a p11-kit worker
        # process): `ServiceTokens.operate_inline` may call them directly.
        self.inline = inline

    def view(self, service: Service, who: str) -> ServiceTokens:
        """One connection's backend; `who` describes the peer for the log."""
        return ServiceTokens(self, service, who)

    async def tokens(self, service: Service) -> tuple[VirtualToken, ...]:
        try:
            access, worker = self._backend.service_worker(service)
        except SignFailure as f:
            log.warning("p11kit: service %s: %s", service.name, f)
            return ()
        cached = self._cache.get(service.name)
        now = time.monotonic()
        if cached is not None and cached.access is access and now < cached.until:
            return cached.tokens
        try:
            snaps, problems = await worker.run(worker.snapshot, access, ATTRIBUTES_READ)
        except Exception:
            # A bug of ours or a module's surprise: the peer sees no slot.
            log.exception("p11kit: service %s: reading its tokens failed", service.name)
            return ()
        for p in problems:
            log.warning("p11kit: service %s: %s: %s", service.name, p.where, p.failure)
        allowed = set(service.p11kit_mechanisms or ())
        tokens = tuple(_virtual(s, allowed) for s in snaps)
        self._cache[service.name] = _Cached(access, now + SNAPSHOT_TTL, tokens)
        return tokens

    def worker(self, service: Service) -> tuple[ServiceAccess, ModuleWorker]:
        try:
            return self._backend.service_worker(service)
        except SignFailure as f:
            raise CkError(Ckr.DEVICE_ERROR, str(f)) from None


def _virtual(snap: TokenSnapshot, allowed: set[str]) -> VirtualToken:
    objects: list[VirtualObject] = []
    kinds: set[KeyKind] = set()
    for o in snap.objects:
        attrs: dict[int, AttrValue] = dict(o.attributes)
        attrs |= _READ_ONLY
        sensitive: frozenset[int] = frozenset()
        ref = None
        if o.object_class is ObjectClass.PRIVATE_KEY:
            attrs |= _PRIVATE_FORCED
            for secret in PRIVATE_COMPONENTS:
                attrs.pop(secret, None)
            sensitive = PRIVATE_COMPONENTS
            modulus = attrs.get(Cka.MODULUS)
            if isinstance(modulus, bytes) and Cka.MODULUS_BITS not in attrs:
                attrs[Cka.MODULUS_BITS] = int.from_bytes(modulus, "big").bit_length()
            ref = _key_ref(snap.identity, o.label, o.key_id, attrs)
            if ref.kind is not None:
                kinds.add(ref.kind)
        objects.append(VirtualObject(_CLASSES[o.object_class], attrs, sensitive, ref))
    mechanisms = {
        ckm: MechanismInfo(*_KEY_SIZES[m.key_kind], int(m.flags))
        for ckm, m in SERVED_MECHANISMS.items()
        if ckm in snap.mechanisms and m.key_kind in kinds and (not allowed or m.name in allowed)
    }
    ident = snap.identity
    return VirtualToken(
        label=ident.label,
        manufacturer=ident.manufacturer,
        model=ident.model,
        serial=ident.serial,
        objects=tuple(objects),
        mechanisms=mechanisms,
    )


def _param(mechanism: Mechanism) -> RawParam:
    p = mechanism.param
    if isinstance(p, PssParams):
        return (p.hash_alg, p.mgf, p.salt_length)
    if isinstance(p, OaepParams):
        # CKZ_DATA_SPECIFIED (1) is the only source there is; pkcs11-tool
        # sends 0 with no data, which means the same empty label.
        if p.source not in (0, 1) or (p.source == 0 and p.source_data):
            raise CkError(Ckr.MECHANISM_PARAM_INVALID)
        return (p.hash_alg, p.mgf, p.source_data or None)
    if p:  # a parameter for a mechanism that takes none
        raise CkError(Ckr.MECHANISM_PARAM_INVALID)
    return None


def _ckr(e: CkrError) -> int:
    return _CKR_VALUES.get(e.ckr, Ckr.FUNCTION_FAILED)


def _failure(e: CkrError | SignFailure) -> tuple[str, CkError]:
    """The audit line's outcome for a token layer's failure, and the CK_RV
    the consumer gets for it."""
    if isinstance(e, CkrError):
        return e.ckr or "error", CkError(_ckr(e), str(e))
    return str(e), CkError(Ckr.DEVICE_ERROR, str(e))


def _mech_name(ckm: int) -> str:
    m = SERVED_MECHANISMS.get(ckm)
    return f"CKM_{m.name}" if m is not None else f"CKM {ckm:#x}"


class ServiceTokens:
    """The `Backend` of one connection matched to one service."""

    def __init__(self, tokens: P11KitTokens, service: Service, who: str) -> None:
        self._tokens = tokens
        self._service = service
        self._who = who
        self._allowed = frozenset(service.p11kit_mechanisms or ())
        self._inline: tuple[ServiceAccess, ModuleWorker] | None = None

    async def tokens(self) -> tuple[VirtualToken, ...]:
        return await self._tokens.tokens(self._service)

    async def sign(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        return await self._operate(KeyOperation.SIGN, key, mechanism, data)

    async def decrypt(self, key: VirtualObject, mechanism: Mechanism, data: bytes) -> bytes:
        return await self._operate(KeyOperation.DECRYPT, key, mechanism, data)

    @staticmethod
    def _key_and_param(key: VirtualObject, mechanism: Mechanism) -> tuple[_KeyRef, RawParam]:
        """How the token layer names `key`, and the mechanism's parameter;
        CkError before the token is asked (no audit line then)."""
        ref = key.key_ref
        assert isinstance(ref, _KeyRef)
        return ref, _param(mechanism)

    async def _operate(
        self, operation: KeyOperation, key: VirtualObject, mechanism: Mechanism, data: bytes
    ) -> bytes:
        ref, param = self._key_and_param(key, mechanism)
        access, worker = self._tokens.worker(self._service)
        outcome = "ok"
        try:
            return await worker.run(
                worker.operate,
                access,
                ref.token,
                ref.label,
                ref.key_id,
                operation,
                mechanism.type,
                param,
                data,
            )
        except (CkrError, SignFailure) as e:
            outcome, error = _failure(e)
            raise error from None
        finally:
            # The audit line (debug level 1); nothing of it is built below.
            if log.isEnabledFor(logging.INFO):
                self._audit(operation, ref, mechanism, data, outcome)

    def operate_inline(
        self, sign: bool, key: VirtualObject, mechanism: Mechanism, data: bytes
    ) -> bytes:
        """`sign` or `decrypt` on the calling thread, for a p11-kit worker
        process (`P11KitTokens(..., inline=True)`, whose module calls are
        inline): the same policy and audit line, no coroutine."""
        ref, param = self._key_and_param(key, mechanism)
        if self._inline is None:
            if not self._tokens.inline:
                raise RuntimeError("operate_inline where the module has its own thread")
            # A worker process serves one service with one module for its
            # whole life: its access and worker never change.
            self._inline = self._tokens.worker(self._service)
        access, worker = self._inline
        operation = KeyOperation.SIGN if sign else KeyOperation.DECRYPT
        outcome = "ok"
        try:
            return worker.operate(
                access, ref.token, ref.label, ref.key_id, operation, mechanism.type, param, data
            )
        except (CkrError, SignFailure) as e:
            outcome, error = _failure(e)
            raise error from None
        finally:
            if log.isEnabledFor(logging.INFO):
                self._audit(operation, ref, mechanism, data, outcome)

    def _audit(
        self,
        operation: KeyOperation,
        ref: _KeyRef,
        mechanism: Mechanism,
        data: bytes,
        outcome: str,
    ) -> None:
        log.info(
            "p11kit %s: %s service %s key %s %s, %d bytes: %s",
            "sign" if operation is KeyOperation.SIGN else "decrypt",
            self._who,
            self._service.name,
            ref.uri,
            _mech_name(mechanism.type),
            len(data),
            outcome,
        )

    def output_length(self, key: VirtualObject, mechanism: Mechanism) -> int:
        served = SERVED_MECHANISMS.get(mechanism.type)
        if served is None:
            raise CkError(Ckr.MECHANISM_INVALID)
        ref = key.key_ref
        if isinstance(ref, _KeyRef) and ref.output_length is not None:
            # A private key: worked out once per snapshot (three times per
            # signature otherwise: C_SignInit, the size query, C_Sign).
            if ref.kind is not served.key_kind:
                raise CkError(Ckr.KEY_TYPE_INCONSISTENT)
            return ref.output_length
        kind = key.attributes.get(Cka.KEY_TYPE)
        if kind != served.key_kind:
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT)
        if served.key_kind is KeyKind.RSA:
            modulus = key.attributes.get(Cka.MODULUS)
            if isinstance(modulus, bytes) and modulus:
                return (int.from_bytes(modulus, "big").bit_length() + 7) // 8
            bits = key.attributes.get(Cka.MODULUS_BITS)
            if isinstance(bits, int) and bits:
                return (bits + 7) // 8
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT, "RSA key without modulus")
        params = key.attributes.get(Cka.EC_PARAMS)
        curve = curve_from_params(params if isinstance(params, bytes) else None)
        if curve in (Curve.UNKNOWN, Curve.NONE, Curve.ED25519, Curve.ED448):
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT, "unknown curve")
        return 2 * curve.order_bytes

    def allows(self, mechanism: int) -> bool:
        served = SERVED_MECHANISMS.get(mechanism)
        return served is not None and (not self._allowed or served.name in self._allowed)

    def note_login(self, user_type: int) -> None:
        log.info(
            "p11kit: %s service %s: C_Login (user type %d) answered without using its PIN",
            self._who,
            self._service.name,
            user_type,
        )

    def verify(
        self, key: VirtualObject, mechanism: Mechanism, data: bytes, signature: bytes
    ) -> None:
        self.output_length(key, mechanism)
        a = key.attributes
        kind = KeyKind(int(a.get(Cka.KEY_TYPE, -1)))  # type: ignore[arg-type]
        parts = PublicParts(
            kind=kind,
            modulus=_b(a.get(Cka.MODULUS)),
            public_exponent=_b(a.get(Cka.PUBLIC_EXPONENT)),
            ec_params=_b(a.get(Cka.EC_PARAMS)),
            ec_point=_b(a.get(Cka.EC_POINT)),
        )
        spki = spki_der(parts)
        if spki is None:
            raise CkError(Ckr.KEY_TYPE_INCONSISTENT, "public key unreadable")
        public = load_der_public_key(spki)
        try:
            _verify(public, mechanism, data, signature)
        except InvalidSignature:
            raise CkError(0xC0) from None  # CKR_SIGNATURE_INVALID
        except ValueError:
            raise CkError(0xC1) from None  # CKR_SIGNATURE_LEN_RANGE


def _b(v: AttrValue | None) -> bytes | None:
    return v if isinstance(v, bytes) else None


def _verify(public: object, mechanism: Mechanism, data: bytes, signature: bytes) -> None:
    served = SERVED_MECHANISMS[mechanism.type]
    if isinstance(public, rsa.RSAPublicKey):
        if mechanism.type == 0x1:  # raw PKCS#1 v1.5 over whatever the caller built
            if public.recover_data_from_signature(signature, padding.PKCS1v15(), None) != data:
                raise InvalidSignature
            return
        if mechanism.type == 0xD:
            p = mechanism.param
            if not isinstance(p, PssParams) or p.hash_alg not in _HASH_BY_CKM:
                raise CkError(Ckr.MECHANISM_PARAM_INVALID)
            h = _HASH_BY_CKM[p.hash_alg]
            mgf = padding.MGF1(_mgf_hash(p.mgf))
            pss = padding.PSS(mgf, p.salt_length)
            public.verify(signature, data, pss, utils.Prehashed(h))
            return
        assert served.hash is not None
        public.verify(signature, data, padding.PKCS1v15(), served.hash)
        return
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise ValueError("signature length")
        der = utils.encode_dss_signature(
            int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        )
        if served.hash is not None:
            public.verify(der, data, ec.ECDSA(served.hash))
            return
        prehashed = _HASH_BY_LENGTH.get(len(data))
        if prehashed is None:
            raise CkError(Ckr.DATA_LEN_RANGE)
        public.verify(der, data, ec.ECDSA(utils.Prehashed(prehashed)))
        return
    raise CkError(Ckr.KEY_TYPE_INCONSISTENT)


_MGF_HASH: Final = {
    0x1: hashes.SHA1(),  # noqa: S303 -- consumers still ask; the token hashes
    0x5: hashes.SHA224(),
    0x2: hashes.SHA256(),
    0x3: hashes.SHA384(),
    0x4: hashes.SHA512(),
}


def _mgf_hash(mgf: int) -> hashes.HashAlgorithm:
    h = _MGF_HASH.get(mgf)
    if h is None:
        raise CkError(Ckr.MECHANISM_PARAM_INVALID)
    return h
