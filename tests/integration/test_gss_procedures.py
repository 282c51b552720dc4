"""Procedures 1-15 in process, against a real KDC, without the RPC server.

The handlers from `gss_proxy_service` are awaited directly with a hand-made
`CallInfo`, so these tests cover the gss layer on its own: every procedure
round-trips, sealed handles are bound to service and uid, the kernel path
gets a lucid blob and creds, caches hit and notice keytab changes.
The initiator / acceptor on the other side is python-gssapi in this process.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gssapi
import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import Config
from gssproxy_py.gss import api, convert, credcache, krb5_token
from gssproxy_py.gss.lucid import parse_linux_lucid_v1
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.gss.status import GSS_S_COMPLETE, GSS_S_NO_CRED
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.dispatch import ProgramService
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.vocab import oids
from tests.support.calls import gss_call_info

pytestmark = pytest.mark.integration

CC = gp.GssxCallCtx(b"", b"", ())
KERNEL_CC = gp.GssxCallCtx(
    b"",
    b"",
    (
        gp.GssxOption(b"exported_context_type\0", b"linux_lucid_v1\0"),
        gp.GssxOption(b"exported_creds_type\0", b"linux_creds_v1\0"),
    ),
)
LOG = logging.LoggerAdapter(logging.getLogger("test.gss"), {})
HOST = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)


class Daemonless:
    """The gss program plus a way to call it as a given uid."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.service: ProgramService = gss_proxy_service(config)

    def call(self, proc: int, arg: Any, *, uid: int = 0, service: str | None = "t") -> Any:
        info = gss_call_info(self.config, proc, service=service, uid=uid, log=LOG)
        handler = self.service.handler(1, proc)
        assert handler is not None
        return asyncio.run(handler(info, arg))

    def close(self) -> None:
        assert self.service.close is not None
        self.service.close()


@pytest.fixture
def env(realm: StandardRealm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandardRealm:
    for k, v in realm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{realm.alice_ccache}")
    return realm


def make(
    tmp_path: Path, realm: StandardRealm, extra: str = "", keytab: Path | None = None
) -> Daemonless:
    kt = keytab or realm.service_keytab
    text = f"""
[gssproxy]
  state_dir = {tmp_path}/state
[service/t]
  mechs = krb5
  cred_store = keytab:{kt}
  trusted = yes
  euid = 0
  allow_any_uid = yes
{extra}
"""
    return Daemonless(load_config_text(text))


@pytest.fixture
def d(env: StandardRealm, tmp_path: Path) -> Iterator[Daemonless]:
    daemon = make(tmp_path, env)
    yield daemon
    daemon.close()


def acquire(d: Daemonless, usage: gp.GssxCredUsage = gp.GSSX_C_ACCEPT, uid: int = 0) -> gp.GssxCred:
    res = d.call(6, gp.GssxArgAcquireCred(CC, None, False, None, 0, (), usage, 0, 0, ()), uid=uid)
    assert res.status.major_status == GSS_S_COMPLETE, res.status
    assert res.output_cred_handle is not None
    return res.output_cred_handle


def accept(
    d: Daemonless, token: bytes, cred: gp.GssxCred | None, cc: gp.GssxCallCtx = CC, uid: int = 0
) -> Any:
    return d.call(9, gp.GssxArgAcceptSecContext(cc, None, cred, token, None, False, ()), uid=uid)


def established(d: Daemonless) -> tuple[gssapi.SecurityContext, gp.GssxCtx]:
    init = gssapi.SecurityContext(name=HOST, usage="initiate")
    res = accept(d, init.step(), acquire(d))
    assert res.status.major_status == GSS_S_COMPLETE, res.status
    init.step(res.output_token)
    assert init.complete
    return init, res.context_handle


def test_indicate_mechs_krb5_first(d: Daemonless) -> None:
    res = d.call(1, gp.GssxArgIndicateMechs(CC))
    assert res.mechs[0].mech == oids.KRB5
    assert res.status.mech == oids.KRB5
    assert oids.NT_KRB5_PRINCIPAL in res.mechs[0].name_types
    assert res.mech_attr_descs


def test_accept_wrap_unwrap_mic_size(d: Daemonless) -> None:
    init, ctx = established(d)
    assert ctx.src_name.display_name == b"alice@EXAMPLE.TEST"
    assert ctx.exported_context_token[4:13] == oids.KRB5  # MIT export token: len + OID
    res = d.call(13, gp.GssxArgWrap(CC, ctx, True, (b"one", b"two"), 0))
    assert res.conf_state is True
    assert [init.unwrap(t).message for t in res.token_buffer] == [b"one", b"two"]
    ctx = res.context_handle
    res = d.call(14, gp.GssxArgUnwrap(CC, ctx, (init.wrap(b"back", True).message,), 0))
    assert res.message_buffer == (b"back",) and res.conf_state is True
    ctx = res.context_handle
    res = d.call(11, gp.GssxArgGetMic(CC, ctx, 0, b"msg"))
    init.verify_signature(b"msg", res.token_buffer)
    ctx = res.context_handle
    res = d.call(12, gp.GssxArgVerifyMic(CC, ctx, b"msg2", init.get_signature(b"msg2")))
    assert res.status.major_status == GSS_S_COMPLETE
    bad = d.call(
        12, gp.GssxArgVerifyMic(CC, res.context_handle, b"other", init.get_signature(b"x"))
    )
    assert bad.status.major_status == 6 << 16 and bad.context_handle is None
    res = d.call(15, gp.GssxArgWrapSizeLimit(CC, res.context_handle, True, 0, 4096))
    assert 3900 < res.max_input_size < 4096


def test_init_with_client_keytab_to_local_acceptor(env: StandardRealm, tmp_path: Path) -> None:
    d = make(tmp_path, env, "  cred_usage = both\n  allow_client_ccache_sync = yes\n")
    try:
        res = d.call(
            8,
            gp.GssxArgInitSecContext(
                CC,
                None,
                None,
                gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ()),
                oids.KRB5,
                2 | 32 | 16,
                0,
                None,
                None,
                (gp.GssxOption(b"sync_modified_creds\0", b"default\0"),),
            ),
        )
        assert res.status.major_status == 1, res.status  # CONTINUE_NEEDED (mutual)
        assert res.context_handle.locally_initiated and not res.context_handle.open
        acc_creds = gssapi.Credentials(usage="accept", store={"keytab": str(env.service_keytab)})
        acc = gssapi.SecurityContext(creds=acc_creds, usage="accept")
        reply = acc.step(res.output_token)
        assert str(acc.initiator_name) == "host/localhost@EXAMPLE.TEST"
        res2 = d.call(
            8,
            gp.GssxArgInitSecContext(
                CC,
                res.context_handle,
                None,
                gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ()),
                oids.KRB5,
                2 | 32 | 16,
                0,
                None,
                reply,
                (),
            ),
        )
        assert res2.status.major_status == GSS_S_COMPLETE, res2.status
        assert res2.context_handle.open
    finally:
        d.close()


