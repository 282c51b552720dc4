"""The kernel's nfsd upcall, emulated byte for byte, against a real daemon.

`kernel_client` encodes GSSX_ACCEPT_SEC_CONTEXT as the kernel's
gss_rpc_xdr.c does and decodes the reply with the kernel's limits; the
tokens are real krb5 AP-REQs for nfs@localhost from python-gssapi
initiators. The lucid key is checked to be the context's key by verifying
the initiator's RFC 4121 MIC with it (and the other way round), with the
RFC 3961 key derivation written in `rfc3961`.

The cases run against our daemon and, where the behaviour is the same, the
C gssproxy, which behave the same except where noted: NULL is SUCCESS for
us and PROC_UNAVAIL for gssproxy (the kernel waits for neither); the
CONTINUE_INIT quirk is GARBAGE_ARGS for us, while gssproxy misreads the bare
gssx_ctx as a cred handle and answers a GSS error (GSS_S_NO_CRED). Both
answer eight pipelined calls on one connection, and both keep serving it.
"""

from __future__ import annotations

import os
import pwd
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gssapi
import pytest

from gssproxy_py.testing.daemon import DaemonPaths, DaemonProcess
from gssproxy_py.testing.realm import Realm, RealmError, StandardRealm
from tests.conformance import rfc3961
from tests.conformance.kernel_client import (
    GARBAGE_ARGS,
    KRB5_CTX_FLAG_ACCEPTOR_SUBKEY,
    KRB5_CTX_FLAG_CFX,
    KRB5_CTX_FLAG_INITIATOR,
    KRB5_OID,
    PROC_UNAVAIL,
    AcceptResult,
    KernelConnection,
    KernelRejectError,
    RpcAcceptError,
    decode_accept_result,
    decode_reply_header,
    encode_accept_call,
    encode_null_call,
    nfsd_checks_complete,
)
from tests.conformance.test_golden_vectors import KERNEL_ACCEPT_CALL, _kernel_reply

pytestmark = [pytest.mark.conformance, pytest.mark.root]

IMPLS = ["py", "c"]
NFS = gssapi.Name("nfs@localhost", gssapi.NameType.hostbased_service)
MUTUAL = gssapi.RequirementFlag.mutual_authentication
UNMAPPED = (0xFFFFFFFF, 0xFFFFFFFF, ())

# §5.1: the NULL ping of a CONNECTED kernel, record mark included.
KERNEL_NULL_PING = bytes.fromhex(
    "80000028" "1a2b3c4c" "00000000" "00000002" "00061af0"
    "00000001" "00000000" "00000000" "00000000" "00000000" "00000000"
)  # fmt: skip


# ---------------------------------------------------------------------------
# The emulator against the reference bytes (no daemon)


def test_encoder_reproduces_the_reference_call_and_ping() -> None:
    token = bytes.fromhex("600b06092a864886f712010202")
    assert encode_accept_call(0x1A2B3C4D, token) == KERNEL_ACCEPT_CALL
    assert encode_null_call(0x1A2B3C4C) == KERNEL_NULL_PING
    assert len(KERNEL_NULL_PING) == 44
    # §5.2's formula: 168 + pad4(T) after the mark, for every residue of T.
    for t in range(8):
        call = encode_accept_call(1, b"x" * t)
        assert len(call) - 4 == 168 + t + (-t % 4) == struct.unpack(">I", call[:4])[0] & 0x7FFFFFFF


def test_encoder_continue_init_quirk_has_no_discriminant() -> None:
    plain = encode_accept_call(1, b"tok")
    quirk = encode_accept_call(1, b"tok", continue_handle=b"\x01\x02\x03\x04\x05")
    call_ctx_end = 4 + 40 + 104
    assert plain[call_ctx_end : call_ctx_end + 4] == b"\0\0\0\0"  # absent
    # bare gssx_ctx: empty exported_context_token, then the handle as state
    assert quirk[call_ctx_end : call_ctx_end + 16] == bytes.fromhex(
        "00000000" "00000005" "0102030405000000"
    )  # fmt: skip
    ctx_len = 4 + 12 + 4 + 4 + 24 + 24 + 16 + 8 + 4
    assert len(quirk) - len(plain) == ctx_len - 4


