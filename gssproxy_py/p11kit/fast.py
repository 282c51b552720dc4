"""The hot calls of a signature or a decryption, read and answered without
the generic codec, for the p11-kit worker process.

`python-pkcs11`, OpenSSL's engines and GnuTLS sign with C_SignInit, a
C_Sign size query and C_Sign: three requests per signature, each of which
would go through `calls.dispatch` (a `Reader`, the call table, a `Writer`,
a handler coroutine). `FastCalls.frame(code, body)` reads the request
bodies of C_SignInit, C_Sign, C_SignUpdate, C_SignFinal and their
C_Decrypt* twins with precompiled `struct`s, calls the same `Cryptoki`
steps the generic handlers call (so the state and every CK_RV are the
same), and packs the whole reply frame, header included, at once. It only
takes a body in the exact shape p11-kit-client.so sends: any other length,
flag, NULL or mechanism parameter makes it answer None, and the generic
path answers (or rejects) the body, so both give byte-identical replies
for every input (tests/unit/test_p11kit_fast.py checks this over random
and damaged requests).

Nothing here waits: an init that succeeded before on the connection is
set up again from its body (`Cryptoki.init_again`), and the token's part
(the signature itself) is the backend's `operate_inline`, a plain call in
the worker process, whose module calls are inline (no coroutine, no
StopIteration per call). `complete` runs the generic handlers, which never
wait there either.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

from gssproxy_py.p11kit.calls import error_body
from gssproxy_py.p11kit.ck import Ckr
from gssproxy_py.p11kit.model import CkError, InlineBackend, VirtualObject
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
    encode_frame,
)

__all__ = ["NO_TOKEN", "FastCalls", "complete"]

T = TypeVar("T")

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U64_U32 = struct.Struct(">QI")
_U64_AY = struct.Struct(">QBI")  # a session handle, then an `ay`'s flag and length
_PSS = struct.Struct(">QQQ")
_OAEP = struct.Struct(">QQQI")
#: A reply frame's header (code, no options, body length) and its `ay`
#: body (call id, signature "ay", flag, length) in one pack.
_AY_FRAME = struct.Struct(">IIIII2sBI")


def complete(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (run to its end at once)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a p11-kit call waited where its calls are inline")


class _NoToken:
    """The `InlineBackend` of a connection with no service: it has no slot,
    so no operation is ever initialised and this is never asked."""

    def operate_inline(
        self, sign: bool, key: VirtualObject, mechanism: Mechanism, data: bytes
    ) -> bytes:
        raise CkError(Ckr.GENERAL_ERROR, "no token")


NO_TOKEN: Final = _NoToken()


def _prefix(call_id: int, signature: bytes) -> bytes:
    """A body's call id and signature string, as both ends write them."""
    return _U32.pack(call_id) + _U32.pack(len(signature)) + signature


# Request prefixes (call id, signature).
_SIGN_INIT: Final = _prefix(42, b"uMu")
_DECRYPT_INIT: Final = _prefix(33, b"uMu")
_SIGN: Final = _prefix(43, b"uayfy")
_DECRYPT: Final = _prefix(34, b"uayfy")
_SIGN_UPDATE: Final = _prefix(44, b"uay")
_DECRYPT_UPDATE: Final = _prefix(35, b"uayfy")
_SIGN_FINAL: Final = _prefix(45, b"ufy")
_DECRYPT_FINAL: Final = _prefix(36, b"ufy")


def _empty_after_code(cid: int) -> bytes:
    body = _prefix(cid, b"")
    return _U32.pack(0) + _U32.pack(len(body)) + body


#: The reply frames of the inits and C_SignUpdate (call id, signature ""),
#: after the 4 bytes of the transaction code.
_EMPTY: Final = {cid: _empty_after_code(cid) for cid in (33, 42, 44)}


def _error(code: int, rv: int) -> bytes:
    return encode_frame(code, error_body(rv))


def _output(code: int, cid: int, value: bytes | Absent) -> bytes:
    """The reply frame whose body is `ay`, as the generic
    `Writer.output_bytes` and `encode_frame` write it."""
    if isinstance(value, Absent):
        return _AY_FRAME.pack(code, 0, 15, cid, 2, b"ay", 0, value.length)
    n = len(value)
    return _AY_FRAME.pack(code, 0, 15 + n, cid, 2, b"ay", 1, n) + value


def _room(n: int) -> int | None:
    """`fy` as `Reader.room` reads it."""
    if n == 0:
        return None
    return 0 if n == NULL_LENGTH else n


