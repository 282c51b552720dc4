"""Single-part C_Sign and C_Decrypt straight through the module's CK_FUNCTION_LIST.

python-pkcs11 stays the library for everything else (loading, slots,
sessions, logins, searches, attributes, copies). Its Cython sign and decrypt
path costs, per call, a C_Sign size query before the real C_Sign and about
6 us of Python object churn (a mechanism wrapper, exceptions mapped by a
chain of comparisons, bytes built twice). perf on the p11-kit worker
(`python -m bench.p11kitprof --cpu --count 30000`, 2026-12-07) put
python3.11 at 48 us and `_pkcs11` at 6 us per ECDSA signature, the whole
gap to `p11-kit server`; calling C_SignInit and C_Sign here, into a buffer
sized from the key, took worker CPU per signature from 220-245 us to
186-190 us (docs/PERFORMANCE.md has the table).

The function list comes from the module python-pkcs11 already loaded:
`ctypes.CDLL` of the same path is the same dlopen instance (so the same
C_Initialize state), and `C_GetFunctionList` returns its table: a
CK_VERSION (padded to pointer alignment), then the entry points in PKCS#11
v2.40 order (`FUNCTION_INDEX`, checked against the header by a test).
ctypes never dlcloses, so the module stays mapped after python-pkcs11
unloads it (C_Finalize); a later load gets the same instance, initialised
afresh, and a fresh function list.

Every call must run on the module's one worker thread, as for python-pkcs11
(see `adapter.py`: modules are initialised without CKF_OS_LOCKING_OK); the
buffers and the mechanism structure here are reused per call and shared by
nothing else. The calls release the GIL (ctypes CFUNCTYPE) like python-pkcs11's.

Every non-zero CK_RV becomes `CkrError(name, call)` with the name from
`CKR_NAMES`, the one table both paths use (`adapter.ckr_name` reads it for
codes python-pkcs11 leaves unnamed); `call` is "C_Sign" or "C_Decrypt" for
the init call too, as python-pkcs11's path reports it.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Mapping
from typing import Final

from gssproxy_py.pkcs11.errors import CkrError

__all__ = [
    "CKR_NAMES",
    "FUNCTION_INDEX",
    "MAX_OUTPUT",
    "CkMechanism",
    "CkRsaPkcsOaepParams",
    "CkRsaPkcsPssParams",
    "FunctionList",
    "ckr_text",
    "load_function_list",
]

log = logging.getLogger("gssproxy_py.pkcs11")

#: CK_RV values (PKCS#11 v2.40 §11.1, with 3.0's ACTION_PROHIBITED) by name.
CKR_NAMES: Final[Mapping[int, str]] = {
    0x0: "CKR_OK",
    0x1: "CKR_CANCEL",
    0x2: "CKR_HOST_MEMORY",
    0x3: "CKR_SLOT_ID_INVALID",
    0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED",
    0x7: "CKR_ARGUMENTS_BAD",
    0x8: "CKR_NO_EVENT",
    0x9: "CKR_NEED_TO_CREATE_THREADS",
    0xA: "CKR_CANT_LOCK",
    0x10: "CKR_ATTRIBUTE_READ_ONLY",
    0x11: "CKR_ATTRIBUTE_SENSITIVE",
    0x12: "CKR_ATTRIBUTE_TYPE_INVALID",
    0x13: "CKR_ATTRIBUTE_VALUE_INVALID",
    0x1B: "CKR_ACTION_PROHIBITED",
    0x20: "CKR_DATA_INVALID",
    0x21: "CKR_DATA_LEN_RANGE",
    0x30: "CKR_DEVICE_ERROR",
    0x31: "CKR_DEVICE_MEMORY",
    0x32: "CKR_DEVICE_REMOVED",
    0x40: "CKR_ENCRYPTED_DATA_INVALID",
    0x41: "CKR_ENCRYPTED_DATA_LEN_RANGE",
    0x50: "CKR_FUNCTION_CANCELED",
    0x51: "CKR_FUNCTION_NOT_PARALLEL",
    0x54: "CKR_FUNCTION_NOT_SUPPORTED",
    0x60: "CKR_KEY_HANDLE_INVALID",
    0x62: "CKR_KEY_SIZE_RANGE",
    0x63: "CKR_KEY_TYPE_INCONSISTENT",
    0x64: "CKR_KEY_NOT_NEEDED",
    0x65: "CKR_KEY_CHANGED",
    0x66: "CKR_KEY_NEEDED",
    0x67: "CKR_KEY_INDIGESTIBLE",
    0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
    0x69: "CKR_KEY_NOT_WRAPPABLE",
    0x6A: "CKR_KEY_UNEXTRACTABLE",
    0x70: "CKR_MECHANISM_INVALID",
    0x71: "CKR_MECHANISM_PARAM_INVALID",
    0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE",
    0x91: "CKR_OPERATION_NOT_INITIALIZED",
    0xA0: "CKR_PIN_INCORRECT",
    0xA1: "CKR_PIN_INVALID",
    0xA2: "CKR_PIN_LEN_RANGE",
    0xA3: "CKR_PIN_EXPIRED",
    0xA4: "CKR_PIN_LOCKED",
    0xB0: "CKR_SESSION_CLOSED",
    0xB1: "CKR_SESSION_COUNT",
    0xB3: "CKR_SESSION_HANDLE_INVALID",
    0xB4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED",
    0xB5: "CKR_SESSION_READ_ONLY",
    0xB6: "CKR_SESSION_EXISTS",
    0xB7: "CKR_SESSION_READ_ONLY_EXISTS",
    0xB8: "CKR_SESSION_READ_WRITE_SO_EXISTS",
    0xC0: "CKR_SIGNATURE_INVALID",
    0xC1: "CKR_SIGNATURE_LEN_RANGE",
    0xD0: "CKR_TEMPLATE_INCOMPLETE",
    0xD1: "CKR_TEMPLATE_INCONSISTENT",
    0xE0: "CKR_TOKEN_NOT_PRESENT",
    0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
    0xE2: "CKR_TOKEN_WRITE_PROTECTED",
    0xF0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID",
    0xF1: "CKR_UNWRAPPING_KEY_SIZE_RANGE",
    0xF2: "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT",
    0x100: "CKR_USER_ALREADY_LOGGED_IN",
    0x101: "CKR_USER_NOT_LOGGED_IN",
    0x102: "CKR_USER_PIN_NOT_INITIALIZED",
    0x103: "CKR_USER_TYPE_INVALID",
    0x104: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
    0x105: "CKR_USER_TOO_MANY_TYPES",
    0x110: "CKR_WRAPPED_KEY_INVALID",
    0x112: "CKR_WRAPPED_KEY_LEN_RANGE",
    0x113: "CKR_WRAPPING_KEY_HANDLE_INVALID",
    0x114: "CKR_WRAPPING_KEY_SIZE_RANGE",
    0x115: "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
    0x120: "CKR_RANDOM_SEED_NOT_SUPPORTED",
    0x121: "CKR_RANDOM_NO_RNG",
    0x130: "CKR_DOMAIN_PARAMS_INVALID",
    0x150: "CKR_BUFFER_TOO_SMALL",
    0x160: "CKR_SAVED_STATE_INVALID",
    0x170: "CKR_INFORMATION_SENSITIVE",
    0x180: "CKR_STATE_UNSAVEABLE",
    0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
    0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
    0x1A0: "CKR_MUTEX_BAD",
    0x1A1: "CKR_MUTEX_NOT_LOCKED",
    0x1B0: "CKR_NEW_PIN_MODE",
    0x1B1: "CKR_NEXT_OTP",
    0x1B5: "CKR_EXCEEDED_MAX_ITERATIONS",
    0x1B6: "CKR_FIPS_SELF_TEST_FAILED",
    0x1B7: "CKR_LIBRARY_LOAD_FAILED",
    0x1B8: "CKR_PIN_TOO_WEAK",
    0x1B9: "CKR_PUBLIC_KEY_INVALID",
    0x200: "CKR_FUNCTION_REJECTED",
}

#: Positions in CK_FUNCTION_LIST after the version (PKCS#11 v2.40 §5.16).
FUNCTION_INDEX: Final[Mapping[str, int]] = {
    "C_DecryptInit": 33,
    "C_Decrypt": 34,
    "C_SignInit": 42,
    "C_Sign": 43,
}

#: The largest output a module may ask for after CKR_BUFFER_TOO_SMALL (an
#: RSA-16384 signature is 2 KiB; anything near this is a broken module).
MAX_OUTPUT: Final = 1 << 16

_CKR_BUFFER_TOO_SMALL: Final = 0x150
_CKZ_DATA_SPECIFIED: Final = 1
_CKM_RSA_PKCS_OAEP: Final = 0x9
_CKM_SHA_1: Final = 0x220
_CKG_MGF1_SHA1: Final = 0x1
#: The PSS mechanisms python-pkcs11 gives a CK_RSA_PKCS_PSS_PARAMS (RSA_PKCS_PSS
#: and SHA1/224/256/384/512_RSA_PKCS_PSS).
_PSS_MECHANISMS: Final = frozenset({0xD, 0xE, 0x47, 0x43, 0x44, 0x45})

_ULONG = ctypes.c_ulong


class CkMechanism(ctypes.Structure):
    """CK_MECHANISM."""

    _fields_ = (
        ("mechanism", _ULONG),
        ("pParameter", ctypes.c_void_p),
        ("ulParameterLen", _ULONG),
    )


class CkRsaPkcsPssParams(ctypes.Structure):
    """CK_RSA_PKCS_PSS_PARAMS."""

    _fields_ = (("hashAlg", _ULONG), ("mgf", _ULONG), ("sLen", _ULONG))


class CkRsaPkcsOaepParams(ctypes.Structure):
    """CK_RSA_PKCS_OAEP_PARAMS."""

    _fields_ = (
        ("hashAlg", _ULONG),
        ("mgf", _ULONG),
        ("source", _ULONG),
        ("pSourceData", ctypes.c_void_p),
        ("ulSourceDataLen", _ULONG),
    )


_P_ULONG = ctypes.POINTER(_ULONG)
# CK_RV (*)(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE)
_INIT = ctypes.CFUNCTYPE(_ULONG, _ULONG, ctypes.POINTER(CkMechanism), _ULONG)
# CK_RV (*)(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR)
_SINGLE = ctypes.CFUNCTYPE(_ULONG, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_char_p, _P_ULONG)


def ckr_text(rv: int) -> str:
    """The CKR_* name of a CK_RV ("" for a value outside the table)."""
    return CKR_NAMES.get(rv, "")


def _fail(rv: int, call: str) -> CkrError:
    name = CKR_NAMES.get(rv)
    if name is None:
        # As python-pkcs11 words a code it has no class for.
        return CkrError("", call, f"Unmapped error code {rv:#x}")
    return CkrError(name, call)


ParamValue = tuple[int, int, int] | tuple[int, int, bytes | None] | bytes | None


class FunctionList:
    """C_SignInit/C_Sign and C_DecryptInit/C_Decrypt of one loaded module."""

    def __init__(self, path: str, table: ctypes.Array[ctypes.c_void_p]) -> None:
        self.path = path
        self._table = table  # the module's own memory, mapped for good (see above)
        missing = [n for n, i in FUNCTION_INDEX.items() if not table[1 + i]]
        if missing:
            raise OSError(f"{path}: no {', '.join(missing)} in its function list")
        self._entry: dict[str, int] = {n: table[1 + i] or 0 for n, i in FUNCTION_INDEX.items()}
        self._sign_init = _INIT(self._entry["C_SignInit"])
        self._sign = _SINGLE(self._entry["C_Sign"])
        self._decrypt_init = _INIT(self._entry["C_DecryptInit"])
        self._decrypt = _SINGLE(self._entry["C_Decrypt"])
        # Reused per call: only the module's one thread calls in.
        self._mech = CkMechanism()
        self._pss = CkRsaPkcsPssParams()
        self._oaep = CkRsaPkcsOaepParams()
        self._out_len = _ULONG(0)
        self._mech_ref = ctypes.byref(self._mech)
        self._len_ref = ctypes.byref(self._out_len)

    def entry(self, name: str) -> int:
        """The address of one entry point (for the tests)."""
        return self._entry[name]

    def sign(
        self, session: int, key: int, mechanism: int, param: ParamValue, data: bytes, size: int
    ) -> bytes:
        """C_SignInit + C_Sign; `size` is the expected signature length."""
        return self._run(
            self._sign_init, self._sign, "C_Sign", session, key, mechanism, param, data, size
        )

    def decrypt(
        self, session: int, key: int, mechanism: int, param: ParamValue, data: bytes, size: int
    ) -> bytes:
        """C_DecryptInit + C_Decrypt; `size` bounds the plaintext length."""
        return self._run(
            self._decrypt_init,
            self._decrypt,
            "C_Decrypt",
            session,
            key,
            mechanism,
            param,
            data,
            size,
        )

    def _run(
        self,
        init: Callable[..., int],
        single: Callable[..., int],
        call: str,
        session: int,
        key: int,
        mechanism: int,
        param: ParamValue,
        data: bytes,
        size: int,
    ) -> bytes:
        self._set_mechanism(mechanism, param, call)
        rv = init(session, self._mech_ref, key)
        if rv:
            raise _fail(rv, call)
        return self._single(single, session, data, size, call)

    def _single(
        self, fn: Callable[..., int], session: int, data: bytes, size: int, call: str
    ) -> bytes:
        out = ctypes.create_string_buffer(size)
        self._out_len.value = size
        rv = fn(session, data, len(data), out, self._len_ref)
        if rv == _CKR_BUFFER_TOO_SMALL:
            # The operation is still active (PKCS#11 v2.40 §5.2): call again
            # with the length the module gave, if it is sane.
            need = self._out_len.value
            if need <= size or need > MAX_OUTPUT:
                # PKCS#11 v2.40 has no way to end it here; the next init
                # on this session answers CKR_OPERATION_ACTIVE, which the
                # token layer takes for a lost session (errors.SESSION_LOST_CKRS).
                raise CkrError("CKR_DEVICE_ERROR", call, f"the module asked for {need} bytes")
            out = ctypes.create_string_buffer(need)
            self._out_len.value = need
            rv = fn(session, data, len(data), out, self._len_ref)
        if rv:
            raise _fail(rv, call)
        n = self._out_len.value
        if n > len(out):
            raise CkrError("CKR_DEVICE_ERROR", call, f"the module wrote {n} bytes into {len(out)}")
        return out.raw[:n]

    def _set_mechanism(self, mechanism: int, param: ParamValue, call: str) -> None:
        """Fill the CK_MECHANISM as python-pkcs11 would for the same
        (mechanism, param): raw bytes as given, OAEP and PSS structures
        (SHA-1 defaults when no parameter came, as python-pkcs11 does), a
        tuple for any other mechanism refused with CKR_ARGUMENTS_BAD."""
        mech = self._mech
        mech.mechanism = mechanism
        if param is None and mechanism not in _PSS_MECHANISMS and mechanism != _CKM_RSA_PKCS_OAEP:
            mech.pParameter = None
            mech.ulParameterLen = 0
        elif isinstance(param, bytes):
            mech.pParameter = ctypes.cast(ctypes.c_char_p(param), ctypes.c_void_p)
            mech.ulParameterLen = len(param)
        elif mechanism == _CKM_RSA_PKCS_OAEP:
            hash_alg, mgf, source = (
                param if param is not None else (_CKM_SHA_1, _CKG_MGF1_SHA1, None)
            )
            if not isinstance(source, bytes | None):
                raise CkrError("CKR_ARGUMENTS_BAD", call)
            oaep = self._oaep
            oaep.hashAlg = hash_alg
            oaep.mgf = mgf
            oaep.source = _CKZ_DATA_SPECIFIED
            oaep.pSourceData = (
                ctypes.cast(ctypes.c_char_p(source), ctypes.c_void_p) if source else None
            )
            oaep.ulSourceDataLen = len(source) if source else 0
            mech.pParameter = ctypes.addressof(oaep)
            mech.ulParameterLen = ctypes.sizeof(oaep)
        elif mechanism in _PSS_MECHANISMS:
            hash_alg, mgf, salt = param if param is not None else (_CKM_SHA_1, _CKG_MGF1_SHA1, 20)
            if not isinstance(salt, int):
                raise CkrError("CKR_ARGUMENTS_BAD", call)
            pss = self._pss
            pss.hashAlg = hash_alg
            pss.mgf = mgf
            pss.sLen = salt
            mech.pParameter = ctypes.addressof(pss)
            mech.ulParameterLen = ctypes.sizeof(pss)
        else:
            raise CkrError("CKR_ARGUMENTS_BAD", call)


def load_function_list(path: str) -> FunctionList | None:
    """The function list of the module at `path` (already loaded and
    initialised by python-pkcs11), or None (logged once by the caller)."""
    try:
        lib = ctypes.CDLL(path)
        get = lib.C_GetFunctionList
        get.restype = _ULONG
        get.argtypes = (ctypes.POINTER(ctypes.c_void_p),)
        pointer = ctypes.c_void_p()
        rv = get(ctypes.byref(pointer))
        if rv or not pointer.value:
            raise OSError(f"C_GetFunctionList returned {ckr_text(rv) or hex(rv)}")
        count = 1 + max(FUNCTION_INDEX.values()) + 1
        table = (ctypes.c_void_p * count).from_address(pointer.value)
        return FunctionList(path, table)
    except (OSError, AttributeError) as e:
        log.warning("pkcs11: %s: no direct calls, signing through python-pkcs11 (%s)", path, e)
        return None
