"""Debug level 2 shows decoded structures, and no byte string that may be secret."""

from __future__ import annotations

from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.rpc.redact import describe

KRB5 = b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02"


def test_secrets_are_shown_by_length_only() -> None:
    name = gp.GssxName(b"alice@EXAMPLE.TEST", b"", b"EXPORTED", b"", (), ())
    ctx = gp.GssxCtx(b"SESSIONKEYBYTES", b"STATE", True, KRB5, name, name, 3600, 0, True, True, ())
    arg = gp.GssxArgAcceptSecContext(
        gp.GssxCallCtx(b"", b"", (gp.GssxOption(b"sync_modified_creds", b"CREDBLOB"),)),
        ctx,
        None,
        b"TOKENBYTES",
        None,
        False,
        (),
    )
    text = describe(arg)
    for secret in ("SESSIONKEY", "STATE", "TOKENBYTES", "CREDBLOB", "EXPORTED"):
        assert secret not in text, secret
    assert "input_token=<10 bytes>" in text and "exported_context_token=<15 bytes>" in text
    assert "display_name='alice@EXAMPLE.TEST'" in text
    assert "option='sync_modified_creds'" in text and "mech=0x2a864886f712010202" in text


def test_numbers_enums_and_none() -> None:
    status = gp.GssxStatus(0xD0000, KRB5, 5, b"Unspecified\0", b"bad\0", b"", ())
    text = describe(status)
    assert "major_status=851968" in text and "minor_status_string='bad'" in text
    assert describe(None) == "None" and describe(()) == "[]"