def test_no_service_is_no_cred_with_reason(d: Daemonless) -> None:
    for proc, arg in [
        (1, gp.GssxArgIndicateMechs(CC)),
        (6, gp.GssxArgAcquireCred(CC, None, False, None, 0, (), gp.GSSX_C_ACCEPT, 0, 0, ())),
        (9, gp.GssxArgAcceptSecContext(CC, None, None, b"x", None, False, ())),
    ]:
        res = d.call(proc, arg, service=None)
        assert res.status.major_status == GSS_S_NO_CRED
        assert res.status.minor_status_string == b"no service for uid 0\0"
        assert res.status.mech == oids.KRB5


def test_handle_bound_to_uid_and_tamper_proof(
    d: Daemonless, caplog: pytest.LogCaptureFixture
) -> None:
    cred = acquire(d, uid=1000)
    assert cred.needs_release is False
    assert b"keytab" not in cred.cred_handle_reference  # sealed, not the raw export
    # uid 1001 presenting uid 1000's handle: not honoured, the daemon re-acquires.
    init = gssapi.SecurityContext(name=HOST, usage="initiate")
    with caplog.at_level(logging.WARNING):
        res = accept(d, init.step(), cred, uid=1001)
    assert res.status.major_status == GSS_S_COMPLETE
    assert "wrong_binding_or_tampered" in caplog.text
    # export/import refuse another uid outright
    res = d.call(4, gp.GssxArgExportCred(CC, cred, gp.GSSX_C_ACCEPT, ()), uid=1001)
    assert res.status.major_status == GSS_S_NO_CRED
    blob = bytearray(cred.cred_handle_reference)
    blob[-1] ^= 1
    res = d.call(5, gp.GssxArgImportCred(CC, bytes(blob), ()), uid=1000)
    assert res.status.major_status == GSS_S_NO_CRED
    res = d.call(4, gp.GssxArgExportCred(CC, cred, gp.GSSX_C_ACCEPT, ()), uid=1000)
    assert res.status.major_status == GSS_S_COMPLETE
    res = d.call(5, gp.GssxArgImportCred(CC, res.exported_handle, ()), uid=1000)
    assert res.output_cred_handle.desired_name.display_name == b"host/localhost@EXAMPLE.TEST"


