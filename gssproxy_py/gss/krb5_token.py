"""The ticket's server principal in a krb5 initial context token, as bytes.

An accepted krb5 context names its target (`gss_inquire_context`'s
targ_name): MIT's krb5 mechanism makes that name from the acceptor
credential's name or from the server principal of the ticket the
initiator sent, and from nothing else. So the target's wire form is the
same for every context accepted with one credential handle from tickets
for one server principal, and `gss.direct` keeps it per (handle,
`ticket_server(token)`) instead of asking MIT for it on every accept (an
inquiry, a name to export and one to release: three krb5 contexts made
and freed inside MIT). tests/integration/test_gss_procedures.py checks
that against MIT's own answers.

`ticket_server` reads RFC 2743 3.1's token framing with the krb5
mechanism's OID and TOK_ID 01 00 (RFC 1964 1.1.1), then the AP-REQ's
ticket (RFC 4120 5.5.1, 5.3), and returns the DER bytes of the ticket's
`realm` and `sname` fields as they are, undecoded: equal bytes decode to
the same principal. Anything else (another mechanism, SPNEGO, a token it
cannot walk) is None, and the caller asks MIT.
"""

from __future__ import annotations

from gssproxy_py.vocab import oids

__all__ = ["ticket_server"]

#: DER tags (one byte each in these structures).
_GSS_TOKEN = 0x60  # [APPLICATION 0] of RFC 2743's InitialContextToken
_OID = 0x06
_AP_REQ = 0x6E  # [APPLICATION 14]
_TICKET = 0x61  # [APPLICATION 1]
_SEQUENCE = 0x30
_AP_REQ_TICKET = 0xA3  # AP-REQ's ticket [3]
_TKT_VNO, _REALM, _SNAME = 0xA0, 0xA1, 0xA2
#: RFC 1964's TOK_ID of a KRB_AP_REQ
_AP_REQ_TOK_ID = b"\x01\x00"
#: Longest length field read (4 bytes: no token is longer).
_MAX_LENGTH_BYTES = 4


def _tlv(buf: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The tag at `pos` and its value's start and end; ValueError if it
    does not fit before `end`."""
    if pos + 2 > end:
        raise ValueError("short")
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if not 0 < k <= _MAX_LENGTH_BYTES or pos + k > end:
            raise ValueError("length")
        n = int.from_bytes(buf[pos : pos + k], "big")
        pos += k
    if pos + n > end:
        raise ValueError("long")
    return tag, pos, pos + n


def _inner(buf: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """The value of the element at `pos`, which must be `tag`."""
    found, start, stop = _tlv(buf, pos, end)
    if found != tag:
        raise ValueError("tag")
    return start, stop


def _ticket(token: bytes) -> tuple[int, int]:
    """The bounds of the AP-REQ's Ticket SEQUENCE's contents."""
    start, end = _inner(token, 0, len(token), _GSS_TOKEN)
    if end != len(token):
        raise ValueError("trailing")
    oid_start, oid_end = _inner(token, start, end, _OID)
    if token[oid_start:oid_end] != oids.KRB5:
        raise ValueError("mech")
    if token[oid_end : oid_end + 2] != _AP_REQ_TOK_ID:
        raise ValueError("tok_id")
    start, end = _inner(token, oid_end + 2, end, _AP_REQ)
    start, end = _inner(token, start, end, _SEQUENCE)
    pos = start
    while True:  # pvno [0], msg-type [1], ap-options [2], then the ticket [3]
        tag, value, stop = _tlv(token, pos, end)
        if tag == _AP_REQ_TICKET:
            break
        pos = stop
    start, end = _inner(token, value, stop, _TICKET)
    return _inner(token, start, end, _SEQUENCE)


def ticket_server(token: bytes) -> bytes | None:
    """The DER `realm` and `sname` of the ticket in a krb5 AP-REQ context
    token (see the module docstring), or None."""
    try:
        start, end = _ticket(token)
        tag, _, first = _tlv(token, start, end)
        if tag != _TKT_VNO:
            return None
        _, pos = _inner(token, first, end, _REALM)
        _, pos = _inner(token, pos, end, _SNAME)
    except ValueError:
        return None
    return token[first:pos]