def _uayfy(body: bytes) -> tuple[int, bytes, int | None] | None:
    """(session, input, room) of a `uayfy` body in the usual shape: the
    input present and not NULL (anything else is the generic path's)."""
    end = len(body)
    if end < 30:
        return None
    handle, flag, n = _U64_AY.unpack_from(body, 13)
    if flag != 1 or n >= BYTE_ARRAY_LIMIT or end != 30 + n:
        return None
    (room,) = _U32.unpack_from(body, 26 + n)
    # `fy` as `Reader.room` reads it (as `_room`, written out: C_Sign's path)
    return handle, body[26 : 26 + n], None if room == 0 else 0 if room == NULL_LENGTH else room


class FastCalls:
    """The hot calls of one connection's `Cryptoki` (see the module doc)."""

    __slots__ = ("_c", "_table", "_token")

    def __init__(self, cryptoki: Cryptoki, inline: InlineBackend) -> None:
        self._c = cryptoki
        self._token = inline
        self._table: dict[bytes, Callable[[int, bytes], bytes | None]] = {
            _SIGN_INIT: self._sign_init,
            _DECRYPT_INIT: self._decrypt_init,
            # Bound to their operation here: one Python call less per C_Sign.
            _SIGN: functools.partial(self._single, Operation.SIGN, 43),
            _DECRYPT: functools.partial(self._single, Operation.DECRYPT, 34),
            _SIGN_UPDATE: self._sign_update,
            _DECRYPT_UPDATE: self._decrypt_update,
            _SIGN_FINAL: self._sign_final,
            _DECRYPT_FINAL: self._decrypt_final,
        }

    def frame(self, code: int, body: bytes) -> bytes | None:
        """The reply frame (transaction `code`) for a hot call in the usual
        shape; None otherwise (the generic `calls.dispatch` answers it then)."""
        # A hot prefix is 8 bytes and a signature string of 3 or 5.
        handler = self._table.get(body[: 8 + body[7]] if len(body) > 8 else b"")
        return handler(code, body) if handler is not None else None

    # -- the inits ----------------------------------------------------------------

    def _sign_init(self, code: int, body: bytes) -> bytes | None:
        if self._c.init_again(body):
            return _U32.pack(code) + _EMPTY[42]
        return self._init(Operation.SIGN, 42, code, body)

    def _decrypt_init(self, code: int, body: bytes) -> bytes | None:
        if self._c.init_again(body):
            return _U32.pack(code) + _EMPTY[33]
        return self._init(Operation.DECRYPT, 33, code, body)

    def _init(self, kind: Operation, cid: int, code: int, body: bytes) -> bytes | None:
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
            self._c.init_operation(kind, handle, mechanism, key, body)
        except CkError as e:
            return _error(code, e.rv)
        return _U32.pack(code) + _EMPTY[cid]

    # -- input, output ------------------------------------------------------------

    def _single(self, kind: Operation, cid: int, code: int, body: bytes) -> bytes | None:
        fields = _uayfy(body)
        if fields is None:
            return None
        handle, data, room = fields
        c = self._c
        try:
            out = c.single_output(kind, handle, data, room)
            if isinstance(out, tuple):
                out = c.make_output_inline(out, room, self._token)
        except CkError as e:
            return _error(code, e.rv)
        return _output(code, cid, out)

    def _sign_update(self, code: int, body: bytes) -> bytes | None:
        end = len(body)
        if end < 24:
            return None
        handle, flag, n = _U64_AY.unpack_from(body, 11)
        if flag != 1 or n >= BYTE_ARRAY_LIMIT or end != 24 + n:
            return None
        try:
            self._c.update_input(Operation.SIGN, handle, body[24:])
        except CkError as e:
            return _error(code, e.rv)
        return _U32.pack(code) + _EMPTY[44]

    def _decrypt_update(self, code: int, body: bytes) -> bytes | None:
        fields = _uayfy(body)
        if fields is None:
            return None
        try:
            return _output(code, 35, self._c.decrypt_update(*fields))
        except CkError as e:
            return _error(code, e.rv)

    def _sign_final(self, code: int, body: bytes) -> bytes | None:
        return self._final(Operation.SIGN, 45, code, body)

    def _decrypt_final(self, code: int, body: bytes) -> bytes | None:
        return self._final(Operation.DECRYPT, 36, code, body)

    def _final(self, kind: Operation, cid: int, code: int, body: bytes) -> bytes | None:
        if len(body) != 23:
            return None
        handle, n = _U64_U32.unpack_from(body, 11)
        room = _room(n)
        c = self._c
        try:
            out = c.final_output(kind, handle, room)
            if isinstance(out, tuple):
                out = c.make_output_inline(out, room, self._token)
        except CkError as e:
            return _error(code, e.rv)
        return _output(code, cid, out)