def test_kernel_accept_lucid_and_creds(d: Daemonless, caplog: pytest.LogCaptureFixture) -> None:
    init = gssapi.SecurityContext(name=HOST, usage="initiate")
    with caplog.at_level(logging.INFO, logger="test.gss"):
        res = accept(d, init.step(), None, cc=KERNEL_CC)
    assert res.status.major_status == GSS_S_COMPLETE, res.status
    blob = res.context_handle.exported_context_token
    assert len(blob) <= 128
    lucid = parse_linux_lucid_v1(blob)
    assert not lucid.is_initiator and lucid.cfx
    assert res.context_handle.mech == oids.KRB5
    assert res.context_handle.src_name.exported_composite_name == b""
    assert res.delegated_cred_handle is None
    assert res.output_token is not None
    (opt,) = res.options
    assert opt.option == b"linux_creds_v1\0"
    assert opt.value == b"\xff" * 8 + b"\0" * 4  # alice has no local account
    # Debug level 1 says what the kernel was given, and for whom.
    assert (
        "linux_creds_v1 for alice@EXAMPLE.TEST: unmapped (local user alice unknown" in caplog.text
    )


def test_localname(d: Daemonless) -> None:
    name = gp.GssxName(b"alice@EXAMPLE.TEST", oids.NT_KRB5_PRINCIPAL, b"", b"", (), ())
    res = d.call(
        3, gp.GssxArgImportAndCanonName(CC, name, b"", (), (gp.GssxOption(b"localname\0", b""),))
    )
    assert res.options == (gp.GssxOption(b"localname\0", b"alice"),)
    res = d.call(3, gp.GssxArgImportAndCanonName(CC, name, oids.KRB5, (), ()))
    assert res.output_name.display_name == b"alice@EXAMPLE.TEST"
    assert res.output_name.exported_name.startswith(b"\x04\x01")


def test_release_and_call_context(d: Daemonless) -> None:
    cred = acquire(d)
    res = d.call(10, gp.GssxArgReleaseHandle(CC, gp.GssxHandleCredInfo(cred)))
    assert res.status.major_status == GSS_S_COMPLETE
    res = d.call(2, gp.GssxArgGetCallContext(CC, ()))
    assert res.options == (gp.GssxOption(b"service_name\0", b"t\0"),)


def test_store_cred_into_service_ccache(env: StandardRealm, tmp_path: Path) -> None:
    cc = tmp_path / "cc_%U"
    d = make(
        tmp_path,
        env,
        f"  cred_store = ccache:FILE:{cc}\n  cred_store = client_keytab:{env.service_keytab}\n",
    )
    try:
        cred = acquire(d, gp.GSSX_C_INITIATE, uid=0)
        res = d.call(
            7, gp.GssxArgStoreCred(CC, cred, gp.GSSX_C_INITIATE, oids.KRB5, True, False, ()), uid=0
        )
        assert res.status.major_status == GSS_S_COMPLETE, res.status
        assert (tmp_path / "cc_0").exists()
    finally:
        d.close()


def test_acquire_is_cached_until_keytab_changes(env: StandardRealm, tmp_path: Path) -> None:
    kt = tmp_path / "copy.keytab"
    shutil.copy(env.service_keytab, kt)
    d = make(tmp_path, env, keytab=kt)
    try:
        first = acquire(d)
        assert acquire(d).cred_handle_reference == first.cred_handle_reference  # cache hit
        env.realm.ktadd(env.service_principal, kt)  # new kvno appended on disk
        # The keytab is stat()ed at most once a second; a reload forgets the stamps
        # (tests/unit/test_gss_credcache.py checks the second itself).
        credcache.STAMPS.forget()
        second = acquire(d)
        assert second.cred_handle_reference != first.cred_handle_reference
        # an initiator using the new key is accepted without a restart
        init = gssapi.SecurityContext(
            name=HOST,
            usage="initiate",
            creds=gssapi.Credentials(
                usage="initiate",
                store={
                    "ccache": f"MEMORY:{tmp_path.name}",
                    "client_keytab": str(env.service_keytab),
                },
            ),
        )
        res = accept(d, init.step(), second)
        assert res.status.major_status == GSS_S_COMPLETE, res.status
    finally:
        d.close()


