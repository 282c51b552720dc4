"""One p11-kit connection's PKCS#11 state, and the handlers of the calls served.

`Cryptoki` is what `p11-kit-client.so` talks to through one connection:
the virtual slots (one per token the service may use, numbered from 0x11
in the backend's order, as p11-kit's own proxy numbers them), its sessions
(handles from 0x11, never reused while the connection lives), its object
handles (numbered over the snapshot of the objects policy shows, so no
handle can name a hidden object), searches, and
the operation each session has under way.

Size queries keep the operation: a NULL output buffer (room None) or one
too small is answered with the length alone ("absent"), and the operation
stays initialised until a call returns the output or fails otherwise. A
signature too big for the room it was made for is kept and handed out by
the next call with the same input, so the token signs only once.

C_Login succeeds without using the consumer's PIN (the daemon is logged in
with its own); C_Logout changes nothing. Nothing here stores or logs a PIN.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from gssproxy_py.p11kit.attributes import Attribute, AttrValue, value_length
from gssproxy_py.p11kit.ck import EFFECTIVELY_INFINITE, UNAVAILABLE, Ckf, Cko, Ckr, Cks
from gssproxy_py.p11kit.model import (
    Backend,
    CkError,
    InlineBackend,
    VirtualObject,
    VirtualToken,
)
from gssproxy_py.p11kit.wire import Absent, AttributeOut, Mechanism, Reader, Writer

__all__ = ["HANDSHAKE", "Cryptoki"]

log = logging.getLogger("gssproxy_py.p11kit")

#: What p11-kit-client.so sends in C_Initialize (the server checks it).
HANDSHAKE: Final = b"PRIVATE-GNOME-KEYRING-PKCS11-PROTOCOL-V-1"
MAX_SESSIONS: Final = 64
#: The first slot id and session handle (p11-kit's proxy starts there too,
#: so consumers and the recorded traces see the same numbers).
SLOT_BASE: Final = 0x11
FIRST_SESSION: Final = 0x11
#: Bytes one multi-part operation may gather before CKR_DATA_LEN_RANGE.
MAX_MULTIPART: Final = 1 << 22

CRYPTOKI_VERSION: Final = (2, 40)
LIBRARY_VERSION: Final = (1, 0)
MANUFACTURER: Final = "gssproxy-py"
LIBRARY_DESCRIPTION: Final = "gssproxy-py token service"
TOKEN_FLAGS: Final = Ckf.WRITE_PROTECTED | Ckf.USER_PIN_INITIALIZED | Ckf.TOKEN_INITIALIZED

CKU_SO: Final = 0


class Operation(IntEnum):
    SIGN = 1
    DECRYPT = 2
    VERIFY = 3


#: Per operation: the mechanism flag it needs, the key's usage attribute
#: (CKA_SIGN, CKA_DECRYPT, CKA_VERIFY) and the key's class. Plain ints: an
#: IntFlag operation costs microseconds, and C_SignInit comes with every
#: signature.
_OPERATION_RULES: Final[dict[Operation, tuple[int, int, Cko]]] = {
    Operation.SIGN: (int(Ckf.SIGN), 0x108, Cko.PRIVATE_KEY),
    Operation.DECRYPT: (int(Ckf.DECRYPT), 0x105, Cko.PRIVATE_KEY),
    Operation.VERIFY: (int(Ckf.VERIFY), 0x10A, Cko.PUBLIC_KEY),
}


@dataclass(slots=True)
class _Op:
    """An initialised sign, decrypt or verify operation."""

    kind: Operation
    key: VirtualObject
    mechanism: Mechanism
    length: int  # the output's length (the largest plaintext for a decryption)
    absent: Absent  # Absent(length), the answer to a size query
    parts: bytearray | None = None  # data of C_xxxUpdate, once used
    # The output made for `done_for` that did not fit its room yet.
    done_for: bytes | None = None
    output: bytes | None = None


@dataclass(slots=True)
class _Session:
    slot: int
    flags: int
    search: list[int] | None = None
    ops: dict[Operation, _Op] = field(default_factory=dict)


#: An input the token must make the output for: the session, its
#: operation and the input (`Cryptoki.single_output`, `final_output`).
_Pending = tuple[_Session, _Op, bytes]


class Cryptoki:
    """One connection's view of the service's virtual tokens."""

    def __init__(self, backend: Backend | None, who: str = "") -> None:
        # backend None: the peer matched no service, so it sees no slot.
        self._backend = backend
        self._who = who
        self._tokens: tuple[VirtualToken, ...] | None = None
        self._objects: list[tuple[int, VirtualObject]] = []  # (slot, object) by handle-1
        self._sessions: dict[int, _Session] = {}
        self._next_session = FIRST_SESSION
        # Request bodies of inits that succeeded, and what they set up (see
        # `init_again`); emptied whenever the tokens or the backend change.
        self._inits: dict[bytes, tuple[Operation, int, VirtualObject, Mechanism, int, Absent]] = {}

    def rebind(self, backend: Backend | None) -> None:
        """Serve the next calls with `backend` (the same service after a
        configuration reload: its policy may have changed)."""
        self._backend = backend
        # A kept init was checked against the old policy (its mechanisms).
        self._inits.clear()

    # -- shared helpers --------------------------------------------------------

    async def _slots(self) -> tuple[VirtualToken, ...]:
        """The tokens, fetched once per C_Initialize (a failure shows no slot
        and is retried at the next call)."""
        if self._tokens is None:
            if self._backend is None:
                return ()
            tokens = await self._backend.tokens()
            self._tokens = tokens
            self._objects = [
                (slot, obj) for slot, t in enumerate(tokens, SLOT_BASE) for obj in t.objects
            ]
        return self._tokens

    async def _token(self, slot: int) -> VirtualToken:
        tokens = await self._slots()
        if not 0 <= slot - SLOT_BASE < len(tokens):
            raise CkError(Ckr.SLOT_ID_INVALID)
        return tokens[slot - SLOT_BASE]

    def _session(self, handle: int) -> _Session:
        s = self._sessions.get(handle)
        if s is None:
            raise CkError(Ckr.SESSION_HANDLE_INVALID)
        return s

    def _object(self, session: _Session, handle: int) -> VirtualObject:
        if 1 <= handle <= len(self._objects):
            slot, obj = self._objects[handle - 1]
            if slot == session.slot:
                return obj
        raise CkError(Ckr.OBJECT_HANDLE_INVALID)

    def _reset(self) -> None:
        self._tokens = None
        self._objects = []
        self._sessions.clear()
        self._inits.clear()

    # -- general ---------------------------------------------------------------

    async def c_initialize(self, r: Reader, w: Writer) -> None:
        handshake = r.input_bytes()
        r.byte()  # pReserved present
        r.input_bytes()  # the reserved string
        if handshake != HANDSHAKE:
            raise CkError(Ckr.DEVICE_ERROR, "wrong handshake string")
        self._reset()

    async def c_finalize(self, r: Reader, w: Writer) -> None:
        self._reset()

    async def c_get_info(self, r: Reader, w: Writer) -> None:
        w.version(CRYPTOKI_VERSION)
        w.fixed_string(MANUFACTURER, 32)
        w.ulong(0)
        w.fixed_string(LIBRARY_DESCRIPTION, 32)
        w.version(LIBRARY_VERSION)

    async def c_get_slot_list(self, r: Reader, w: Writer) -> None:
        r.byte()  # tokenPresent: every slot has its token
        room = r.ulong_room()
        count = len(await self._slots())
        slots = list(range(SLOT_BASE, SLOT_BASE + count))
        w.ulong_array(slots if room >= count and room else Absent(count))

    async def c_get_slot_info(self, r: Reader, w: Writer) -> None:
        token = await self._token(r.ulong())
        w.fixed_string(f"gssproxy-py: {token.label}", 64)
        w.fixed_string(MANUFACTURER, 32)
        w.ulong(Ckf.TOKEN_PRESENT)
        w.version(LIBRARY_VERSION)
        w.version(LIBRARY_VERSION)

    async def c_get_token_info(self, r: Reader, w: Writer) -> None:
        token = await self._token(r.ulong())
        w.fixed_string(token.label, 32)
        w.fixed_string(token.manufacturer, 32)
        w.fixed_string(token.model, 16)
        w.fixed_string(token.serial, 16)
        w.ulong(TOKEN_FLAGS)
        w.ulong(EFFECTIVELY_INFINITE)  # max sessions
        w.ulong(UNAVAILABLE)  # session count
        w.ulong(EFFECTIVELY_INFINITE)  # max rw sessions
        w.ulong(UNAVAILABLE)  # rw session count
        w.ulong(0)  # max PIN length: no PIN is asked for
        w.ulong(0)  # min PIN length
        for _ in range(4):  # public/private memory, total/free
            w.ulong(UNAVAILABLE)
        w.version(token.hardware_version)
        w.version(token.firmware_version)
        w.fixed_string("", 16)  # no clock

    async def c_get_mechanism_list(self, r: Reader, w: Writer) -> None:
        token = await self._token(r.ulong())
        room = r.ulong_room()
        mechs = sorted(token.mechanisms)
        w.ulong_array(mechs if room >= len(mechs) and room else Absent(len(mechs)))

    async def c_get_mechanism_info(self, r: Reader, w: Writer) -> None:
        token = await self._token(r.ulong())
        info = token.mechanisms.get(r.ulong())
        if info is None:
            raise CkError(Ckr.MECHANISM_INVALID)
        w.ulong(info.min_key_size)
        w.ulong(info.max_key_size)
        w.ulong(info.flags)

    async def c_wait_for_slot_event(self, r: Reader, w: Writer) -> None:
        # A blocking wait would stall the in-order connection; with
        # CKF_DONT_BLOCK there is never an event (tokens are fixed per snapshot).
        if r.ulong() & Ckf.DONT_BLOCK:
            raise CkError(Ckr.NO_EVENT)
        raise CkError(Ckr.FUNCTION_NOT_SUPPORTED)

    # -- sessions and login ----------------------------------------------------

    async def c_open_session(self, r: Reader, w: Writer) -> None:
        slot = r.ulong()
        flags = r.ulong()
        await self._token(slot)
        if not flags & Ckf.SERIAL_SESSION:
            raise CkError(Ckr.SESSION_PARALLEL_NOT_SUPPORTED)
        if len(self._sessions) >= MAX_SESSIONS:
            raise CkError(Ckr.SESSION_COUNT)
        handle = self._next_session
        self._next_session += 1
        self._sessions[handle] = _Session(slot, flags & (Ckf.RW_SESSION | Ckf.SERIAL_SESSION))
        w.ulong(handle)

    async def c_close_session(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        self._session(handle)
        del self._sessions[handle]

    async def c_close_all_sessions(self, r: Reader, w: Writer) -> None:
        slot = r.ulong()
        await self._token(slot)
        for handle in [h for h, s in self._sessions.items() if s.slot == slot]:
            del self._sessions[handle]

    async def c_get_session_info(self, r: Reader, w: Writer) -> None:
        s = self._session(r.ulong())
        rw = s.flags & Ckf.RW_SESSION
        w.ulong(s.slot)
        w.ulong(Cks.RW_USER_FUNCTIONS if rw else Cks.RO_USER_FUNCTIONS)
        w.ulong(s.flags)
        w.ulong(0)

    async def c_login(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        user_type = r.ulong()
        r.input_bytes()  # the consumer's PIN: read past, never kept or used
        self._session(handle)
        if user_type == CKU_SO:
            raise CkError(Ckr.ACTION_PROHIBITED, "no security officer login")
        if self._backend is not None:
            self._backend.note_login(user_type)

    async def c_logout(self, r: Reader, w: Writer) -> None:
        self._session(r.ulong())

    # -- objects ----------------------------------------------------------------

    async def c_get_attribute_value(self, r: Reader, w: Writer) -> None:
        s = self._session(r.ulong())
        handle = r.ulong()
        template = r.attribute_rooms()
        obj = self._object(s, handle)
        out, rv = answer_attributes(obj, template)
        w.attributes(out)
        w.ulong(rv)

    async def c_find_objects_init(self, r: Reader, w: Writer) -> None:
        s = self._session(r.ulong())
        template = r.attributes()
        if s.search is not None:
            raise CkError(Ckr.OPERATION_ACTIVE)
        s.search = [
            handle
            for handle, (slot, obj) in enumerate(self._objects, 1)
            if slot == s.slot and _matches(obj, template)
        ]

    async def c_find_objects(self, r: Reader, w: Writer) -> None:
        s = self._session(r.ulong())
        most = r.ulong_room()
        if s.search is None:
            raise CkError(Ckr.OPERATION_NOT_INITIALIZED)
        found, s.search = s.search[:most], s.search[most:]
        w.ulong_array(found)

    async def c_find_objects_final(self, r: Reader, w: Writer) -> None:
        s = self._session(r.ulong())
        if s.search is None:
            raise CkError(Ckr.OPERATION_NOT_INITIALIZED)
        s.search = None

    # -- sign, decrypt, verify ---------------------------------------------------

    def _init_op(self, kind: Operation, r: Reader) -> None:
        handle = r.ulong()
        self._session(handle)  # an unknown session is refused before the rest is read
        mechanism = r.mechanism()
        self.init_operation(kind, handle, mechanism, r.ulong())

    def init_operation(
        self,
        kind: Operation,
        handle: int,
        mechanism: Mechanism | None,
        key_handle: int,
        body: bytes | None = None,
    ) -> None:
        """C_SignInit, C_DecryptInit, C_VerifyInit once their fields are
        read (by the generic reader or `p11kit.fast`, which passes the
        request's `body` so that `init_again` can repeat a success)."""
        s = self._session(handle)
        if mechanism is None:  # a NULL mechanism cancels (0.25.2 and later)
            s.ops.pop(kind, None)
            return
        if kind in s.ops:
            raise CkError(Ckr.OPERATION_ACTIVE)
        key = self._object(s, key_handle)
        token = self._tokens[s.slot - SLOT_BASE] if self._tokens else None
        info = token.mechanisms.get(mechanism.type) if token is not None else None
        want, usage, expected = _OPERATION_RULES[kind]
        if info is None or not info.flags & want or self._backend is None:
            raise CkError(Ckr.MECHANISM_INVALID)
        if not self._backend.allows(mechanism.type):
            raise CkError(Ckr.MECHANISM_INVALID, "not allowed for this service")
        if key.object_class is not expected or key.attributes.get(usage) is False:
            raise CkError(Ckr.KEY_FUNCTION_NOT_PERMITTED)
        length = self._backend.output_length(key, mechanism)  # raises if they do not suit
        absent = Absent(length)
        s.ops[kind] = _Op(kind, key, mechanism, length, absent)
        if body is not None:
            inits = self._inits
            if len(inits) >= MAX_SESSIONS:
                inits.clear()  # clients choose the bodies: keep the map bounded
            inits[body] = (kind, handle, key, mechanism, length, absent)

    def init_again(self, body: bytes) -> bool:
        """Set up the operation of an init request whose `body` succeeded
        before on this connection, if it would now (its session is open
        and has no operation of the kind): True. Every other check of
        `init_operation` (the key, the mechanism, the policy, the length)
        depends only on the body, the tokens and the backend, and both of
        those empty the map when they change. False: nothing done, the
        caller runs the whole init."""
        again = self._inits.get(body)
        if again is None:
            return False
        kind, handle, key, mechanism, length, absent = again
        s = self._sessions.get(handle)
        if s is None or kind in s.ops:
            return False
        s.ops[kind] = _Op(kind, key, mechanism, length, absent)
        return True

    def _op(self, handle: int, kind: Operation) -> tuple[_Session, _Op]:
        s = self._sessions.get(handle)  # `_session`, written out: every signature comes here
        if s is None:
            raise CkError(Ckr.SESSION_HANDLE_INVALID)
        op = s.ops.get(kind)
        if op is None:
            raise CkError(Ckr.OPERATION_NOT_INITIALIZED)
        return s, op

    def _prepared(
        self, s: _Session, op: _Op, data: bytes, room: int | None
    ) -> bytes | Absent | _Pending:
        """What an output call answers without the token: the output kept
        from an earlier call with the same input, or only the length (a size
        query, or a room too small for a signature). Otherwise what the
        token must make (then `make_output` or `make_output_inline`)."""
        if op.output is not None and op.done_for == data:
            return self._hand_out(s, op, op.output, room)
        if (op.kind is Operation.SIGN or room is None) and (room is None or room < op.length):
            return op.absent
        return s, op, data

    def single_output(
        self, kind: Operation, handle: int, data: bytes | None, room: int | None
    ) -> bytes | Absent | _Pending:
        """C_Sign, C_Decrypt once their fields are read: the answer, or
        (a tuple) the output the token must make for the one input."""
        s, op = self._op(handle, kind)
        if op.parts is not None or data is None:
            data = self._single(s, op, data)  # raises CkError
        return self._prepared(s, op, data, room)

    def final_output(
        self, kind: Operation, handle: int, room: int | None
    ) -> bytes | Absent | _Pending:
        """C_SignFinal, C_DecryptFinal: `single_output` for the gathered input."""
        s, op = self._op(handle, kind)
        return self._prepared(s, op, bytes(op.parts or b""), room)

    def _made_output(
        self, s: _Session, op: _Op, data: bytes, room: int | None, output: bytes
    ) -> bytes | Absent:
        """The answer once the token made `output` for `data` (kept for the
        next call with the same input if it does not fit `room`)."""
        op.done_for, op.output = data, output
        return self._hand_out(s, op, output, room)

    @staticmethod
    def _hand_out(s: _Session, op: _Op, output: bytes, room: int | None) -> bytes | Absent:
        if room is None or room < len(output):
            return Absent(len(output))
        s.ops.pop(op.kind, None)  # delivered: the operation ends
        return output

    async def make_output(self, pending: _Pending, room: int | None) -> bytes | Absent:
        """The token's output for a pending input (sign or decrypt) as
        `_made_output` answers it; CkError (the token refused) ends the
        operation."""
        assert self._backend is not None
        s, op, data = pending
        make = self._backend.sign if op.kind is Operation.SIGN else self._backend.decrypt
        try:
            output = await make(op.key, op.mechanism, data)
        except CkError:
            s.ops.pop(op.kind, None)
            raise
        return self._made_output(s, op, data, room, output)

    def make_output_inline(
        self, pending: _Pending, room: int | None, inline: InlineBackend
    ) -> bytes | Absent:
        """`make_output` where the token's calls are inline (the p11-kit
        worker process): `inline` makes the output, with the same policy
        and audit as the backend's coroutines, and nothing here waits."""
        s, op, data = pending
        try:
            output = inline.operate_inline(op.kind is Operation.SIGN, op.key, op.mechanism, data)
        except CkError:
            s.ops.pop(op.kind, None)
            raise
        return self._made_output(s, op, data, room, output)

    def update_input(self, kind: Operation, handle: int, data: bytes | None) -> None:
        """C_SignUpdate (and C_VerifyUpdate): gather `data`."""
        s, op = self._op(handle, kind)
        self._update(s, op, data)

    def _single(self, s: _Session, op: _Op, data: bytes | None) -> bytes:
        if op.parts is not None or data is None:
            s.ops.pop(op.kind, None)
            raise CkError(Ckr.OPERATION_ACTIVE if data is not None else Ckr.ARGUMENTS_BAD)
        return data

    def _update(self, s: _Session, op: _Op, data: bytes | None) -> None:
        if data is None or op.output is not None:
            s.ops.pop(op.kind, None)
            raise CkError(Ckr.ARGUMENTS_BAD)
        parts = op.parts if op.parts is not None else bytearray()
        if len(parts) + len(data) > MAX_MULTIPART:
            s.ops.pop(op.kind, None)
            raise CkError(Ckr.DATA_LEN_RANGE)
        parts += data
        op.parts = parts

    async def c_sign_init(self, r: Reader, w: Writer) -> None:
        self._init_op(Operation.SIGN, r)

    async def _single_part(self, kind: Operation, r: Reader, w: Writer) -> None:
        """C_Sign and C_Decrypt: the input, the room, one output."""
        handle = r.ulong()
        data = r.input_bytes()
        room = r.room()
        out = self.single_output(kind, handle, data, room)
        w.output_bytes(await self.make_output(out, room) if isinstance(out, tuple) else out)

    async def _final(self, kind: Operation, r: Reader, w: Writer) -> None:
        """C_SignFinal and C_DecryptFinal: the output for the gathered parts."""
        handle = r.ulong()
        room = r.room()
        out = self.final_output(kind, handle, room)
        w.output_bytes(await self.make_output(out, room) if isinstance(out, tuple) else out)

    async def c_sign(self, r: Reader, w: Writer) -> None:
        await self._single_part(Operation.SIGN, r, w)

    async def c_sign_update(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        self.update_input(Operation.SIGN, handle, r.input_bytes())

    async def c_sign_final(self, r: Reader, w: Writer) -> None:
        await self._final(Operation.SIGN, r, w)

    async def c_decrypt_init(self, r: Reader, w: Writer) -> None:
        self._init_op(Operation.DECRYPT, r)

    async def c_decrypt(self, r: Reader, w: Writer) -> None:
        await self._single_part(Operation.DECRYPT, r, w)

    async def c_decrypt_update(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        data = r.input_bytes()
        room = r.room()
        w.output_bytes(self.decrypt_update(handle, data, room))

    def decrypt_update(self, handle: int, data: bytes | None, room: int | None) -> bytes | Absent:
        """C_DecryptUpdate once its fields are read."""
        s, op = self._op(handle, Operation.DECRYPT)
        # Public-key decryption yields nothing before the end: gather the
        # input. A size query (no buffer) takes none of it.
        if room is None:
            return Absent(0)
        self._update(s, op, data)
        return b""

    async def c_decrypt_final(self, r: Reader, w: Writer) -> None:
        await self._final(Operation.DECRYPT, r, w)

    async def c_verify_init(self, r: Reader, w: Writer) -> None:
        self._init_op(Operation.VERIFY, r)

    def _verify(self, s: _Session, op: _Op, data: bytes, signature: bytes | None) -> None:
        s.ops.pop(op.kind, None)  # a verification always ends the operation
        if signature is None:
            raise CkError(Ckr.ARGUMENTS_BAD)
        assert self._backend is not None
        self._backend.verify(op.key, op.mechanism, data, signature)

    async def c_verify(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        data = r.input_bytes()
        signature = r.input_bytes()
        s, op = self._op(handle, Operation.VERIFY)
        self._verify(s, op, self._single(s, op, data), signature)

    async def c_verify_update(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        self.update_input(Operation.VERIFY, handle, r.input_bytes())

    async def c_verify_final(self, r: Reader, w: Writer) -> None:
        handle = r.ulong()
        signature = r.input_bytes()
        s, op = self._op(handle, Operation.VERIFY)
        self._verify(s, op, bytes(op.parts or b""), signature)


def _matches(obj: VirtualObject, template: Sequence[Attribute]) -> bool:
    attrs = obj.attributes
    for a in template:
        have = attrs.get(a.type)
        if have is None or a.value is None or type(have) is not type(a.value) or have != a.value:
            return False
    return True


def answer_attributes(
    obj: VirtualObject, template: Sequence[tuple[int, int]]
) -> tuple[list[AttributeOut], int]:
    """C_GetAttributeValue for `obj`: each requested attribute in the
    client's order, and the call's CK_RV (the first problem found)."""
    out: list[AttributeOut] = []
    rv = Ckr.OK
    for attr_type, room in template:
        value: AttrValue | None = obj.attributes.get(attr_type)
        if value is None:
            problem = (
                Ckr.ATTRIBUTE_SENSITIVE
                if attr_type in obj.sensitive
                else Ckr.ATTRIBUTE_TYPE_INVALID
            )
            out.append(AttributeOut(attr_type, None))
            rv = rv or problem
            continue
        length = value_length(attr_type, value)
        if room == 0:
            out.append(AttributeOut(attr_type, length, None))
        elif room < length:
            out.append(AttributeOut(attr_type, None))
            rv = rv or Ckr.BUFFER_TOO_SMALL
        else:
            out.append(AttributeOut(attr_type, length, value))
    return out, int(rv)
