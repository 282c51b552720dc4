"""Tests for the linux_lucid_v1 blob builder and its kernel-strict parser (gss/lucid.py)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gssproxy_py.errors import LocalError, PeerError
from gssproxy_py.gss.lucid import (
    ENCTYPE_KEY_LENGTHS,
    FLAG_ACCEPTOR_SUBKEY,
    FLAG_CFX,
    FLAG_INITIATOR,
    CfxKeys,
    LinuxLucidV1,
    LucidContextV1,
    LucidFormatError,
    LucidParseError,
    Rfc1964Keys,
    format_linux_lucid_v1,
    parse_linux_lucid_v1,
)

KEY32 = bytes(range(32))
KEY16 = bytes(range(0x40, 0x50))


def u32(v: int) -> bytes:
    return v.to_bytes(4, sys.byteorder)


def u64(v: int) -> bytes:
    return v.to_bytes(8, sys.byteorder)


def cfx_ctx(**kw: object) -> LucidContextV1:
    fields: dict[str, object] = {
        "endtime": 0x65F00000,
        "send_seq": 0x12345678,
        "cfx_kd": CfxKeys(17, KEY16, 18, KEY32),
    }
    fields.update(kw)
    return LucidContextV1(**fields)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.byteorder != "little", reason="literal bytes are little-endian")
def test_aes256_acceptor_subkey_exact_bytes_le() -> None:
    # A lucid blob the kernel accepts (aes256-cts-hmac-sha1-96, acceptor, CFX),
    # byte for byte.
    blob = format_linux_lucid_v1(cfx_ctx())
    expected = bytes.fromhex("06000000 0000f065 7856341200000000 12000000") + KEY32
    assert blob == expected
    assert len(blob) == 52


def test_aes256_exact_bytes_native() -> None:
    blob = format_linux_lucid_v1(cfx_ctx())
    assert (
        blob
        == u32(FLAG_CFX | FLAG_ACCEPTOR_SUBKEY)
        + u32(0x65F00000)
        + u64(0x12345678)
        + u32(18)
        + KEY32
    )
    assert len(blob) == 52


def test_aes128_ctx_key_exact_bytes() -> None:
    blob = format_linux_lucid_v1(cfx_ctx(cfx_kd=CfxKeys(17, KEY16), send_seq=0, endtime=1))
    assert blob == u32(FLAG_CFX) + u32(1) + u64(0) + u32(17) + KEY16
    assert len(blob) == 36


def test_aes128_acceptor_subkey_chosen_over_ctx_key() -> None:
    blob = format_linux_lucid_v1(cfx_ctx(cfx_kd=CfxKeys(18, KEY32, 17, KEY16)))
    assert len(blob) == 36
    assert blob[16:20] == u32(17)
    assert blob[20:] == KEY16


def test_initiator_flag() -> None:
    blob = format_linux_lucid_v1(cfx_ctx(is_initiator=True))
    assert blob[:4] == u32(FLAG_INITIATOR | FLAG_CFX | FLAG_ACCEPTOR_SUBKEY)


def test_protocol0_uses_rfc1964_key() -> None:
    ctx = LucidContextV1(
        protocol=0, endtime=5, send_seq=9, rfc1964_kd=Rfc1964Keys(16, b"\x11" * 24, 4, 2)
    )
    blob = format_linux_lucid_v1(ctx)
    assert blob == u32(0) + u32(5) + u64(9) + u32(16) + b"\x11" * 24


def test_real_python_gssapi_named_tuples_accepted() -> None:
    from gssapi.raw.named_tuples import CfxKeyData

    ctx = LucidContextV1(endtime=7, send_seq=1, cfx_kd=CfxKeyData(20, KEY32, None, None))
    assert format_linux_lucid_v1(ctx) == u32(FLAG_CFX) + u32(7) + u64(1) + u32(20) + KEY32


@pytest.mark.parametrize(
    ("ctx", "match"),
    [
        (cfx_ctx(version=2), "version"),
        (cfx_ctx(version=None), "version"),
        (cfx_ctx(protocol=2), "protocol"),
        (cfx_ctx(protocol=None), "protocol"),
        (cfx_ctx(send_seq=2**31), "2\\*\\*31"),
        (cfx_ctx(send_seq=2**64 - 1), "2\\*\\*31"),
        (cfx_ctx(send_seq=-1), "2\\*\\*31"),
        (cfx_ctx(endtime=2**32), "u32"),
        (cfx_ctx(endtime=None), "endtime"),
        (cfx_ctx(is_initiator=None), "initiator"),
        (cfx_ctx(cfx_kd=None), "cfx key data"),
        (cfx_ctx(protocol=0), "rfc1964 key data"),
        (cfx_ctx(cfx_kd=CfxKeys(18, KEY16)), "32-byte key"),
        (cfx_ctx(cfx_kd=CfxKeys(17, KEY16, 18, KEY32 + b"\0")), "32-byte key"),
        (cfx_ctx(cfx_kd=CfxKeys(17, KEY16, 18, None)), "both"),
        (cfx_ctx(cfx_kd=CfxKeys(17, KEY16, None, KEY32)), "both"),
        (cfx_ctx(cfx_kd=CfxKeys(99, b"")), "empty"),
        (cfx_ctx(cfx_kd=CfxKeys(99, b"k" * 109)), "128"),
    ],
)
def test_format_refusals(ctx: LucidContextV1, match: str) -> None:
    with pytest.raises(LucidFormatError, match=match):
        format_linux_lucid_v1(ctx)
    assert issubclass(LucidFormatError, LocalError)


def test_largest_allowed_values() -> None:
    blob = format_linux_lucid_v1(cfx_ctx(send_seq=2**31 - 1, endtime=2**32 - 1))
    parsed = parse_linux_lucid_v1(blob)
    assert (parsed.seq_send, parsed.endtime) == (2**31 - 1, 2**32 - 1)


def test_unknown_enctype_passed_through_up_to_128() -> None:
    blob = format_linux_lucid_v1(cfx_ctx(cfx_kd=CfxKeys(99, b"k" * 108)))
    assert len(blob) == 128


@given(
    enctype=st.sampled_from(sorted(ENCTYPE_KEY_LENGTHS)),
    initiator=st.booleans(),
    subkey=st.booleans(),
    endtime=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_format_parse_round_trip(
    enctype: int, initiator: bool, subkey: bool, endtime: int, seq: int, data: st.DataObject
) -> None:
    key = data.draw(
        st.binary(min_size=ENCTYPE_KEY_LENGTHS[enctype], max_size=ENCTYPE_KEY_LENGTHS[enctype])
    )
    kd = CfxKeys(17, KEY16, enctype, key) if subkey else CfxKeys(enctype, key)
    ctx = LucidContextV1(is_initiator=initiator, endtime=endtime, send_seq=seq, cfx_kd=kd)
    parsed = parse_linux_lucid_v1(format_linux_lucid_v1(ctx))
    assert parsed == LinuxLucidV1(
        FLAG_CFX | (FLAG_INITIATOR if initiator else 0) | (FLAG_ACCEPTOR_SUBKEY if subkey else 0),
        endtime,
        seq,
        enctype,
        key,
    )
    assert (parsed.is_initiator, parsed.cfx, parsed.acceptor_subkey) == (initiator, True, subkey)


def _blob(enctype: int = 18, key: bytes = KEY32, flags: int = 2, seq: int = 0) -> bytes:
    return u32(flags) + u32(0) + u64(seq) + u32(enctype) + key


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"", "shorter"),
        (_blob()[:19], "shorter"),
        (_blob()[:20], "32 key bytes"),
        (_blob()[:-1], "32 key bytes"),
        (_blob() + b"\0", "32 key bytes"),
        (_blob(17, KEY32), "16 key bytes"),
        (_blob(16, b"\0" * 24), "enctype 16"),
        (_blob(23, KEY16), "enctype 23"),
        (_blob(seq=2**31), "atomic_t"),
        (_blob(flags=0x8), "flag"),
        (_blob(99, b"\0" * 200), "exceeds"),
    ],
)
def test_parse_refusals(blob: bytes, match: str) -> None:
    with pytest.raises(LucidParseError, match=match):
        parse_linux_lucid_v1(blob)
    assert issubclass(LucidParseError, PeerError)


@pytest.mark.parametrize(("enctype", "keylen"), sorted(ENCTYPE_KEY_LENGTHS.items()))
def test_parse_each_kernel_enctype(enctype: int, keylen: int) -> None:
    parsed = parse_linux_lucid_v1(_blob(enctype, b"\x5a" * keylen))
    assert (parsed.enctype, parsed.key) == (enctype, b"\x5a" * keylen)


def test_reprs_hide_keys() -> None:
    ctx = cfx_ctx()
    parsed = parse_linux_lucid_v1(format_linux_lucid_v1(ctx))
    for text in (repr(parsed), repr(ctx), repr(ctx.cfx_kd), repr(Rfc1964Keys(16, KEY32))):
        assert KEY32.hex() not in text
        assert repr(KEY32) not in text
        assert repr(KEY16) not in text
