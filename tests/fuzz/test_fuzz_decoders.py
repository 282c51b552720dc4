"""Fuzz targets: random and mutated bytes into every generated decoder.

The only exception allowed out of a decoder is XdrError (never EOFError,
struct.error, IndexError, MemoryError or RecursionError). `make test` runs a
bounded number of examples per decoder; `make fuzz` sets FUZZ_EXAMPLES higher.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gssproxy_py.errors import XdrError
from gssproxy_py.gss.krb5_token import ticket_server
from gssproxy_py.xdr import Decoder, encode_bytes
from gssproxy_py.xdrgen import load
from tests.support.xdr_strategies import Strategies

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
MODULES = {
    "gss_proxy": "gssproxy_py.proto.gss_proxy",
    "rpc_msg": "gssproxy_py.proto.rpc_msg",
    # what gssproxy-py-ctl decodes from the daemon
    "admin": "gssproxy_py.proto.admin",
}


def _targets() -> list[tuple[str, str]]:
    out = []
    for spec in MODULES:
        model = load(str(ROOT / "idl" / f"{spec}.x"))
        out += [(spec, n) for n in [*model.enums, *model.typedefs, *model.structs, *model.unions]]
    return sorted(out)


TARGETS = _targets()
_strats: dict[str, Strategies] = {}


def _strategies(spec: str) -> Strategies:
    if spec not in _strats:
        _strats[spec] = Strategies(
            load(str(ROOT / "idl" / f"{spec}.x")), importlib.import_module(MODULES[spec])
        )
    return _strats[spec]


def _decode(spec: str, name: str, data: bytes) -> None:
    fn: Callable[..., Any] = getattr(importlib.import_module(MODULES[spec]), f"decode_{name}")
    # On a bare Decoder, not through decode_bytes: decode_bytes would turn a
    # stray EOFError into XdrError and hide the escape this target looks for.
    dec = Decoder(data)
    with contextlib.suppress(XdrError):
        fn(dec)
        dec.done()


FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)


def test_every_type_has_a_decoder() -> None:
    assert len([t for t in TARGETS if t[0] == "gss_proxy"]) >= 50


@pytest.mark.parametrize(("spec", "name"), TARGETS, ids=[f"{s}.{n}" for s, n in TARGETS])
@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes(spec: str, name: str, data: bytes) -> None:
    _decode(spec, name, data)


@st.composite
def _mutated(draw: st.DrawFn, spec: str, name: str) -> bytes:
    strat = _strategies(spec)
    value = draw(strat.named(name))
    wire = bytearray(encode_bytes(getattr(strat.mod, f"encode_{name}"), value))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "big"]))
        pos = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del wire[pos:]
        elif op == "insert":
            wire[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "big" and len(wire) >= pos + 4:
            # a huge length or count where one was: the classic allocation bomb
            wire[pos : pos + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff"]))
    return bytes(wire)


@pytest.mark.parametrize(("spec", "name"), TARGETS, ids=[f"{s}.{n}" for s, n in TARGETS])
@FUZZ
@given(data=st.data())
def test_mutated_valid_messages(spec: str, name: str, data: st.DataObject) -> None:
    _decode(spec, name, data.draw(_mutated(spec, name)))


# -- p11-kit RPC: the frame reader and every call's body --------------------

_P11KIT_IDS = sorted(__import__("gssproxy_py.p11kit.calls", fromlist=["CALLS"]).CALLS)


@FUZZ
@given(st.binary(max_size=512))
def test_fuzz_p11kit_frames(data: bytes) -> None:
    from gssproxy_py.p11kit.wire import FrameReader, ProtocolError, lone_frame

    with contextlib.suppress(ProtocolError):
        FrameReader().feed(data)
    lone_frame(data)  # the worker's one-frame shortcut: a frame or None, never an error


@FUZZ
@given(st.sampled_from(_P11KIT_IDS), st.binary(max_size=256), st.booleans())
def test_fuzz_p11kit_bodies(call_id: int, tail: bytes, own_signature: bool) -> None:
    """Random fields after a real call id and its own signature (or a random
    one): answered, or ProtocolError; nothing else escapes."""
    import asyncio
    import struct

    from gssproxy_py.p11kit.calls import CALLS, dispatch
    from gssproxy_py.p11kit.session import Cryptoki
    from gssproxy_py.p11kit.wire import ProtocolError

    sig = CALLS[call_id].request.encode() if own_signature else tail[:3]
    body = struct.pack(">II", call_id, len(sig)) + sig + tail
    with contextlib.suppress(ProtocolError):
        asyncio.run(dispatch(Cryptoki(None), body))


_P11KIT_HOT = {42: b"uMu", 33: b"uMu", 43: b"uayfy", 34: b"uayfy", 44: b"uay", 35: b"uayfy"}
_P11KIT_HOT |= {45: b"ufy", 36: b"ufy"}


@FUZZ
@given(st.sampled_from(sorted(_P11KIT_HOT)), st.binary(max_size=96), st.booleans())
def test_fuzz_p11kit_fast_path(call_id: int, tail: bytes, with_init: bool) -> None:
    """Random fields after a hot call's prefix, on a connection with an open
    session (and an operation under way): the fast path answers or leaves
    the body to the generic dispatch; nothing escapes."""
    import struct

    from gssproxy_py.p11kit.fast import FastCalls
    from gssproxy_py.p11kit.wire import Mechanism
    from tests.support.p11kit_client import Request
    from tests.support.p11kit_fake import ECDSA, Completing, hot_answer, opened

    cryptoki, backend = opened()
    fast = FastCalls(cryptoki, Completing(backend))
    if with_init:
        kind = 33 if call_id in (33, 34, 35, 36) else 42
        hot_answer(fast, Request(kind, "uMu").u(0x11).m(Mechanism(ECDSA)).u(2).body())
    sig = _P11KIT_HOT[call_id]
    session = struct.pack(">Q", 0x11)
    hot_answer(fast, struct.pack(">II", call_id, len(sig)) + sig + session + tail)


@FUZZ
@given(st.binary(max_size=96), st.integers(0, 2), st.booleans())
def test_fuzz_krb5_ticket_server(tail: bytes, depth: int, framed: bool) -> None:
    # Random bytes behind 0..2 of a krb5 AP-REQ token's leading elements
    # (mech OID and TOK_ID; AP-REQ and its SEQUENCE, lengths as they come),
    # in RFC 2743's framing or not: the reader returns None or bytes of the
    # token, and raises nothing.
    heads = (bytes.fromhex("06092a864886f712010202") + b"\x01\x00", b"\x6e\x7f\x30\x7d")
    inner = b"".join(heads[:depth]) + tail
    token = b"\x60\x81" + bytes([len(inner)]) + inner if framed else inner
    server = ticket_server(token)
    assert server is None or server in token