@pytest.mark.parametrize(("field", "value"), [("req_flags", 2**32), ("time_req", 2**32)])
def test_init_numbers_beyond_32_bits_are_a_gss_error(
    env: StandardRealm, tmp_path: Path, caplog: pytest.LogCaptureFixture, field: str, value: int
) -> None:
    """Issue 14 item 8: the numbers python-gssapi takes as OM_uint32 get a
    clean GSS status beyond 2**32-1 (no OverflowError, no traceback), and
    work at it."""
    d = make(tmp_path, env, "  cred_usage = both\n")
    try:

        def init(number: int) -> Any:
            arg = gp.GssxArgInitSecContext(
                CC,
                None,
                None,
                gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ()),
                oids.KRB5,
                number if field == "req_flags" else 0,
                number if field == "time_req" else 0,
                None,
                None,
                (),
            )
            return d.call(gp.GSSX_INIT_SEC_CONTEXT, arg)

        at_bound = init(value - 1)
        assert at_bound.status.major_status in (GSS_S_COMPLETE, 1), at_bound.status
        caplog.clear()
        beyond = init(value)
        status = beyond.status
        assert (status.major_status, status.minor_status) == (13 << 16, errno.EINVAL)
        assert status.minor_status_string == f"{field} {value} does not fit in 32 bits\0".encode()
        assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text
    finally:
        d.close()


def test_reply_names_are_what_mit_says_for_an_accepted_context(env: StandardRealm) -> None:
    # gssx_name reads the export and the display form from the composite
    # export (convert.krb5_export_of_composite, krb5_display_of_export): for
    # the names of a real accepted context (the initiator's carries the
    # ticket's authorization data), each field is MIT's own answer.
    acc_creds = gssapi.Credentials(usage="accept", store={"keytab": str(env.service_keytab)})
    acc = gssapi.SecurityContext(creds=acc_creds, usage="accept")
    init = gssapi.SecurityContext(name=HOST, usage="initiate")
    acc.step(init.step())
    assert acc.complete
    for name in (acc.initiator_name, acc.target_name):
        wire = convert.gssx_name(name)
        assert (wire.display_name, wire.name_type) == api.display_name(name)
        assert wire.exported_name == api.export_name(name)
        assert wire.exported_composite_name == api.export_name_composite(name)
        kernel = convert.gssx_name(name, kernel=True)
        assert (kernel.display_name, kernel.name_type) == api.display_name(name)
        assert kernel.exported_name == api.export_name(name)
        assert kernel.exported_composite_name == b""
    composite = api.export_name_composite(acc.initiator_name)
    assert len(composite) > len(api.export_name(acc.initiator_name)) + 4  # attributes present


def test_what_gss_direct_keeps_per_ticket_server_is_what_mit_says(
    env: StandardRealm, tmp_path: Path
) -> None:
    # gss.direct answers an accept's inquire_context from the accept's own
    # results (mech, flags, lifetime) and the target's wire form kept per
    # (handle, krb5_token.ticket_server): for real contexts asked for
    # mutual authentication or delegation, from tickets for two server
    # principals of one keytab, MIT says the same, and one ticket server
    # always names one target.
    keytab = tmp_path / "two.keytab"
    env.realm.ktadd(env.service_principal, keytab)
    env.realm.ktadd(env.nfs_principal, keytab)
    acc_creds = gssapi.Credentials(usage="accept", store={"keytab": str(keytab)})
    targets: dict[bytes, convert.NameParts | None] = {}
    for service in ("host@localhost", "nfs@localhost") * 2:
        for flags in (
            gssapi.RequirementFlag.mutual_authentication,
            gssapi.RequirementFlag.delegate_to_peer,
        ):
            name = gssapi.Name(service, gssapi.NameType.hostbased_service)
            token = gssapi.SecurityContext(name=name, usage="initiate", flags=[flags]).step()
            assert token is not None
            step = api.accept_sec_context(token, acc_creds, None, None)
            assert not step.continue_needed
            info = api.inquire_context(step.context)
            assert info is not None
            assert (step.mech, step.flags) == (info.mech, info.flags) == (oids.KRB5, step.flags)
            # (no delegation without a forwardable TGT: the flag says so too)
            assert bool(info.flags & 1) == (step.delegated is not None)
            assert 0 <= info.lifetime <= step.lifetime <= info.lifetime + 1
            assert (info.locally_initiated, info.complete) == (False, True)
            server = krb5_token.ticket_server(token)
            assert server is not None and service.split("@")[0].encode() in server
            target = convert.name_parts(info.target)
            assert targets.setdefault(server, target) == target
    assert len(targets) == 2
