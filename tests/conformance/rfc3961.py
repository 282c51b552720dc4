"""Just enough RFC 3961/3962/4121 to check a krb5 GSS MIC token with a raw key.

Test code only, written from the RFCs (not from a Kerberos library), so that
a key taken out of a linux_lucid_v1 blob can be checked against what MIT
krb5 really computes:

* n-fold (RFC 3961 §5.1);
* DR / DK for the AES simplified profile (RFC 3961 §5.1, RFC 3962: E is
  AES in CBC-CTS with a zero IV, which for one block is plain AES-ECB);
* the checksum hmac-sha1-96-aes (RFC 3962 §6): HMAC-SHA1 with
  Kc = DK(key, usage || 0x99), truncated to 96 bits;
* the RFC 4121 §4.2.6.1 MIC token (TOK_ID 04 04).

Only enctypes 17 and 18 (aes128/aes256-cts-hmac-sha1-96) are handled.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "AES_SHA1_ENCTYPES",
    "KG_USAGE_ACCEPTOR_SEAL",
    "KG_USAGE_ACCEPTOR_SIGN",
    "KG_USAGE_INITIATOR_SEAL",
    "KG_USAGE_INITIATOR_SIGN",
    "MIC_FLAG_ACCEPTOR_SUBKEY",
    "MIC_FLAG_SEALED",
    "MIC_FLAG_SENT_BY_ACCEPTOR",
    "MicToken",
    "derive_key",
    "derive_random",
    "hmac_sha1_96_aes",
    "make_mic",
    "nfold",
    "parse_mic",
    "verify_mic",
]

# RFC 4121 §2: key usage numbers.
KG_USAGE_ACCEPTOR_SEAL = 22
KG_USAGE_ACCEPTOR_SIGN = 23
KG_USAGE_INITIATOR_SEAL = 24
KG_USAGE_INITIATOR_SIGN = 25

# RFC 4121 §4.2.2: the flags octet.
MIC_FLAG_SENT_BY_ACCEPTOR = 0x01
MIC_FLAG_SEALED = 0x02
MIC_FLAG_ACCEPTOR_SUBKEY = 0x04

AES_SHA1_ENCTYPES = {17: 16, 18: 32}  # enctype -> key length
_BLOCK = 16
_CKSUM_LEN = 12
_MIC_TOK_ID = b"\x04\x04"
_FILLER = b"\xff" * 5


def nfold(data: bytes, nbytes: int) -> bytes:
    """RFC 3961 §5.1 n-fold of `data` to `nbytes` bytes.

    The input is repeated lcm(n, k)/k times, each copy rotated right by 13
    bits more than the one before; the n-bit blocks of that string are then
    added with one's-complement (end-around carry) addition.
    """
    k_bits = len(data) * 8
    n_bits = nbytes * 8
    if k_bits == 0 or n_bits == 0:
        raise ValueError("n-fold needs non-empty input and output")
    a, b = k_bits, n_bits
    while b:
        a, b = b, a % b
    lcm_bits = k_bits * n_bits // a
    value = int.from_bytes(data, "big")
    mask_k = (1 << k_bits) - 1
    big = 0
    for i in range(lcm_bits // k_bits):
        r = (13 * i) % k_bits
        rotated = ((value >> r) | (value << (k_bits - r))) & mask_k
        big = (big << k_bits) | rotated
    mask_n = (1 << n_bits) - 1
    total = 0
    for j in range(lcm_bits // n_bits):
        total += (big >> (j * n_bits)) & mask_n
    while total >> n_bits:
        total = (total & mask_n) + (total >> n_bits)
    return total.to_bytes(nbytes, "big")


def _aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(
        algorithms.AES(key), modes.ECB()
    ).encryptor()  # one block: RFC 3962 CBC with zero IV
    return encryptor.update(block) + encryptor.finalize()


def derive_random(key: bytes, constant: bytes) -> bytes:
    """DR(key, constant): E applied to n-fold(constant) repeatedly, k bits of output."""
    if len(key) not in (16, 32):
        raise ValueError(f"AES key of {len(key)} bytes")
    block = constant if len(constant) == _BLOCK else nfold(constant, _BLOCK)
    out = b""
    while len(out) < len(key):
        block = _aes_block(key, block)
        out += block
    return out[: len(key)]


def derive_key(key: bytes, constant: bytes) -> bytes:
    """DK(key, constant) = random-to-key(DR(key, constant)); random-to-key is identity for AES."""
    return derive_random(key, constant)


def hmac_sha1_96_aes(key: bytes, usage: int, data: bytes) -> bytes:
    """The hmac-sha1-96-aes128/256 checksum of `data` with the base key `key`."""
    kc = derive_key(key, struct.pack(">IB", usage, 0x99))
    return hmac.new(kc, data, hashlib.sha1).digest()[:_CKSUM_LEN]


class MicToken:
    """A parsed RFC 4121 MIC token."""

    def __init__(self, flags: int, seq: int, checksum: bytes) -> None:
        self.flags = flags
        self.seq = seq
        self.checksum = checksum

    def __repr__(self) -> str:
        return f"MicToken(flags=0x{self.flags:02x}, seq={self.seq}, checksum={self.checksum.hex()})"


def parse_mic(token: bytes) -> MicToken:
    """Split a MIC token into flags, SND_SEQ and SGN_CKSUM (ValueError if malformed)."""
    if len(token) != 16 + _CKSUM_LEN:
        raise ValueError(f"MIC token of {len(token)} bytes (want {16 + _CKSUM_LEN})")
    if token[:2] != _MIC_TOK_ID:
        raise ValueError(f"TOK_ID {token[:2].hex()} is not 0404")
    if token[3:8] != _FILLER:
        raise ValueError(f"filler {token[3:8].hex()} is not ff*5")
    (seq,) = struct.unpack(">Q", token[8:16])
    return MicToken(token[2], seq, token[16:])


def _mic_header(flags: int, seq: int) -> bytes:
    return _MIC_TOK_ID + bytes([flags]) + _FILLER + struct.pack(">Q", seq)


def make_mic(key: bytes, message: bytes, *, flags: int, seq: int) -> bytes:
    """A MIC token for `message`; the usage follows from the SentByAcceptor flag."""
    usage = KG_USAGE_ACCEPTOR_SIGN if flags & MIC_FLAG_SENT_BY_ACCEPTOR else KG_USAGE_INITIATOR_SIGN
    header = _mic_header(flags, seq)
    # RFC 4121 §4.2.4: the checksum covers the message, then the 16-byte header.
    return header + hmac_sha1_96_aes(key, usage, message + header)


def verify_mic(key: bytes, message: bytes, token: bytes) -> MicToken:
    """Check a MIC token with `key`; ValueError if the checksum does not match."""
    mic = parse_mic(token)
    expected = make_mic(key, message, flags=mic.flags, seq=mic.seq)
    if not hmac.compare_digest(expected, token):
        raise ValueError(f"MIC checksum mismatch for {mic!r}")
    return mic
