"""The direct path (gss/direct.py) against the generic one, byte for byte.

The interposer's recorded calls of two accepts
(data/interposer-accept.txt) and generated ones go through the server's
own routing and call starter twice on one engine: once with program
400112's direct paths, once without. The replies must be the same bytes,
and the direct path must have served the calls it is for. MIT is replaced
by a deterministic fake (two real accepts of one token differ: the replay
cache refuses the second, and every context has its own keys); the real
one is behind the integration tests' interposer accepts and `make bench`.

The parsers never accept what the generated decoders refuse, and read the
same values (hypothesis, over generated arguments and mutated recordings).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gssproxy_py.config.model import Config, CredUsage
from gssproxy_py.config.peer import Peer
from gssproxy_py.errors import XdrError
from gssproxy_py.gss import api
from gssproxy_py.gss.direct import parse_accept, parse_acquire
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.gss.status import GssFailure
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.dispatch import CallInfo, DirectPath, DirectResult, Pending, ProgramService
from gssproxy_py.rpc.messages import route
from gssproxy_py.server.calls import CallStarter
from gssproxy_py.server.connection import ConnectionInfo
from gssproxy_py.vocab import oids
from gssproxy_py.xdr.runtime import decode_bytes, encode_bytes
from gssproxy_py.xdrgen import load
from tests.conformance.test_golden_vectors import KERNEL_ACCEPT_CALL
from tests.support.xdr_strategies import Strategies
from tests.unit.test_gss_program_fake import FakeCreds, FakeCtx, FakeGss, FakeName, install_fake
from tests.unit.test_gss_program_fake import _config as fake_config

ROOT = Path(__file__).resolve().parents[2]
RECORDED = [
    bytes.fromhex(line)
    for line in (Path(__file__).parent / "data" / "interposer-accept.txt").read_text().splitlines()
    if line and not line.startswith("#")
]
SOCKET = "/test/default.sock"
UID = 33  # the euid of the fake configuration's `web` service
#: The RPC call header before the arguments (empty credential and verifier).
HEADER = 40
APPLICATION = Peer(pid=1, uid=UID, gid=UID, program="/usr/bin/test")
#: The kernel's nfsd upcall: root, connected by a kernel thread (no executable).
KERNEL = Peer(pid=2, uid=0, gid=0, program=None)
DELEG_FLAG = 1
LIFETIME = 3600


def _composite(principal: bytes) -> bytes:
    """MIT's `gss_export_name_composite` token of a krb5 principal, no attributes."""
    mech = b"\x06" + bytes([len(oids.KRB5)]) + oids.KRB5
    head = (b"\x04\x02", struct.pack(">H", len(mech)), mech, struct.pack(">I", len(principal)))
    return b"".join((*head, principal, b"\0\0\0\0"))


@dataclasses.dataclass
class MitCtx(FakeCtx):
    #: the accept's ret_flags, which `inquire_context` says again (as MIT
    #: does: tests/integration/test_gss_procedures.py)
    flags: int = 0


class MitLikeFake(FakeGss):
    """`FakeGss` with MIT's shapes where the replies carry them: contexts
    described by `inquire_context` as the accept described them, krb5
    composite names (but for names starting with `plain`, which display
    through `display_name`), delegation and a second round trip chosen by
    the token."""

    def export_name_composite(self, name: FakeName) -> bytes:
        return b"" if name.value.startswith(b"plain") else _composite(name.value)

    def accept_sec_context(
        self, token: bytes, creds: FakeCreds, context: object, bindings: object
    ) -> api.StepResult:
        self._seen("accept_sec_context")
        more = token.startswith(b"more")
        deleg = token.endswith(b"deleg")
        delegated = FakeCreds(b"user@R", creds.usage) if deleg else None
        flags = 0x1B2 | (DELEG_FLAG if deleg else 0)
        return api.StepResult(
            MitCtx(initiator=token[:40] or b"anonymous", flags=flags),  # type: ignore[arg-type]
            b"ap-rep:" + token[:8],
            oids.KRB5,
            flags,
            more,
            delegated,  # type: ignore[arg-type]
            None if more else FakeName(token[:40] or b"anonymous"),  # type: ignore[arg-type]
            LIFETIME,
        )

    def inquire_context(
        self, context: MitCtx, initiator: FakeName | None = None
    ) -> api.ContextInfo | None:
        self._seen("inquire_context")
        if context.initiator.startswith(b"more"):
            return None  # a partial context the mech cannot describe
        return api.ContextInfo(
            initiator=initiator or FakeName(context.initiator),  # type: ignore[arg-type]
            target=FakeName(b"HTTP/web.example@R"),  # type: ignore[arg-type]
            lifetime=LIFETIME,
            mech=oids.KRB5,
            flags=context.flags,
            locally_initiated=False,
            complete=True,
        )


