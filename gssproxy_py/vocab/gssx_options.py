"""`gssx_option` names and values, and the C strings they travel as.

Names and values are the exact byte strings the kernel and the interposer
use, each with its trailing NUL counted in the length: gssproxy and the
kernel compare them by exact length and bytes (`gpopt_string_match`,
`gp_options_find`: the first option whose bytes are equal wins), so
`b"localname"` would simply not match. Where each travels:

| name | value | where |
|---|---|---|
| `exported_context_type` | `linux_lucid_v1` | kernel accept `call_ctx.options`: lucid context |
| `exported_creds_type` | `linux_creds_v1` | same: return uid, gid and groups |
| `linux_creds_v1` | uid, gid, n, gids (host order) | accept result options |
| `sync_modified_creds` | `default` | interposer init/accept arguments: send `sync_creds` |
| `sync_creds` | an XDR `gssx_cred` | init/accept result options |
| `acquire_type` | `impersonate_name` | acquire arguments: S4U2Self with the input credential |
| `localname` | empty (result: the local user name, no NUL) | import_and_canon_name |
| `krb5_set_allowed_enctype_values` | int32 enctypes (host order) | `gssx_cred_element.options` |
| `krb5_set_no_ci_flags` | empty | `gssx_cred_element.options` |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from gssproxy_py.proto.gss_proxy import GssxOption

__all__ = [
    "ACQUIRE_TYPE",
    "DEFAULT",
    "EXPORTED_CONTEXT_TYPE",
    "EXPORTED_CREDS_TYPE",
    "IMPERSONATE_NAME",
    "KRB5_SET_ALLOWED_ENCTYPE_VALUES",
    "KRB5_SET_NO_CI_FLAGS",
    "LINUX_CREDS_V1",
    "LINUX_LUCID_V1",
    "LOCALNAME",
    "SYNC_CREDS",
    "SYNC_MODIFIED_CREDS",
    "cstring",
    "find_option",
    "has_option",
    "option",
]

EXPORTED_CONTEXT_TYPE: Final = b"exported_context_type\0"
LINUX_LUCID_V1: Final = b"linux_lucid_v1\0"
EXPORTED_CREDS_TYPE: Final = b"exported_creds_type\0"
LINUX_CREDS_V1: Final = b"linux_creds_v1\0"
SYNC_MODIFIED_CREDS: Final = b"sync_modified_creds\0"
DEFAULT: Final = b"default\0"
SYNC_CREDS: Final = b"sync_creds\0"
ACQUIRE_TYPE: Final = b"acquire_type\0"
IMPERSONATE_NAME: Final = b"impersonate_name\0"
LOCALNAME: Final = b"localname\0"
KRB5_SET_ALLOWED_ENCTYPE_VALUES: Final = b"krb5_set_allowed_enctype_values\0"
KRB5_SET_NO_CI_FLAGS: Final = b"krb5_set_no_ci_flags\0"


def cstring(text: str | bytes) -> bytes:
    """text as a C string on the wire: UTF-8, one trailing NUL (added if absent)."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return data if data.endswith(b"\0") else data + b"\0"


def option(name: str | bytes, value: str | bytes = b"") -> GssxOption:
    """A gssx_option with a NUL-terminated name.

    A str value is a C string and gets its NUL too ("default" -> b"default\\0");
    a bytes value goes on the wire exactly as given, because some values are
    binary or empty (the `localname` request carries an empty value).
    """
    data = cstring(value) if isinstance(value, str) else value
    return GssxOption(option=cstring(name), value=data)


def find_option(options: Iterable[GssxOption], name: str | bytes) -> bytes | None:
    """The value of the first option named `name`, or None.

    `name` is taken as a C string (its NUL added if absent); an option whose
    name lacks the NUL does not match it, as in gssproxy.
    """
    want = cstring(name)
    for opt in options:
        if opt.option == want:
            return opt.value
    return None


def has_option(options: Iterable[GssxOption], name: str | bytes) -> bool:
    """Whether an option named `name` (a C string, as for `find_option`) is present."""
    want = cstring(name)
    return any(opt.option == want for opt in options)
