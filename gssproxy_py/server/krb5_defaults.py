"""The invoking user's default Kerberos ccache and keytabs, as libkrb5 names them.

A userproxy daemon's one service uses the user's own credentials: the names
libkrb5 itself would pick (`KRB5CCNAME`, `KRB5_KTNAME`, `KRB5_CLIENT_KTNAME`,
else krb5.conf's `default_ccache_name`, `default_keytab_name`,
`default_client_keytab_name`, with `%{uid}` and the like expanded). They are
asked of libkrb5 through ctypes rather than re-implemented, so they are
exactly what a plain GSSAPI program of that user would use.

Read once, when the daemon starts; a name libkrb5 cannot give is left out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from dataclasses import dataclass

_log = logging.getLogger(__name__)

_NAME_MAX = 4096


@dataclass(frozen=True, slots=True)
class Krb5Defaults:
    """The default names; None when libkrb5 had none."""

    ccache: str | None
    keytab: str | None
    client_keytab: str | None


def _library() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("krb5") or "libkrb5.so.3")


def _kt_name(lib: ctypes.CDLL, ctx: ctypes.c_void_p, keytab: ctypes.c_void_p) -> str | None:
    buf = ctypes.create_string_buffer(_NAME_MAX)
    if lib.krb5_kt_get_name(ctx, keytab, buf, ctypes.c_uint(_NAME_MAX)) != 0:
        return None
    return buf.value.decode("utf-8", errors="replace") or None


def krb5_defaults() -> Krb5Defaults:
    """Ask libkrb5 for the default ccache, keytab and client keytab names."""
    try:
        lib = _library()
    except OSError as exc:
        _log.warning("libkrb5 not loadable (%s): no default credential names", exc)
        return Krb5Defaults(None, None, None)
    lib.krb5_cc_default_name.restype = ctypes.c_char_p
    ctx = ctypes.c_void_p()
    if lib.krb5_init_context(ctypes.byref(ctx)) != 0:
        _log.warning("krb5_init_context failed: no default credential names")
        return Krb5Defaults(None, None, None)
    try:
        raw = lib.krb5_cc_default_name(ctx)
        ccache = raw.decode("utf-8", errors="replace") if raw else None
        buf = ctypes.create_string_buffer(_NAME_MAX)
        ok = lib.krb5_kt_default_name(ctx, buf, ctypes.c_int(_NAME_MAX)) == 0
        keytab = buf.value.decode("utf-8", errors="replace") if ok and buf.value else None
        client_kt = ctypes.c_void_p()
        client_keytab = None
        if lib.krb5_kt_client_default(ctx, ctypes.byref(client_kt)) == 0:
            client_keytab = _kt_name(lib, ctx, client_kt)
            lib.krb5_kt_close(ctx, client_kt)
        return Krb5Defaults(ccache, keytab, client_keytab)
    finally:
        lib.krb5_free_context(ctx)