class Paths:
    """Program 400112 served with and without its direct paths, on one engine."""

    def __init__(self, config: Config, fake: MitLikeFake) -> None:
        self.config = config
        self.fake = fake
        self.program = gss_proxy_service(config)
        self.served: list[int] = []
        self.pending = 0
        p = self.program
        counted = {
            key: DirectPath(path.parse, self._counting(key[1], path))
            for key, path in p.direct.items()
        }
        self.direct = ProgramService(
            p.program, p.handlers, p.reload, p.close, immediate=p.immediate, direct=counted
        )
        self.generic = ProgramService(p.program, p.handlers, p.reload, p.close, p.immediate)
        self.starter = CallStarter(config, default_socket=SOCKET, selinux_enabled=False)

    def _counting(self, proc: int, path: DirectPath) -> Any:
        def run(call: CallInfo, arg: Any) -> DirectResult | Pending | None:
            served = path.run(call, arg)
            if served is not None:
                self.served.append(proc)
            if isinstance(served, Pending):
                self.pending += 1
            return served

        return run

    def reply(self, service: ProgramService, record: bytes, peer: Peer) -> bytes:
        routed = route(record, {gp.GSSPROXY: service})
        if isinstance(routed, bytes):
            return routed
        started = self.starter.start_call(ConnectionInfo(1, peer, SOCKET), routed)
        return started if isinstance(started, bytes) else asyncio.run(started)

    def both(self, record: bytes, peer: Peer = APPLICATION) -> bytes:
        """The reply of the direct path, checked against the generic one's."""
        direct = self.reply(self.direct, record, peer)
        assert self.reply(self.generic, record, peer) == direct
        return direct

    def reload(self, config: Config) -> None:
        """A new configuration, as the daemon installs it (the program's
        hook, then the starter's)."""
        assert self.program.reload is not None
        self.program.reload(config)
        self.config = self.starter.config = config

    def close(self) -> None:
        assert self.program.close is not None
        self.program.close()


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Paths]:
    fake = MitLikeFake()
    install_fake(monkeypatch, tmp_path, fake)
    # Sealing draws a random nonce: a delegated credential, sealed once per
    # path, would differ by it alone.
    monkeypatch.setattr(os, "urandom", bytes)
    p = Paths(fake_config(tmp_path), fake)
    yield p
    p.close()


def _proc(record: bytes) -> int:
    return int.from_bytes(record[20:24], "big")


def _issued_cred(acquire_reply: bytes) -> gp.GssxCred:
    """The handle an ACQUIRE_CRED reply carries (after the 24-byte reply header)."""
    res = decode_bytes(gp.decode_gssx_res_acquire_cred, acquire_reply[24:])
    assert res.status.major_status == 0 and res.output_cred_handle is not None
    return res.output_cred_handle


def _with_cred(record: bytes, cred: gp.GssxCred, **changes: Any) -> bytes:
    """An ACCEPT_SEC_CONTEXT record holding `cred`, as the interposer
    returns the handle it was given (and `changes` to other fields)."""
    arg = decode_bytes(gp.decode_gssx_arg_accept_sec_context, record[HEADER:])
    new = gp.GssxArgAcceptSecContext(
        call_ctx=arg.call_ctx,
        context_handle=arg.context_handle,
        cred_handle=cred,
        input_token=changes.get("input_token", arg.input_token),
        input_cb=arg.input_cb,
        ret_deleg_cred=changes.get("ret_deleg_cred", arg.ret_deleg_cred),
        options=arg.options,
    )
    return record[:HEADER] + encode_bytes(gp.encode_gssx_arg_accept_sec_context, new)


def _interposer_accepts(paths: Paths) -> gp.GssxCred:
    """Replay the recording; the handle the daemon issued."""
    cred: gp.GssxCred | None = None
    for record in RECORDED:
        if _proc(record) == gp.GSSX_ACCEPT_SEC_CONTEXT:
            assert cred is not None
            record = _with_cred(record, cred)
        reply = paths.both(record)
        if _proc(record) == gp.GSSX_ACQUIRE_CRED:
            cred = _issued_cred(reply)
    assert cred is not None
    return cred


