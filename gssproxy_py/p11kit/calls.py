"""The call table of p11-kit's RPC protocol version 0: one row per call id,
with its request and response signatures and what the daemon does with it.

A row either names the `Cryptoki` handler that serves the call, or the
CK_RV every such call gets: CKR_FUNCTION_NOT_SUPPORTED for what is not
served, and policy's refusals for what would change or export the token
(CKR_TOKEN_WRITE_PROTECTED: the token says CKF_WRITE_PROTECTED;
CKR_ACTION_PROHIBITED for wrapping, which would export a key).
`tests/conformance/test_p11kit_trace.py` checks the ids and signatures
against the protocol notes (`tests/conformance/data/p11kit-protocol.md`).

`dispatch(cryptoki, body)` answers one request body: the response body, or
an error body for a CK_RV; a body that cannot be read raises ProtocolError
(the connection is then closed, as p11-kit does).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from gssproxy_py.p11kit.ck import Ckr
from gssproxy_py.p11kit.model import CkError
from gssproxy_py.p11kit.session import Cryptoki
from gssproxy_py.p11kit.wire import ProtocolError, Reader, Writer

__all__ = ["CALLS", "CallRow", "dispatch", "error_body"]

Handler = Callable[[Cryptoki, Reader, Writer], Awaitable[None]]

_NS = Ckr.FUNCTION_NOT_SUPPORTED
_WP = Ckr.TOKEN_WRITE_PROTECTED
_AP = Ckr.ACTION_PROHIBITED


@dataclass(frozen=True, slots=True)
class CallRow:
    """One call: its id, name, signatures, and handler or fixed answer."""

    id: int
    name: str
    request: str
    response: str
    handler: Handler | None = None
    refusal: Ckr = _NS


C = Cryptoki
_ROWS: Final = (
    CallRow(1, "C_Initialize", "ayyay", "", C.c_initialize),
    CallRow(2, "C_Finalize", "", "", C.c_finalize),
    CallRow(3, "C_GetInfo", "", "vsusv", C.c_get_info),
    CallRow(4, "C_GetSlotList", "yfu", "au", C.c_get_slot_list),
    CallRow(5, "C_GetSlotInfo", "u", "ssuvv", C.c_get_slot_info),
    CallRow(6, "C_GetTokenInfo", "u", "ssssuuuuuuuuuuuvvs", C.c_get_token_info),
    CallRow(7, "C_GetMechanismList", "ufu", "au", C.c_get_mechanism_list),
    CallRow(8, "C_GetMechanismInfo", "uu", "uuu", C.c_get_mechanism_info),
    CallRow(9, "C_InitToken", "uayz", "", refusal=_WP),
    CallRow(10, "C_OpenSession", "uu", "u", C.c_open_session),
    CallRow(11, "C_CloseSession", "u", "", C.c_close_session),
    CallRow(12, "C_CloseAllSessions", "u", "", C.c_close_all_sessions),
    CallRow(13, "C_GetSessionInfo", "u", "uuuu", C.c_get_session_info),
    CallRow(14, "C_InitPIN", "uay", "", refusal=_WP),
    CallRow(15, "C_SetPIN", "uayay", "", refusal=_WP),
    CallRow(16, "C_GetOperationState", "ufy", "ay"),
    CallRow(17, "C_SetOperationState", "uayuu", ""),
    CallRow(18, "C_Login", "uuay", "", C.c_login),
    CallRow(19, "C_Logout", "u", "", C.c_logout),
    CallRow(20, "C_CreateObject", "uaA", "u", refusal=_WP),
    CallRow(21, "C_CopyObject", "uuaA", "u", refusal=_WP),
    CallRow(22, "C_DestroyObject", "uu", "", refusal=_WP),
    CallRow(23, "C_GetObjectSize", "uu", "u"),
    CallRow(24, "C_GetAttributeValue", "uufA", "aAu", C.c_get_attribute_value),
    CallRow(25, "C_SetAttributeValue", "uuaA", "", refusal=_WP),
    CallRow(26, "C_FindObjectsInit", "uaA", "", C.c_find_objects_init),
    CallRow(27, "C_FindObjects", "ufu", "au", C.c_find_objects),
    CallRow(28, "C_FindObjectsFinal", "u", "", C.c_find_objects_final),
    CallRow(29, "C_EncryptInit", "uMu", ""),
    CallRow(30, "C_Encrypt", "uayfy", "ay"),
    CallRow(31, "C_EncryptUpdate", "uayfy", "ay"),
    CallRow(32, "C_EncryptFinal", "ufy", "ay"),
    CallRow(33, "C_DecryptInit", "uMu", "", C.c_decrypt_init),
    CallRow(34, "C_Decrypt", "uayfy", "ay", C.c_decrypt),
    CallRow(35, "C_DecryptUpdate", "uayfy", "ay", C.c_decrypt_update),
    CallRow(36, "C_DecryptFinal", "ufy", "ay", C.c_decrypt_final),
    CallRow(37, "C_DigestInit", "uM", ""),
    CallRow(38, "C_Digest", "uayfy", "ay"),
    CallRow(39, "C_DigestUpdate", "uay", ""),
    CallRow(40, "C_DigestKey", "uu", ""),
    CallRow(41, "C_DigestFinal", "ufy", "ay"),
    CallRow(42, "C_SignInit", "uMu", "", C.c_sign_init),
    CallRow(43, "C_Sign", "uayfy", "ay", C.c_sign),
    CallRow(44, "C_SignUpdate", "uay", "", C.c_sign_update),
    CallRow(45, "C_SignFinal", "ufy", "ay", C.c_sign_final),
    CallRow(46, "C_SignRecoverInit", "uMu", ""),
    CallRow(47, "C_SignRecover", "uayfy", "ay"),
    CallRow(48, "C_VerifyInit", "uMu", "", C.c_verify_init),
    CallRow(49, "C_Verify", "uayay", "", C.c_verify),
    CallRow(50, "C_VerifyUpdate", "uay", "", C.c_verify_update),
    CallRow(51, "C_VerifyFinal", "uay", "", C.c_verify_final),
    CallRow(52, "C_VerifyRecoverInit", "uMu", ""),
    CallRow(53, "C_VerifyRecover", "uayfy", "ay"),
    CallRow(54, "C_DigestEncryptUpdate", "uayfy", "ay"),
    CallRow(55, "C_DecryptDigestUpdate", "uayfy", "ay"),
    CallRow(56, "C_SignEncryptUpdate", "uayfy", "ay"),
    CallRow(57, "C_DecryptVerifyUpdate", "uayfy", "ay"),
    CallRow(58, "C_GenerateKey", "uMaA", "u", refusal=_WP),
    CallRow(59, "C_GenerateKeyPair", "uMaAaA", "uu", refusal=_WP),
    CallRow(60, "C_WrapKey", "uMuufy", "ay", refusal=_AP),
    CallRow(61, "C_UnwrapKey", "uMuayaA", "u", refusal=_WP),
    CallRow(62, "C_DeriveKey", "uMuaA", "u", refusal=_WP),
    CallRow(63, "C_SeedRandom", "uay", ""),
    CallRow(64, "C_GenerateRandom", "ufy", "ay"),
    CallRow(65, "C_WaitForSlotEvent", "u", "u", C.c_wait_for_slot_event),
)
CALLS: Final = {row.id: row for row in _ROWS}

_U32 = struct.Struct(">I")


def error_body(rv: int) -> bytes:
    """The ERROR response: call id 0, signature "u", the CK_RV (32 bits, as
    p11-kit truncates it) as a uint64."""
    w = Writer(0, "u")
    w.ulong((rv & 0xFFFFFFFF) or Ckr.GENERAL_ERROR)
    return w.body()


def call_id(body: bytes) -> int:
    """The call id of a request body (0 if too short)."""
    return int(_U32.unpack_from(body)[0]) if len(body) >= 4 else 0


async def dispatch(cryptoki: Cryptoki, body: bytes) -> bytes:
    """Answer one request body; ProtocolError if it is malformed."""
    r = Reader(body)
    cid = r.u32()
    signature = r.signature()
    row = CALLS.get(cid)
    if row is None:
        # Ids of later protocol versions (never sent to a version-0 server)
        # and garbage alike: answered, not fatal; the body is not read.
        if cid == 0:
            raise ProtocolError("request with call id 0")
        return error_body(_NS)
    if signature != row.request:
        raise ProtocolError(f"{row.name}: signature {signature!r}, expected {row.request!r}")
    if row.handler is None:
        return error_body(row.refusal)
    w = Writer(cid, row.response)
    try:
        await row.handler(cryptoki, r, w)
    except CkError as e:
        # Handlers may refuse before reading every field: not a framing fault.
        return error_body(e.rv)
    if not r.at_end():
        raise ProtocolError(f"{row.name}: trailing bytes")
    return w.body()
