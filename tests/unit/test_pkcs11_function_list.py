"""`pkcs11/function_list.py` on a scripted module made of ctypes callbacks.

The fake's C_SignInit/C_Sign and C_DecryptInit/C_Decrypt record what they
were given (the CK_MECHANISM and its parameter structure read back from
memory) and answer as told, so the buffer handling (CKR_BUFFER_TOO_SMALL
keeping the operation, the bound), the CK_RV names and the mechanism
parameters are checked without a real module; `tests/integration/
test_pkcs11_direct.py` does the same against SoftHSM.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import pkcs11.exceptions
import pytest

from gssproxy_py.p11kit.ck import Ckr
from gssproxy_py.pkcs11 import adapter
from gssproxy_py.pkcs11.errors import CkrError
from gssproxy_py.pkcs11.function_list import (
    _INIT,
    CKR_NAMES,
    FUNCTION_INDEX,
    MAX_OUTPUT,
    CkMechanism,
    CkRsaPkcsOaepParams,
    CkRsaPkcsPssParams,
    FunctionList,
)

SIGNATURE = bytes(range(64))
# The callbacks' C_Sign/C_Decrypt: buffers as addresses (a c_char_p argument
# would reach the callback as a copy in a bytes object).
_FAKE_SINGLE = ctypes.CFUNCTYPE(
    ctypes.c_ulong,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.c_ulong,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_ulong),
)


@dataclass
class FakeModule:
    init_rv: int = 0
    sign_rv: int = 0
    need: int = len(SIGNATURE)  # what C_Sign says it needs
    active: bool = False
    mechanisms: list[tuple[int, Any]] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)  # the buffer sizes C_Sign was given

    def init(self, _session: int, mech: Any, _key: int) -> int:
        m = mech.contents
        param: Any = None
        if m.ulParameterLen == ctypes.sizeof(CkRsaPkcsPssParams):
            p = CkRsaPkcsPssParams.from_address(m.pParameter)
            param = (p.hashAlg, p.mgf, p.sLen)
        elif m.ulParameterLen == ctypes.sizeof(CkRsaPkcsOaepParams):
            o = CkRsaPkcsOaepParams.from_address(m.pParameter)
            source = ctypes.string_at(o.pSourceData, o.ulSourceDataLen) if o.pSourceData else None
            param = (o.hashAlg, o.mgf, o.source, source)
        elif m.ulParameterLen:
            param = ctypes.string_at(m.pParameter, m.ulParameterLen)
        self.mechanisms.append((m.mechanism, param))
        if self.init_rv:
            return self.init_rv
        self.active = True
        return 0

    def single(self, _session: int, _data: bytes, _n: int, out: Any, out_len: Any) -> int:
        if not self.active:
            return int(Ckr.OPERATION_NOT_INITIALIZED)
        have = out_len.contents.value
        self.calls.append(have)
        if have < self.need:
            out_len.contents.value = self.need
            return int(Ckr.BUFFER_TOO_SMALL)  # still active
        self.active = False
        if self.sign_rv:
            return self.sign_rv
        ctypes.memmove(out, SIGNATURE, len(SIGNATURE))
        out_len.contents.value = len(SIGNATURE)
        return 0


def _direct(module: FakeModule) -> tuple[FunctionList, list[object]]:
    keep: list[object] = [_INIT(module.init), _FAKE_SINGLE(module.single)]
    table = (ctypes.c_void_p * (2 + max(FUNCTION_INDEX.values())))()
    for name, index in FUNCTION_INDEX.items():
        fn = keep[0] if name.endswith("Init") else keep[1]
        table[1 + index] = ctypes.cast(fn, ctypes.c_void_p).value
    return FunctionList("/fake.so", table), keep


def test_signs_into_the_buffer_it_was_given() -> None:
    m = FakeModule()
    direct, _keep = _direct(m)
    assert direct.sign(1, 2, 0x1041, None, b"d" * 32, 64) == SIGNATURE
    assert m.calls == [64] and m.mechanisms == [(0x1041, None)]


def test_buffer_too_small_calls_again_with_the_size_given() -> None:
    m = FakeModule(need=64)
    direct, _keep = _direct(m)
    assert direct.decrypt(1, 2, 0x1, None, b"d", 16) == SIGNATURE
    assert m.calls == [16, 64] and not m.active


def test_an_absurd_size_is_refused() -> None:
    m = FakeModule(need=MAX_OUTPUT + 1)
    direct, _keep = _direct(m)
    with pytest.raises(CkrError) as e:
        direct.sign(1, 2, 0x1041, None, b"d", 64)
    assert (e.value.ckr, e.value.call) == ("CKR_DEVICE_ERROR", "C_Sign")


@pytest.mark.parametrize("where", ["init", "single"])
def test_errors_carry_the_ckr_name_and_the_call(where: str) -> None:
    rv = int(Ckr.KEY_FUNCTION_NOT_PERMITTED)
    m = FakeModule(init_rv=rv) if where == "init" else FakeModule(sign_rv=rv)
    direct, _keep = _direct(m)
    with pytest.raises(CkrError) as e:
        direct.decrypt(1, 2, 0x1, None, b"d", 256)
    assert (e.value.ckr, e.value.call) == ("CKR_KEY_FUNCTION_NOT_PERMITTED", "C_Decrypt")
    m = FakeModule(init_rv=0x8000_0001)  # vendor-defined
    direct, _keep = _direct(m)
    with pytest.raises(CkrError) as e:
        direct.sign(1, 2, 0x1, None, b"d", 256)
    assert (e.value.ckr, e.value.detail) == ("", "Unmapped error code 0x80000001")


def test_mechanism_parameters_as_python_pkcs11_builds_them() -> None:
    m = FakeModule()
    direct, _keep = _direct(m)
    direct.sign(1, 2, 0xD, (0x250, 0x2, 32), b"d", 64)
    direct.sign(1, 2, 0xD, None, b"d", 64)  # python-pkcs11's default: SHA-1, salt 20
    direct.decrypt(1, 2, 0x9, (0x250, 0x2, b"label"), b"d", 64)
    direct.decrypt(1, 2, 0x9, (0x250, 0x2, None), b"d", 64)
    direct.sign(1, 2, 0x1234, b"raw", b"d", 64)
    assert m.mechanisms == [
        (0xD, (0x250, 0x2, 32)),
        (0xD, (0x220, 0x1, 20)),
        (0x9, (0x250, 0x2, 1, b"label")),
        (0x9, (0x250, 0x2, 1, None)),
        (0x1234, b"raw"),
    ]
    with pytest.raises(CkrError, match="CKR_ARGUMENTS_BAD"):
        direct.sign(1, 2, 0x1041, (0x250, 0x2, 32), b"d", 64)  # ECDSA takes no structure
    assert ctypes.sizeof(CkMechanism) == 3 * ctypes.sizeof(ctypes.c_ulong)


def test_one_table_of_ckr_names() -> None:
    # p11-kit's constants, python-pkcs11's classes and the direct calls agree.
    for c in Ckr:
        assert CKR_NAMES[int(c)] == f"CKR_{c.name}"
    assert set(adapter._CKR_BY_CLASS.values()) <= set(CKR_NAMES.values())
    assert len(set(CKR_NAMES.values())) == len(CKR_NAMES)


def test_python_pkcs11s_unnamed_codes_are_named_from_the_table() -> None:
    unmapped = pkcs11.exceptions.PKCS11Error("Unmapped error code 0x68")
    assert adapter.ckr_name(unmapped) == "CKR_KEY_FUNCTION_NOT_PERMITTED"
    assert adapter.ckr_name(pkcs11.exceptions.MechanismInvalid()) == "CKR_MECHANISM_INVALID"
    assert adapter.ckr_name(pkcs11.exceptions.PKCS11Error("Unmapped error code 0xzz")) == ""
    assert adapter.ckr_name(pkcs11.exceptions.PKCS11Error("no such file")) == ""