def test_the_recorded_interposer_accepts_get_the_same_replies(paths: Paths) -> None:
    assert [_proc(r) for r in RECORDED] == [1, 6, 9, 6, 9]
    _interposer_accepts(paths)
    # The first ACQUIRE_CRED missed the acquire cache (the generic path
    # acquired, on a thread); the rest were served directly.
    accept, acquire = gp.GSSX_ACCEPT_SEC_CONTEXT, gp.GSSX_ACQUIRE_CRED
    assert paths.served == [accept, acquire, accept]
    # Both tokens are tickets for one server, with one handle: the direct
    # path's second accept wrote the target it kept from the first and the
    # accept's own results, without inquire_context (the generic path asked
    # twice); the same bytes.
    assert paths.fake.calls.count("inquire_context") == 3


def _kernel_accept(token: bytes) -> bytes:
    """The kernel's ACCEPT_SEC_CONTEXT record (the golden vector's, without
    its record mark) carrying `token`."""
    record = KERNEL_ACCEPT_CALL[4:]
    arg = decode_bytes(gp.decode_gssx_arg_accept_sec_context, record[HEADER:])
    new = gp.GssxArgAcceptSecContext(
        call_ctx=arg.call_ctx,
        context_handle=None,
        cred_handle=None,
        input_token=token,
        input_cb=None,
        ret_deleg_cred=False,
        options=(),
    )
    return record[:HEADER] + encode_bytes(gp.encode_gssx_arg_accept_sec_context, new)


def test_the_kernels_accepts_get_the_same_replies(paths: Paths) -> None:
    parsed = parse_accept(KERNEL_ACCEPT_CALL[4 + HEADER :])
    assert parsed is not None and parsed.kernel
    for token in (b"alice@R", b"alice@R", b"bob@R", b"more"):
        reply = paths.both(_kernel_accept(token), KERNEL)
        res = decode_bytes(gp.decode_gssx_res_accept_sec_context, reply[24:])
        assert res.context_handle is not None
        if token != b"more":
            assert res.options[0].option == b"linux_creds_v1\0"
    # The first missed the acquire cache (the generic path acquired, and
    # looked alice up); alice's second was inline from the caches, bob's
    # looked him up on a thread (Pending), the second round trip was inline.
    assert paths.served == [gp.GSSX_ACCEPT_SEC_CONTEXT] * 3
    assert paths.pending == 1


def test_the_status_counters_count_the_calls_the_direct_path_served(
    paths: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    # Debug level 1 (INFO) keeps the direct path; debug level 2 (DEBUG)
    # steps aside (the generic path's lines describe the typed arguments).
    caplog.set_level(logging.INFO, logger="gssproxy_py.server.calls")
    for _ in range(2):
        paths.reply(paths.direct, _kernel_accept(b"alice@R"), KERNEL)
    # The first missed the acquire cache: the generic path.
    assert paths.served == [gp.GSSX_ACCEPT_SEC_CONTEXT]
    caplog.set_level(logging.DEBUG, logger="gssproxy_py.server.calls")
    paths.reply(paths.direct, _kernel_accept(b"alice@R"), KERNEL)
    assert paths.served == [gp.GSSX_ACCEPT_SEC_CONTEXT]
    assert any("GSSX_ACCEPT_SEC_CONTEXT arguments" in r.getMessage() for r in caplog.records)
    # What `gssproxy-py-ctl status` shows (the kernel test reads it): 3 calls, 1 direct.
    (row,) = paths.starter.counters.snapshot()
    assert (row.procedure, row.calls, row.direct) == (b"GSSX_ACCEPT_SEC_CONTEXT", 3, 1)


def test_the_kernels_accepts_of_one_ticket_server_get_the_same_replies(paths: Paths) -> None:
    # Real AP-REQs (the interposer's recorded tokens) for one server: the
    # direct path's later accepts write the target it kept from the first,
    # without inquire_context; the generic path asks every time.
    ticket = decode_bytes(gp.decode_gssx_arg_accept_sec_context, RECORDED[2][HEADER:]).input_token
    for _ in range(3):
        reply = paths.both(_kernel_accept(ticket), KERNEL)
        res = decode_bytes(gp.decode_gssx_res_accept_sec_context, reply[24:])
        assert res.status.major_status == 0 and res.context_handle is not None
    assert paths.served == [gp.GSSX_ACCEPT_SEC_CONTEXT] * 2
    # The generic path 3; the direct path 2: its first call went the generic
    # way (an acquire-cache miss), its second kept the target, its third used it.
    assert paths.fake.calls.count("inquire_context") == 5


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(token=st.binary(max_size=64))
def test_kernel_accepts_of_any_token_get_the_same_replies(paths: Paths, token: bytes) -> None:
    paths.both(_kernel_accept(b"warm-up"), KERNEL)
    served = len(paths.served)
    paths.both(_kernel_accept(token), KERNEL)
    assert len(paths.served) == served + 1


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    token=st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [b"more", b"more-deleg", b"alice@R deleg", b"plain@R", b"WELLKNOWN/ANONYMOUS"]
        ),
    ),
    deleg=st.booleans(),
)
def test_accepts_of_any_token_get_the_same_replies(paths: Paths, token: bytes, deleg: bool) -> None:
    cred = _interposer_accepts(paths)
    accept = next(r for r in RECORDED if _proc(r) == gp.GSSX_ACCEPT_SEC_CONTEXT)
    served = len(paths.served)
    paths.both(_with_cred(accept, cred, input_token=token, ret_deleg_cred=deleg))
    assert len(paths.served) == served + 1


