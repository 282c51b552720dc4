"""The hot calls of a signature or a decryption, read and answered without
the generic codec.

`python-pkcs11`, OpenSSL's engines and GnuTLS sign with C_SignInit, a
C_Sign size query and C_Sign: three requests per signature, each of which
would go through `calls.dispatch` (a `Reader`, the call table, a `Writer`,
a handler coroutine). `FastCalls.answer(body)` reads the request bodies of
C_SignInit, C_Sign, C_SignUpdate, C_SignFinal and their C_Decrypt* twins
with precompiled `struct`s, calls the same `Cryptoki` steps the generic
handlers call (so the state and every CK_RV are the same), and builds the
reply from precompiled parts. It only takes a body in the exact shape
p11-kit-client.so sends: any other length, flag, NULL or mechanism
parameter makes it answer None, and the generic path answers (or rejects)
the body, so both give byte-identical replies for every input
(tests/unit/test_p11kit_fast.py checks this over random requests).

The token's part (the signature itself) is the backend's coroutine, which
`complete` runs to its end: only where it never waits (the p11-kit worker
process, whose module calls are inline).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from gssproxy_py.p11kit.calls import error_body
from gssproxy_py.p11kit.model import CkError
from gssproxy_py.p11kit.session import Cryptoki, Operation
from gssproxy_py.p11kit.wire import (
    BYTE_ARRAY_LIMIT,
    CKM_RSA_PKCS_OAEP,
    CKM_RSA_PKCS_PSS,
    NULL_LENGTH,
    NULL_MECHANISM,
    Absent,
    Mechanism,
    OaepParams,
    PssParams,
)

__all__ = ["FastCalls", "complete"]

T = TypeVar("T")
Complete = Callable[[Coroutine[Any, Any, Any]], Any]

_U32 = struct.Struct(">I")
_U32_U32 = struct.Struct(">II")
_U64 = struct.Struct(">Q")
_U64_U32 = struct.Struct(">QI")
_PSS = struct.Struct(">QQQ")
_OAEP = struct.Struct(">QQQI")


def complete(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (run to its end at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a p11-kit call waited where its calls are inline")


def _prefix(call_id: int, signature: bytes) -> bytes:
    """A body's call id and signature string, as both ends write them."""
    return _U32.pack(call_id) + _U32.pack(len(signature)) + signature


def _empty_reply(call_id: int) -> bytes:
    return _prefix(call_id, b"")


# Request prefixes (call id, signature) and their fixed-size replies.
_SIGN_INIT: Final = _prefix(42, b"uMu")
_DECRYPT_INIT: Final = _prefix(33, b"uMu")
_SIGN: Final = _prefix(43, b"uayfy")
_DECRYPT: Final = _prefix(34, b"uayfy")
_SIGN_UPDATE: Final = _prefix(44, b"uay")
_DECRYPT_UPDATE: Final = _prefix(35, b"uayfy")
_SIGN_FINAL: Final = _prefix(45, b"ufy")
_DECRYPT_FINAL: Final = _prefix(36, b"ufy")
#: Replies: call id and "ay" (C_Sign...) or "" (the inits, C_SignUpdate).
_AY: Final = {cid: _prefix(cid, b"ay") for cid in (34, 35, 36, 43, 45)}
_EMPTY: Final = {cid: _empty_reply(cid) for cid in (33, 42, 44)}


def _output(cid: int, value: bytes | Absent) -> bytes:
    """`ay` as the generic `Writer.output_bytes` writes it."""
    if isinstance(value, Absent):
        return _AY[cid] + b"\x00" + _U32.pack(value.length)
    return _AY[cid] + b"\x01" + _U32.pack(len(value)) + value


def _room(n: int) -> int | None:
    """`fy` as `Reader.room` reads it."""
    if n == 0:
        return None
    return 0 if n == NULL_LENGTH else n


