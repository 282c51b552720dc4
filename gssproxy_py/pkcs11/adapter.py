"""Typed adapters over python-pkcs11, and the protocols the token layer uses.

python-pkcs11 has no type information mypy can use (it is a Cython module,
imported with ignore_missing_imports), so it is confined to this module:
everything leaving it is one of the frozen views below or a `CkrError`
carrying the CKR_* name of the failed call. The protocols (`Library`,
`SlotToken`, `Session`) are what `token.py` programs against, which lets
unit tests run the whole token layer on a scripted fake.

Every call here must run on the module's own worker thread (see
`token.py`): python-pkcs11 initialises modules without CKF_OS_LOCKING_OK,
promising the module that calls never overlap, and releases the GIL around
each C_* call, so nothing else keeps that promise for us.

Single-part C_Sign and C_Decrypt (`Session.sign`, `Session.operate`) go
straight to the module through `function_list.FunctionList` when its table
can be had (python-pkcs11's path costs a size query and object churn per
call); python-pkcs11 does them only when it cannot (logged once).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, IntFlag
from typing import Any, Final, Protocol

from gssproxy_py.pkcs11.errors import CkrError, ModuleLoadError
from gssproxy_py.pkcs11.function_list import CKR_NAMES, FunctionList, load_function_list
from gssproxy_py.pkcs11.keys import curve_from_params
from gssproxy_py.pkcs11.mechanisms import PssParams

__all__ = [
    "KeyOperation",
    "Library",
    "LibraryInfo",
    "ObjectClass",
    "ObjectView",
    "Session",
    "SlotToken",
    "TokenFlag",
    "TokenInfo",
    "ckr_name",
    "load_library",
]


class ObjectClass(IntEnum):
    """CKO_* values we look for."""

    CERTIFICATE = 0x1
    PUBLIC_KEY = 0x2
    PRIVATE_KEY = 0x3


class TokenFlag(IntFlag):
    """CKF_* token flags we act on."""

    LOGIN_REQUIRED = 0x4
    USER_PIN_INITIALIZED = 0x8
    PROTECTED_AUTHENTICATION_PATH = 0x100
    TOKEN_INITIALIZED = 0x400
    USER_PIN_COUNT_LOW = 0x10000
    USER_PIN_FINAL_TRY = 0x20000
    USER_PIN_LOCKED = 0x40000
    USER_PIN_TO_BE_CHANGED = 0x80000


@dataclass(frozen=True, slots=True)
class LibraryInfo:
    manufacturer: str
    description: str
    version: str  # "MAJOR.MINOR"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """C_GetSlotInfo and C_GetTokenInfo of one present token, blanks stripped."""

    slot_id: int
    slot_description: str
    slot_manufacturer: str
    label: str
    manufacturer: str
    model: str
    serial: str
    flags: TokenFlag


@dataclass(frozen=True, slots=True)
class ObjectView:
    """The attributes of one object we care about; None where the token does
    not have (or will not reveal) the attribute. `handle` is the backend's
    object, only meaningful to the session that found it."""

    object_class: ObjectClass
    label: str
    key_id: bytes
    key_type: int | None = None
    extractable: bool | None = None
    sensitive: bool | None = None
    modulus: bytes | None = None
    public_exponent: bytes | None = None
    ec_params: bytes | None = None
    ec_point: bytes | None = None
    value: bytes | None = None  # a certificate's DER
    certificate_type: int | None = None
    handle: object = field(default=None, compare=False, repr=False)


class KeyOperation(IntEnum):
    SIGN = 1
    DECRYPT = 2


RawValue = bool | int | bytes
#: A mechanism parameter as p11-kit carries it: PSS (hash, mgf, salt length),
#: OAEP (hash, mgf, source data), other bytes, or None.
RawParam = tuple[int, int, int] | tuple[int, int, bytes | None] | bytes | None


class Session(Protocol):
    def objects(
        self, object_class: ObjectClass, *, label: str | None = None, key_id: bytes | None = None
    ) -> list[ObjectView]:
        """Token objects (CKA_TOKEN true) of a class, narrowed on the token
        by label and id."""
        ...

    def sign(self, key: ObjectView, mechanism: int, param: PssParams | None, data: bytes) -> bytes:
        """C_SignInit + C_Sign with a private key this session found."""
        ...

    def read_attributes(self, obj: ObjectView, types: Sequence[int]) -> dict[int, RawValue]:
        """The attributes of `types` the object has and reveals (one
        C_GetAttributeValue), as bool, int or bytes (strings UTF-8)."""
        ...

    def operate(
        self, key: ObjectView, operation: KeyOperation, mechanism: int, param: RawParam, data: bytes
    ) -> bytes:
        """One single-part C_Sign or C_Decrypt with a key this session found,
        the mechanism parameter as the client gave it."""
        ...

    def session_copy(self, key: ObjectView) -> ObjectView:
        """C_CopyObject of a private key with CKA_TOKEN false only: a session
        object with the key's attributes otherwise, as a view like `key`'s."""
        ...

    def destroy(self, obj: ObjectView) -> None:
        """C_DestroyObject of an object this session made."""
        ...

    def close(self) -> None:
        """C_Logout (if logged in) and C_CloseSession; errors ignored."""
        ...


class SlotToken(Protocol):
    @property
    def info(self) -> TokenInfo: ...

    def mechanisms(self) -> frozenset[int]:
        """C_GetMechanismList."""
        ...

    def open(self, pin: str | None) -> Session:
        """A read-only session, logged in as the user when `pin` is given."""
        ...


class Library(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def info(self) -> LibraryInfo: ...

    def tokens(self) -> list[SlotToken]:
        """Present tokens, freshly enumerated (C_GetSlotList(TRUE))."""
        ...

    def close(self) -> None:
        """C_Finalize and unload; the object is unusable afterwards."""
        ...


# python-pkcs11 raises one exception class per CKR; these are their names.
_CKR_BY_CLASS: Final = {
    "AnotherUserAlreadyLoggedIn": "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
    "ArgumentsBad": "CKR_ARGUMENTS_BAD",
    "AttributeReadOnly": "CKR_ATTRIBUTE_READ_ONLY",
    "AttributeSensitive": "CKR_ATTRIBUTE_SENSITIVE",
    "AttributeTypeInvalid": "CKR_ATTRIBUTE_TYPE_INVALID",
    "AttributeValueInvalid": "CKR_ATTRIBUTE_VALUE_INVALID",
    "DataInvalid": "CKR_DATA_INVALID",
    "DataLenRange": "CKR_DATA_LEN_RANGE",
    "DeviceError": "CKR_DEVICE_ERROR",
    "DeviceMemory": "CKR_DEVICE_MEMORY",
    "DeviceRemoved": "CKR_DEVICE_REMOVED",
    "DomainParamsInvalid": "CKR_DOMAIN_PARAMS_INVALID",
    "EncryptedDataInvalid": "CKR_ENCRYPTED_DATA_INVALID",
    "EncryptedDataLenRange": "CKR_ENCRYPTED_DATA_LEN_RANGE",
    "ExceededMaxIterations": "CKR_EXCEEDED_MAX_ITERATIONS",
    "FunctionCancelled": "CKR_FUNCTION_CANCELED",
    "FunctionFailed": "CKR_FUNCTION_FAILED",
    "FunctionNotSupported": "CKR_FUNCTION_NOT_SUPPORTED",
    "FunctionRejected": "CKR_FUNCTION_REJECTED",
    "GeneralError": "CKR_GENERAL_ERROR",
    "HostMemory": "CKR_HOST_MEMORY",
    "KeyHandleInvalid": "CKR_KEY_HANDLE_INVALID",
    "KeyIndigestible": "CKR_KEY_INDIGESTIBLE",
    "KeyNeeded": "CKR_KEY_NEEDED",
    "KeyNotNeeded": "CKR_KEY_NOT_NEEDED",
    "KeyNotWrappable": "CKR_KEY_NOT_WRAPPABLE",
    "KeySizeRange": "CKR_KEY_SIZE_RANGE",
    "KeyTypeInconsistent": "CKR_KEY_TYPE_INCONSISTENT",
    "KeyUnextractable": "CKR_KEY_UNEXTRACTABLE",
    "MechanismInvalid": "CKR_MECHANISM_INVALID",
    "MechanismParamInvalid": "CKR_MECHANISM_PARAM_INVALID",
    "NoEvent": "CKR_NO_EVENT",
    "ObjectHandleInvalid": "CKR_OBJECT_HANDLE_INVALID",
    "OperationActive": "CKR_OPERATION_ACTIVE",
    "OperationNotInitialized": "CKR_OPERATION_NOT_INITIALIZED",
    "PinExpired": "CKR_PIN_EXPIRED",
    "PinIncorrect": "CKR_PIN_INCORRECT",
    "PinInvalid": "CKR_PIN_INVALID",
    "PinLenRange": "CKR_PIN_LEN_RANGE",
    "PinLocked": "CKR_PIN_LOCKED",
    "PinTooWeak": "CKR_PIN_TOO_WEAK",
    "PublicKeyInvalid": "CKR_PUBLIC_KEY_INVALID",
    "RandomNoRNG": "CKR_RANDOM_NO_RNG",
    "RandomSeedNotSupported": "CKR_RANDOM_SEED_NOT_SUPPORTED",
    "SessionClosed": "CKR_SESSION_CLOSED",
    "SessionCount": "CKR_SESSION_COUNT",
    "SessionExists": "CKR_SESSION_EXISTS",
    "SessionHandleInvalid": "CKR_SESSION_HANDLE_INVALID",
    "SessionReadOnly": "CKR_SESSION_READ_ONLY",
    "SessionReadOnlyExists": "CKR_SESSION_READ_ONLY_EXISTS",
    "SessionReadWriteSOExists": "CKR_SESSION_READ_WRITE_SO_EXISTS",
    "SignatureInvalid": "CKR_SIGNATURE_INVALID",
    "SignatureLenRange": "CKR_SIGNATURE_LEN_RANGE",
    "SlotIDInvalid": "CKR_SLOT_ID_INVALID",
    "TemplateIncomplete": "CKR_TEMPLATE_INCOMPLETE",
    "TemplateInconsistent": "CKR_TEMPLATE_INCONSISTENT",
    "TokenNotPresent": "CKR_TOKEN_NOT_PRESENT",
    "TokenNotRecognised": "CKR_TOKEN_NOT_RECOGNIZED",
    "TokenWriteProtected": "CKR_TOKEN_WRITE_PROTECTED",
    "UnwrappingKeyHandleInvalid": "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
    "UnwrappingKeySizeRange": "CKR_UNWRAPPING_KEY_SIZE_RANGE",
    "UnwrappingKeyTypeInconsistent": "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
    "UserAlreadyLoggedIn": "CKR_USER_ALREADY_LOGGED_IN",
    "UserNotLoggedIn": "CKR_USER_NOT_LOGGED_IN",
    "UserPinNotInitialized": "CKR_USER_PIN_NOT_INITIALIZED",
    "UserTooManyTypes": "CKR_USER_TOO_MANY_TYPES",
    "WrappedKeyInvalid": "CKR_WRAPPED_KEY_INVALID",
    "WrappedKeyLenRange": "CKR_WRAPPED_KEY_LEN_RANGE",
    "WrappingKeyHandleInvalid": "CKR_WRAPPING_KEY_HANDLE_INVALID",
    "WrappingKeySizeRange": "CKR_WRAPPING_KEY_SIZE_RANGE",
    "WrappingKeyTypeInconsistent": "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
}


_UNMAPPED: Final = "Unmapped error code 0x"


def ckr_name(exc: BaseException) -> str:
    """The CKR_* name for a python-pkcs11 exception ("" if it has none:
    python-pkcs11's own errors such as a failed dlopen). A code
    python-pkcs11 has no class for is named from `CKR_NAMES`, the table the
    direct calls use, so both paths name every refusal alike."""
    for cls in type(exc).__mro__:
        name = _CKR_BY_CLASS.get(cls.__name__)
        if name is not None:
            return name
    text = str(exc)
    if text.startswith(_UNMAPPED):
        with contextlib.suppress(ValueError):
            return CKR_NAMES.get(int(text[len(_UNMAPPED) :], 16), "")
    return ""


def _pkcs11() -> Any:
    # Imported on first use so that the daemon starts (and serves GSS-Proxy)
    # even where python-pkcs11 is missing; only token services then fail.
    import pkcs11

    return pkcs11


@contextlib.contextmanager
def _calling(call: str) -> Iterator[None]:
    """Turn python-pkcs11 exceptions raised inside into CkrError."""
    p11 = _pkcs11()
    try:
        yield
    except p11.exceptions.PKCS11Error as e:
        ckr = ckr_name(e)
        # Only CKR-less errors carry text worth keeping; python-pkcs11 puts
        # no secrets in exception messages.
        raise CkrError(ckr, call, "" if ckr else str(e)[:200]) from e


def load_library(path: str) -> Library:
    """Load and initialise the module at `path` (C_Initialize)."""
    p11 = _pkcs11()
    try:
        lib = p11.lib(path)
    except p11.exceptions.PKCS11Error as e:
        raise ModuleLoadError(f"cannot load PKCS#11 module {path}: {e}") from e
    except OSError as e:
        raise ModuleLoadError(f"cannot load PKCS#11 module {path}: {e.strerror or e}") from e
    return _P11Library(path, lib)


def _text(value: object) -> str:
    return str(value).rstrip(" \x00")


class _P11Library:
    def __init__(self, path: str, lib: Any) -> None:
        self._path = path
        self._lib = lib
        # After python-pkcs11's dlopen and C_Initialize: the same instance.
        self._direct = load_function_list(path)
        with _calling("C_GetInfo"):
            version = lib.library_version
            self._info = LibraryInfo(
                manufacturer=_text(lib.manufacturer_id),
                description=_text(lib.library_description),
                version=f"{version[0]}.{version[1]}",
            )

    @property
    def path(self) -> str:
        return self._path

    @property
    def info(self) -> LibraryInfo:
        return self._info

    def tokens(self) -> list[SlotToken]:
        p11 = _pkcs11()
        found: list[SlotToken] = []
        with _calling("C_GetSlotList"):
            slots = self._lib.get_slots(token_present=True)
        for slot in slots:
            try:
                with _calling("C_GetTokenInfo"):
                    token = slot.get_token()
            except CkrError as e:
                # A token pulled out between the two calls is simply absent.
                if e.ckr in ("CKR_TOKEN_NOT_PRESENT", "CKR_TOKEN_NOT_RECOGNIZED"):
                    continue
                raise
            serial = token.serial
            info = TokenInfo(
                slot_id=int(slot.slot_id),
                slot_description=_text(slot.slot_description),
                slot_manufacturer=_text(slot.manufacturer_id),
                label=_text(token.label),
                manufacturer=_text(token.manufacturer_id),
                model=_text(token.model),
                serial=_text(
                    serial.decode("utf-8", "replace") if isinstance(serial, bytes) else serial
                ),
                flags=TokenFlag(int(token.flags)),
            )
            found.append(_P11SlotToken(info, slot, token, p11, self._direct))
        return found

    def close(self) -> None:
        p11 = _pkcs11()
        # unload() finalises and dlcloses; python-pkcs11 caches modules by
        # path, so it also forgets this one and a later load starts afresh.
        with contextlib.suppress(Exception):
            p11.unload(self._path)


class _P11SlotToken:
    def __init__(
        self, info: TokenInfo, slot: Any, token: Any, p11: Any, direct: FunctionList | None
    ) -> None:
        self._info = info
        self._slot = slot
        self._token = token
        self._p11 = p11
        self._direct = direct

    @property
    def info(self) -> TokenInfo:
        return self._info

    def mechanisms(self) -> frozenset[int]:
        with _calling("C_GetMechanismList"):
            return frozenset(int(m) for m in self._slot.get_mechanisms())

    def open(self, pin: str | None) -> Session:
        with _calling("C_Login" if pin is not None else "C_OpenSession"):
            session = self._token.open(rw=False, user_pin=pin)
        return _P11Session(session, self._p11, self._direct)


# Attributes read per class, in one C_GetAttributeValue each.
_COMMON_ATTRS: Final = ("LABEL", "ID")
_CLASS_ATTRS: Final = {
    ObjectClass.PRIVATE_KEY: (
        "KEY_TYPE",
        "EXTRACTABLE",
        "SENSITIVE",
        "MODULUS",
        "PUBLIC_EXPONENT",
        "EC_PARAMS",
    ),
    ObjectClass.PUBLIC_KEY: ("KEY_TYPE", "MODULUS", "PUBLIC_EXPONENT", "EC_PARAMS", "EC_POINT"),
    ObjectClass.CERTIFICATE: ("VALUE", "CERTIFICATE_TYPE"),
}


def _opt_bytes(v: object) -> bytes | None:
    return bytes(v) if isinstance(v, bytes | bytearray) else None


def _opt_bool(v: object) -> bool | None:
    return bool(v) if isinstance(v, bool) else None


def _opt_int(v: object) -> int | None:
    return int(v) if isinstance(v, int) else None


def _int_bytes(v: object) -> bytes | None:
    # python-pkcs11 returns MODULUS/PUBLIC_EXPONENT as bytes (big-endian).
    if isinstance(v, int):
        return v.to_bytes((v.bit_length() + 7) // 8 or 1, "big")
    return _opt_bytes(v)


#: Output buffer for a key whose size is not known (RSA-8192 fits).
_DEFAULT_OUTPUT: Final = 1024


def output_size(key: ObjectView) -> int:
    """The buffer a signature or plaintext of `key` fits in: the modulus
    length for RSA, twice the order's bytes (rounded up) for EC."""
    if key.modulus:
        return len(key.modulus)
    if key.ec_params:
        bits = curve_from_params(key.ec_params).value
        if bits > 0:
            return 2 * ((bits + 8) // 8)
    return _DEFAULT_OUTPUT


class _P11Session:
    def __init__(self, session: Any, p11: Any, direct: FunctionList | None = None) -> None:
        self._session = session
        self._p11 = p11
        self._direct = direct

    def objects(
        self, object_class: ObjectClass, *, label: str | None = None, key_id: bytes | None = None
    ) -> list[ObjectView]:
        A = self._p11.Attribute  # noqa: N806 -- the library's enum
        # Token objects only: our own session copies of keys (token.py) must
        # not show up as second keys in listings and lookups.
        template: dict[Any, Any] = {
            A.CLASS: self._p11.ObjectClass(int(object_class)),
            A.TOKEN: True,
        }
        if label is not None:
            template[A.LABEL] = label
        if key_id is not None:
            template[A.ID] = key_id
        views = []
        with _calling("C_FindObjects"):
            found = self._search(template)
        for obj in found:
            names = _COMMON_ATTRS + _CLASS_ATTRS[object_class]
            with _calling("C_GetAttributeValue"):
                values = obj.get_attributes([A[n] for n in names])
            got = {n: values.get(A[n]) for n in names}
            views.append(
                ObjectView(
                    object_class=object_class,
                    label=_text(got["LABEL"] or ""),
                    key_id=_opt_bytes(got["ID"]) or b"",
                    key_type=_opt_int(got.get("KEY_TYPE")),
                    extractable=_opt_bool(got.get("EXTRACTABLE")),
                    sensitive=_opt_bool(got.get("SENSITIVE")),
                    modulus=_int_bytes(got.get("MODULUS")),
                    public_exponent=_int_bytes(got.get("PUBLIC_EXPONENT")),
                    ec_params=_opt_bytes(got.get("EC_PARAMS")),
                    ec_point=_opt_bytes(got.get("EC_POINT")),
                    value=_opt_bytes(got.get("VALUE")),
                    certificate_type=_opt_int(got.get("CERTIFICATE_TYPE")),
                    handle=obj,
                )
            )
        return views

    def _search(self, template: dict[Any, Any]) -> list[Any]:
        # Session.get_objects() leaves its search marked active when
        # C_FindObjectsInit or C_FindObjects fails (a dead session, say), and
        # the garbage collector then retries C_FindObjectsFinal in __del__,
        # printing "Exception ignored in ... __del__" to stderr. Driving the
        # SearchIter ourselves lets us finish it while we still can.
        search_iter = getattr(self._p11._pkcs11, "SearchIter", None)
        if search_iter is None:
            return list(self._session.get_objects(template))
        op = search_iter(self._session, template, 16)
        try:
            op.__enter__()
            found = [obj for batch in op for obj in batch]
        except BaseException:
            with contextlib.suppress(Exception):
                op._finalize()  # marks it inactive before raising the CKR
            raise
        return found

    def sign(self, key: ObjectView, mechanism: int, param: PssParams | None, data: bytes) -> bytes:
        raw: RawParam = None
        if param is not None:
            raw = (int(param.hash_mechanism), int(param.mgf), param.salt_length)
        direct = self._direct
        if direct is not None:
            handle = self._session.handle
            return direct.sign(handle, key.handle.handle, mechanism, raw, data, output_size(key))  # type: ignore[attr-defined]
        p11 = self._p11
        mech_param: Any = None
        if param is not None:
            mech_param = (
                p11.Mechanism(int(param.hash_mechanism)),
                p11.MGF(int(param.mgf)),
                param.salt_length,
            )
        with _calling("C_Sign"):
            sig = key.handle.sign(  # type: ignore[attr-defined]
                data, mechanism=p11.Mechanism(mechanism), mechanism_param=mech_param
            )
        return bytes(sig)

    def read_attributes(self, obj: ObjectView, types: Sequence[int]) -> dict[int, RawValue]:
        # python-pkcs11 raises for types it cannot decode: ask only for the
        # ones it knows.
        known = self._p11.attributes.ATTRIBUTE_TYPES
        wanted = [t for t in types if t in known]
        with _calling("C_GetAttributeValue"):
            values = obj.handle.get_attributes(wanted)  # type: ignore[attr-defined]
        out: dict[int, RawValue] = {}
        for attr_type, value in values.items():
            if isinstance(value, bool | bytes):
                out[int(attr_type)] = value
            elif isinstance(value, int):  # an IntEnum (class, key type) too
                out[int(attr_type)] = int(value)
            elif isinstance(value, str):
                out[int(attr_type)] = value.encode("utf-8")
            elif isinstance(value, bytearray):
                out[int(attr_type)] = bytes(value)
            # dates and other decoded forms are left out (served as absent)
        return out

    def operate(
        self, key: ObjectView, operation: KeyOperation, mechanism: int, param: RawParam, data: bytes
    ) -> bytes:
        direct = self._direct
        if direct is not None:
            handle = self._session.handle
            obj = key.handle.handle  # type: ignore[attr-defined]
            if operation is KeyOperation.SIGN:
                return direct.sign(handle, obj, mechanism, param, data, output_size(key))
            return direct.decrypt(handle, obj, mechanism, param, data, output_size(key))
        p11 = self._p11
        call = "C_Sign" if operation is KeyOperation.SIGN else "C_Decrypt"
        try:
            mech = p11.Mechanism(mechanism)
        except ValueError:
            raise CkrError("CKR_MECHANISM_INVALID", call) from None
        with _calling(call):
            if operation is KeyOperation.SIGN:
                out = key.handle.sign(data, mechanism=mech, mechanism_param=param)  # type: ignore[attr-defined]
            else:
                out = key.handle.decrypt(data, mechanism=mech, mechanism_param=param)  # type: ignore[attr-defined]
        return bytes(out)

    def session_copy(self, key: ObjectView) -> ObjectView:
        with _calling("C_CopyObject"):
            copy = key.handle.copy({self._p11.Attribute.TOKEN: False})  # type: ignore[attr-defined]
        return replace(key, handle=copy)

    def destroy(self, obj: ObjectView) -> None:
        with _calling("C_DestroyObject"):
            obj.handle.destroy()  # type: ignore[attr-defined]

    def close(self) -> None:
        # close() logs out first, which fails on a dead session; either way
        # the handle is gone for us.
        with contextlib.suppress(Exception):
            self._session.close()