def test_a_failed_accept_gets_the_same_failure(
    paths: Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    cred = _interposer_accepts(paths)

    def refuse(*args: object) -> api.StepResult:
        raise GssFailure(0x70000, 0x96C73A31, "Request is a replay")

    monkeypatch.setattr(api, "accept_sec_context", refuse)
    accept = next(r for r in RECORDED if _proc(r) == gp.GSSX_ACCEPT_SEC_CONTEXT)
    reply = paths.both(_with_cred(accept, cred))
    res = decode_bytes(gp.decode_gssx_res_accept_sec_context, reply[24:])
    assert res.status.major_status == 0x70000


#: uid 1000 matches the fake configuration's `users` service, not `web`.
OTHER_USER = Peer(pid=3, uid=1000, gid=1000, program="/usr/bin/test")


def test_another_uids_handle_is_not_served_directly(
    paths: Paths, caplog: pytest.LogCaptureFixture
) -> None:
    """A handle issued to `web`'s uid, presented by another uid: the
    direct path declines (its pool is keyed by service and uid), and the
    generic path does not honour it (the other uid's own service's
    default credential accepts instead); the replies are the same."""
    cred = _interposer_accepts(paths)
    served = len(paths.served)
    accept = next(r for r in RECORDED if _proc(r) == gp.GSSX_ACCEPT_SEC_CONTEXT)
    caplog.clear()
    paths.both(_with_cred(accept, cred), OTHER_USER)
    assert len(paths.served) == served
    refusals = [r for r in caplog.records if "handle not honoured" in r.getMessage()]
    assert len(refusals) == 2  # once per path


def test_a_reload_is_seen_by_the_direct_path(paths: Paths) -> None:
    """What the direct path worked out per service (the acquire plan, the
    keytabs) is not kept over a reload: `web` made initiate-only refuses
    the interposer's acquire for accepting, on both paths."""
    cred = _interposer_accepts(paths)
    acquire = next(r for r in RECORDED if _proc(r) == gp.GSSX_ACQUIRE_CRED)
    old = paths.config
    web = [s for s in old.services if s.name == "web"]
    initiate_only = dataclasses.replace(web[0], cred_usage=CredUsage.INITIATE)
    services = tuple(initiate_only if s.name == "web" else s for s in old.services)
    accepts = paths.program.direct[(1, gp.GSSX_ACCEPT_SEC_CONTEXT)].run.__self__  # type: ignore[attr-defined]
    assert accepts._targets  # the recorded accepts' target, kept
    paths.reload(dataclasses.replace(old, services=services))
    served = len(paths.served)
    reply = paths.both(acquire)
    res = decode_bytes(gp.decode_gssx_res_acquire_cred, reply[24:])
    assert res.status.major_status != 0 and res.output_cred_handle is None
    # The handle issued before the reload is not in the pool any more.
    accept = next(r for r in RECORDED if _proc(r) == gp.GSSX_ACCEPT_SEC_CONTEXT)
    paths.both(_with_cred(accept, cred))
    assert len(paths.served) == served
    # Nor is the name MIT gave its contexts' target (krb5.conf may have changed).
    assert accepts._targets == {}


# -- the parsers against the generated decoders -------------------------------------

_GSS = Strategies(load(str(ROOT / "idl" / "gss_proxy.x")), gp)


def _accept_agrees(args: bytes) -> None:
    parsed = parse_accept(args)
    if parsed is None:
        return
    arg = decode_bytes(gp.decode_gssx_arg_accept_sec_context, args)  # must not raise
    assert parsed.input_token == arg.input_token
    assert parsed.ret_deleg_cred == arg.ret_deleg_cred
    assert not arg.options
    assert arg.context_handle is None and arg.input_cb is None
    if parsed.kernel:
        assert arg.cred_handle is None and parsed.handle == b""
        assert [(o.option, o.value) for o in arg.call_ctx.options] == [
            (b"exported_context_type\0", b"linux_lucid_v1\0"),
            (b"exported_creds_type\0", b"linux_creds_v1\0"),
        ]
        return
    assert arg.cred_handle is not None
    assert parsed.handle == arg.cred_handle.cred_handle_reference
    assert not arg.call_ctx.options
    assert not any(e.options for e in arg.cred_handle.elements)


def _acquire_agrees(args: bytes) -> None:
    usage = parse_acquire(args)
    if usage is None:
        return
    arg = decode_bytes(gp.decode_gssx_arg_acquire_cred, args)  # must not raise
    assert usage == arg.cred_usage
    assert arg.input_cred_handle is None and arg.desired_name is None
    assert not arg.call_ctx.options and not arg.options
    assert not arg.desired_mechs or set(arg.desired_mechs) & oids.KRB5_FAMILY


def _plain(name: gp.GssxName) -> gp.GssxName:
    return dataclasses.replace(name, name_attributes=(), extensions=())


def _shaped(arg: gp.GssxArgAcceptSecContext, shape: str, plain: bool) -> gp.GssxArgAcceptSecContext:
    """`arg` made into the interposer's or the kernel's shape (random
    arguments almost never are: none of 300 was), its names and elements
    plain or not; "as is" leaves it."""
    if shape == "as is":
        return arg
    kernel = shape == "kernel"
    options = tuple(
        gp.GssxOption(option=o, value=v)
        for o, v in (
            (b"exported_context_type\0", b"linux_lucid_v1\0"),
            (b"exported_creds_type\0", b"linux_creds_v1\0"),
        )
    )
    cred = arg.cred_handle
    if cred is not None and plain:
        elements = tuple(dataclasses.replace(e, MN=_plain(e.MN), options=()) for e in cred.elements)
        cred = dataclasses.replace(cred, desired_name=_plain(cred.desired_name), elements=elements)
    return dataclasses.replace(
        arg,
        call_ctx=dataclasses.replace(arg.call_ctx, options=options if kernel else ()),
        context_handle=None,
        cred_handle=None if kernel else cred,
        input_cb=None,
        options=(),
    )


@settings(max_examples=300, deadline=None)
@given(
    arg=_GSS.named("gssx_arg_accept_sec_context"),
    shape=st.sampled_from(["as is", "interposer", "kernel"]),
    plain=st.booleans(),
)
def test_parse_accept_reads_what_the_decoder_reads(
    arg: gp.GssxArgAcceptSecContext, shape: str, plain: bool
) -> None:
    shaped = _shaped(arg, shape, plain)
    args = encode_bytes(gp.encode_gssx_arg_accept_sec_context, shaped)
    _accept_agrees(args)
    cred = shaped.cred_handle
    served = shape == "kernel" or (
        shape == "interposer" and plain and cred is not None and bool(cred.cred_handle_reference)
    )
    if served:  # the shapes it is for are parsed, not only checked when they are
        assert parse_accept(args) is not None


@settings(max_examples=300, deadline=None)
@given(arg=_GSS.named("gssx_arg_acquire_cred"))
def test_parse_acquire_reads_what_the_decoder_reads(arg: gp.GssxArgAcquireCred) -> None:
    _acquire_agrees(encode_bytes(gp.encode_gssx_arg_acquire_cred, arg))


@settings(max_examples=500, deadline=None)
@given(
    which=st.sampled_from([1, 2, -1]),
    at=st.integers(min_value=0, max_value=2000),
    value=st.integers(min_value=0, max_value=255),
    cut=st.integers(min_value=-8, max_value=8),
)
def test_mutated_recordings_are_parsed_only_if_they_decode(
    which: int, at: int, value: int, cut: int
) -> None:
    record = KERNEL_ACCEPT_CALL[4:] if which < 0 else RECORDED[which]
    args = bytearray(record[HEADER:])
    args[at % len(args)] = value
    mutated = bytes(args[: len(args) + cut] if cut < 0 else args + bytes(cut))
    for agrees in (_accept_agrees, _acquire_agrees):
        try:
            agrees(mutated)
        except XdrError:
            pytest.fail("a parser accepted arguments the generated decoder refuses")
