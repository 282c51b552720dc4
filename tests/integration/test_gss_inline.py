"""The inline fast path never makes the event loop wait for a KDC.

One worker thread, and a call of a client_keytab service whose KDC is a
blackhole (a TCP listener that takes the connection and never answers): that
call holds the only worker. Meanwhile ACQUIRE_CRED, ACCEPT_SEC_CONTEXT (plain
and kernel-style) and GET_MIC of a keytab service, run on the same event
loop, complete: they ran inline (a call that hopped would wait behind the
blocked worker). The first ACQUIRE and ACCEPT, before the blackhole call,
are a cache miss and run in the thread, as before.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

import gssapi
import pytest

from gssproxy_py.config.load import load_config_text
from gssproxy_py.config.model import Config
from gssproxy_py.gss.inline import inline_safe_service
from gssproxy_py.gss.program import gss_proxy_service
from gssproxy_py.gss.status import GSS_S_COMPLETE
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.dispatch import CallInfo, Pending, ProgramService
from gssproxy_py.testing.realm import StandardRealm, keytab_without_kdc
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
LOG = logging.LoggerAdapter(logging.getLogger("test.gss.inline"), {})
HOST = gssapi.Name("host@localhost", gssapi.NameType.hostbased_service)
TARGET = gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ())


def _info(config: Config, service: str, proc: int) -> CallInfo:
    return gss_call_info(config, proc, service=service, log=LOG)


async def _call(svc: ProgramService, config: Config, service: str, proc: int, arg: Any) -> Any:
    """As the server runs a call: the immediate handler first, if any."""
    info = _info(config, service, proc)
    immediate = svc.immediate_handler(1, proc)
    if immediate is not None:
        result = immediate(info, arg)
        return await result.run() if isinstance(result, Pending) else result
    handler = svc.handler(1, proc)
    assert handler is not None
    return await handler(info, arg)


def test_inline_calls_complete_while_a_kdc_call_hangs(
    realm: StandardRealm, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(4)
    port = blackhole.getsockname()[1]
    extra_conf = tmp_path / "blackhole.conf"
    extra_conf.write_text(
        f"[realms]\n    BLACKHOLE.TEST = {{\n        kdc = 127.0.0.1:{port}\n    }}\n"
    )
    for k, v in realm.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("KRB5_CONFIG", f"{realm.env()['KRB5_CONFIG']}:{extra_conf}")
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{realm.alice_ccache}")
    bob_keytab = tmp_path / "bob.keytab"
    keytab_without_kdc("bob@BLACKHOLE.TEST", "bobpw", bob_keytab)
    config = load_config_text(
        f"""
[gssproxy]
  state_dir = {tmp_path}/state
  worker threads = 1
[service/t]
  mechs = krb5
  cred_store = keytab:{realm.service_keytab}
  trusted = yes
  euid = 0
  allow_any_uid = yes
[service/slow]
  mechs = krb5
  cred_store = client_keytab:{bob_keytab}
  cred_usage = initiate
  socket = {tmp_path}/slow.sock
  euid = 0
  allow_any_uid = yes
"""
    )
    assert inline_safe_service(config.service("t"))
    svc = gss_proxy_service(config)

    def acquire_arg() -> gp.GssxArgAcquireCred:
        return gp.GssxArgAcquireCred(CC, None, False, None, 0, (), gp.GSSX_C_ACCEPT, 0, 0, ())

    async def accept_one(cc: gp.GssxCallCtx) -> tuple[gssapi.SecurityContext, Any]:
        acq = await _call(svc, config, "t", 6, acquire_arg())
        assert acq.status.major_status == GSS_S_COMPLETE, acq.status
        init = gssapi.SecurityContext(name=HOST, usage="initiate")
        arg = gp.GssxArgAcceptSecContext(
            cc, None, acq.output_cred_handle, init.step(), None, False, ()
        )
        res = await _call(svc, config, "t", 9, arg)
        assert res.status.major_status == GSS_S_COMPLETE, res.status
        return init, res

    async def scenario() -> None:
        # Warm up: the acquire cache and the credential pool (this one hops).
        await asyncio.wait_for(accept_one(CC), 30)
        # Kernel-style once, so the linux_creds answer is cached.
        await asyncio.wait_for(accept_one(KERNEL_CC), 30)
        init_arg = gp.GssxArgInitSecContext(CC, None, None, TARGET, oids.KRB5, 2, 0, None, None, ())
        pending = asyncio.ensure_future(_call(svc, config, "slow", 8, init_arg))
        blackhole.settimeout(30)
        held, _ = await asyncio.to_thread(blackhole.accept)  # the AS-REQ has reached "the KDC"
        try:
            assert not pending.done()
            for _ in range(3):
                init, res = await asyncio.wait_for(accept_one(CC), 10)
                mic = await asyncio.wait_for(
                    _call(
                        svc,
                        config,
                        "t",
                        11,
                        gp.GssxArgGetMic(CC, res.context_handle, 0, b"hello"),
                    ),
                    10,
                )
                assert mic.status.major_status == GSS_S_COMPLETE, mic.status
                init.step(res.output_token)
                init.verify_signature(b"hello", mic.token_buffer)
                _, kres = await asyncio.wait_for(accept_one(KERNEL_CC), 10)
                assert any(o.option == b"linux_creds_v1\0" for o in kres.options)
            # The blackhole call is still waiting: everything above ran inline.
            assert not pending.done()
        finally:
            held.close()
            blackhole.close()
        res = await asyncio.wait_for(pending, 60)
        assert res.status.major_status != GSS_S_COMPLETE

    try:
        asyncio.run(scenario())
    finally:
        assert svc.close is not None
        svc.close()