class FastCalls:
    """The hot calls of one connection's `Cryptoki` (see the module doc)."""

    __slots__ = ("_c", "_complete", "_table")

    def __init__(self, cryptoki: Cryptoki, run: Complete = complete) -> None:
        self._c = cryptoki
        self._complete = run
        self._table: dict[bytes, Callable[[bytes], bytes | None]] = {
            _SIGN_INIT: self._sign_init,
            _DECRYPT_INIT: self._decrypt_init,
            _SIGN: self._sign,
            _DECRYPT: self._decrypt,
            _SIGN_UPDATE: self._sign_update,
            _DECRYPT_UPDATE: self._decrypt_update,
            _SIGN_FINAL: self._sign_final,
            _DECRYPT_FINAL: self._decrypt_final,
        }

    def answer(self, body: bytes) -> bytes | None:
        """The reply body for a hot call in the usual shape; None otherwise
        (the generic `calls.dispatch` answers it then)."""
        # A hot prefix is 8 bytes and a signature string of 3 or 5.
        handler = self._table.get(body[: 8 + body[7]] if len(body) > 8 else b"")
        return handler(body) if handler is not None else None

    # -- the inits ----------------------------------------------------------------

    def _sign_init(self, body: bytes) -> bytes | None:
        return self._init(Operation.SIGN, 42, body)

    def _decrypt_init(self, body: bytes) -> bytes | None:
        return self._init(Operation.DECRYPT, 33, body)

    def _init(self, kind: Operation, cid: int, body: bytes) -> bytes | None:
        end = len(body)
        if end < 31:
            return None
        handle, mech_type = _U64_U32.unpack_from(body, 11)
        pos = 23
        if mech_type == CKM_RSA_PKCS_PSS:
            if end != pos + _PSS.size + 8:
                return None
            mechanism = Mechanism(mech_type, PssParams(*_PSS.unpack_from(body, pos)))
            pos += _PSS.size
        elif mech_type == CKM_RSA_PKCS_OAEP:
            if end < pos + _OAEP.size + 8:
                return None
            hash_alg, mgf, source, n = _OAEP.unpack_from(body, pos)
            pos += _OAEP.size
            source_data = None
            if n != NULL_LENGTH:
                if end != pos + n + 8:
                    return None
                source_data = body[pos : pos + n]
                pos += n
            mechanism = Mechanism(mech_type, OaepParams(hash_alg, mgf, source, source_data))
        elif mech_type == NULL_MECHANISM:
            return None
        else:
            (n,) = _U32.unpack_from(body, pos)
            pos += 4
            param = None
            if n != NULL_LENGTH:
                param = body[pos : pos + n]
                pos += n
            mechanism = Mechanism(mech_type, param)
        if end != pos + 8:
            return None
        (key,) = _U64.unpack_from(body, pos)
        try:
            self._c.init_operation(kind, handle, mechanism, key)
        except CkError as e:
            return error_body(e.rv)
        return _EMPTY[cid]

    # -- input, output ------------------------------------------------------------

    @staticmethod
    def _input(body: bytes, pos: int, tail: int) -> tuple[bytes | None, int] | None:
        """`ay` at `pos` followed by exactly `tail` bytes: the value and
        where it ends; None for any other shape."""
        end = len(body)
        if end < pos + 5 + tail:
            return None
        flag = body[pos]
        (n,) = _U32.unpack_from(body, pos + 1)
        pos += 5
        if flag == 0:
            return (None, pos) if end == pos + tail else None
        if flag != 1:
            return None
        if n == NULL_LENGTH:
            return (None, pos) if end == pos + tail else None
        if n >= BYTE_ARRAY_LIMIT or end != pos + n + tail:
            return None
        return body[pos : pos + n], pos + n

    def _sign(self, body: bytes) -> bytes | None:
        return self._single(Operation.SIGN, 43, body)

    def _decrypt(self, body: bytes) -> bytes | None:
        return self._single(Operation.DECRYPT, 34, body)

    @classmethod
    def _uayfy(cls, body: bytes) -> tuple[int, bytes | None, int | None] | None:
        """(session, input, room) of a `uayfy` body in the usual shape."""
        got = cls._input(body, 21, 4)
        if got is None:
            return None
        data, pos = got
        return _U64.unpack_from(body, 13)[0], data, _room(_U32.unpack_from(body, pos)[0])

    def _produce(self, s: Any, op: Any, data: bytes, room: int | None) -> bytes | Absent:
        """The output call's answer: without the token if it can be, else
        the token's output (`Cryptoki.prepared_output`, `make_output`; `s`
        and `op` are the session and operation it handed out)."""
        c = self._c
        out = c.prepared_output(s, op, data, room)
        return out if out is not None else self._complete(c.make_output(s, op, data, room))

    def _single(self, kind: Operation, cid: int, body: bytes) -> bytes | None:
        fields = self._uayfy(body)
        if fields is None:
            return None
        handle, data, room = fields
        try:
            s, op, data = self._c.single_input(kind, handle, data)
            return _output(cid, self._produce(s, op, data, room))
        except CkError as e:
            return error_body(e.rv)

    def _sign_update(self, body: bytes) -> bytes | None:
        got = self._input(body, 19, 0)
        if got is None:
            return None
        (handle,) = _U64.unpack_from(body, 11)
        try:
            self._c.update_input(Operation.SIGN, handle, got[0])
        except CkError as e:
            return error_body(e.rv)
        return _EMPTY[44]

    def _decrypt_update(self, body: bytes) -> bytes | None:
        fields = self._uayfy(body)
        if fields is None:
            return None
        try:
            return _output(35, self._c.decrypt_update(*fields))
        except CkError as e:
            return error_body(e.rv)

    def _sign_final(self, body: bytes) -> bytes | None:
        return self._final(Operation.SIGN, 45, body)

    def _decrypt_final(self, body: bytes) -> bytes | None:
        return self._final(Operation.DECRYPT, 36, body)

    def _final(self, kind: Operation, cid: int, body: bytes) -> bytes | None:
        if len(body) != 23:
            return None
        handle, n = _U64_U32.unpack_from(body, 11)
        try:
            s, op, data = self._c.final_input(kind, handle)
            return _output(cid, self._produce(s, op, data, _room(n)))
        except CkError as e:
            return error_body(e.rv)
