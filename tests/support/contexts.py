"""Establishing a context with the daemon as the initiator, for tests: the
daemon's INIT_SEC_CONTEXT legs against a local python-gssapi acceptor."""

from __future__ import annotations

from pathlib import Path

import gssapi

from gssproxy_py.client import GssProxyClient
from gssproxy_py.proto import gss_proxy as gp
from gssproxy_py.vocab import oids

CC = gp.GssxCallCtx(b"", b"", ())
CONTINUE_NEEDED = 1
#: mutual, conf, integ
INIT_FLAGS = 2 | 16 | 32
HOST_TARGET = gp.GssxName(b"host@localhost", oids.NT_HOSTBASED_SERVICE, b"", b"", (), ())


def init_two_legs(
    first: GssProxyClient, second: GssProxyClient, cred: gp.GssxCred, keytab: Path
) -> gp.GssxResInitSecContext:
    """INIT_SEC_CONTEXT with `cred` to host@localhost: the first leg on
    `first`, the acceptor's reply (from `keytab`) in the second on `second`
    (the same client, or another connection). The second leg's result."""
    res = first.init_sec_context(
        gp.GssxArgInitSecContext(
            CC, None, cred, HOST_TARGET, oids.KRB5, INIT_FLAGS, 0, None, None, ()
        )
    )
    assert res.status.major_status == CONTINUE_NEEDED, res.status
    acc = gssapi.SecurityContext(
        creds=gssapi.Credentials(usage="accept", store={"keytab": str(keytab)}),
        usage="accept",
    )
    reply = acc.step(res.output_token)
    return second.init_sec_context(
        gp.GssxArgInitSecContext(
            CC, res.context_handle, cred, HOST_TARGET, oids.KRB5, INIT_FLAGS, 0, None, reply, ()
        )
    )