def test_decoder_accepts_the_reference_reply() -> None:
    xid, body = decode_reply_header(_kernel_reply()[4:])
    assert xid == 0x1A2B3C4D
    res = decode_accept_result(body)
    lucid = nfsd_checks_complete(res)
    assert res.context is not None
    assert res.context.src_name == b"alice@EXAMPLE.COM"
    assert res.creds == (1000, 1000, (10,))
    assert (lucid.flags, lucid.enctype, lucid.seq_send, lucid.key) == (
        6,
        18,
        0x12345678,
        bytes(range(32)),
    )


def _reply(
    *,
    lucid: bytes = struct.pack("=IIQI", 6, 1, 0, 17) + bytes(16),
    mech: bytes = KRB5_OID,
    src: bytes = b"alice@EXAMPLE.TEST",
    out_token: bytes | None = b"ap-rep",
    deleg: bool = False,
    creds: bytes | None = struct.pack("=III", 5, 6, 0),
    creds_len: int | None = None,
    verf: tuple[int, int] = (0, 0),
) -> bytes:
    """A reply built with plain struct, to mutate one field at a time."""

    def o(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b + b"\0" * (-len(b) % 4)

    def name(d: bytes) -> bytes:
        return o(d) + b"\0" * 20  # name_type, 2 exported names, attrs, extensions

    out = struct.pack(">4I", 7, 1, 0, verf[0]) + struct.pack(">I", verf[1]) + b"\0" * verf[1]
    out += struct.pack(">I", 0)  # SUCCESS
    out += struct.pack(">Q", 0) + o(b"") + struct.pack(">Q", 0) + o(b"") + o(b"") + o(b"")
    out += struct.pack(">I", 0)
    out += struct.pack(">I", 1) + o(lucid) + o(b"") + struct.pack(">I", 0) + o(mech)
    out += name(src) + name(b"nfs/localhost@EXAMPLE.TEST")
    out += struct.pack(">QQII", 0, 0, 0, 1) + struct.pack(">I", 0)
    out += struct.pack(">I", 0) if out_token is None else struct.pack(">I", 1) + o(out_token)
    out += struct.pack(">I", 1 if deleg else 0)
    if creds is None:
        out += struct.pack(">I", 0)
    else:
        n = len(creds) if creds_len is None else creds_len
        out += struct.pack(">I", 1) + o(b"linux_creds_v1\0") + struct.pack(">I", n) + creds
    return out


def _kernel_view(msg: bytes) -> AcceptResult:
    _, body = decode_reply_header(msg)
    res = decode_accept_result(body)
    nfsd_checks_complete(res)
    return res


@pytest.mark.parametrize(
    "bad",
    [
        {"lucid": struct.pack("=IIQI", 6, 1, 0, 18) + bytes(32 + 77)},  # 129 bytes
        {"lucid": struct.pack("=IIQI", 6, 1, 2**31, 17) + bytes(16)},  # seq_send
        {"lucid": struct.pack("=IIQI", 6, 1, 0, 17) + bytes(17)},  # trailing byte
        {"lucid": struct.pack("=IIQI", 6, 1, 0, 16) + bytes(24)},  # 3DES
        {"mech": bytes(33)},
        {"mech": bytes.fromhex("2a864886f71201020203")},  # not krb5
        {"src": b"a" * 257},
        {"out_token": bytes(1025)},
        {"out_token": None},
        {"deleg": True},
        {"creds": None},
        {"creds": struct.pack("=IIII", 5, 6, 1, 7), "creds_len": 12},
        {"creds": struct.pack("=IIII", 5, 6, 1, 0xFFFFFFFF)},
        {"verf": (1, 0)},
        {"verf": (0, 4)},
    ],
    ids=lambda d: ",".join(d),
)
def test_decoder_enforces_the_kernel_limits(bad: dict[str, Any]) -> None:
    good = _kernel_view(_reply())
    assert good.creds == (5, 6, ())
    assert _kernel_view(_reply(src=b"a" * 256, out_token=bytes(1024))).major == 0
    with pytest.raises(KernelRejectError):
        _kernel_view(_reply(**bad))


def test_rfc3961_nfold_vectors() -> None:
    """RFC 3961 appendix A.1."""
    assert rfc3961.nfold(b"012345", 8).hex() == "be072631276b1955"
    assert rfc3961.nfold(b"password", 7).hex() == "78a07b6caf85fa"
    assert rfc3961.nfold(b"password", 21).hex() == "59e4a8ca7c0385c3c37b3f6d2000247cb6e6bd5b3e"
    assert rfc3961.nfold(b"kerberos", 16).hex() == "6b65726265726f737b9b5b2b93132b93"
    assert rfc3961.nfold(b"Q", 21).hex() == "518a54a215a8452a518a54a215a8452a518a54a215"


# ---------------------------------------------------------------------------
# Against the daemons


def _nfs_daemon(
    daemon_factory: Any, realm: StandardRealm, impl: str, keytab: Path | None = None
) -> DaemonProcess:
    def render(paths: DaemonPaths) -> str:
        return f"""[gssproxy]
  debug = true
[service/nfs-server]
  mechs = krb5
  socket = {paths.socket}
  cred_store = keytab:{keytab or realm.nfs_keytab}
  trusted = yes
  euid = 0
"""

    daemon: DaemonProcess = daemon_factory(impl, render)
    return daemon


@pytest.fixture(params=IMPLS)
def daemon(
    request: pytest.FixtureRequest, daemon_factory: Any, realm: StandardRealm, initiator_env: None
) -> DaemonProcess:
    return _nfs_daemon(daemon_factory, realm, request.param)


@pytest.fixture
def conn(daemon: DaemonProcess) -> Iterator[KernelConnection]:
    with KernelConnection(daemon.socket) as c:
        yield c


def initiate(creds: gssapi.Credentials | None = None) -> tuple[gssapi.SecurityContext, bytes]:
    ctx = gssapi.SecurityContext(name=NFS, usage="initiate", flags=MUTUAL, creds=creds)
    token = ctx.step()
    assert token is not None and not ctx.complete
    return ctx, token


_xids = iter(range(0x5EED0000, 0x5EEE0000))


def xid() -> int:
    return next(_xids)


def complete(res: AcceptResult, init: gssapi.SecurityContext) -> Any:
    """The nfsd checks, then the output token must finish the initiator."""
    lucid = nfsd_checks_complete(res)
    assert res.output_token is not None
    assert len(res.output_token) <= 1024
    assert init.step(res.output_token) is None
    assert init.complete
    return lucid


def test_null_ping_then_accept_on_the_same_connection(
    daemon: DaemonProcess, conn: KernelConnection
) -> None:
    conn.send(KERNEL_NULL_PING)
    # The kernel never waits for this reply; ours is SUCCESS, gssproxy's PROC_UNAVAIL.
    expected = 0 if daemon.impl == "py" else PROC_UNAVAIL
    record = conn.recv_record()
    assert record == struct.pack(">6I", 0x1A2B3C4C, 1, 0, 0, 0, expected)
    init, token = initiate()
    complete(conn.accept(xid(), token), init)


def test_real_ap_req_completes_with_everything_the_kernel_needs(
    daemon: DaemonProcess, conn: KernelConnection
) -> None:
    init, token = initiate()
    before = time.time()
    res = conn.accept(xid(), token)
    lucid = complete(res, init)
    ctx = res.context
    assert ctx is not None
    assert ctx.mech == KRB5_OID
    assert ctx.src_name == b"alice@EXAMPLE.TEST"
    assert ctx.targ_name in (b"", b"nfs/localhost@EXAMPLE.TEST")
    assert len(ctx.exported_context_token) <= 128
    # The acceptor side of a CFX context; MIT sends an acceptor subkey on mutual auth.
    assert not lucid.flags & KRB5_CTX_FLAG_INITIATOR
    assert lucid.flags == KRB5_CTX_FLAG_CFX | KRB5_CTX_FLAG_ACCEPTOR_SUBKEY
    assert lucid.enctype in (17, 18)
    assert len(lucid.key) == {17: 16, 18: 32}[lucid.enctype]
    assert lucid.seq_send < 2**31
    assert lucid.endtime > before
    # alice has no local account: the creds are the "nobody" mapping.
    try:
        pw = pwd.getpwnam("alice")
    except KeyError:
        assert res.creds == UNMAPPED
    else:
        assert res.creds is not None and res.creds[:2] == (pw.pw_uid, pw.pw_gid)
    assert res.option_names == [b"linux_creds_v1\0"]


def test_lucid_key_is_the_session_key(daemon: DaemonProcess, conn: KernelConnection) -> None:
    init, token = initiate()
    lucid = complete(conn.accept(xid(), token), init)
    assert lucid.enctype in rfc3961.AES_SHA1_ENCTYPES
    message = b"the kernel checks this with the lucid key"

    # The initiator's MIC (usage 25, AcceptorSubkey flag) verifies with the lucid key.
    mic = init.get_signature(message)
    parsed = rfc3961.verify_mic(lucid.key, message, mic)
    assert parsed.flags == rfc3961.MIC_FLAG_ACCEPTOR_SUBKEY
    with pytest.raises(ValueError, match="mismatch"):
        rfc3961.verify_mic(lucid.key, message + b"!", mic)
    flipped = bytes([lucid.key[0] ^ 1]) + lucid.key[1:]
    with pytest.raises(ValueError, match="mismatch"):
        rfc3961.verify_mic(flipped, message, mic)

    # And the other way: a MIC made as the kernel would (usage 23, seq = lucid
    # seq_send) verifies in the initiator.
    ours = rfc3961.make_mic(
        lucid.key,
        message,
        flags=rfc3961.MIC_FLAG_SENT_BY_ACCEPTOR | rfc3961.MIC_FLAG_ACCEPTOR_SUBKEY,
        seq=lucid.seq_send,
    )
    init.verify_signature(message, ours)
    bad = rfc3961.make_mic(
        flipped,
        message,
        flags=rfc3961.MIC_FLAG_SENT_BY_ACCEPTOR | rfc3961.MIC_FLAG_ACCEPTOR_SUBKEY,
        seq=lucid.seq_send,
    )
    with pytest.raises(gssapi.exceptions.GSSError):
        init.verify_signature(message, bad)


def _has_principal(r: Realm, principal: str) -> bool:
    try:
        return "Principal:" in r.kadmin("getprinc", principal)
    except RealmError:
        return False


@pytest.fixture
def residue_keytab(realm: StandardRealm, harness_dir: Path) -> tuple[Path, list[str]]:
    """nfs/localhost1, nfs/localhost12, ... in one keytab: each extra character
    of the ticket's (cleartext) sname adds one byte to the AP-REQ, so the four
    targets give four lengths in a row."""
    r = realm.realm
    keytab = harness_dir / "kernel-residues.keytab"
    names = []
    for suffix in ("1", "12", "123", "1234"):
        principal = r.principal(f"nfs/localhost{suffix}")
        if not _has_principal(r, principal):
            r.addprinc(principal)
            r.ktadd(principal, keytab)
        names.append(principal)
    return keytab, names


@pytest.mark.parametrize("impl", IMPLS)
def test_token_lengths_of_every_residue_mod_4(
    impl: str,
    daemon_factory: Any,
    realm: StandardRealm,
    initiator_env: None,
    residue_keytab: tuple[Path, list[str]],
) -> None:
    keytab, principals = residue_keytab
    daemon = _nfs_daemon(daemon_factory, realm, impl, keytab)
    # The sname sets the length, but the authenticator's DER integers (cusec,
    # the random sequence number) add or drop a byte now and then, so draw
    # tokens until each residue has one, within a bound.
    by_residue: dict[int, tuple[gssapi.SecurityContext, bytes]] = {}
    lengths = []
    for attempt in range(64):
        target = gssapi.Name(principals[attempt % 4], gssapi.NameType.kerberos_principal)
        init = gssapi.SecurityContext(name=target, usage="initiate", flags=MUTUAL)
        token = init.step()
        lengths.append(len(token))
        by_residue.setdefault(len(token) % 4, (init, token))
        if len(by_residue) == 4:
            break
    assert sorted(by_residue) == [0, 1, 2, 3], lengths
    tokens = list(by_residue.values())
    with KernelConnection(daemon.socket) as conn:
        for init, token in tokens:
            res = conn.accept(xid(), token)
            complete(res, init)
            assert res.context is not None and res.context.src_name == b"alice@EXAMPLE.TEST"


def test_large_garbage_token_is_a_clean_gss_failure(
    daemon: DaemonProcess, conn: KernelConnection
) -> None:
    """A GSS framing header for a krb5 AP-REQ of 64 KiB, then garbage."""
    inner = b"\x06\x09" + KRB5_OID + b"\x01\x00" + os.urandom(64 * 1024)
    token = b"\x60\x83" + len(inner).to_bytes(3, "big") + inner
    start = time.monotonic()
    res = conn.accept(xid(), token)
    assert time.monotonic() - start < 5
    assert res.major != 0 and res.major & 0xFFFF0000  # a routine error
    assert res.creds is None
    assert res.context is None or res.context.exported_context_token == b""
    # Still serving.
    init, token = initiate()
    complete(conn.accept(xid(), token), init)


def test_pipelined_calls_are_answered_by_xid(daemon: DaemonProcess) -> None:
    """Eight upcalls in flight on one connection before any reply is read
    (nfsd threads share one rpc_clnt); replies may come in any order."""
    calls = {xid(): initiate() for _ in range(8)}
    with KernelConnection(daemon.socket) as c:
        c.send(b"".join(encode_accept_call(x, tok) for x, (_, tok) in calls.items()))
        replies: dict[int, AcceptResult] = {}
        for _ in calls:
            got, body = decode_reply_header(c.recv_record())
            assert got in calls and got not in replies
            replies[got] = decode_accept_result(body)
    for x, (init, _) in calls.items():
        # Each AP-REP completes exactly the initiator whose xid it carries.
        complete(replies[x], init)


def test_continue_init_quirk_is_refused_and_the_connection_keeps_serving(
    daemon: DaemonProcess, conn: KernelConnection
) -> None:
    _, token = initiate()
    conn.send(encode_accept_call(0x0C0FFEE0, token, continue_handle=b"\x00" * 7 + b"\x01"))
    record = conn.recv_record()
    try:
        got, body = decode_reply_header(record)
    except RpcAcceptError as exc:
        assert exc.accept_stat == GARBAGE_ARGS
        assert exc.xid == 0x0C0FFEE0
    else:
        assert got == 0x0C0FFEE0
        assert decode_accept_result(body).major != 0
    init, token = initiate()
    complete(conn.accept(xid(), token), init)


@pytest.fixture
def mapped_user(
    test_users: tuple[Any, ...], realm: StandardRealm, harness_dir: Path
) -> tuple[Any, gssapi.Credentials]:
    """gpytest1 as a principal of the realm (DEFAULT auth_to_local maps it to the
    local gpytest1), with a TGT in its own ccache."""
    user = test_users[0]
    r = realm.realm
    principal = r.principal(user.name)
    if not _has_principal(r, principal):
        r.addprinc(user.name, "kernelpw")
    else:
        r.kadmin("cpw", "-pw", "kernelpw", principal)
    ccache = harness_dir / f"kernel-{user.name}.ccache"
    r.kinit(user.name, ccache, password="kernelpw")
    creds = gssapi.Credentials(usage="initiate", store={"ccache": f"FILE:{ccache}"})
    return user, creds


def test_local_user_gets_its_uid_gid_and_groups(
    daemon: DaemonProcess,
    conn: KernelConnection,
    mapped_user: tuple[Any, gssapi.Credentials],
) -> None:
    user, creds = mapped_user
    init, token = initiate(creds)
    res = conn.accept(xid(), token)
    complete(res, init)
    assert res.context is not None
    assert res.context.src_name == f"{user.name}@EXAMPLE.TEST".encode()
    assert res.creds is not None
    uid, gid, groups = res.creds
    assert (uid, gid) == (user.uid, user.gid)
    assert set(groups) == set(os.getgrouplist(user.name, user.gid))
