"""Every procedure 1-15 of program 400112 round-tripped through gssproxy_py.client
against the running daemon (real KDC; the peer on the other side is python-gssapi)."""

from __future__ import annotations

from collections.abc import Iterator

import gssapi
import pytest

from gssproxy_py.client import GssProxyClient
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.testing.realm import StandardRealm
from gssproxy_py.vocab import oids
from tests.support.contexts import init_two_legs

pytestmark = [pytest.mark.integration, pytest.mark.root]

CC = gp.GssxCallCtx(b"", b"", ())
COMPLETE, BAD_SIG = 0, 6 << 16
HOST = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)


@pytest.fixture
def client(
    daemon_factory: object, realm: StandardRealm, initiator_env: None
) -> Iterator[GssProxyClient]:

    def render(paths: object) -> str:
        return f"""[gssproxy]
  debug_level = 1
  state_dir = {paths.workdir}/state
[service/all]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  cred_store = client_keytab:{realm.service_keytab}
  cred_store = ccache:FILE:{paths.workdir}/svc_%U.ccache
  trusted = yes
  euid = 0
"""

    daemon = daemon_factory("py", render)  # type: ignore[operator]
    with GssProxyClient(str(daemon.socket)) as c:
        yield c


def ok(res: object) -> None:
    status = res.status  # type: ignore[attr-defined]
    assert status.major_status == COMPLETE, status


def test_all_fifteen_procedures(client: GssProxyClient, realm: StandardRealm) -> None:
    seen: set[int] = set()

    # 1 INDICATE_MECHS
    res = client.indicate_mechs()
    ok(res)
    assert res.mechs[0].mech == oids.KRB5
    seen.add(1)

    # 2 GET_CALL_CONTEXT
    res = client.get_call_context(gp.GssxArgGetCallContext(CC, ()))
    ok(res)
    seen.add(2)

    # 3 IMPORT_AND_CANON_NAME, with the localname option
    alice = gp.GssxName(b"alice@EXAMPLE.TEST", oids.NT_KRB5_PRINCIPAL, b"", b"", (), ())
    res = client.import_and_canon_name(
        gp.GssxArgImportAndCanonName(CC, alice, b"", (), (gp.GssxOption(b"localname\0", b""),))
    )
    ok(res)
    assert res.options == (gp.GssxOption(b"localname\0", b"alice"),)
    seen.add(3)

    # 6 ACQUIRE_CRED (the service keytab: trusted, euid 0)
    res = client.acquire_cred(
        gp.GssxArgAcquireCred(CC, None, False, None, 0, (), gp.GSSX_C_BOTH, 0, 0, ())
    )
    ok(res)
    cred = res.output_cred_handle
    assert cred is not None and cred.cred_handle_reference and not cred.needs_release
    assert cred.desired_name.display_name == b"host/localhost@EXAMPLE.TEST"
    seen.add(6)

    # 4 EXPORT_CRED and 5 IMPORT_CRED
    res = client.export_cred(gp.GssxArgExportCred(CC, cred, gp.GSSX_C_BOTH, ()))
    ok(res)
    assert res.exported_handle
    exported = res.exported_handle
    seen.add(4)
    res = client.import_cred(gp.GssxArgImportCred(CC, exported, ()))
    ok(res)
    assert res.output_cred_handle is not None
    seen.add(5)

    # 7 STORE_CRED into the service's ccache
    res = client.store_cred(
        gp.GssxArgStoreCred(CC, cred, gp.GSSX_C_INITIATE, oids.KRB5, True, False, ())
    )
    ok(res)
    seen.add(7)

    # 8 INIT_SEC_CONTEXT (the daemon initiates as host/localhost; a local acceptor answers)
    res = init_two_legs(client, client, cred, realm.service_keytab)
    ok(res)
    assert res.context_handle is not None and res.context_handle.open
    seen.add(8)

    # 9 ACCEPT_SEC_CONTEXT of alice's token
    init = gssapi.SecurityContext(name=HOST, usage="initiate")
    res = client.accept_sec_context(
        gp.GssxArgAcceptSecContext(CC, None, None, init.step(), None, False, ())
    )
    ok(res)
    ctx = res.context_handle
    assert ctx is not None and ctx.src_name.display_name == b"alice@EXAMPLE.TEST"
    init.step(res.output_token)
    assert init.complete
    seen.add(9)

    # 11 GET_MIC, 12 VERIFY, 13 WRAP, 14 UNWRAP, 15 WRAP_SIZE_LIMIT on the exported context
    res = client.get_mic(gp.GssxArgGetMic(CC, ctx, 0, b"signed"))
    ok(res)
    init.verify_signature(b"signed", res.token_buffer)
    ctx = res.context_handle
    seen.add(11)
    res = client.verify_mic(gp.GssxArgVerifyMic(CC, ctx, b"mine", init.get_signature(b"mine")))
    ok(res)
    ctx = res.context_handle
    seen.add(12)
    res = client.wrap(gp.GssxArgWrap(CC, ctx, True, (b"sealed",), 0))
    ok(res)
    assert res.conf_state is True and init.unwrap(res.token_buffer[0]).message == b"sealed"
    ctx = res.context_handle
    seen.add(13)
    res = client.unwrap(gp.GssxArgUnwrap(CC, ctx, (init.wrap(b"back", True).message,), 0))
    ok(res)
    assert res.message_buffer == (b"back",)
    ctx = res.context_handle
    seen.add(14)
    res = client.wrap_size_limit(gp.GssxArgWrapSizeLimit(CC, ctx, True, 0, 4096))
    ok(res)
    assert 3800 < res.max_input_size < 4096
    seen.add(15)
    # last, since a MIC the daemon refuses still used up one initiator sequence number
    bad = client.verify_mic(gp.GssxArgVerifyMic(CC, ctx, b"mine", init.get_signature(b"other")))
    assert bad.status.major_status == BAD_SIG

    # 10 RELEASE_HANDLE
    res = client.release_handle(gp.GssxArgReleaseHandle(CC, gp.GssxHandleCredInfo(cred)))
    ok(res)
    seen.add(10)

    assert seen == set(range(1, 16))
