"""The fast path of the hot calls (`p11kit.fast`) against the generic
dispatch: for every request, well-formed or not, the same reply bytes (or
the same ProtocolError) and the same connection state afterwards; and it
does take the usual requests of a signature and a decryption (so the
comparison is not between two generic answers)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gssproxy_py.p11kit.calls import dispatch
from gssproxy_py.p11kit.ck import Ckr
from gssproxy_py.p11kit.fast import FastCalls, complete
from gssproxy_py.p11kit.session import MAX_SESSIONS, Cryptoki
from gssproxy_py.p11kit.wire import (
    NULL_MECHANISM,
    Mechanism,
    OaepParams,
    ProtocolError,
    PssParams,
)
from tests.support.p11kit_client import Request, error_of
from tests.support.p11kit_fake import (
    ECDSA,
    RSA_OAEP,
    RSA_PKCS,
    RSA_PSS,
    SHA256_RSA,
    Completing,
    SignBackend,
    hot_answer,
    opened,
)

# -- requests --------------------------------------------------------------------------

sessions = st.sampled_from([0x11, 0x11, 0x11, 0x12, 0x13])
rooms = st.sampled_from([0, 0xFFFFFFFF, 1, 64, 100, 255, 256, 512])
data = st.one_of(st.none(), st.binary(max_size=40), st.just(b"\xee" * 8))
ulongs = st.integers(0, 2**64 - 1)


@st.composite
def mechanisms(draw: st.DrawFn) -> Mechanism:
    mtype = draw(st.sampled_from([RSA_PKCS, RSA_OAEP, RSA_PSS, SHA256_RSA, ECDSA, 0x4242]))
    if mtype == RSA_PSS and draw(st.booleans()):
        return Mechanism(mtype, PssParams(draw(ulongs), draw(ulongs), draw(ulongs)))
    if mtype == RSA_OAEP:
        source_data = draw(st.one_of(st.none(), st.binary(max_size=8)))
        return Mechanism(
            mtype, OaepParams(draw(ulongs), draw(ulongs), draw(st.integers(0, 2)), source_data)
        )
    return Mechanism(mtype, draw(st.one_of(st.none(), st.binary(max_size=8))))


@st.composite
def episodes(draw: st.DrawFn) -> list[bytes]:
    """An init (mostly one that suits) and a few calls of the same kind on
    the same session (mostly), each possibly damaged."""
    decrypt = draw(st.booleans())
    s = draw(sessions)
    mech, key = draw(
        st.one_of(
            st.sampled_from([(Mechanism(ECDSA), 2), (Mechanism(RSA_PKCS), 1)]),
            st.tuples(mechanisms(), st.integers(0, 5)),
            st.just((Mechanism(NULL_MECHANISM), 1)),
        )
    )
    bodies = [Request(33 if decrypt else 42, "uMu").u(s).m(mech).u(key).body()]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.integers(0, 5)) == 0:
            s = draw(sessions)
        what = draw(st.sampled_from(["single", "single", "update", "final"]))
        if what == "single":
            req = Request(34 if decrypt else 43, "uayfy").u(s).ay(draw(data)).fy(draw(rooms))
        elif what == "update" and decrypt:
            req = Request(35, "uayfy").u(s).ay(draw(data)).fy(draw(rooms))
        elif what == "update":
            req = Request(44, "uay").u(s).ay(draw(data))
        else:
            req = Request(36 if decrypt else 45, "ufy").u(s).fy(draw(rooms))
        bodies.append(req.body())
    return [_damaged(draw, body) for body in bodies]


def _damaged(draw: st.DrawFn, body: bytes) -> bytes:
    damage = draw(st.sampled_from(["none"] * 8 + ["cut", "add", "flip", "flag"]))
    if damage == "cut":
        return body[: draw(st.integers(0, len(body) - 1))]
    if damage == "add":
        return body + draw(st.binary(min_size=1, max_size=9))
    if damage == "flip":
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    if damage == "flag":
        # The byte after the session handle (a present flag, the mechanism's
        # top byte, or a room's).
        i = min(len(body) - 1, 19 if body[7] == 3 else 21)
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    return body


def _generic(c: Cryptoki, body: bytes) -> bytes | type[ProtocolError]:
    try:
        return complete(dispatch(c, body))
    except ProtocolError:
        return ProtocolError


def _fast(f: FastCalls, c: Cryptoki, body: bytes) -> bytes | type[ProtocolError]:
    out = hot_answer(f, body)
    return out if out is not None else _generic(c, body)


@settings(max_examples=400, deadline=None)
@given(st.lists(episodes(), min_size=1, max_size=5))
def test_fast_and_generic_give_the_same_bytes(episodes: list[list[bytes]]) -> None:
    generic, generic_backend = opened()
    fast_c, fast_backend = opened()
    fast = FastCalls(fast_c, Completing(fast_backend))
    for body in (b for episode in episodes for b in episode):
        want = _generic(generic, body)
        assert _fast(fast, fast_c, body) == want
        if want is ProtocolError:
            break  # the connection is closed
    assert fast_backend.made == generic_backend.made
    # The same state: a C_SignFinal and a C_DecryptFinal on each session now.
    for s in (0x11, 0x12):
        for final in (Request(45, "ufy"), Request(36, "ufy")):
            body = final.u(s).fy(512).body()
            assert _fast(fast, fast_c, body) == _generic(generic, body)


def test_the_usual_sign_and_decrypt_requests_take_the_fast_path() -> None:
    c, backend = opened()
    fast = FastCalls(c, Completing(backend))
    digest = b"\x5a" * 32
    pss = Mechanism(RSA_PSS, PssParams(0x250, 2, 32))
    oaep = Mechanism(RSA_OAEP, OaepParams(0x250, 2, 1, None))
    steps = [
        Request(42, "uMu").u(0x11).m(Mechanism(ECDSA)).u(2).body(),
        Request(43, "uayfy").u(0x11).ay(digest).fy(0).body(),  # size query
        Request(43, "uayfy").u(0x11).ay(digest).fy(64).body(),
        Request(42, "uMu").u(0x11).m(pss).u(1).body(),
        Request(44, "uay").u(0x11).ay(digest).body(),
        Request(45, "ufy").u(0x11).fy(0).body(),
        Request(45, "ufy").u(0x11).fy(256).body(),
        Request(33, "uMu").u(0x11).m(oaep).u(1).body(),
        Request(34, "uayfy").u(0x11).ay(b"ciphertext").fy(0).body(),
        Request(34, "uayfy").u(0x11).ay(b"ciphertext").fy(256).body(),
        Request(33, "uMu").u(0x11).m(Mechanism(RSA_PKCS)).u(1).body(),
        Request(35, "uayfy").u(0x11).ay(b"part").fy(16).body(),
        Request(36, "ufy").u(0x11).fy(256).body(),
    ]
    replies = [hot_answer(fast, body) for body in steps]
    assert all(r is not None and error_of(r) is None for r in replies), replies
    assert replies[1] == bytes.fromhex("0000002b0000000261790000000040")  # absent, 64
    assert replies[2] == bytes.fromhex("0000002b000000026179010000004001") + b"\x01" * 63
    assert len(backend.made) == 4
    # A refusal is answered there too, as the generic path answers it.
    refused = Request(42, "uMu").u(0x11).m(Mechanism(SHA256_RSA)).u(1).body()
    assert error_of(hot_answer(fast, refused) or b"") == Ckr.MECHANISM_INVALID


def test_every_room_and_input_shape_as_the_generic_path() -> None:
    """Each room (size query, NULL-length buffer, too small, enough) and
    each input shape (present, absent, NULL) of C_Sign, C_Decrypt and the
    finals, after a fresh init each time: the same bytes both ways."""
    generic, _ = opened()
    fast_c, fast_backend = opened()
    fast = FastCalls(fast_c, Completing(fast_backend))
    digest = b"\x5a" * 32
    for decrypt in (False, True):
        init = Request(33 if decrypt else 42, "uMu").u(0x11).m(Mechanism(RSA_PKCS)).u(1).body()
        for room in (0, 0xFFFFFFFF, 1, 255, 256, 512):
            for data in (digest, None, b""):
                single = Request(34 if decrypt else 43, "uayfy").u(0x11).ay(data).fy(room)
                final = Request(36 if decrypt else 45, "ufy").u(0x11).fy(room)
                for body in (init, single.body(), final.body()):
                    assert _fast(fast, fast_c, body) == _generic(generic, body), (room, data)


def test_the_inits_kept_for_reuse_stay_bounded() -> None:
    """Clients choose the init bodies (a mechanism parameter of any bytes):
    the map of inits that succeeded never holds more than MAX_SESSIONS."""
    c, backend = opened()
    fast = FastCalls(c, Completing(backend))
    sign = Request(43, "uayfy").u(0x11).ay(b"data").fy(512).body()  # ends the operation
    for i in range(3 * MAX_SESSIONS):
        body = Request(42, "uMu").u(0x11).m(Mechanism(RSA_PKCS, b"%d" % i)).u(1).body()
        assert hot_answer(fast, body) == Request(42, "").body()
        assert error_of(hot_answer(fast, sign) or b"") is None
        assert len(c._inits) <= MAX_SESSIONS


def test_a_rebound_backend_checks_a_kept_init_again() -> None:
    """An init kept for reuse was checked against the backend of its day:
    after `rebind` (a reload that changed the service's policy) the same
    request body is judged by the new backend's policy."""

    class Stricter(SignBackend):
        def allows(self, mechanism: int) -> bool:
            return mechanism != RSA_PKCS

    c, backend = opened()
    fast = FastCalls(c, Completing(backend))
    init = Request(42, "uMu").u(0x11).m(Mechanism(RSA_PKCS)).u(1).body()
    sign = Request(43, "uayfy").u(0x11).ay(b"data").fy(512).body()
    assert hot_answer(fast, init) == Request(42, "").body()
    assert error_of(hot_answer(fast, sign) or b"") is None
    stricter = Stricter()
    c.rebind(stricter)
    fast = FastCalls(c, Completing(stricter))
    assert error_of(hot_answer(fast, init) or b"") == Ckr.MECHANISM_INVALID
